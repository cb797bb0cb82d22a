"""The reference forward of ``embedding_bag`` in as few lazy MLX ops as it can take.

Building the graph of a call costs host time per op (one to three microseconds
each on a CPU), and an eager training step pays it on every call, so the forward
is written for op count as much as for arithmetic. Its tricks:

* Out-of-range indices poison through the reduction itself: the segmented
  sum's per-position weight is NaN there (NaN times any row is NaN), so no
  per-bag count of bad positions is built. Such positions read the last row
  (a clamp), which is in bounds and never seen.
* The structural half of the poison rule comes from one running maximum over
  the bag bounds ``ext`` (the offsets, with ``N`` appended unless
  ``include_last_offset``): bag ``b`` is valid iff ``offsets[0] == 0`` and both
  of its bounds ``ext[b], ext[b + 1]`` equal the running maximum there and are
  at most ``N``. (The start equals the running maximum iff it is no smaller
  than any earlier offset; the end equals it iff it is also no smaller than the
  start.) Pairs ``(ext[b], ext[b + 1])`` are a strided view, not a copy.
* Max over variable-length bags is one running maximum down the positions
  (:func:`segment_max`), not a scatter: each value becomes an integer key that
  orders like the float (NaN on top) with its bag's number in the high bits, so
  the running maximum starts afresh at every bag, and a bag's maximum is the
  running maximum at its last position.

The VJPs in ``reference.py`` still rebuild what they need from ``_layout``.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag._bag_forward import segments
    >>> segs, valid = segments(mx.array([0, 2, 1]), False, 3, 4)
    >>> segs.tolist(), valid.reshape(-1).tolist()
    ([[0, 2], [0, 0], [0, 0]], [True, False, False])
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ._layout import checked_indices, offsets_int64

_F32 = mx.float32
_NAN = float("nan")
_UNSIGNED = {mx.int32: mx.uint32, mx.int64: mx.uint64, mx.uint32: mx.uint32, mx.uint64: mx.uint64}
# The count of a bag from its (start, end) pair: end - start, as one multiply-and-sum.
_END_MINUS_START = mx.array(np.array([-1, 1], dtype=np.int64))
# Scalars as typed constants, built once: a Python scalar in an op costs a conversion
# (about a microsecond of host time) on every call.
ZERO64, ONE64, BIT32 = (mx.array(v, mx.int64) for v in (0, 1, 2**32))
ZERO32, ONE32, NAN32 = (mx.array(v, _F32) for v in (0.0, 1.0, _NAN))


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
    return u < num_embeddings, mx.minimum(u, num_embeddings - 1)


def segments(offsets, include_last_offset: bool, num_bags: int, n: int):
    """``(segs, valid)``: (B, 2) int64 ``[start, end)`` per bag (``[0, 0)`` for a
    structurally invalid one) and (B, 1) bool, the structural half of the poison rule.
    """
    ext = offsets_int64(offsets, n)
    if include_last_offset:
        ext = mx.contiguous(ext)  # the strided views below need a row-contiguous array
    else:
        ext = mx.pad(ext, [(0, 1)], constant_values=n)
    bound_ok = mx.logical_and(ext == mx.cummax(ext), ext <= n)
    valid = mx.as_strided(bound_ok, (num_bags, 2), (1, 1)).all(axis=1, keepdims=True)
    valid = mx.logical_and(valid, ext[:1] == ZERO64)
    return mx.where(valid, mx.as_strided(ext, (num_bags, 2), (1, 1)), ZERO64), valid


def segment_sum(rows, ok, coef, segs, num_bags: int, mean: bool):
    """Per bag: the sum (or mean over its length) of ``coef * rows``, NaN where a
    position's index was out of range. ``coef`` is None for all ones."""
    w = mx.where(ok, ONE32 if coef is None else coef, NAN32)
    out = mx.segmented_mm(w.reshape(1, -1), rows, segs.astype(mx.uint32)).reshape(num_bags, -1)
    if mean:
        out = out / mx.maximum((segs * _END_MINUS_START).sum(axis=1, keepdims=True), 1)
    return out


