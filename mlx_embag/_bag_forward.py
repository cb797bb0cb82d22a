"""The reference forward of ``embedding_bag`` in as few lazy MLX ops as it can take.

Building the graph of a call costs host time per op (one to three microseconds
each on a CPU), and an eager training step pays it on every call; evaluating it
costs about 5-20 microseconds per graph node on MLX's CPU stream even for
arrays of a thousand values (a scalar operand adds a ``Broadcast`` node). At
B = 1024 bags of one row that per-node cost, not the arithmetic, is most of a
call, so the forward is written for node count as much as for arithmetic.
MLX's CPU ``where`` on a (B, D) or (N, D) array is several times slower than
arithmetic (about 6 ms per million float32 elements against 0.5), so no
``where`` here is wider than one value per bag or per position. Its tricks:

* The range check is ``minimum(u, V - 1) == u`` on the indices read as
  unsigned (a negative index reads as at least 2**31): the clamp is needed for
  the gather anyway, and an equality of equal shapes needs no broadcast node.
* Out-of-range indices poison through the reduction itself: the segmented
  sum's per-position weight is NaN there (NaN times any row is NaN), so no
  per-bag count of bad positions is built. Such positions read the last row
  (a clamp), which is in bounds and never seen. Max mode reads the same
  verdict from a prefix count of bad positions at the bag bounds (not from a
  segmented product: ``mx.vmap`` traces this forward, and ``mx.segmented_mm``
  has no vmap rule).
* The structural half of the poison rule comes from one running maximum over
  the bag bounds ``ext`` (the offsets, with ``N`` appended unless
  ``include_last_offset``): bag ``b`` is valid iff ``offsets[0] == 0`` and both
  of its bounds ``ext[b], ext[b + 1]`` equal the running maximum there and are
  at most ``N``. (The start equals the running maximum iff it is no smaller
  than any earlier offset; the end equals it iff it is also no smaller than the
  start.) Pairs ``(ext[b], ext[b + 1])`` are a strided view, not a copy, of the
  bounds clamped to ``[0, N]`` (one unsigned minimum: a negative offset reads as
  at least 2**31), which keeps every gather in bounds whatever the offsets.
* Poison, the mean's division and the empty bag's zero are one (B, 1) operand
  and one (B, D) op: sum and mean divide by ``count`` (1 for sum) or by NaN;
  max takes ``maximum(out, z)`` with ``z`` NaN for a poisoned bag, 0 for an
  empty one and -inf otherwise. Both are exact for every value, -0.0 and inf
  included. 1 or NaN is :func:`poison`, ``v / v`` of the verdict as a float
  (``0 / 0`` is NaN): two nodes where ``where`` with two constants takes three.
* Max over variable-length bags is one running maximum, not a scatter
  (:func:`segment_max`): each value becomes an integer key that orders like the
  float (NaN on top) with its bag's number in the high bits, so the running
  maximum starts afresh at every bag. It runs over aligned blocks of ``K``
  positions (a contiguous max first, as cheap as 2-D input's reduction), ``K``
  chosen from the mean bag length ``N / B``; each bag adds its first and last
  ``K - 1`` positions from one gather.

The VJPs in ``reference.py`` still rebuild what they need from ``_layout``.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag._bag_forward import bounds
    >>> ext, valid = bounds(mx.array([0, 2, 1]), False, 3, 4)
    >>> ext.tolist(), valid.reshape(-1).tolist()
    ([0, 2, 1, 4], [True, False, False])
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

from ._layout import checked_indices, offsets_int64

_F32 = mx.float32
_NAN = float("nan")
_UNSIGNED = {mx.int32: mx.uint32, mx.int64: mx.uint64, mx.uint32: mx.uint32, mx.uint64: mx.uint64}
# Scalars as typed constants, built once: a Python scalar in an op costs a conversion
# (about a microsecond of host time) on every call.
ZERO32, ONE32, NAN32, NEG_INF32 = (mx.array(v, _F32) for v in (0.0, 1.0, _NAN, -float("inf")))
_ONE_I32 = mx.array(1, mx.int32)
_I32_MAX = mx.array(0x7FFFFFFF, mx.int32)
# Negative NaNs' keys (below -inf's) move above +inf's by this wrapping subtraction.
_NEG_NAN_KEYS = 0x7FFFFF
_NEG_NAN_SHIFT = mx.array(_NEG_NAN_KEYS, mx.int32)
# The key of -inf, plus _NEG_NAN_KEYS: where a bag's running maximum is not its own.
_FLOOR = mx.array(-(2**31) + _NEG_NAN_KEYS, mx.int64)


def gather_indices(indices, num_embeddings: int):
    """``(ok, safe)``: which positions name a row, and in-bounds indices for the gather.

    For 32- and 64-bit indices the check is one unsigned compare (a negative
    index reads as at least 2**31) and the clamp one minimum; ``safe`` then
    sends a bad position to the last row. Other dtypes take
    :func:`~mlx_embag._layout.checked_indices`.
    """
    unsigned = _UNSIGNED.get(indices.dtype)
    if unsigned is None:
        return checked_indices(indices, num_embeddings)
    u = indices if unsigned == indices.dtype else indices.view(unsigned)
    safe = mx.minimum(u, num_embeddings - 1)
    return safe == u, safe  # equal shapes: no broadcast node, unlike ``u < V``


def bounds(offsets, include_last_offset: bool, num_bags: int, n: int):
    """``(ext, valid)``: (B + 1,) uint32 bag bounds clamped to ``[0, N]`` (bag ``b`` is
    ``[ext[b], ext[b + 1])``) and (B, 1) bool, the structural half of the poison rule."""
    ext = offsets if offsets.dtype == mx.int32 else offsets_int64(offsets, n)
    if include_last_offset:
        ext = mx.contiguous(ext)  # the strided view below needs a row-contiguous array
    else:
        ext = mx.pad(ext, [(0, 1)], constant_values=n)
    u = ext.view(_UNSIGNED[ext.dtype])
    clamped = mx.minimum(u, n)
    # ``clamped == u`` is ``0 <= ext <= N`` (a negative reads as at least 2**31).
    bound_ok = mx.logical_and(ext == mx.cummax(ext), clamped == u)
    valid = mx.as_strided(bound_ok, (num_bags, 2), (1, 1)).all(axis=1, keepdims=True)
    valid = mx.logical_and(valid, ext[:1] == 0)
    return (clamped if ext.dtype == mx.int32 else clamped.astype(mx.uint32)), valid


def poison(valid):
    """(B, 1) float32 from (B, 1) bool: 1 where valid, NaN elsewhere (``v / v``, 0 / 0 being
    NaN: two graph nodes, where ``mx.where`` with two constants takes three)."""
    v = valid.astype(_F32)
    return v / v


# A quiet NaN's bits per float dtype, as the unsigned integer of its width.
_NAN_BITS = {
    dt: (ut, mx.array(bits, ut))
    for dt, ut, bits in (
        (mx.float32, mx.uint32, 0x7FC00000),
        (mx.float16, mx.uint16, 0x7E00),
        (mx.bfloat16, mx.uint16, 0x7FC0),
    )
}


def poison_rows(rows, ok):
    """``rows`` (``ok.shape + (D,)``) with each row whose ``ok`` is False made NaN, in the
    rows' own dtype: a NaN's exponent and quiet bit OR-ed into its bits. The other rows
    come back bit for bit. Integer ops, because MLX's CPU runs float16 arithmetic some 30
    times slower than float32's (15 ms against 0.4 for this OR on 2M values) and a wide
    ``where`` several times slower than either."""
    ut, bits = _NAN_BITS[rows.dtype]
    mask = mx.logical_not(ok).astype(ut) * bits
    return (rows.view(ut) | mask[..., None]).view(rows.dtype)


def pairs(ext, num_bags: int):
    """(B, 2) ``[start, end)`` per bag: a strided view of ``ext``, ``mx.segmented_mm``'s segments."""
    return mx.as_strided(ext, (num_bags, 2), (1, 1))


