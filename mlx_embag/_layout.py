"""Bag layout and the poison rule, as lazy MLX integer ops (no host sync).

Bag ``b`` covers positions ``[start_b, end_b)`` of the flat indices. It is
*valid* iff ``0 <= start_b <= end_b <= N``, ``offsets[0] == 0`` (1-D input),
``start_b`` is no smaller than any earlier offset (so valid bags never
overlap), and every index in it lies in ``[0, V)``. An invalid bag comes out
NaN and sends no gradient. Positions that belong to no valid bag (trailing
indices after the last offset, or the positions of structurally broken bags)
have ``owner == -1``.

Every function here builds lazy arrays; MLX only evaluates the ones a path
actually uses. Boolean arrays combine with ``mx.logical_and``, never ``&``:
in MLX 0.32, ``unbatched & batched`` under ``mx.vmap`` drops the batch axis.
"""

from __future__ import annotations

import math

import mlx.core as mx

from ._spec import BagSpec


def index_dtype(num_embeddings: int):
    """The narrowest dtype that addresses every row (int32 unless V >= 2**31)."""
    return mx.int32 if num_embeddings < 2**31 else mx.int64


def in_range(indices: mx.array, num_embeddings: int) -> mx.array:
    """Per position: is the index a row of the table?"""
    if mx.issubdtype(indices.dtype, mx.unsignedinteger):
        return indices < num_embeddings
    unsigned = {mx.int32: mx.uint32, mx.int64: mx.uint64}.get(indices.dtype)
    if unsigned is not None:
        # Negative values read as unsigned are at least 2**31: one compare, not three ops.
        return indices.view(unsigned) < num_embeddings
    return mx.logical_and(indices >= 0, indices < num_embeddings)


def safe_indices(indices: mx.array, ok: mx.array, num_embeddings: int) -> mx.array:
    """Indices with every out-of-range entry replaced by row 0, so gathers stay in bounds."""
    return mx.where(ok, indices, 0).astype(index_dtype(num_embeddings))


def checked_indices(indices: mx.array, num_embeddings: int):
    """``(ok, safe)``: which positions name a row, and the indices with every other one read as row 0."""
    ok = in_range(indices, num_embeddings)
    return ok, safe_indices(indices, ok, num_embeddings)


def row_counts(safe: mx.array, ok: mx.array, num_embeddings: int) -> mx.array:
    """float32 (V,): how many in-range positions name each row (``scale_grad_by_freq``'s divisor)."""
    return mx.zeros((num_embeddings,), dtype=mx.float32).at[safe].add(ok.astype(mx.float32))


def offsets_int64(offsets: mx.array, n: int) -> mx.array:
    """``offsets`` as int64, with every uint64 value past ``n`` read as ``n + 1``.

    A plain cast wraps uint64 values at or above 2**63 to negatives, which
    would make a bag that starts below an earlier offset look valid. Any
    offset past ``n`` makes its bags invalid, so ``n + 1`` keeps the verdict.
    """
    if offsets.dtype == mx.uint64:
        offsets = mx.minimum(offsets, n + 1)
    return offsets.astype(mx.int64)


def bag_bounds(offsets, spec: BagSpec, n: int):
    """``(starts, ends)`` as int64 arrays of shape (B,)."""
    b = spec.num_bags
    if offsets is None:
        starts = mx.arange(b, dtype=mx.int64) * spec.bag_size
        return starts, starts + spec.bag_size
    off = offsets_int64(offsets, n)
    if spec.include_last_offset:
        return off[:b], off[1 : b + 1]
    return off, mx.concatenate([off[1:], mx.array([n], dtype=mx.int64)])


def largest_earlier_offset(off: mx.array, num_bags: int) -> mx.array:
    """Per bag ``b``: ``max(off[:b])``; bag 0 has no earlier offset and gets ``off[0]``, its own start.

    A bag that starts below it would overlap an earlier bag (the poison rule).
    """
    if num_bags == 0:
        return off[:0]
    return mx.concatenate([off[:1], mx.cummax(off[:num_bags])[: num_bags - 1]])


def structurally_valid(offsets, starts, ends, n: int) -> mx.array:
    """Per bag: is ``[start, end)`` a well-formed range that overlaps no earlier bag?"""
    ok = mx.logical_and(mx.logical_and(starts >= 0, starts <= ends), ends <= n)
    off = offsets_int64(offsets, n)
    ok = mx.logical_and(ok, off[0] == 0)
    return mx.logical_and(ok, starts >= largest_earlier_offset(off, starts.size))


def owners(starts, ends, struct_ok, n: int) -> mx.array:
    """Per position: the structurally valid bag that contains it, or -1.

    Valid non-empty bags have strictly increasing starts, so the owner of
    position ``i`` is the last such bag starting at or before ``i``, provided
    ``i`` is before that bag's end.
    """
    b = starts.size
    take = mx.logical_and(struct_ok, ends > starts)
    where_ = mx.where(take, starts, n).astype(mx.int64)
    marks = mx.full((n + 1,), -1, dtype=mx.int32).at[where_].maximum(mx.arange(b, dtype=mx.int32))
    owner = mx.cummax(marks[:n])
    end_of_owner = mx.take(ends, mx.maximum(owner, 0))
    inside = mx.logical_and(owner >= 0, mx.arange(n, dtype=mx.int64) < end_of_owner)
    return mx.where(inside, owner, -1)