def grid_reduce(rows, ok, coef, num_bags: int, bag_size: int, mode: str):
    """Per bag of a (B, L) input: sum, mean or max of its L rows (no padding row),
    and (B, 1) bool, whether every index of the bag was in range."""
    d = rows.shape[-1]
    if bag_size == 0:
        return mx.zeros((num_bags, d), _F32), mx.ones((num_bags, 1), dtype=mx.bool_)
    valid = ok.reshape(num_bags, bag_size).all(axis=1, keepdims=True)
    grid = (rows if coef is None else rows * coef[:, None]).reshape(num_bags, bag_size, d)
    if mode == "max":
        return grid.max(axis=1), valid
    out = grid.sum(axis=1)
    return (out / bag_size if mode == "mean" else out), valid


# Negative NaNs' keys (below -inf's) move above +inf's by this wrapping subtraction.
_NEG_NAN_KEYS = 0x7FFFFF


def order_key(x):
    """float32 -> uint32 keys in the same order (-0.0 just below +0.0), every NaN above +inf.

    The sign-magnitude bits become an unsigned order (a set sign bit flips all
    bits, a clear one sets it: four bit passes, no ``where``); negative NaNs,
    which land at the very bottom, then wrap to the top.
    """
    u = x.view(mx.uint32)
    return (u ^ ((x.view(mx.int32) >> 31).view(mx.uint32) | 0x80000000)) - _NEG_NAN_KEYS


def from_order_key(key):
    """The inverse of :func:`order_key` (a NaN's key comes back as that NaN)."""
    key = key + _NEG_NAN_KEYS
    return (key ^ ((~(key.view(mx.int32) >> 31)).view(mx.uint32) | 0x80000000)).view(_F32)


def _keys(rows, bag, bad):
    """int64 ``bag << 33 | bad << 32 | order_key(row)`` per element (``bag``, ``bad`` per row)."""
    high = (bag << 33) + mx.where(bad, BIT32, ZERO64)
    return order_key(rows).astype(mx.int64) + high[:, None]


def segment_max(rows, ok, segs, n: int):
    """Per bag of ``segs``: the column-wise maximum of its rows (NaN wins; 0 for an
    empty bag), NaN where one of its indices was out of range.

    Each key (:func:`_keys`) carries a bag number above the value's order key
    and a bad index's flag above every value, so a running maximum of keys
    restarts at every bag (the number counts the bag starts at or before a
    position). To halve what the keys are built for, positions first pair up
    (``2j, 2j + 1``, a contiguous max) and a pair takes the number of its first
    position. A pair that straddles a bag start is then never read by the right
    bag: the bag it claims reads its running maximum before it, and every later
    bag outnumbers it. What pairs miss is at most a bag's first and last
    positions, which every bag adds back on its own. (Pairs cost a contiguous
    max, like 2-D input; in one interleaved A/B at V=1e5, D=64, B=1024, L=64 on
    a 2-core CPU they took this function's whole forward from 111 ms to 44 ms,
    against 37 ms for a 2-D max. As with 2-D input, +0.0 and -0.0 tie in that
    max: a zero maximum's sign may be either.)
    """
    B = segs.shape[0]
    if n == 0:
        return mx.zeros((B, rows.shape[-1]), _F32)
    # Starts lie in [0, N] (N: an empty bag at the end), hence N + 1 marks.
    marks = mx.zeros((n + 1,), mx.int64).at[segs[:, 0]].add(ONE64)
    bag = mx.cumsum(marks[:n])
    bad = mx.logical_not(ok)
    end = segs[:, 1:]
    top = None
    for pos in (mx.minimum(segs[:, 0], n - 1), mx.maximum(end[:, 0] - 1, 0)):
        key = _keys(mx.take(rows, pos, axis=0), mx.take(bag, pos), mx.take(bad, pos))
        top = key if top is None else mx.maximum(top, key)
    m = n // 2
    if m:
        pairs = rows[: 2 * m].reshape(m, 2, -1).max(axis=1)
        pair_bad = bad[: 2 * m].reshape(m, 2).any(axis=1)
        run = mx.cummax(_keys(pairs, bag[: 2 * m : 2], pair_bad), axis=0)
        # The last pair inside the bag ends at or before its end; a bag ending at 1 has none.
        last_pair = mx.take(run, mx.maximum(end[:, 0] // 2 - 1, 0), axis=0)
        top = mx.maximum(top, mx.where(end >= 2, last_pair, ZERO64))
    value = from_order_key((top & 0xFFFFFFFF).astype(mx.uint32))
    count = (segs * _END_MINUS_START).sum(axis=1, keepdims=True)
    value = mx.where((top & BIT32) != ZERO64, NAN32, value)
    return mx.where(count > ZERO64, value, ZERO32)