def segment_sum(rows, ok, coef, segs, den):
    """Per bag: ``sum(coef * rows) / den`` (``den``: (B, 1), the mean's count, 1, or NaN
    to poison), NaN where a position's index was out of range. ``coef`` is None for all ones."""
    w = poison(ok)
    w = w if coef is None else w * coef
    out = mx.segmented_mm(w.reshape(1, -1), rows, segs)
    return out.reshape(den.shape[0], -1) / den


def grid_reduce(rows, ok, coef, num_bags: int, bag_size: int, mode: str):
    """Per bag of a (B, L) input: sum, mean or max of its L rows (no padding row),
    NaN where an index of the bag was out of range."""
    d = rows.shape[-1]
    if bag_size == 0:
        return mx.zeros((num_bags, d), _F32)
    if bag_size == 1:
        # A bag of one row is that row (MLX reduces an axis of one by a squeeze). Max keeps
        # a -0.0; sum and mean add +0.0 instead (same node count), as a zero-started sum
        # does (PyTorch's, and the 1-D path's segmented product): -0.0 becomes +0.0.
        if mode == "max":
            return rows / poison(ok[:, None])
        rows = rows if coef is None else rows * coef[:, None]
        return rows + mx.where(ok[:, None], ZERO32, NAN32)
    valid = ok.reshape(num_bags, bag_size).all(axis=1, keepdims=True)
    den = mx.where(valid, float(bag_size), NAN32) if mode == "mean" else poison(valid)
    grid = (rows if coef is None else rows * coef[:, None]).reshape(num_bags, bag_size, d)
    return (grid.max(axis=1) if mode == "max" else grid.sum(axis=1)) / den


