"""``meb.value_and_grad``: ``nn.value_and_grad`` with row-sparse table gradients.

While it runs, each ``sparse=True`` module with a trainable table looks its
rows up through a *mini table*: the ``N`` rows its positions read (plus one
for ``padding_idx``), gathered from the table with the gradient stopped, and
indexed ``0..N-1``. The normal lookup (either backend, every option) runs on
that mini table, so the mini table's gradient is exactly the per-position
gradient, ``(N, D)`` instead of ``(V, D)``. A custom function ``tap(weight,
rows) -> rows`` sits between the table and the mini table: MLX calls its VJP
(the table is a differentiated input), which records the rows' cotangent and
hands the table a dense zero that nothing ever reads, so it is never computed.

Which rows a gradient lists follows PyTorch: every position of a valid bag
that is not padding, including rows whose gradient is zero. The others are
entries with index ``-1`` (see :mod:`mlx_embag.sparse_grad`).

A table also read directly in the same loss (``as_linear``, a penalty on
``model.emb.weight``) gets a dense gradient instead, the sum of MLX's dense
one and the lookups' rows, with a one-time warning.

Example:
    >>> import mlx.core as mx, mlx.nn as nn, mlx_embag as meb
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb = meb.EmbeddingBag(100, 4, mode="sum", sparse=True)
    ...     def __call__(self, x):
    ...         return self.emb(x).sum()
    >>> model = M()
    >>> loss, grads = meb.value_and_grad(model, lambda x: model(x))(mx.array([[3, 5], [5, 0]]))
    >>> g = grads["emb"]["weight"]
    >>> sorted(g.indices.tolist()), g.shape
    ([0, 3, 5, 5], (100, 4))
"""

from __future__ import annotations

import dataclasses
import threading
from functools import wraps

import mlx.core as mx
import mlx.nn as nn

from . import functional as F
from ._layout import Layout, checked_indices, index_dtype, row_counts
from ._validate import _warn_once
from .sparse_grad import RowSparseGrad

__all__ = ["value_and_grad"]  # the rest serves the modules (layers.py)

_F32 = mx.float32
_local = threading.local()


class _Record:
    """What one module's sparse lookups left during one ``value_and_grad`` call."""

    def __init__(self, module):
        self.module = module
        self.calls = []  # dicts: indices (N,), freq or None, rows (the gathered rows), cot
        self.dense_reads = 0


def active_record(module):
    """The record of ``module`` if a :func:`value_and_grad` is capturing its lookups, else None."""
    # The thread's own attributes: getattr(_local, ..., None) of a missing one costs most of
    # a microsecond, and every module call asks.
    records = _local.__dict__.get("records")
    return None if not records else records.get(id(module))


def note_weight_read(module):
    """Count a read of ``module.weight`` (a dense use of the table: the modules' own
    lookups read ``module["weight"]``, which does not come here)."""
    record = active_record(module)
    if record is not None:
        record.dense_reads += 1


def _tapped_rows(weight, safe, pad, record):
    """The mini table ``(N + 1, D)``: the rows at ``safe`` and the padding row (or row 0).

    The padding row is gathered too, not sliced: a slice would share the table's
    buffer and stop the optimizer from updating the table in place.
    """
    call = {}
    record.calls.append(call)

    @mx.custom_function
    def tap(w, rows):
        return rows

    @tap.vjp
    def tap_vjp(primals, cotangent, output):
        call["cot"] = cotangent
        return mx.zeros_like(primals[0]), mx.zeros_like(primals[1])

    at = mx.concatenate([safe.reshape(-1), mx.array([pad or 0], dtype=safe.dtype)])
    rows = tap(weight, mx.take(mx.stop_gradient(weight), at, axis=0))
    call["rows"] = rows
    return rows, call


def _local_indices(ok, flat, pad):
    """Mini-table indices: position i reads row i, padding row N, out-of-range N + 1 (poisoned)."""
    n = flat.size
    local = mx.where(ok, mx.arange(n, dtype=mx.int32), n + 1)
    return local if pad is None else mx.where(flat == pad, n, local)


def _sparse_bag(weight, flat, offsets, psw, spec, backend, record):
    V, n, pad = weight.shape[0], flat.size, spec.padding_idx
    lay = Layout(flat, offsets, spec, V)
    listed = lay.pos_valid if pad is None else mx.logical_and(lay.pos_valid, flat != pad)
    rows, call = _tapped_rows(weight, lay.safe, pad, record)
    call["indices"] = mx.where(listed, lay.safe, -1)
    call["freq"] = lay.frequencies() if spec.scale_grad_by_freq else None
    mini = dataclasses.replace(spec, padding_idx=None if pad is None else n, scale_grad_by_freq=False)
    local = _local_indices(lay.ok_index, flat, pad)
    return F._dispatch("embedding_bag", "unsupported_bag", backend, rows, local, offsets, psw, mini)


