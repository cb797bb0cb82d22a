"""Analytic device traffic of the two weight-gradient variants, to choose between them.

``deterministic=False`` takes whichever variant moves fewer sectors at the call's
shape: the atomic one (``bag_bwd`` / ``max_bwd``) or the sorted one (``bag_owner``,
MLX's ``argsort``, ``det_partial``, ``det_write``). Each function below lists the
steps of one variant, its kernels and the MLX built-ins it launches (zero fills,
casts, the sort, element-wise ops), with the sectors each moves, from shapes and
static options only: no host round trip on the backward's path.

The measure is the one of ``emulator.profile()``: 32-byte sectors summed over
SIMD-group (32 lanes) memory instructions. Conventions of the count:

* a contiguous stretch of ``n`` bytes read or written by a coalesced kernel costs
  ``ceil(n / 32)`` sectors; a block of a row at an arbitrary row costs
  :func:`block` (the sectors it straddles, averaged over the row starts);
* a value every lane of a SIMD-group reads (a size, an index shared by the lanes
  of one row) costs one sector per SIMD-group;
* a gather of scattered elements (``freq[row]``, ``take`` by a sorted order, the
  ``coef`` / ``srcrow`` of a sorted entry) costs one sector per element;
* an atomic instruction moves its distinct sectors twice (read and written back);
* padding positions, poisoned bags, runs of equal rows that cross a window and the
  number of distinct rows are not known without reading the data: every position
  counts as contributing, no run crosses a window, and the rows named are as many
  as ``N`` uniform draws from ``V`` give (:func:`distinct_rows`; skewed data name
  fewer, which favours the sorted variant further).

Example:
    >>> from mlx_embag import _cost
    >>> _cost.prefers_sorted(N=16384, B=512, D=128, V=100_000, index_bytes=4, weight_bytes=4)
    False
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .launchers import ATOMIC_VEC_MIN_D, WINDOW, bag_geometry, pow2_at_least

SECTOR = 32
LANES = 32


@dataclass(frozen=True)
class Step:
    """One kernel or MLX built-in of a variant: its device sectors and float atomics.

    Example:
        >>> Step("zero-fill grad (MLX fill)", sectors(4096)).sectors
        128
    """

    name: str
    sectors: float  # an average over row starts (see block); total() rounds
    atomics: int = 0


def sectors(nbytes: int) -> int:
    """Sectors of ``nbytes`` contiguous bytes starting on a sector boundary.

    Example:
        >>> sectors(33), sectors(64)
        (2, 2)
    """
    return -(-int(nbytes) // SECTOR)


@functools.lru_cache(maxsize=1024)  # a few D per model; keeps the backward's choice cheap
def block(nbytes: int, stride: int, start: int = 0) -> float:
    """Sectors of an ``nbytes`` block at ``start + r * stride`` bytes, averaged over the row ``r``.

    Row starts fall on every multiple of ``gcd(stride, 32)`` within a sector alike; a
    block straddles one more sector when its start and length reach past a boundary.

    Example:
        >>> block(512, 512), block(16, 16), block(12, 12)
        (16.0, 1.0, 1.25)
    """
    if nbytes <= 0:
        return 0.0
    g = math.gcd(int(stride), SECTOR) if stride else SECTOR
    offs = [(start + o) % SECTOR for o in range(0, SECTOR, g)]
    return sum(-(-(o + nbytes) // SECTOR) for o in offs) / len(offs)


def _uniform(lanes_per_row: int, nbytes: int) -> float:
    """Sectors per position of a value the lanes of one row share (index, psw).

    A row of ``lanes_per_row`` lanes takes ``ceil(lanes / 32)`` SIMD-groups, one
    sector each; narrower rows pack ``32 / lanes`` consecutive positions into a
    SIMD-group, which then read ``32 / lanes * nbytes`` contiguous bytes.
    """
    if lanes_per_row >= LANES:
        return math.ceil(lanes_per_row / LANES)
    return max(lanes_per_row, nbytes) / LANES


def distinct_rows(n: int, V: int) -> float:
    """The expected number of distinct rows among ``n`` uniform draws from ``V`` rows.

    Example:
        >>> round(distinct_rows(1000, 10), 3), distinct_rows(5, 1)
        (10.0, 1)
    """
    if V <= 1 or n <= 0:
        return min(n, V)
    return -V * math.expm1(n * math.log1p(-1.0 / V))


def total(steps) -> int:
    """The sectors of a list of :class:`Step` together.

    Example:
        >>> total([Step("a", 3), Step("b", 4, atomics=2)])
        7
    """
    return round(sum(s.sectors for s in steps))


def _zero_fill_and_cast(V: int, D: int, weight_bytes: int) -> list:
    """The float32 (V, D) gradient's zero fill (the kernel's init_value) and the cast to the table dtype."""
    steps = [Step("zero-fill grad (MLX fill)", sectors(V * D * 4))]
    if weight_bytes != 4:
        steps.append(Step("cast grad (MLX astype)", sectors(V * D * 4) + sectors(V * D * weight_bytes)))
    return steps


def atomic_backward(N, B, D, V, *, index_bytes, weight_bytes, psw=False, freq=False) -> list:
    """The steps of ``deterministic=False`` sum / mean as ``bag_bwd`` (atomic) runs them.

    Example:
        >>> [(s.name, s.sectors, s.atomics) for s in atomic_backward(8, 1, 128, 8, index_bytes=4, weight_bytes=4)]
        [('bag_bwd', 288.0, 1024), ('zero-fill grad (MLX fill)', 128, 0)]
    """
    vec, nxt, (_, ty, _) = bag_geometry(D, N, B, vector=D >= ATOMIC_VEC_MIN_D)
    cpt = 4 if vec else 1
    groups = -(-(nxt * ty * B) // LANES)
    # Per SIMD-group: meta[b], params D, PAD, FLAGS, N, NOFF, offsets[b] and [b + 1].
    fixed = 8 * groups
    # Column block k of a row: nxt consecutive floats from column k * nxt (one instruction).
    chunks = sum(block(nxt * 4, D * 4, k * nxt * 4) for k in range(cpt))
    cot = B * ty * chunks
    per_pos = _uniform(nxt, index_bytes) + (_uniform(nxt, weight_bytes) if psw else 0)
    per_pos += math.ceil(nxt / LANES) if freq else 0
    k = Step("bag_bwd", fixed + cot + N * per_pos + 2 * N * chunks, atomics=N * D)
    return [k] + _zero_fill_and_cast(V, D, weight_bytes)


def argsort_steps(n: int, key_bytes: int) -> list:
    """MLX's ``argsort`` of ``n`` keys (mlx/backend/metal/sort.cpp, a merge sort) and the
    ``astype(int32)`` of its uint32 result.

    One threadgroup sorts up to ``bn * 4`` keys (``bn`` 512, 256 for 8-byte keys):
    keys read, indices written. Beyond that, blocks are sorted into (keys, indices)
    scratch, merged ``ceil(log2(blocks))`` times (each pass reads and writes both,
    and a partition step binary-searches every block boundary), and the indices
    copied out.

    Example:
        >>> [(s.name, s.sectors) for s in argsort_steps(1024, 4)]
        [('argsort (MLX sort, one block)', 256), ('astype int32 (MLX)', 256)]
    """
    bn = 32
    for size, want in ((256, 512), (128, 256), (64, 128), (32, 64)):
        if -(-n // 4) > size:
            bn = want
            break
    if bn == 512 and key_bytes > 4:
        bn = 256
    per_block = bn * 4
    blocks = -(-n // per_block)
    pair = sectors(n * key_bytes) + sectors(n * 4)
    if blocks <= 1:
        sort = Step("argsort (MLX sort, one block)", sectors(n * key_bytes) + sectors(n * 4))
    else:
        passes = math.ceil(math.log2(blocks))
        search = (blocks + 1) * (math.ceil(math.log2(2 * n)) + 1)  # probes + one write per boundary
        s = sectors(n * key_bytes) + pair + passes * (2 * pair + search) + 2 * sectors(n * 4)
        sort = Step(f"argsort (MLX merge sort, {blocks} blocks, {passes} passes)", s)
    return [sort, Step("astype int32 (MLX)", 2 * sectors(n * 4))]


def _sorted_scatter(M: int, DV: int, R: int, runs: int, key_bytes: int) -> list:
    """``launchers.sorted_scatter``: sort, ``take`` the keys, ``det_partial``, ``det_write``."""
    steps = argsort_steps(M, key_bytes)
    steps.append(Step("take sorted keys (MLX gather)", sectors(M * 4) + M + sectors(M * key_bytes)))
    W = -(-M // WINDOW)
    tx = min(pow2_at_least(DV), 64)
    groups = -(-(DV * W) // LANES)
    per_window = math.ceil(DV / LANES)  # SIMD-groups a window's row takes (packed rows: their own sectors)
    part = groups * 3 + 2 * W * per_window + W * block(DV * 4, DV * 4)
    steps.append(Step(f"det_partial (threadgroup {tx}x{max(1, 64 // tx)})", part))
    # det_write: per entry skey, order, srcrow and coef (one sector each per SIMD-group of its
    # row) and the source row; per run one more skey and the written row; per window the two
    # boundary keys and the look past its end.
    write = groups * 4 + 3 * W * per_window
    row = block(DV * 4, DV * 4)
    write += M * (4 * per_window + row) + runs * (per_window + row)
    steps.append(Step("det_write", write))
    steps.append(Step("zero-fill grad (MLX fill)", sectors(R * DV * 4)))
    return steps


def sorted_backward(N, B, D, V, *, index_bytes, weight_bytes, psw=False, freq=False) -> list:
    """The steps of the sorted (bitwise deterministic) sum / mean weight gradient.

    Example:
        >>> [s.name for s in sorted_backward(8, 1, 128, 8, index_bytes=4, weight_bytes=4)][:3]
        ['bag_owner', 'owner >= 0 (MLX)', 'where (MLX)']
    """
    _, _, (tx, ty, _) = bag_geometry(D, N, B)
    T = tx * ty
    groups = B * -(-T // LANES)
    # Per SIMD-group: meta[b], params PAD, FLAGS, N, NOFF, offsets[b] and [b + 1]; per
    # position the index (and psw) coalesced, freq[row] gathered, owner and coef written,
    # both first filled with -1 (init_value).
    owner = groups * 7 + sectors(N * index_bytes) + (sectors(N * weight_bytes) if psw else 0)
    owner += (N if freq else 0) + 4 * sectors(N * 4)
    steps = [
        Step("bag_owner", owner),
        Step("owner >= 0 (MLX)", sectors(N * 4) + sectors(N)),
        Step("where (MLX)", sectors(N) + 2 * sectors(N * index_bytes)),
    ]
    steps += _sorted_scatter(N, D, V, distinct_rows(N, V), index_bytes)
    cast = _zero_fill_and_cast(V, D, weight_bytes)[1:]
    return steps + cast


def atomic_max_backward(N, B, D, V, *, weight_bytes) -> list:
    """The steps of ``deterministic=False`` max mode as ``max_bwd`` (atomic) runs them.

    The arg-max rows of a bag's columns are distinct in general (one sector per
    column's atomic); with at most one position per bag they are one row (coalesced).

    Example:
        >>> [(s.name, s.sectors) for s in atomic_max_backward(4, 4, 64, 10, weight_bytes=4)]
        [('max_bwd', 136.0), ('zero-fill grad (MLX fill)', 80)]
    """
    groups = B * math.ceil(D / LANES)
    row = block(D * 4, D * 4)
    atom = 2 * (B * row if N <= B else B * D)
    k = Step("max_bwd", groups + 2 * B * row + atom, atomics=B * D)
    return [k] + _zero_fill_and_cast(V, D, weight_bytes)


def sorted_max_backward(N, B, D, V, *, weight_bytes) -> list:
    """The steps of the sorted max-mode weight gradient (``metal_ops._max_weight_grad``).

    Example:
        >>> [s.name for s in sorted_max_backward(4, 4, 64, 10, weight_bytes=4)][:2]
        ['keys and sources (MLX element-wise)', 'argsort (MLX sort, one block)']
    """
    M = B * D
    kb = 4 if V * D <= 2**31 - 1 else 8
    # arange; argmax >= 0; astype (8-byte keys only); * D; e % D; astype; +; where; where; ones.
    ew = sectors(M * 4) + sectors(M * 4) + sectors(M)
    ew += (sectors(M * 4) + sectors(M * kb)) * (2 if kb == 8 else 0)
    ew += 2 * sectors(M * kb) + 2 * sectors(M * 4) + 3 * sectors(M * kb)
    ew += sectors(M) + 2 * sectors(M * kb) + sectors(M) + 2 * sectors(M * 4) + sectors(M * 4)
    steps = [Step("keys and sources (MLX element-wise)", ew)]
    steps += _sorted_scatter(M, 1, V * D, distinct_rows(M, V * D), kb)
    return steps + _zero_fill_and_cast(V, D, weight_bytes)[1:]


@functools.lru_cache(maxsize=256)  # fixed batch shapes repeat; a new N costs some 20 us of Python
def prefers_sorted(N, B, D, V, *, index_bytes, weight_bytes, psw=False, freq=False, max_mode=False) -> bool:
    """Whether the sorted variant moves fewer sectors than the atomic one at this shape.

    Example:
        >>> prefers_sorted(N=64, B=64, D=1, V=8, index_bytes=4, weight_bytes=4, max_mode=True)
        False
    """
    if max_mode:
        a = atomic_max_backward(N, B, D, V, weight_bytes=weight_bytes)
        s = sorted_max_backward(N, B, D, V, weight_bytes=weight_bytes)
    else:
        kw = dict(index_bytes=index_bytes, weight_bytes=weight_bytes, psw=psw, freq=freq)
        a = atomic_backward(N, B, D, V, **kw)
        s = sorted_backward(N, B, D, V, **kw)
    return total(s) < total(a)