def order_key(x):
    """float32 -> int32 keys in the same order (-0.0 just below +0.0), every NaN above +inf.

    The sign-magnitude bits become two's complement (a set sign bit flips the
    other 31: ``-1 - magnitude``); negative NaNs, which land at the very
    bottom, then wrap to the top by one subtraction.
    """
    bits = x.view(mx.int32)
    return (bits ^ ((bits >> 31) & _I32_MAX)) - _NEG_NAN_SHIFT


def from_order_key(key):
    """The inverse of :func:`order_key` (a NaN's key comes back as that NaN)."""
    key = key + _NEG_NAN_SHIFT
    return (key ^ ((key >> 31) & _I32_MAX)).view(_F32)


def block_size(n: int, num_bags: int) -> int:
    """The block ``K`` of :func:`segment_max` for ``N`` positions in ``B`` bags.

    Blocks shrink the int64 running maximum ``K``-fold, and each bag gathers
    ``2K - 2`` edge rows: with bags of mean length ``L``, ``K`` from ``L / 8`` to
    ``L / 4`` timed within noise of each other at V=1e5, D=64, B=1024 on a shared
    2-core CPU (L = 16 and 64), smaller and larger ``K`` slower; below a mean of
    3, blocks cost more ops than they save.
    """
    mean = n / max(num_bags, 1)
    return 1 if mean < 3 else int(min(max(mean // 4, 2), 16))


@functools.lru_cache(maxsize=None)
def _edge_steps(k: int):
    """(2, K - 1) int32: the head's steps from a bag's start and the tail's from its end."""
    j = np.arange(k - 1, dtype=np.int32)
    return mx.array(np.stack([j, -j]))


def segment_max(rows, ok, ext, valid, k: int):
    """Per bag ``[ext[b], ext[b + 1])``: the column-wise maximum of its rows (NaN wins;
    0 for an empty bag), NaN where the bag is not ``valid`` or one of its indices
    was out of range (``ok``).

    Aligned blocks of ``k`` positions reduce first (a contiguous max). Each
    block's key (:func:`order_key`) carries in its high 32 bits the number of
    valid bags that start at or before the block, so a running maximum of keys
    restarts at every bag; a bag's maximum over its whole blocks is the running
    maximum at its last whole block, provided that block carries the bag's own
    number (else no whole block lies in the bag, and the value is dropped by
    subtracting the bag's number and clamping). A block that straddles a bag
    start carries the earlier bag's number, so the later bag never reads it.
    What blocks miss, at most ``k - 1`` positions at each end of a bag, comes
    from one gather of ``2k - 2`` rows per bag, with positions clamped into the
    bag (a repeat changes no maximum). ``k == 1`` needs no edges.

    Benchmark (``python -m mlx_embag.bench``, V=1e5, D=64, B=1024, a shared and
    loaded 2-core CPU): 1-D max over 2-D max of the same shape was 3.2-3.7 /
    2.2-2.8 / 1.6-2.0 / 1.4-1.9 at L = 1 / 4 / 16 / 64 in three runs of the
    earlier version (pairs of positions, int64 head and tail keys, a scatter per
    position), and 2.9-4.2 / 2.0-2.6 / 1.7-1.8 / 1.3-1.45 in four runs of this
    one (the 2-D path at L = 1 got faster in the same change): within the noise
    except at L = 64. At
    small L the cost is per graph node (some 80-120), not per element; the block
    size barely matters there. As with 2-D input, +0.0 and -0.0 tie in the block
    max: a zero
    maximum's sign may be either.
    """
    n, d = rows.shape
    B = valid.shape[0]
    ext = ext.view(mx.int32)  # values in [0, N]: signed arithmetic below
    starts, ends = ext[:-1], ext[1:]
    nonempty = ends > starts
    if n:
        # Bad indices per bag from prefix counts (mx.segmented_mm has no vmap rule, and
        # mx.vmap traces this forward before the custom function's own rule runs).
        seen = mx.pad(mx.cumsum(mx.logical_not(ok).astype(mx.int32)), [(1, 0)])
        seen = mx.take(seen, ext)
        valid = mx.logical_and(valid[:, 0], seen[1:] == seen[:-1])
    else:
        valid = valid[:, 0]
    # Invalid (-> NaN), empty (-> 0), else -inf, which changes no maximum.
    z = mx.where(valid, mx.where(nonempty, NEG_INF32, ZERO32), NAN32)[:, None]
    if n == 0:
        return mx.maximum(mx.zeros((B, d), _F32), z)
    k = min(k, n)
    m = n // k
    if k == 1:
        blocks, first = rows, starts
    else:
        blocks = (rows if m * k == n else rows[: m * k]).reshape(m, k, d).max(axis=1)
        first = (starts + (k - 1)) // k  # the first block starting at or after the bag's start
    # A valid bag's mark at its first block; the others' past the last block (dropped).
    marks = mx.zeros((m + 2,), mx.int32).at[mx.where(valid, first, m + 1)].add(_ONE_I32)
    number = mx.cumsum(marks[:m]).astype(mx.int64) << 32
    run = mx.cummax(order_key(blocks).astype(mx.int64) + number[:, None], axis=0)
    # A bag's own number; past every block's where it ends inside block 0 (it owns no
    # whole block, but the clamped read below lands on block 0, which may carry its number).
    own = mx.where(ends < k, B + 1, mx.cumsum(valid.astype(mx.int32)))
    own = (own.astype(mx.int64) << 32) - _NEG_NAN_KEYS
    last = mx.maximum((ends if k == 1 else ends // k) - 1, 0)
    key = mx.maximum(mx.take(run, last, axis=0) - own[:, None], _FLOOR).astype(mx.int32)
    out = (key ^ ((key >> 31) & _I32_MAX)).view(_F32)
    if k > 1:
        hi = mx.maximum(ends - 1, 0)
        lo = mx.minimum(starts, hi)
        pos = mx.stack([lo, hi], axis=1)[:, :, None] + _edge_steps(k)
        pos = mx.minimum(mx.maximum(pos, lo[:, None, None]), hi[:, None, None]).reshape(B, -1)
        edge = mx.take(rows, pos, axis=0).max(axis=1)
        # An empty bag's edges read a neighbour's rows: zero their bits (+0.0).
        edge = (edge.view(mx.int32) * nonempty[:, None]).view(_F32)
        out = mx.maximum(out, edge)
    return mx.maximum(out, z)
