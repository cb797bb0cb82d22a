"""What is timed: the workload of one measurement and its random inputs.

Example:
    >>> from mlx_embag.bench.workloads import Case, make_inputs
    >>> make_inputs(Case(V=100, D=8, B=4, L=3, layout="2d", mode="sum")).idx2d.shape
    (4, 3)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import mlx.core as mx
import numpy as np

# The two passes timed per case, in the order contenders return them.
PASSES = ("fwd", "fwd+bwd")
# "2d": a (B, L) index array; "1d": flat indices with offsets, bags of varying length.
LAYOUTS = ("2d", "1d")
# 1-D inputs come in this many draws of the bag lengths, so N changes from one call to the
# next, as in training (a cache or a compiled graph keyed on N would miss every call).
VARIANTS = 4


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload: table ``(V, D)`` of ``dtype``, ``B`` bags of mean length ``L``.

    Frozen, so a case can key the results measured on it.

    Example:
        >>> Case(V=1000, D=16, B=4, L=2, layout="1d", mode="max").dtype
        'float32'
    """

    V: int
    D: int
    B: int
    L: int
    layout: str
    mode: str
    dtype: str = "float32"


@dataclasses.dataclass
class Inputs:
    """The arrays of one :class:`Case`, in MLX and (for PyTorch) in NumPy.

    Example:
        >>> inp = make_inputs(Case(V=10, D=4, B=2, L=3, layout="1d", mode="sum"), seed=1)
        >>> inp.offsets.shape, inp.idx2d is None, inp.N == inp.np_flat.size
        ((2,), True, True)
    """

    weight: mx.array  # (V, D)
    flat: mx.array  # (N,) int32, the indices of every bag in order
    idx2d: Optional[mx.array]  # (B, L) for the 2-D layout, else None
    offsets: Optional[mx.array]  # (B,) for the 1-D layout, else None
    cot: mx.array  # (B, D) output cotangent for the backward
    np_flat: np.ndarray
    np_offsets: Optional[np.ndarray]
    np_weight: np.ndarray
    np_cot: np.ndarray
    # 1-D: (flat, offsets) of every draw of the bag lengths, the first being (flat, offsets);
    # 2-D: that pair alone.
    variants: tuple = ()
    # 1-D: (B, L) index arrays of the same table and L, one per draw, so that the 2-D call
    # the 1-D one answers to reads other rows from call to call too (not rows left in cache).
    grids: tuple = ()

    @property
    def N(self):
        """Number of indices over all bags."""
        return self.flat.size

    def cycle(self):
        """A function returning the next ``(flat, offsets)`` of :attr:`variants` at each call.

        Example:
            >>> inp = make_inputs(Case(V=10, D=4, B=3, L=4, layout="1d", mode="sum"))
            >>> nxt = inp.cycle()
            >>> [nxt()[0].size for _ in range(5)] == [v[0].size for v in inp.variants + inp.variants[:1]]
            True
        """
        variants = self.variants or ((self.flat, self.offsets),)
        state = [-1]

        def nxt():
            state[0] = (state[0] + 1) % len(variants)
            return variants[state[0]]

        return nxt


def make_inputs(case: Case, seed: int = 0) -> Inputs:
    """Uniformly random rows; 1-D bags have lengths uniform in ``[1, 2L-1]``.

    Every array is evaluated before returning, so timing starts from data at rest.

    Example:
        >>> inp = make_inputs(Case(V=10, D=4, B=3, L=2, layout="2d", mode="sum"))
        >>> inp.weight.shape, inp.N, inp.offsets is None
        ((10, 4), 6, True)
    """
    rng = np.random.default_rng(seed)
    dtype = getattr(mx, case.dtype)
    w_np = rng.standard_normal((case.V, case.D), dtype=np.float32)
    if case.layout == "2d":
        lengths = np.full(case.B, case.L)
    else:
        lengths = rng.integers(1, 2 * case.L, size=case.B) if case.L > 1 else np.ones(case.B, int)
    n = int(lengths.sum())
    flat_np = rng.integers(0, case.V, size=n).astype(np.int32)
    off_np = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    cot_np = rng.standard_normal((case.B, case.D), dtype=np.float32)
    weight = mx.array(w_np).astype(dtype)
    flat = mx.array(flat_np)
    idx2d = flat.reshape(case.B, case.L) if case.layout == "2d" else None
    offsets = mx.array(off_np) if case.layout == "1d" else None
    cot = mx.array(cot_np).astype(dtype)
    variants, grids = ((flat, offsets),), ()
    if case.layout == "1d":
        for _ in range(VARIANTS - 1):
            lens = rng.integers(1, 2 * case.L, size=case.B) if case.L > 1 else np.ones(case.B, int)
            v_flat = rng.integers(0, case.V, size=int(lens.sum())).astype(np.int32)
            v_off = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int32)
            variants += ((mx.array(v_flat), mx.array(v_off)),)
        grids = tuple(
            mx.array(rng.integers(0, case.V, size=(case.B, case.L)).astype(np.int32)) for _ in range(VARIANTS)
        )
    mx.eval(weight, flat, cot, *(a for a in (idx2d, offsets) if a is not None), variants, grids)
    return Inputs(
        weight,
        flat,
        idx2d,
        offsets,
        cot,
        flat_np,
        off_np if case.layout == "1d" else None,
        w_np,
        cot_np,
        variants,
        grids,
    )


def bytes_moved(case: Case, n: int, pass_: str) -> int:
    """Bytes a pass must move at the least.

    Forward: the ``N`` gathered rows plus the ``(B, D)`` output. Forward +
    backward adds reading the ``(B, D)`` cotangent, a read-modify-write of one
    float32 gradient row per index, and zero-filling the dense float32
    ``(V, D)`` gradient.

    Example:
        >>> bytes_moved(Case(V=10, D=4, B=2, L=3, layout="2d", mode="sum"), 6, "fwd")
        128
    """
    # NumPy has no bfloat16; float16 has its size.
    item = np.dtype(case.dtype if case.dtype != "bfloat16" else "float16").itemsize
    fwd = (n + case.B) * case.D * item
    if pass_ == "fwd":
        return fwd
    return fwd + case.B * case.D * item + 2 * n * case.D * 4 + case.V * case.D * 4
