"""One launcher per kernel: the launch geometry and the ``kernels.call`` of each ``metal/*.metal``.

Each launcher's grid and threadgroup are the ones the kernel's header comment
states (``Grid (...); threadgroup (...)``; ``tests/test_launchers.py`` holds
them to it). Sizes, flags and the padding row travel in the ``params`` input,
built from the slot names of ``metal/embag_common.h`` (``_embag_common``).
The custom functions of ``metal_ops`` compose these launchers.

Example:
    >>> from mlx_embag import launchers
    >>> launchers.bag_geometry(D=6, N=40, B=4)  # (VEC, threads along x, threadgroup)
    (False, 6, (8, 1, 4))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import mlx.core as mx
import numpy as np

from . import _embag_common as common
from . import kernels

_F32 = mx.float32
# Sorted entries per window in the deterministic backward (det_partial, det_write):
# a hot row costs each thread at most this many entries plus one add per window.
WINDOW = 32
# Long bags are split over several threadgroups (then combined by bag_combine)
# when the launch would have fewer than FILL_THREADS threads; each split then
# gives every thread about SPLIT_POSITIONS positions.
FILL_THREADS = 16384
SPLIT_POSITIONS = 16
MAX_SPLITS = 1024
# bag_bwd gives a thread 4 columns only from this D on: its 4 atomic instructions each
# cover D / 4 consecutive floats, whole sectors from D = 32; below, one column per thread
# puts a row's D floats into one instruction (fewer sectors touched).
ATOMIC_VEC_MIN_D = 32


@dataclass(frozen=True, eq=False)  # holds arrays: identity, not element-wise, comparison
class Bags:
    """One call's bags as the bag kernels read them.

    ``psw`` is the per-position weights in the table's dtype, or
    :func:`kernels.absent` when the flags say no kernel reads them; ``pad``
    is the padding row this pass skips, or -1.
    """

    idx: mx.array  # (N,) int32 or int64
    off: mx.array  # (NOFF,) int64
    psw: mx.array
    V: int
    D: int
    B: int
    pad: int
    flags: int

    @property
    def N(self) -> int:
        return self.idx.size

    def params(self, **override) -> mx.array:
        slots = dict(
            N=self.N, V=self.V, D=self.D, NOFF=self.off.size, PAD=self.pad, FLAGS=self.flags, B=self.B
        )
        return common.params(**{**slots, **override})


def pow2_at_least(n: int) -> int:
    """The smallest power of two that is at least ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _row_threads(D: int) -> tuple:
    """Threadgroup of the one-thread-per-(bag, column) kernels (bag_combine, max_bwd)."""
    return (min(pow2_at_least(D), common.TG_MAX), 1, 1)