def _sparse_embedding(weight, input, spec, backend, record):
    V, pad = weight.shape[0], spec.padding_idx
    flat = input.reshape(-1)
    ok, safe = checked_indices(flat, V)
    rows, call = _tapped_rows(weight, safe, pad, record)
    listed = ok if pad is None else mx.logical_and(ok, flat != pad)
    call["indices"] = mx.where(listed, safe, -1)
    call["freq"] = mx.take(row_counts(safe, ok, V), safe) if spec.scale_grad_by_freq else None
    mini = dataclasses.replace(spec, padding_idx=None if pad is None else flat.size, scale_grad_by_freq=False)
    local = _local_indices(ok, flat, pad).reshape(input.shape)
    return F._dispatch("embedding", "unsupported_embedding", backend, rows, local, mini)


def sparse_lookup(record, fn, call_args):
    """Run a module's lookup (``fn`` is ``F.embedding_bag`` or ``F.embedding``) through a
    mini table, recording what :func:`value_and_grad` needs. ``call_args`` names every
    argument of ``fn``.

    Tables with no rows or no columns run the ordinary lookup (their gradient is empty anyway).
    """
    weight = call_args["weight"]
    if 0 in weight.shape:
        return fn(**call_args)
    call_args = {**call_args, "sparse": False}  # no "the gradient is dense" warning here
    backend = call_args["backend"]
    if fn is F.embedding_bag:
        w, flat, offsets, psw, spec = F.bag_call(**call_args)
        return _sparse_bag(w, flat, offsets, psw, spec, backend, record)
    w, input, spec = F.embedding_call(**call_args)
    return _sparse_embedding(w, input, spec, backend, record)


def _row_grad(record):
    """The module's :class:`RowSparseGrad` from its recorded lookups (empty if none reached the loss)."""
    weight = record.module["weight"]
    V, D = weight.shape
    used = [c for c in record.calls if "cot" in c]
    if not used:
        return RowSparseGrad(mx.zeros((0,), index_dtype(V)), mx.zeros((0, D), weight.dtype), V)
    indices, values = [], []
    for c in used:
        g = c["cot"][:-1]  # the last mini-table row is the padding row: no gradient
        if c["freq"] is not None:
            g = (g.astype(_F32) / mx.maximum(c["freq"], 1.0)[:, None]).astype(g.dtype)
        indices.append(c["indices"].astype(index_dtype(V)))
        values.append(g)
    cat = (lambda xs: xs[0]) if len(used) == 1 else mx.concatenate
    return RowSparseGrad(
        cat(indices), cat(values), V, _pending=[c["rows"] for c in used], _backend=record.module.backend
    )


def _parent(tree, path):
    """The container holding the leaf at ``path`` (its last part is the key in it)."""
    node = tree
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _sparse_modules(model):
    """``(path, module)`` for each ``sparse=True`` table module whose ``weight`` is trainable."""
    from .layers import _Table

    found = []
    for path, m in model.named_modules():
        if isinstance(m, _Table) and m.sparse and "weight" in m.trainable_parameters():
            found.append((path, m))
    return found


def value_and_grad(model: nn.Module, fn):
    """``nn.value_and_grad`` that gives ``sparse=True`` tables a :class:`~mlx_embag.RowSparseGrad`.

    Same contract as :func:`mlx.nn.value_and_grad`: the returned function takes
    ``fn``'s arguments and returns ``(value, grads)``, where ``grads`` has the
    model's trainable-parameter structure. The ``weight`` gradient of each
    ``sparse=True`` :class:`~mlx_embag.EmbeddingBag`/:class:`~mlx_embag.Embedding`
    is a ``RowSparseGrad``; everything else is what MLX gives. A model without
    such modules gets exactly ``nn.value_and_grad``'s result.

    Nothing is evaluated here. Note that ``mx.eval(grads)`` does not see the
    arrays inside a ``RowSparseGrad``: the optimizers of :mod:`mlx_embag.optimizers`
    evaluate them in ``update`` (the step's sync point).

    Args:
        model (mlx.nn.Module): the model whose trainable parameters to differentiate.
        fn (callable): the scalar loss.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> emb = meb.Embedding(10, 2, sparse=True, padding_idx=0)
        >>> loss, grads = meb.value_and_grad(emb, lambda x: emb(x).sum())(mx.array([4, 0, 4]))
        >>> grads["weight"].indices.tolist(), grads["weight"].to_dense()[4].tolist()
        ([4, -1, 4], [2.0, 2.0])
    """
    dense = nn.value_and_grad(model, fn)

    @wraps(fn)
    def wrapped(*args, **kwargs):
        modules = _sparse_modules(model)
        if not modules:
            return dense(*args, **kwargs)
        records = {id(m): _Record(m) for _, m in modules}
        outer = getattr(_local, "records", None)
        _local.records = records
        try:
            value, grads = dense(*args, **kwargs)
        finally:
            _local.records = outer
        for path, m in modules:
            record = records[id(m)]
            grad = _row_grad(record)
            leaf = (path + ".weight" if path else "weight").split(".")
            parent = _parent(grads, leaf)
            if record.dense_reads:
                _warn_once(
                    ("dense_read", type(m).__name__),
                    f"a sparse=True {type(m).__name__}'s weight is also used directly in the "
                    "loss (e.g. as_linear): its gradient is dense.",
                )
                # MLX's gradient holds the direct uses (the lookups sent it a zero): add theirs.
                grad = parent[leaf[-1]] + grad.to_dense()
            parent[leaf[-1]] = grad
        return value, grads

    return wrapped