class Layout:
    """Everything a path may need about which position belongs to which bag.

    Attributes are computed lazily on first access (and, being MLX arrays, are
    evaluated only if a computation uses them).
    """

    def __init__(self, indices: mx.array, offsets, spec: BagSpec, num_embeddings: int):
        self.indices = indices
        self.offsets = offsets
        self.spec = spec
        self.V = num_embeddings
        self.N = indices.size
        self.B = spec.num_bags
        self._cache = {}

    def _get(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def ok_index(self):
        return self._get("ok_index", lambda: in_range(self.indices, self.V))

    @property
    def safe(self):
        return self._get("safe", lambda: safe_indices(self.indices, self.ok_index, self.V))

    @property
    def bounds(self):
        return self._get("bounds", lambda: bag_bounds(self.offsets, self.spec, self.N))

    @property
    def is_2d(self):
        return self.offsets is None

    @property
    def struct_ok(self):
        def f():
            if self.is_2d:
                return mx.ones((self.B,), dtype=mx.bool_)
            starts, ends = self.bounds
            return structurally_valid(self.offsets, starts, ends, self.N)

        return self._get("struct_ok", f)

    @property
    def owner(self):
        """int32 (N,): the bag of each position among structurally valid bags, or -1."""

        def f():
            if self.is_2d:
                return mx.arange(self.N, dtype=mx.int32) // max(self.spec.bag_size, 1)
            starts, ends = self.bounds
            return owners(starts, ends, self.struct_ok, self.N)

        return self._get("owner", f)

    @property
    def bag_valid(self):
        """bool (B,): the poison rule."""

        def f():
            if self.is_2d:
                if self.N == 0:
                    return mx.ones((self.B,), dtype=mx.bool_)
                return mx.all(self.ok_index.reshape(self.B, -1), axis=1)
            # A structurally valid bag's positions are exactly [start, end)
            # (valid bags never overlap), so counting out-of-range indices per
            # segment needs no per-position owner (a scatter and a cummax).
            return mx.logical_and(self.struct_ok, self.segment_count(~self.ok_index) == 0)

        return self._get("bag_valid", f)

    @property
    def pos_valid(self):
        """bool (N,): the position is inside a valid bag."""

        def f():
            own = self.owner
            return mx.logical_and(own >= 0, mx.take(self.bag_valid, mx.maximum(own, 0)))

        return self._get("pos_valid", f)

    def not_padding(self):
        p = self.spec.padding_idx
        if p is None:
            return None
        return self.indices != p

    @property
    def segments(self):
        """(B, 2) uint32 ``[start, end)`` for ``mx.segmented_mm``; broken bags get ``[0, 0)``."""

        def f():
            starts, ends = self.bounds
            ok = self.struct_ok
            seg = mx.stack([mx.where(ok, starts, 0), mx.where(ok, ends, 0)], axis=1)
            return seg.astype(mx.uint32)

        return self._get("segments", f)

    def segment_count(self, mask):
        """Per bag: how many positions have ``mask`` set (exact integer prefix sums).

        ``mask`` is ``(N,)`` or ``(N, d)``; the result is ``(B,)`` or ``(B, d)``.
        """
        rest = mask.shape[1:]
        if self.is_2d:
            if self.N == 0:
                return mx.zeros((self.B, *rest), dtype=mx.int32)
            return mask.reshape(self.B, -1, *rest).astype(mx.int32).sum(axis=1)
        csum = mx.cumsum(mask.astype(mx.int32), axis=0)
        csum = mx.concatenate([mx.zeros((1, *rest), mx.int32), csum])
        seg = self.segments.astype(mx.int64)
        return mx.take(csum, seg[:, 1], axis=0) - mx.take(csum, seg[:, 0], axis=0)

    def frequencies(self):
        """float32 (N,): occurrences of each position's row among all N positions."""
        return mx.take(row_counts(self.safe, self.ok_index, self.V), self.safe)


def renorm_scale(rows_f32: mx.array, max_norm: float, norm_type: float) -> mx.array:
    """Per row: the factor PyTorch's ``embedding_renorm_`` applies (1 where the norm is small).

    The norm is a float32 reduction; the rest follows PyTorch's CPU code to the
    bit: it reads the norm as a double, compares it with ``max_norm`` and
    computes ``max_norm / (norm + 1e-7)`` in double, then rounds that scale to
    float (a float32 scale is an ulp off for about one row in five, which can
    flip a max-mode arg-max between near-tied rows). The double part runs on
    the CPU stream, where MLX has float64; it is one value per row.
    """
    a = mx.abs(rows_f32)
    if math.isinf(norm_type):
        norm = mx.max(a, axis=-1)
    elif norm_type == 1:
        norm = mx.sum(a, axis=-1)
    elif norm_type == 2:
        norm = mx.sqrt(mx.sum(a * a, axis=-1))
    else:
        norm = mx.power(mx.sum(mx.power(a, norm_type), axis=-1), 1.0 / norm_type)
    cpu = mx.cpu
    n64 = norm.astype(mx.float64, stream=cpu)
    scale = mx.divide(max_norm, mx.add(n64, 1e-7, stream=cpu), stream=cpu)
    scale = mx.where(mx.greater(n64, max_norm, stream=cpu), scale, 1.0, stream=cpu)
    return scale.astype(mx.float32, stream=cpu)
