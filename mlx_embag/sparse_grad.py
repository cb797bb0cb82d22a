"""Row-sparse gradients: :class:`RowSparseGrad` and the helpers that take it apart.

A ``sparse=True`` module's table gradient under :func:`mlx_embag.value_and_grad`
is a :class:`RowSparseGrad`: one entry per looked-up position, so its size is
what the batch touched, not the table. It is a plain class (not a tuple or a
dict), so MLX's tree utilities and ``MultiOptimizer``'s filters see one leaf.

MLX arrays have static shapes, so the entries are not filtered on the host:
a position that lists no row (padding, a poisoned bag, an index after the
last offset) carries index ``-1`` and a zero row, and a row looked up twice
appears twice. The optimizers of :mod:`mlx_embag.optimizers` sum duplicates
first, as PyTorch's ``coalesce()``; :meth:`RowSparseGrad.coalesce` does it on
the host when asked.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag import RowSparseGrad
    >>> g = RowSparseGrad(mx.array([2, -1, 2]), mx.ones((3, 2)), num_rows=4)
    >>> g.shape, g.to_dense().tolist()
    ((4, 2), [[0.0, 0.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0]])
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

_F32 = mx.float32

_REFUSED = (
    "a RowSparseGrad (the row-sparse gradient of a sparse=True table) is not an mx.array: "
    "stock MLX optimizers and utilities cannot use it. Use mlx_embag.optimizers "
    "(SparseSGD, SparseAdagrad, SparseAdam, RowWiseAdagrad), alone or inside "
    "mlx.optimizers.MultiOptimizer, or call .to_dense()."
)


def _refuse(*_args, **_kwargs):
    raise TypeError(_REFUSED)


class RowSparseGrad:
    """The gradient of a ``(num_rows, D)`` table that lists only the rows a batch touched.

    Args:
        indices (array): ``(K,)`` integer rows; ``-1`` marks an entry that lists no row.
            A row may repeat (duplicates add up).
        values (array): ``(K, D)`` gradient rows, in the table's dtype.
        num_rows (int): the table's row count.

    Attributes ``shape``, ``ndim``, ``dtype`` and ``size`` describe the dense
    gradient it stands for, so optimizers can size their state from it.
    Arithmetic on it raises ``TypeError``: a stock optimizer handed one fails
    instead of applying a wrong update.

    Example:
        >>> import mlx.core as mx
        >>> g = RowSparseGrad(mx.array([1, 1]), mx.array([[1.0], [2.0]]), 3)
        >>> g.ndim, g.size, g.dtype, g.to_dense().reshape(-1).tolist()
        (2, 3, mlx.core.float32, [0.0, 3.0, 0.0])
    """

    __slots__ = ("indices", "values", "num_rows", "_pending", "_backend")

    def __init__(self, indices, values, num_rows, _pending=(), _backend=None):
        if values.ndim != 2 or indices.shape != values.shape[:1]:
            raise ValueError(
                f"RowSparseGrad needs indices (K,) and values (K, D), got {indices.shape} and {values.shape}."
            )
        self.indices, self.values, self.num_rows = indices, values, int(num_rows)
        # Arrays of the forward pass (the gathered rows) that the optimizer step evaluates
        # with the gradient, so that the loss no longer reads the table when it is updated.
        self._pending = tuple(_pending)
        # The table's backend= option: which path sums the duplicates (row_runs).
        self._backend = _backend

    @property
    def shape(self):
        """``(num_rows, D)``, the dense gradient's shape."""
        return (self.num_rows, self.values.shape[1])

    @property
    def ndim(self):
        """2."""
        return 2

    @property
    def dtype(self):
        """The dtype of ``values`` (the table's)."""
        return self.values.dtype

    @property
    def size(self):
        """``num_rows * D``, as the dense gradient's ``size``."""
        return self.num_rows * self.values.shape[1]

    def to_dense(self):
        """The dense ``(num_rows, D)`` gradient (duplicates summed in float32).

        Example:
            >>> import mlx.core as mx
            >>> RowSparseGrad(mx.array([0, -1]), mx.ones((2, 1)), 2).to_dense().tolist()
            [[1.0], [0.0]]
        """
        listed = self.indices >= 0
        rows = mx.where(listed, self.indices, 0)
        vals = mx.where(listed[:, None], self.values.astype(_F32), 0.0)
        return mx.zeros(self.shape, dtype=_F32).at[rows].add(vals).astype(self.dtype)

    def coalesce(self):
        """The same gradient with each listed row once, sorted, duplicates summed.

        It evaluates the arrays (a host sync, which is why nothing calls it for you).

        Example:
            >>> import mlx.core as mx
            >>> g = RowSparseGrad(mx.array([3, -1, 0, 3]), mx.array([[1.0], [5.0], [2.0], [4.0]]), 4)
            >>> c = g.coalesce()
            >>> c.indices.tolist(), c.values.reshape(-1).tolist()
            ([0, 3], [2.0, 5.0])
        """
        rows, sums, live = row_runs(self.indices, self.values, self._backend)
        keep = np.flatnonzero(np.array(live))
        keep = mx.array(keep.astype(np.int32))
        return RowSparseGrad(
            mx.take(rows, keep), mx.take(sums, keep, axis=0).astype(self.dtype), self.num_rows
        )

    def __repr__(self):
        return f"RowSparseGrad(rows={self.num_rows}, dim={self.values.shape[1]}, entries={self.indices.size}, dtype={self.dtype})"

    # Every arithmetic operator refuses, so that optimizer code written for arrays stops here.
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __neg__ = __matmul__ = __rmatmul__ = _refuse
    # MLX converts an operand through this hook, so mx ops on it (array * g, mx.square(g)) refuse too.
    __mlx_array__ = _refuse

    def __getattr__(self, name):
        # Reached only for names the class lacks (square, sum, astype, ...), i.e. array code.
        raise AttributeError(f"RowSparseGrad has no attribute {name!r}: {_REFUSED}")


