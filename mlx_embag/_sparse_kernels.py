"""The Metal path of a sparse optimizer step: one fused kernel per rule (``metal/sparse_update.metal``).

A :class:`~mlx_embag.RowSparseGrad`'s entries are sorted by row once (MLX
``argsort``); ``det_partial`` (the deterministic backward's kernel) sums the
runs that cross a window boundary; ``sparse_update`` then sums each run in a
fixed order and computes the row's update in the same pass, reading the old
optimizer state straight from the state arrays. ``mx.fast.metal_kernel``
cannot write into an input, so the kernel returns per-entry increments (the
update at each run's first sorted position, exact zeros elsewhere) and the
optimizer applies them with MLX's scatter-add.

MLX updates an array in place only when nothing else in the evaluated graph
still reads it, and this kernel reads the old state. :func:`step` therefore
evaluates the kernel's outputs at the optimizer's sync point (where the
reference path evaluates the gradient: the same single evaluation), so the
scatters that follow find the state and the table read by nobody. Inside
``mx.compile`` nothing can be evaluated: a rule that reads state then returns
``None`` and the optimizer takes the split path (the ``det_*`` kernels' sums and
MLX ops), which stays in place; SparseSGD reads no state and stays fused.
:func:`run_sums` is the Metal path of the duplicate summing alone
(``sparse_grad.row_runs``), on the same ``det_*`` kernels.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag import emulator, _sparse_kernels as sk
    >>> emulator.enable()
    >>> rows, dw, states = sk.step("sgd", mx.array([2, -1, 2]), mx.ones((3, 2)), mx.float32, 4, (),
    ...                            dict(LR=mx.array(0.5)))
    >>> rows.tolist(), dw.tolist()
    ([0, 2, 2], [[0.0, 0.0], [-1.0, -1.0], [0.0, 0.0]])
    >>> emulator.reset()
"""

from __future__ import annotations

import mlx.core as mx

from . import _embag_common as common
from . import kernels, launchers
from ._embag_common import NAMES as _HEADER_NAMES
from ._spec import FLOAT_TABLES
from ._transforms import evaluate_unless_traced
from .launchers import WINDOW, pow2_at_least

_F32 = mx.float32
#: Template value of each optimizer rule, and the float32 state arrays it reads and updates.
RULES = {"sgd": common.RULE_SGD, "adagrad": common.RULE_ADAGRAD, "adam": common.RULE_ADAM}
RULES["rowwise"] = common.RULE_ROWWISE
_HYPER_SLOTS = {k[2:]: v for k, v in _HEADER_NAMES.items() if k.startswith("O_")}


def unsupported(parameter, values) -> str | None:
    """Why the fused kernel cannot update ``parameter`` from these gradient values, or None.

    Example:
        >>> import mlx.core as mx
        >>> unsupported(mx.zeros((4, 2), mx.int32), mx.zeros((1, 2)))
        'the sparse optimizer kernels take float32, float16 or bfloat16 tables, got mlx.core.int32.'
    """
    if parameter.dtype not in FLOAT_TABLES:
        return (
            f"the sparse optimizer kernels take float32, float16 or bfloat16 tables, got {parameter.dtype}."
        )
    if not mx.issubdtype(values.dtype, mx.floating):
        return f"the gradient values must be floating point, got {values.dtype}."
    if max(parameter.shape[0], values.size) > 2**31 - 1:
        return "the table's rows or the gradient's elements are past the kernels' 32-bit limit."
    return None


def hyper(**values) -> mx.array:
    """The float32 constants input: each value (an array or a number) in its ``O_`` slot, lazily.

    Example:
        >>> hyper(LR=mx.array(0.5), SHARE1=0.1).tolist()
        [0.5, 0.0, 0.10000000149011612, 0.0]
    """
    unknown = sorted(set(values) - set(_HYPER_SLOTS))
    if unknown:
        raise KeyError(f"no optimizer slot named {', '.join(unknown)}; valid: {', '.join(_HYPER_SLOTS)}.")
    out = [mx.array(0.0, _F32)] * (max(_HYPER_SLOTS.values()) + 1)
    for name, value in values.items():
        out[_HYPER_SLOTS[name]] = (
            mx.array(value, _F32) if not isinstance(value, mx.array) else value.astype(_F32)
        )
    return mx.stack([v.reshape(()) for v in out])