def bag_geometry(D: int, N: int, B: int, vector: bool = True, wide: bool = False):
    """``(vec, threads along x, threadgroup)`` of the bag-parallel kernels (bag_fwd, bag_bwd);
    ``vector=False`` keeps one column per thread, ``wide=True`` (bag_fwd's 2-byte tables with
    D % 8 == 0) gives each thread 8 columns instead of 4."""
    vec = vector and D % 4 == 0
    nxt = max(1, -(-D // ((8 if wide else 4) if vec else 1)))
    tx = min(pow2_at_least(nxt), 64)
    # Split long bags over TY threads (at least ~8 positions each).
    ty = max(1, min(common.TG_MAX // tx, pow2_at_least(-(-N // max(B, 1)) // 8)))
    # Small D and short bags: pack several bags into one threadgroup so that a
    # SIMD-group is not mostly idle lanes.
    tz = max(1, 32 // (tx * ty))
    return vec, nxt, (tx, ty, tz)


def splits(N: int, B: int, tg) -> int:
    """How many threadgroups share one bag in the forward (1: no second reduction step)."""
    threads = B * tg[0] * tg[1]  # per bag, whatever the packing along z
    if threads >= FILL_THREADS:
        return 1
    per_split = tg[1] * SPLIT_POSITIONS
    s = min(-(-(N // max(B, 1)) // per_split), -(-FILL_THREADS // threads), MAX_SPLITS)
    return max(1, s) if B * s < 2**31 else 1


def _two_floats(x: float):
    """``x`` as float32 ``(hi, lo)`` with ``hi + lo`` = x to about 48 bits (double-float)."""
    hi = float(np.float32(x))
    return hi, float(np.float32(x - hi))


def _row_scale_launch(N, V, D, dtype, max_norm: float, norm_type: float):
    """``row_scale``'s launch and its constant inputs ``(params, fparams)``."""
    # PyTorch compares the norm with max_norm and divides in double; the kernel
    # does the same in double-float arithmetic (see row_scale.metal).
    (m_hi, m_lo), (e_hi, e_lo) = _two_floats(max_norm), _two_floats(1e-7)
    fparams = common.fparams(
        MAX_NORM_HI=m_hi, MAX_NORM_LO=m_lo, EPS_HI=e_hi, EPS_LO=e_lo, NORM_TYPE=norm_type
    )
    launch = kernels.launch(
        "row_scale",
        template=[("T", dtype)],
        grid=(32, N, 1),
        threadgroup=(32, 8, 1),
        output_shapes=[(N,)],
        output_dtypes=[_F32],
        # fparams has 5 slots: kernels.call pads it on every launch.
    )
    return launch, (common.params(N=N, V=V, D=D), fparams)


def row_scale(weight, idx, max_norm: float, norm_type: float):
    """Each position's ``max_norm`` factor: float32 (N,)."""
    V, D = weight.shape
    launch, (p, fparams) = _row_scale_launch(idx.size, V, D, weight.dtype, max_norm, norm_type)
    return launch([weight, idx, p, fparams])[0]


def tuning() -> tuple:
    """The split constants a forward's geometry depends on (tests change them): a cached
    :class:`Forward` is valid while they are unchanged."""
    return FILL_THREADS, SPLIT_POSITIONS, MAX_SPLITS  # metal_ops reads the three inline


@dataclass(frozen=True, eq=False)
class Forward:
    """Everything about one forward (``bag_fwd``, then ``bag_combine`` when its bags are
    split) that its sizes and options decide, built once: geometry, ``params`` arrays,
    template lists. :func:`forward` builds one; ``metal_ops`` keeps one per call shape and
    runs ``main([weight, idx, off, prevmax, psw, scale, params])``, then, unless ``combine``
    is None, ``combine([out, argmax, meta, combine_params])`` on its outputs.

    ``S`` is the number of threadgroups per bag; ``combine`` is None when ``S == 1``.
    ``scale`` is the ``row_scale`` launch of a call with ``max_norm`` (else None), with
    its two constant inputs ``scale_inputs``.
    """

    tuning: tuple
    S: int
    params: mx.array
    main: Callable
    combine: Optional[Callable]
    combine_params: Optional[mx.array]
    scale: Optional[Callable]
    scale_inputs: tuple


def forward(N, V, D, B, noff, pad, flags, dtype, max_mode, max_norm=None, norm_type=2.0) -> Forward:
    """The :class:`Forward` of bags of these sizes and options (``noff``: the offsets' length,
    also the running maximum's; ``max_norm``: adds the ``row_scale`` launch)."""
    # 2-byte tables read 8 columns per thread (one 16-byte load), so a SIMD-group covers
    # twice the row and the per-SIMD-group loads (params, bounds, index) are paid half as
    # often; not in max mode (8 int32 arg-max rows per thread would take two half-used
    # stores) nor with splits (8 float32 partials likewise).
    wide = dtype.size == 2 and D % 8 == 0 and D > 0 and not max_mode
    vec, nxt, tg = bag_geometry(D, N, B, wide=wide)
    S = splits(N, B, tg) if D else 1
    if wide and S > 1:
        wide = False
        vec, nxt, tg = bag_geometry(D, N, B)
        S = splits(N, B, tg)
    cpt = (8 if wide else 4) if vec else 1
    out_dt = dtype if S == 1 else _F32
    # Partials stay sums: bag_combine divides by the whole bag's count.
    p = common.params(
        N=N, V=V, D=D, NOFF=noff, PAD=pad, FLAGS=flags & ~common.FLAG_MEAN if S > 1 else flags, B=B, S=S
    )
    # Whether an input may have fewer than 8 elements (kernels.device_input pads it then):
    # psw and scale have N or 8, the running maximum noff or B.
    small = min(V * D, N, noff, B) < kernels.MIN_DEVICE_SIZE
    main = kernels.launch(
        "bag_fwd",
        template=(("T", dtype), ("O", out_dt), ("CPT", cpt), ("MAXMODE", max_mode)),
        grid=(nxt, tg[1], B * S),
        threadgroup=tg,
        output_shapes=((B * S, D), (B * S, D) if max_mode else (1,), (B * S,)),
        output_dtypes=(out_dt, mx.int32, mx.int32),
        small=small,
    )
    combine = cparams = None
    if S > 1:
        cparams = common.params(N=N, V=V, D=D, NOFF=noff, PAD=pad, FLAGS=flags, B=B, S=S)
        combine = kernels.launch(
            "bag_combine",
            template=(("T", dtype), ("MAXMODE", max_mode)),
            grid=(D, B, 1),
            threadgroup=_row_threads(D),
            output_shapes=((B, D), (B, D) if max_mode else (1,), (B,)),
            output_dtypes=(dtype, mx.int32, mx.int32),
        )
    scale, scale_inputs = None, ()
    if max_norm is not None:
        scale, scale_inputs = _row_scale_launch(N, V, D, dtype, max_norm, norm_type)
    return Forward(tuning(), S, p, main, combine, cparams, scale, scale_inputs)


def _forward_of(bags: Bags, dtype, max_mode: bool) -> Forward:
    return forward(bags.N, bags.V, bags.D, bags.B, bags.off.size, bags.pad, bags.flags, dtype, max_mode)


def bag_fwd(bags: Bags, weight, prevmax, scale, max_mode: bool):
    """``(out, argmax, meta, S)``: final results when ``S == 1``, else float32 partials for
    :func:`bag_combine`. The launch of :func:`forward`, for callers holding a :class:`Bags`."""
    f = _forward_of(bags, weight.dtype, max_mode)
    out, argmax, meta = f.main([weight, bags.idx, bags.off, prevmax, bags.psw, scale, f.params])
    return out, argmax, meta, f.S


def bag_combine(bags: Bags, part, pargmax, pmeta, dtype, max_mode: bool):
    """``(out, argmax, meta)`` of bags split over threadgroups, from :func:`bag_fwd`'s partials
    (the combine launch of :func:`forward`; ``dtype`` is the table's)."""
    f = _forward_of(bags, dtype, max_mode)
    return f.combine([part, pargmax, pmeta, f.combine_params])


def bag_bwd(bags: Bags, g, meta, freq):
    """The atomic weight gradient of sum / mean: float32 (V, D); ``g`` (B, D) is already divided for mean."""
    vec, nxt, tg = bag_geometry(bags.D, bags.N, bags.B, vector=bags.D >= ATOMIC_VEC_MIN_D)
    return kernels.call(
        "bag_bwd",
        [g, bags.idx, bags.off, meta, bags.psw, freq, bags.params()],
        template=[("VEC", vec)],
        grid=(nxt, tg[1], bags.B),
        threadgroup=tg,
        output_shapes=[(bags.V, bags.D)],
        output_dtypes=[_F32],
        init_value=0.0,
    )[0]


def max_bwd(cot, argmax, V: int):
    """The atomic weight gradient of max mode: float32 (V, D), each (bag, column) to its arg-max row."""
    B, D = cot.shape
    return kernels.call(
        "max_bwd",
        [cot, argmax, common.params(D=D)],
        template=[],
        grid=(D, B, 1),
        threadgroup=_row_threads(D),
        output_shapes=[(V, D)],
        output_dtypes=[_F32],
        init_value=0.0,
    )[0]


def psw_grad(bags: Bags, cot, weight, meta, scale):
    """The gradient to per_sample_weights: float32 (N,)."""
    _, _, tg = bag_geometry(bags.D, bags.N, bags.B)
    ty = max(1, min(8, tg[1]))
    return kernels.call(
        "psw_grad",
        [cot, weight, bags.idx, bags.off, meta, scale, bags.params()],
        template=[("T", weight.dtype)],
        grid=(32, ty, bags.B),
        threadgroup=(32, ty, 1),
        output_shapes=[(bags.N,)],
        output_dtypes=[_F32],
        init_value=0.0,
    )[0]


def bag_owner(bags: Bags, meta, freq):
    """``(owner, coef)``: each position's bag (-1: none) and gradient coefficient, int32 and float32 (N,)."""
    _, _, tg = bag_geometry(bags.D, bags.N, bags.B)
    tx = tg[0] * tg[1]
    return kernels.call(
        "bag_owner",
        [bags.idx, bags.off, meta, bags.psw, freq, bags.params()],
        template=[],
        grid=(tx, bags.B, 1),
        threadgroup=(tx, 1, 1),
        output_shapes=[(bags.N,), (bags.N,)],
        output_dtypes=[mx.int32, _F32],
        init_value=-1.0,
    )


def sorted_scatter(key, srcrow, coef, src, rows_out: int, out_shape=None):
    """``grad[key[e]] += src[srcrow[e]] * coef[e]`` in a fixed order (det_partial, then det_write).

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
    W = -(-M // WINDOW)
    p = common.params(M=M, R=rows_out, DV=DV, WINDOW=WINDOW)
    tx = min(pow2_at_least(DV), 64)
    tg = (tx, max(1, 64 // tx), 1)
    part = kernels.call(
        "det_partial",
        [skey, order, srcrow, coef, src, p],
        template=[],
        grid=(DV, W, 1),
        threadgroup=tg,
        output_shapes=[(W, DV)],
        output_dtypes=[_F32],
    )[0]
    return kernels.call(
        "det_write",
        [skey, order, srcrow, coef, src, part, p],
        template=[],
        grid=(DV, W, 1),
        threadgroup=tg,
        output_shapes=[out_shape or (rows_out, DV)],
        output_dtypes=[_F32],
        init_value=0.0,
    )[0]