def row_runs(indices, values, backend=None):
    """Duplicates summed, with static shapes: ``(rows, sums, live)``, each of length K.

    ``rows`` are the indices sorted, with ``-1`` read as row 0; ``sums`` (float32)
    holds each listed row's total at its first entry and zeros elsewhere; ``live``
    marks those first entries. An update that adds ``where(live, f(sums), 0)`` at
    ``rows`` therefore touches each listed row once, and any number of exact zeros.
    ``backend`` (as in :func:`mlx_embag.embedding_bag`) picks who sums the runs: the
    Metal kernels of the deterministic backward, or MLX ops (a ``segmented_mm``).

    Example:
        >>> import mlx.core as mx
        >>> rows, sums, live = row_runs(mx.array([4, -1, 4]), mx.array([[1.0], [9.0], [2.0]]))
        >>> rows.tolist(), sums.reshape(-1).tolist(), live.tolist()
        ([0, 4, 4], [0.0, 3.0, 0.0], [False, True, False])
    """
    from . import backend as _backend

    if _backend.resolve_backend(backend) == "metal":
        from ._sparse_kernels import run_sums
    else:
        from ._scatter import run_sums
    if indices.size == 0:
        return indices.astype(mx.int32), values.astype(_F32), indices >= 0
    listed = indices >= 0
    vals = mx.where(listed[:, None], values.astype(_F32), 0.0)
    srt, sums = run_sums(indices, vals, None)
    first = mx.concatenate([mx.array([True]), srt[1:] != srt[:-1]])
    live = mx.logical_and(first, srt >= 0)
    return mx.where(srt >= 0, srt, 0), mx.where(live[:, None], sums, 0.0), live


def grads_to_arrays(grads):
    """The leaves of a gradient tree as plain arrays (a :class:`RowSparseGrad` gives two).

    What a compiled gradient step returns, since a ``RowSparseGrad`` cannot cross
    an ``mx.compile`` boundary; :func:`arrays_to_grads` builds the tree again.
    Leaves come in ``tree_flatten`` order.

    Example:
        >>> import mlx.core as mx
        >>> g = {"emb": {"weight": RowSparseGrad(mx.array([1]), mx.ones((1, 2)), 5)}, "b": mx.zeros(2)}
        >>> [a.shape for a in grads_to_arrays(g)]
        [(1,), (1, 2), (2,)]
    """
    out = []
    for _, leaf in tree_flatten(grads):
        out += [leaf.indices, leaf.values] if isinstance(leaf, RowSparseGrad) else [leaf]
    return out


def arrays_to_grads(arrays, template):
    """The gradient tree again from :func:`grads_to_arrays`'s output.

    ``template`` is a tree of the same structure whose leaves say what each one
    was: the gradients themselves, or, inside a compiled update, a tree built
    once from them (only the ``RowSparseGrad`` leaves and their ``num_rows``
    matter; array leaves may be anything).

    Example:
        >>> import mlx.core as mx
        >>> g = {"emb": {"weight": RowSparseGrad(mx.array([1]), mx.ones((1, 2)), 5)}, "b": mx.zeros(2)}
        >>> back = arrays_to_grads(grads_to_arrays(g), g)
        >>> back["emb"]["weight"].num_rows, back["b"].shape
        (5, (2,))
    """
    from mlx.utils import tree_unflatten

    arrays, leaves = list(arrays), []
    for key, leaf in tree_flatten(template):
        if isinstance(leaf, RowSparseGrad):
            leaves.append((key, RowSparseGrad(arrays.pop(0), arrays.pop(0), leaf.num_rows)))
        else:
            leaves.append((key, arrays.pop(0)))
    return tree_unflatten(leaves)
