"""The Metal backend: ``embedding_bag`` / ``embedding`` as ``mx.custom_function``s over the kernels.

Same interface and semantics as ``reference.py`` (see ``_spec.py``): the
functional layer calls :func:`embedding_bag` / :func:`embedding` when the
backend resolves to ``"metal"``, and :func:`unsupported_bag` /
:func:`unsupported_embedding` (dtype and size checks only, no host sync) to let
``"auto"`` fall back to the reference path and ``"metal"`` raise.

Layout of one call. 2-D input becomes offsets ``arange(B) * L`` and
``embedding`` becomes one bag per position, so a single forward kernel
(``bag_fwd``) serves every case; it also writes the per-bag count (or -1 for
a poisoned bag) and, in max mode, the arg-max row per (bag, column), which the
VJP reuses. ``max_norm`` adds one kernel computing each position's rescaling
factor (``row_scale``). The weight gradient is either atomic (``bag_bwd``,
``max_bwd``) or, with ``deterministic=True``, sorted by row (MLX ``argsort``)
and reduced in a fixed order (``bag_owner``, ``det_partial``, ``det_write``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import numpy as np

from . import kernels
from ._layout import in_range, offsets_int64
from ._spec import BagSpec, EmbSpec

_F32 = mx.float32
_FLOATS = (mx.float32, mx.float16, mx.bfloat16)
_I32_MAX = 2**31 - 1
TG_THREADS = 256          # bag_fwd's threadgroup memory is sized for this many threads
DET_WINDOW = 32           # sorted entries per thread in the deterministic backward
# Long bags are split over several threadgroups (then combined by bag_combine)
# when the launch would have fewer than FILL_THREADS threads; each split then
# gives every thread about SPLIT_POSITIONS positions.
FILL_THREADS = 16384
SPLIT_POSITIONS = 16
MAX_SPLITS = 1024

FLAG_MEAN, FLAG_PSW, FLAG_SCALE, FLAG_FREQ = 1, 2, 4, 8


# ----------------------------------------------------------------- capability


def _limit_reason(weight, n, num_bags):
    """Why the kernels cannot take this call (a message), or None when they can."""
    V, D = weight.shape
    if weight.dtype not in _FLOATS:
        return f"the kernels take float32, float16 or bfloat16 tables, got {weight.dtype}."
    # Positions, arg-max rows and (bag, column) entries are int32 in the kernels
    # and grid entries are 32-bit; the table itself is addressed in 64 bits, so
    # V * D is not limited. MLX shapes are 32-bit too, so only the bag x column
    # limit can be reached from a valid call.
    for value, what in ((V, "num_embeddings"), (n, "the number of indices"),
                        (num_bags * max(D, 1), f"bags x columns ({num_bags} * {D})")):
        if value > _I32_MAX:
            return f"{what} = {value} is past the kernels' 32-bit limit of 2**31 - 1."
    return None


def unsupported_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """Why the kernels cannot run this ``embedding_bag`` call, or None (host-free)."""
    if per_sample_weights is not None and not mx.issubdtype(per_sample_weights.dtype, mx.floating):
        return f"per_sample_weights must be floating point, got {per_sample_weights.dtype}."
    return _limit_reason(weight, indices.size, spec.num_bags)


def unsupported_embedding(weight, indices, spec: EmbSpec):
    """Why the kernels cannot run this ``embedding`` call, or None (host-free)."""
    return _limit_reason(weight, indices.size, indices.size)


def _assert_supported(reason):
    # The functional layer checks first; this guards direct calls of the entry points.
    if reason is not None:
        raise ValueError(f"backend='metal' cannot run this call: {reason}")


# ------------------------------------------------------------------- helpers


def _index_array(x):
    """int32 and int64 are read as they are; other integer dtypes as int64."""
    return x if x.dtype in (mx.int32, mx.int64) else x.astype(mx.int64)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _bag_geometry(D: int, N: int, B: int):
    """(vec, cols_threads, threadgroup) for the bag-parallel kernels."""
    vec = D % 4 == 0
    nxt = max(1, -(-D // (4 if vec else 1)))
    tx = min(_pow2_at_least(nxt), 64)
    # Split long bags over TY threads (at least ~8 positions each).
    ty = max(1, min(TG_THREADS // tx, _pow2_at_least(-(-N // max(B, 1)) // 8)))
    # Small D and short bags: pack several bags into one threadgroup so that a
    # SIMD-group is not mostly idle lanes.
    tz = max(1, 32 // (tx * ty))
    return vec, nxt, (tx, ty, tz)


def _splits(N: int, B: int, tg) -> int:
    """How many threadgroups share one bag in the forward (1: no second reduction step)."""
    threads = B * tg[0] * tg[1]  # per bag, whatever the packing along z
    if threads >= FILL_THREADS:
        return 1
    per_split = tg[1] * SPLIT_POSITIONS
    s = min(-(-(N // max(B, 1)) // per_split), -(-FILL_THREADS // threads), MAX_SPLITS)
    return max(1, s) if B * s < 2**31 else 1


def _params(*vals):
    vals = list(vals) + [0] * (8 - len(vals))
    return mx.array(vals, dtype=mx.int64)


def _scalar_dummy(dtype):
    return mx.zeros((kernels.MIN_DEVICE_SIZE,), dtype=dtype)


@dataclass(frozen=True)
class _Cfg:
    """The static options of one custom function (hashable, for the lru cache)."""

    mode: str
    pad_fwd: int          # padding row excluded from the forward, or -1
    pad_bwd: int          # padding row excluded from the gradients, or -1
    max_norm: Optional[float]
    norm_type: float
    scale_grad_by_freq: bool
    deterministic: bool


def _two_floats(x: float):
    """``x`` as float32 ``(hi, lo)`` with ``hi + lo`` = x to about 48 bits (double-float)."""
    hi = float(np.float32(x))
    return hi, float(np.float32(x - hi))


def _row_scale(weight, idx, N, cfg):
    V, D = weight.shape
    # PyTorch compares the norm with max_norm and divides in double; the kernel
    # does the same in double-float arithmetic (see row_scale.metal).
    fparams = [*_two_floats(cfg.max_norm), *_two_floats(1e-7), cfg.norm_type, 0.0, 0.0, 0.0]
    return kernels.call(
        "row_scale",
        [weight, idx, _params(N, V, D), mx.array(fparams, dtype=_F32)],
        template=[("T", weight.dtype)],
        grid=(32, N, 1), threadgroup=(32, 8, 1),
        output_shapes=[(N,)], output_dtypes=[_F32],
    )[0]


def position_scales(weight, indices, max_norm, norm_type):
    """Each position's ``max_norm`` factor, from the same kernel as the forward's (float32 (N,))."""
    idx = _index_array(indices.reshape(-1))
    cfg = _cfg("sum", None, None, max_norm, norm_type, False, False)
    return _row_scale(weight, idx, idx.size, cfg)


def _freq(idx, V):
    ok = in_range(idx, V)
    safe = mx.where(ok, idx, 0)
    return mx.zeros((V,), dtype=_F32).at[safe].add(ok.astype(_F32))


def _deterministic_scatter(key, srcrow, coef, src, rows_out, out_shape=None):
    """``grad[key[e]] += src[srcrow[e]] * coef[e]`` in a fixed order (no atomics).

    Entries with ``srcrow < 0`` send nothing; ``key`` must lie in
    ``[0, rows_out)`` for every entry (callers map unused entries to row 0).
    The gradient is ``(rows_out, DV)`` unless ``out_shape`` names another
    shape of the same contiguous memory: max mode scatters flat
    ``row * D + column`` keys into a ``(V, D)`` gradient, as MLX shapes are
    32-bit and ``V * D`` need not be.
    """
    M = key.size
    DV = src.shape[-1]
    order = mx.argsort(key).astype(mx.int32)
    skey = mx.take(key, order)
    W = -(-M // DET_WINDOW)
    p = _params(M, rows_out, DV, DET_WINDOW)
    tx = min(_pow2_at_least(DV), 64)
    tg = (tx, max(1, 64 // tx), 1)
    tmpl = []
    part = kernels.call(
        "det_partial", [skey, order, srcrow, coef, src, p], template=tmpl,
        grid=(DV, W, 1), threadgroup=tg, output_shapes=[(W, DV)], output_dtypes=[_F32],
    )[0]
    return kernels.call(
        "det_write", [skey, order, srcrow, coef, src, part, p], template=tmpl,
        grid=(DV, W, 1), threadgroup=tg, output_shapes=[out_shape or (rows_out, DV)], output_dtypes=[_F32],
        init_value=0.0,
    )[0]


# ----------------------------------------------------------------- the core op


@functools.lru_cache(maxsize=None)
def _bag_function(cfg: _Cfg):
    """A custom_function over normalised arrays for one static configuration.

    Arguments: weight (V, D), psw (N,) or None, idx (N,) int32/int64,
    off (NOFF,) int64, prevmax (B,) int64. Outputs: out (B, D), argmax, meta,
    scale (the last three for the VJP).
    """

    def flags(psw_present):
        f = FLAG_MEAN if cfg.mode == "mean" else 0
        f |= FLAG_PSW if psw_present else 0
        f |= FLAG_SCALE if cfg.max_norm is not None else 0
        return f

    @mx.custom_function
    def bag(weight, psw, idx, off, prevmax):
        V, D = weight.shape
        N, B, noff = idx.size, prevmax.size, off.size
        vec, nxt, tg = _bag_geometry(D, N, B)
        scale = _row_scale(weight, idx, N, cfg) if cfg.max_norm is not None and N else _scalar_dummy(_F32)
        psw_t = _scalar_dummy(weight.dtype) if psw is None else psw.astype(weight.dtype)
        is_max = cfg.mode == "max"
        S = _splits(N, B, tg) if D else 1
        fl = flags(psw is not None)
        out_dt = weight.dtype if S == 1 else _F32
        out, argmax, meta = kernels.call(
            "bag_fwd", [weight, idx, off, prevmax, psw_t, scale,
                        _params(N, V, D, noff, cfg.pad_fwd, fl & ~FLAG_MEAN if S > 1 else fl, B, S)],
            template=[("T", weight.dtype), ("O", out_dt), ("VEC", vec), ("MAXMODE", is_max)],
            grid=(nxt, tg[1], B * S), threadgroup=tg,
            output_shapes=[(B * S, D), (B * S, D) if is_max else (1,), (B * S,)],
            output_dtypes=[out_dt, mx.int32, mx.int32],
        )
        if S > 1:
            out, argmax, meta = kernels.call(
                "bag_combine", [out, argmax, meta, _params(N, V, D, noff, cfg.pad_fwd, fl, B, S)],
                template=[("T", weight.dtype), ("MAXMODE", is_max)],
                grid=(D, B, 1), threadgroup=(min(_pow2_at_least(D), 256), 1, 1),
                output_shapes=[(B, D), (B, D) if is_max else (1,), (B,)],
                output_dtypes=[weight.dtype, mx.int32, mx.int32],
            )
        return out, argmax, meta, scale

    @bag.vjp
    def bag_vjp(primals, cotangents, outputs):
        weight, psw, idx, off, prevmax = primals
        _, argmax, meta, scale = outputs
        V, D = weight.shape
        N, B, noff = idx.size, prevmax.size, off.size
        cot = cotangents[0].astype(_F32)
        zeros = (mx.zeros_like(idx), mx.zeros_like(off), mx.zeros_like(prevmax))
        if N == 0 or D == 0:
            dpsw = None if psw is None else mx.zeros_like(psw)
            return (mx.zeros_like(weight), dpsw) + zeros
        vec, nxt, tg = _bag_geometry(D, N, B)
        psw_t = _scalar_dummy(weight.dtype) if psw is None else psw.astype(weight.dtype)
        f = flags(psw is not None)
        freq = _scalar_dummy(_F32)
        if cfg.scale_grad_by_freq:
            freq, f = _freq(idx, V), f | FLAG_FREQ
        p = _params(N, V, D, noff, cfg.pad_bwd, f, B)

        if cfg.mode == "max":
            if cfg.deterministic:
                e = mx.arange(B * D, dtype=mx.int32)
                hit = argmax.reshape(-1) >= 0
                kdt = mx.int32 if V * D <= _I32_MAX else mx.int64
                key = mx.where(hit, argmax.reshape(-1).astype(kdt) * D + (e % D).astype(kdt), 0)
                srcrow = mx.where(hit, e, -1)
                dw = _deterministic_scatter(key, srcrow, mx.ones((B * D,), _F32), cot.reshape(-1, 1),
                                            V * D, out_shape=(V, D))
            else:
                dw = kernels.call(
                    "max_bwd", [cot, argmax, p], template=[],
                    grid=(D, B, 1), threadgroup=(min(_pow2_at_least(D), 256), 1, 1),
                    output_shapes=[(V, D)], output_dtypes=[_F32], init_value=0.0,
                )[0]
        else:
            g = cot / mx.maximum(meta, 1).astype(_F32)[:, None] if cfg.mode == "mean" else cot
            if cfg.deterministic:
                owner, coef = kernels.call(
                    "bag_owner", [idx, off, meta, psw_t, freq, p],
                    template=[],
                    grid=(tg[0] * tg[1], B, 1), threadgroup=(tg[0] * tg[1], 1, 1),
                    output_shapes=[(N,), (N,)], output_dtypes=[mx.int32, _F32], init_value=-1.0,
                )
                key = mx.where(owner >= 0, idx, 0)
                dw = _deterministic_scatter(key, owner, coef, g, V)
            else:
                dw = kernels.call(
                    "bag_bwd", [g, idx, off, meta, psw_t, freq, p],
                    template=[("VEC", vec)],
                    grid=(nxt, tg[1], B), threadgroup=tg,
                    output_shapes=[(V, D)], output_dtypes=[_F32], init_value=0.0,
                )[0]
        dpsw = None
        if psw is not None:
            ty = max(1, min(8, tg[1]))
            dpsw = kernels.call(
                "psw_grad", [cot, weight, idx, off, meta, scale, p],
                template=[("T", weight.dtype)],
                grid=(32, ty, B), threadgroup=(32, ty, 1),
                output_shapes=[(N,)], output_dtypes=[_F32], init_value=0.0,
            )[0].astype(psw.dtype)
        return (dw.astype(weight.dtype), dpsw) + zeros

    return bag


def _cfg(mode, pad_fwd, pad_bwd, max_norm, norm_type, scale_grad_by_freq, deterministic):
    return _Cfg(mode=mode, pad_fwd=-1 if pad_fwd is None else int(pad_fwd),
                 pad_bwd=-1 if pad_bwd is None else int(pad_bwd),
                 max_norm=None if max_norm is None else float(max_norm), norm_type=float(norm_type),
                 scale_grad_by_freq=bool(scale_grad_by_freq), deterministic=bool(deterministic))


def embedding_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """Metal ``embedding_bag`` on a normalised call (see ``_spec.py``); ``(B, D)``."""
    _assert_supported(unsupported_bag(weight, indices, offsets, per_sample_weights, spec))
    D = weight.shape[1]
    B = spec.num_bags
    if B == 0:
        return mx.zeros((0, D), dtype=weight.dtype)
    idx = _index_array(indices.reshape(-1))
    if offsets is None:
        off = mx.arange(B, dtype=mx.int64) * spec.bag_size
    else:
        off = offsets_int64(offsets.reshape(-1), idx.size)
    # prevmax[b] = max(offsets[:b]); bag 0 compares with itself.
    prevmax = mx.concatenate([off[:1], mx.cummax(off[:B])[: B - 1]])
    cfg = _cfg(spec.mode, spec.padding_idx, spec.padding_idx, spec.max_norm, spec.norm_type,
               spec.scale_grad_by_freq, spec.deterministic)
    return _bag_function(cfg)(weight, per_sample_weights, idx, off, prevmax)[0]


def embedding(weight, indices, spec: EmbSpec):
    """Metal ``embedding`` on a normalised call: ``indices.shape + (D,)``.

    Each position is a bag of one: the forward ignores ``padding_idx`` (the
    stored row comes back, as ``F.embedding``), the backward masks it.
    """
    _assert_supported(unsupported_embedding(weight, indices, spec))
    D = weight.shape[1]
    n = indices.size
    if n == 0:
        return mx.zeros((*indices.shape, D), dtype=weight.dtype)
    idx = _index_array(indices.reshape(-1))
    off = mx.arange(n, dtype=mx.int64)
    cfg = _cfg("sum", None, spec.padding_idx, spec.max_norm, spec.norm_type,
               spec.scale_grad_by_freq, spec.deterministic)
    out = _bag_function(cfg)(weight, None, idx, off, off)[0]
    return out.reshape(*indices.shape, D)
