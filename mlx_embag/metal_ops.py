"""The Metal backend: ``embedding_bag`` / ``embedding`` as ``mx.custom_function``s over the kernels.

Same interface and semantics as ``reference.py`` (see ``_spec.py``): the
functional layer calls :func:`embedding_bag` / :func:`embedding` when the
backend resolves to ``"metal"``, and :func:`unsupported_bag` /
:func:`unsupported_embedding` (dtype and size checks only, no host sync) to let
``"auto"`` fall back to the reference path and ``"metal"`` raise.

Layout of one call. 2-D input becomes offsets ``arange(B) * L`` and
``embedding`` becomes one bag per position, so a single forward kernel
(``bag_fwd``) serves every case; it also writes the per-bag count (or
``POISONED``) and, in max mode, the arg-max row per (bag, column), which the
VJP reuses. ``max_norm`` adds one kernel computing each position's rescaling
factor (``row_scale``). The weight gradient is either atomic (``bag_bwd``,
``max_bwd``) or sorted by row (MLX ``argsort``) and reduced in a fixed order
(``bag_owner``, ``det_partial``, ``det_write``): always sorted with
``deterministic=True``, else whichever moves fewer device sectors at the call's
shape (``_cost.prefers_sorted``, from shapes only).
Each kernel's launch lives in ``launchers.py``; this module composes them.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

from . import _cost, kernels, launchers
from . import _embag_common as common
from ._layout import checked_indices, offsets_int64, row_counts
from ._spec import FLOAT_TABLES, BagSpec, EmbSpec

_F32 = mx.float32
_I32_MAX = 2**31 - 1


# ----------------------------------------------------------------- capability


def _limit_reason(weight, n, num_bags):
    """Why the kernels cannot take this call (a message), or None when they can."""
    V, D = weight.shape
    if weight.dtype not in FLOAT_TABLES:
        return f"the kernels take float32, float16 or bfloat16 tables, got {weight.dtype}."
    # Positions, arg-max rows and (bag, column) entries are int32 in the kernels
    # and grid entries are 32-bit; the table itself is addressed in 64 bits, so
    # V * D is not limited. MLX shapes are 32-bit too, so only the bag x column
    # limit can be reached from a valid call.
    if max(V, n, num_bags * max(D, 1)) <= _I32_MAX:  # every call pays this check: no message built
        return None
    for value, what in (
        (V, "num_embeddings"),
        (n, "the number of indices"),
        (num_bags * max(D, 1), f"bags x columns ({num_bags} * {D})"),
    ):
        if value > _I32_MAX:
            return f"{what} = {value} is past the kernels' 32-bit limit of 2**31 - 1."
    return None


def unsupported_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """Why the kernels cannot run this ``embedding_bag`` call, or None (host-free).

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag._spec import BagSpec
        >>> spec = BagSpec("sum", 1, None, False, None, None, 2.0, False, False)
        >>> unsupported_bag(mx.zeros((4, 2), mx.float64), mx.array([0]), mx.array([0]), None, spec)
        'the kernels take float32, float16 or bfloat16 tables, got mlx.core.float64.'
    """
    if per_sample_weights is not None and not mx.issubdtype(per_sample_weights.dtype, mx.floating):
        return f"per_sample_weights must be floating point, got {per_sample_weights.dtype}."
    return _limit_reason(weight, indices.size, spec.num_bags)


def unsupported_embedding(weight, indices, spec: EmbSpec):
    """Why the kernels cannot run this ``embedding`` call, or None (host-free).

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag._spec import EmbSpec
        >>> unsupported_embedding(mx.zeros((4, 2)), mx.array([3]), EmbSpec(None, None, 2.0, False, False)) is None
        True
    """
    return _limit_reason(weight, indices.size, indices.size)


def _assert_supported(reason):
    # The functional layer checks first; this guards direct calls of the entry points.
    if reason is not None:
        raise ValueError(f"backend='metal' cannot run this call: {reason}")


# ------------------------------------------------------------------- helpers


def _index_array(x):
    """int32 and int64 are read as they are; other integer dtypes as int64."""
    return x if x.dtype in (mx.int32, mx.int64) else x.astype(mx.int64)


def position_scales(weight, indices, max_norm, norm_type):
    """Each position's ``max_norm`` factor, from the same kernel as the forward's (float32 (N,)).

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> s = position_scales(mx.array([[3.0, 4.0], [0.3, 0.4]]), mx.array([0, 1]), 1.0, 2.0)
        >>> [round(v, 4) for v in s.tolist()]
        [0.2, 1.0]
        >>> emulator.reset()
    """
    idx = _index_array(indices.reshape(-1))
    return launchers.row_scale(weight, idx, float(max_norm), float(norm_type))


def _bags(spec: BagSpec, weight, psw, idx, off, B, pad, extra_flags=0) -> launchers.Bags:
    """The bags of one pass (``pad``: the padding row it skips, or -1) as the kernels read them."""
    flags = extra_flags
    flags |= common.FLAG_MEAN if spec.mode == "mean" else 0
    flags |= common.FLAG_PSW if psw is not None else 0
    flags |= common.FLAG_SCALE if spec.max_norm is not None else 0
    psw = kernels.absent(weight.dtype) if psw is None else psw.astype(weight.dtype)
    V, D = weight.shape
    return launchers.Bags(idx, off, psw, V, D, B, pad, flags)


# ------------------------------------------------------- the weight gradient's steps


def _max_weight_grad(cot, argmax, V: int, deterministic: bool):
    """Max mode: each (bag, column) gradient goes to the row its arg-max names."""
    if not deterministic:
        return launchers.max_bwd(cot, argmax, V)
    B, D = cot.shape
    e = mx.arange(B * D, dtype=mx.int32)
    hit = argmax.reshape(-1) >= 0
    kdt = mx.int32 if V * D <= _I32_MAX else mx.int64
    key = mx.where(hit, argmax.reshape(-1).astype(kdt) * D + (e % D).astype(kdt), 0)
    srcrow = mx.where(hit, e, -1)
    return launchers.sorted_scatter(
        key, srcrow, mx.ones((B * D,), _F32), cot.reshape(-1, 1), V * D, out_shape=(V, D)
    )


def _sorted_weight_grad(bags: launchers.Bags, g, meta, freq):
    """Sum / mean, deterministic: positions sorted by row, each row summed in a fixed order."""
    owner, coef = launchers.bag_owner(bags, meta, freq)
    key = mx.where(owner >= 0, bags.idx, 0)
    return launchers.sorted_scatter(key, owner, coef, g, bags.V)


# ----------------------------------------------------------------- the core op


_SHAPES_KEPT = 256  # call lengths (N) whose forward launches one bag function keeps


@functools.lru_cache(maxsize=1024)
def _bag_function(
    spec: BagSpec, pad_forward: bool, V: int, D: int, dtype, index_dtype, offsets_dtype, psw_dtype
):
    """The custom function of one call signature: ``bag(weight, idx[, offsets][, psw])``.

    ``spec`` is the call's, shape included; ``pad_forward`` says whether the forward skips
    the padding row too (``embedding_bag``) or only the backward does (``embedding``); the
    rest are the table's shape and dtype and the other arrays' dtypes (None: absent).
    ``spec.bag_size`` set (2-D input, ``embedding``): every bag has that many positions,
    there is no ``offsets`` argument and the forward reads no offsets (``FLAG_FIXED``);
    else ``offsets`` is the raw 1-D array. ``psw`` is an argument when ``psw_dtype`` is
    set. ``idx`` and ``psw`` may have any shape (the kernels read them flat). Outputs: out
    (B, D), meta, then argmax (max mode) and scale (``max_norm``): the VJP's. Each
    argument and output of a custom function costs host time on every call (a None
    argument too), so there are no more than the call has, and the bounds of fixed bags
    are constants here rather than arguments.

    Everything the forward's launches take but the arrays is built once per ``N``
    (``launchers.forward``), so a repeated call only looks it up.
    """
    B = spec.num_bags
    fixed = spec.bag_size is not None
    pad_bwd = -1 if spec.padding_idx is None else spec.padding_idx
    pad_fwd = pad_bwd if pad_forward else -1
    max_mode = spec.mode == "max"
    has_scale = spec.max_norm is not None
    cast = index_dtype not in (mx.int32, mx.int64)  # others are read as int64 (_index_array)
    has_psw = psw_dtype is not None
    psw_cast = has_psw and psw_dtype != dtype
    off_cast = offsets_dtype is not None and offsets_dtype != mx.int64
    no_psw, no_scale = kernels.absent(dtype), kernels.absent(_F32)
    flags = common.FLAG_MEAN if spec.mode == "mean" else 0
    flags |= common.FLAG_PSW if psw_dtype is not None else 0
    flags |= common.FLAG_SCALE if has_scale else 0
    if fixed:
        grid_off, grid_prev = _grid_bounds(B, spec.bag_size)
    noff = B if fixed else B + int(spec.include_last_offset)
    forwards = {}

    def build(N):
        if len(forwards) >= _SHAPES_KEPT:
            forwards.clear()
        f = forwards[N] = launchers.forward(
            N,
            V,
            D,
            B,
            noff,
            pad_fwd,
            flags | (common.FLAG_FIXED if fixed else 0),
            dtype,
            max_mode,
            spec.max_norm,
            spec.norm_type,
        )
        return f

    @mx.custom_function
    def bag(weight, idx, *rest):
        offsets = None if fixed else rest[0]
        psw = rest[-1] if has_psw else None
        N = idx.size
        f = forwards.get(N)
        if f is None or f.tuning != (launchers.FILL_THREADS, launchers.SPLIT_POSITIONS, launchers.MAX_SPLITS):
            f = build(N)  # new, or the split constants changed (tests change them)
        if cast:
            idx = idx.astype(mx.int64)
        if fixed:
            off, prevmax = grid_off, grid_prev
        else:
            off = offsets_int64(offsets, N) if off_cast else offsets
            # The kernel only asks whether bag b's start, offsets[b], is below an earlier offset;
            # including offsets[b] itself in the maximum changes no answer and saves two ops.
            prevmax = mx.cummax(off)
        if psw is None:
            psw = no_psw
        elif psw_cast:
            psw = psw.astype(dtype)
        scale = f.scale([weight, idx, *f.scale_inputs])[0] if has_scale and N else no_scale
        out, argmax, meta = f.main([weight, idx, off, prevmax, psw, scale, f.params])
        if f.combine is not None:
            out, argmax, meta = f.combine([out, argmax, meta, f.combine_params])
        if max_mode:
            return (out, meta, argmax, scale) if has_scale else (out, meta, argmax)
        return (out, meta, scale) if has_scale else (out, meta)

    @bag.vjp
    def bag_vjp(primals, cotangents, outputs):
        weight, idx, *rest = primals
        offsets = None if fixed else rest[0]
        psw = rest[-1] if has_psw else None
        zeros = (mx.zeros_like(idx),) + (() if fixed else (mx.zeros_like(offsets),))
        meta = outputs[1]
        argmax = outputs[2] if max_mode else None
        scale = outputs[-1] if has_scale else no_scale
        cot = cotangents[0].astype(_F32)
        if idx.size == 0 or D == 0:
            return (mx.zeros_like(weight),) + zeros + ((mx.zeros_like(psw),) if has_psw else ())
        flat = _index_array(idx.reshape(-1))
        off = grid_off if fixed else offsets_int64(offsets, flat.size)
        pw = None if psw is None else psw.reshape(-1)
        freq = kernels.absent(_F32)
        if spec.scale_grad_by_freq:
            ok, safe = checked_indices(flat, V)
            freq = row_counts(safe, ok, V)
        bwd = _bags(
            spec, weight, pw, flat, off, B, pad_bwd, common.FLAG_FREQ if spec.scale_grad_by_freq else 0
        )
        # deterministic=False takes whichever variant moves fewer device sectors (_cost.py).
        sort = spec.deterministic or _cost.prefers_sorted(
            flat.size,
            B,
            D,
            V,
            index_bytes=flat.dtype.size,
            weight_bytes=weight.dtype.size,
            psw=psw is not None,
            freq=spec.scale_grad_by_freq,
            max_mode=max_mode,
        )
        if max_mode:
            dw = _max_weight_grad(cot, argmax, V, sort)
        else:
            g = cot / mx.maximum(meta, 1).astype(_F32)[:, None] if spec.mode == "mean" else cot
            weight_grad = _sorted_weight_grad if sort else launchers.bag_bwd
            dw = weight_grad(bwd, g, meta, freq)
        dpsw = ()
        if has_psw:
            dpsw = (launchers.psw_grad(bwd, cot, weight, meta, scale).astype(psw.dtype).reshape(psw.shape),)
        return (dw.astype(weight.dtype),) + zeros + dpsw

    return bag


_I64_MIN = -(2**63)


@functools.lru_cache(maxsize=64)
def _grid_bounds(B: int, L: int):
    """``(off, prevmax)`` of B bags of L (2-D input): constants built once per shape.

    ``prevmax[b]`` is the largest earlier offset, ``off[b - 1]``, and the
    smallest int64 for bag 0, which has none.
    """
    off = np.arange(B, dtype=np.int64) * L
    prev = np.concatenate([[_I64_MIN], off[:-1]])
    return mx.array(off), mx.array(prev)


def embedding_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """Metal ``embedding_bag`` on a normalised call (see ``_spec.py``); ``(B, D)``.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> spec = BagSpec("sum", 2, None, False, None, None, 2.0, False, False)
        >>> w = mx.arange(8, dtype=mx.float32).reshape(4, 2)
        >>> embedding_bag(w, mx.array([0, 1, 3]), mx.array([0, 2]), None, spec).tolist()
        [[2.0, 4.0], [6.0, 7.0]]
        >>> emulator.reset()
    """
    _assert_supported(unsupported_bag(weight, indices, offsets, per_sample_weights, spec))
    return checked_embedding_bag(weight, indices, offsets, per_sample_weights, spec)


def checked_embedding_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """:func:`embedding_bag` for a call :func:`unsupported_bag` has already accepted
    (the functional layer asks it first): the same result, without asking twice.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> spec = BagSpec("max", 2, 2, False, None, None, 2.0, False, False)
        >>> w = mx.array([[1.0, 4.0], [3.0, 2.0]])
        >>> checked_embedding_bag(w, mx.array([0, 1, 1, 1]), None, None, spec).tolist()
        [[3.0, 4.0], [3.0, 2.0]]
        >>> emulator.reset()
    """
    if offsets is not None and offsets.ndim != 1:
        offsets = offsets.reshape(-1)
    run = bag_runner(spec, weight, indices, offsets, per_sample_weights)
    return run(weight, indices, offsets, per_sample_weights)


def bag_runner(spec: BagSpec, weight, indices, offsets, per_sample_weights):
    """:func:`checked_embedding_bag` for the signature of these arguments (shapes and
    dtypes; their values are not read), with what it decides from the signature alone
    done once: ``run(weight, indices, offsets, psw)``. The indices and weights may be flat
    or keep the input's shape. The call plans of the functional layer use it for a
    signature :func:`unsupported_bag` has accepted.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> spec, idx = BagSpec("sum", 2, 2, False, None, None, 2.0, False, False), mx.array([[0, 1], [2, 2]])
        >>> run = bag_runner(spec, mx.eye(3), idx, None, None)
        >>> run(mx.eye(3), idx, None, None).tolist()
        [[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
        >>> emulator.reset()
    """
    if spec.num_bags == 0:
        return lambda weight, indices, offsets, psw: mx.zeros((0, weight.shape[1]), dtype=weight.dtype)
    V, D = weight.shape
    fn = _bag_function(
        spec,
        True,
        V,
        D,
        weight.dtype,
        indices.dtype,
        None if offsets is None else offsets.dtype,
        None if per_sample_weights is None else per_sample_weights.dtype,
    )

    # Only the arguments the function takes (see _bag_function).
    if offsets is None:
        if per_sample_weights is None:
            return lambda weight, indices, offsets, psw: fn(weight, indices)[0]
        return lambda weight, indices, offsets, psw: fn(weight, indices, psw)[0]
    if per_sample_weights is None:
        return lambda weight, indices, offsets, psw: fn(weight, indices, offsets)[0]
    return lambda weight, indices, offsets, psw: fn(weight, indices, offsets, psw)[0]


def embedding(weight, indices, spec: EmbSpec):
    """Metal ``embedding`` on a normalised call: ``indices.shape + (D,)``.

    Each position is a bag of one: the forward ignores ``padding_idx`` (the
    stored row comes back, as ``F.embedding``), the backward masks it.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> embedding(mx.eye(3), mx.array([[2], [0]]), EmbSpec(0, None, 2.0, False, False)).tolist()
        [[[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]]
        >>> emulator.reset()
    """
    _assert_supported(unsupported_embedding(weight, indices, spec))
    return checked_embedding(weight, indices, spec)


def checked_embedding(weight, indices, spec: EmbSpec):
    """:func:`embedding` for a call :func:`unsupported_embedding` has already accepted.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> checked_embedding(mx.eye(2), mx.array([1]), EmbSpec(None, None, 2.0, False, False)).tolist()
        [[0.0, 1.0]]
        >>> emulator.reset()
    """
    return embedding_runner(spec, weight, indices)(weight, indices)


def embedding_runner(spec: EmbSpec, weight, indices):
    """:func:`checked_embedding` for the signature of these arguments (the indices' shape
    and dtype, the table's shape and dtype): ``run(weight, indices)``, what the signature
    decides done once. The functional layer's call plans use it.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> emulator.enable()
        >>> idx = mx.array([[1], [0]])
        >>> run = embedding_runner(EmbSpec(None, None, 2.0, False, False), mx.eye(2), idx)
        >>> run(mx.eye(2), idx).tolist()
        [[[0.0, 1.0]], [[1.0, 0.0]]]
        >>> emulator.reset()
    """
    V, D = weight.shape
    n = indices.size
    shape = (*indices.shape, D)
    if n == 0:
        return lambda weight, indices: mx.zeros(shape, dtype=weight.dtype)
    fn = _bag_function(_embedding_spec(spec, n), False, V, D, weight.dtype, indices.dtype, None, None)
    if indices.ndim == 1:
        return lambda weight, indices: fn(weight, indices)[0]
    return lambda weight, indices: fn(weight, indices)[0].reshape(shape)


@functools.lru_cache(maxsize=256)
def _embedding_spec(spec: EmbSpec, n: int) -> BagSpec:
    """``embedding`` as bags: each of the n positions a "sum" bag of one."""
    return BagSpec(
        "sum",
        n,
        1,
        False,
        spec.padding_idx,
        spec.max_norm,
        spec.norm_type,
        spec.scale_grad_by_freq,
        spec.deterministic,
    )