def geometry(rule: str, D: int):
    """``(TX, TY, COLS)``: threads per row, windows per threadgroup, columns per thread.

    Example:
        >>> geometry("adam", 64), geometry("rowwise", 5), geometry("sgd", 300)
        ((64, 1, 1), (8, 1, 1), (256, 1, 2))
    """
    tx = min(pow2_at_least(D), common.TG_MAX)
    ty = 1 if rule == "rowwise" else max(1, 64 // tx)  # the row-wise mean synchronises a threadgroup
    return tx, ty, max(1, -(-D // tx))


def partials(skey, order, values, p):
    """``det_partial``'s window partial sums: float32 (W, D) (its launch, as in ``sorted_scatter``)."""
    M, D = values.shape
    tx = min(pow2_at_least(D), 64)
    return kernels.call(
        "det_partial",
        [skey, order, mx.arange(M, dtype=mx.int32), mx.ones((M,), _F32), values, p],
        template=[],
        grid=(D, -(-M // WINDOW), 1),
        threadgroup=(tx, max(1, 64 // tx), 1),
        output_shapes=[(-(-M // WINDOW), D)],
        output_dtypes=[_F32],
    )[0]


def sparse_update(rule, skey, order, values, part, states, hyper_values, dtype, num_rows):
    """The fused kernel: ``(dw, dstate1, dstate2)`` per sorted entry (see ``metal/sparse_update.metal``)."""
    M, D = values.shape
    tx, ty, cols = geometry(rule, D)
    s1, s2 = (list(states) + [kernels.absent(_F32)] * 2)[:2]
    shapes = {
        "sgd": [(M, D), (1,), (1,)],
        "adagrad": [(M, D), (M, D), (1,)],
        "adam": [(M, D), (M, D), (M, D)],
        "rowwise": [(M, D), (M,), (1,)],
    }[rule]
    p = common.params(M=M, R=num_rows, DV=D, WINDOW=WINDOW)
    return kernels.call(
        "sparse_update",
        [skey, order, values, part, s1, s2, hyper_values, p],
        template=[("T", dtype), ("RULE", RULES[rule]), ("COLS", cols)],
        grid=(tx, -(-M // WINDOW), 1),
        threadgroup=(tx, ty, 1),
        output_shapes=shapes,
        output_dtypes=[dtype, _F32, _F32],
    )


def step(rule, indices, values, dtype, num_rows, states, constants, pending=()):
    """One fused step's increments: ``(rows, dw, state increments)``, or None when traced and
    the rule reads state (see the module docstring).

    ``num_rows`` is the table's; ``rows`` are the sorted indices with ``-1`` read as row 0 (their increments are
    exact zeros); ``dw`` is in ``dtype`` (the table's); ``states`` are the rule's
    float32 state arrays, whose increments come back in the same order. The outputs
    and ``pending`` are evaluated here unless MLX is tracing.
    """
    M, D = values.shape
    order = mx.argsort(indices).astype(mx.int32)
    skey = mx.take(indices, order)
    p = common.params(M=M, R=num_rows, DV=D, WINDOW=WINDOW)
    part = partials(skey, order, values, p)
    dw, ds1, ds2 = sparse_update(rule, skey, order, values, part, states, hyper(**constants), dtype, num_rows)
    incs = [ds1, ds2][: len(states)]
    rows = mx.where(skey >= 0, skey, 0)
    if not evaluate_unless_traced(rows, dw, *incs, *pending) and states:
        return None
    return rows, dw, incs


def run_sums(keys, values, coef=None):
    """The Metal twin of :func:`mlx_embag._scatter.run_sums` (same arguments): the sparse
    optimizers' duplicate summing of a :class:`~mlx_embag.RowSparseGrad`.

    Keys are sorted once; each run of equal keys is summed in a fixed order by
    ``det_partial``/``det_write`` (the deterministic backward's kernels) into the
    run's first sorted position, whose index is the run's key for the kernels;
    every other position holds an exact 0. Returns ``(sorted keys, sums)``.
    """
    n = keys.size
    order = mx.argsort(keys).astype(mx.int32)
    srt = mx.take(keys, order)
    pos = mx.arange(n, dtype=mx.int32)
    first = mx.concatenate([mx.array([True]), srt[1:] != srt[:-1]])
    head = mx.cummax(mx.where(first, pos, 0))
    # The kernels read coef by sorted position (srcrow maps a sorted position to its entry).
    coef = mx.ones((n,), dtype=mx.float32) if coef is None else mx.take(coef.astype(mx.float32), order)
    return srt, launchers.sorted_scatter(head, order, coef, values.astype(mx.float32), n)
