"""The collectives of :class:`~mlx_embag.ShardedEmbeddingBag`, with the gradients MLX lacks.

MLX's collectives carry no gradient across ranks (the VJP of ``all_sum`` is
the local cotangent, ``all_gather``'s is zero for the other ranks' slices), so
every exchange the sharded lookup differentiates through is a custom function
whose VJP is the exchange the chain rule asks for, for the *sum of all ranks'
losses* (each rank differentiates its own loss, as data-parallel training does):

- :func:`gather` (``all_gather``): its VJP sums the cotangents over ranks and
  keeps this rank's slot (``all_sum``; the ring backend has no ``sum_scatter``).
- :func:`reduce_own` (``all_sum`` of ``(K, B, D)`` partial bags, this rank's
  slot kept): its VJP is the ``all_gather`` of every rank's cotangent.
- :func:`max_own` (max mode): one ``all_max`` of int64 keys ``(value order,
  -position)`` finds each bag's maximum and the earliest position attaining it
  across shards; the VJP sends each cotangent only to the shard that holds it.

Every collective is counted in :data:`traffic` with the bytes the ring backend
sends per rank for it (``all_gather``: ``(K-1) * local bytes``; ``all_sum`` and
``all_max``: ``2 (K-1) / K * bytes``), counted when the graph is built.

Example:
    >>> import mlx.core as mx
    >>> g = mx.distributed.init()  # one process: a group of size 1
    >>> reduce_own(mx.ones((1, 2, 3)), g).shape
    (2, 3)
"""

from __future__ import annotations

import mlx.core as mx

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_LOW = 2**32  # the position field of a max key: (order key) * 2**32 + (2**32 - 1 - position)


def _order_key(x):
    """float32 -> int32 keys in the same order (-0.0 just below +0.0), NaN above +inf,
    and none equal to the smallest int32, which marks a shard without a candidate.

    (``_bag_forward.order_key`` gives -inf that key, so it cannot serve here, and an
    int64 mark below it would overflow once scaled by ``_LOW``.) A NaN loses its sign
    bit, so its key lands above +inf's; a negative float flips its magnitude bits, so
    that larger magnitudes give smaller keys.
    """
    bits = x.view(mx.int32)
    nan = ((bits & _I32_MAX) > 0x7F800000).astype(mx.int32)
    bits = bits & ~(nan << 31)
    return bits ^ ((bits >> 31) & _I32_MAX)


def _from_order_key(key):
    """The inverse of :func:`_order_key` (a NaN's key comes back as a NaN)."""
    return (key ^ ((key >> 31) & _I32_MAX)).view(mx.float32)


# Bytes each rank sent by the ring algorithms' count, per collective kind (see the module docstring).
traffic = {"all_gather": 0, "all_sum": 0, "all_max": 0}


def reset_traffic():
    """Zero :data:`traffic` (the benchmark does it around one step).

    Example:
        >>> reset_traffic(); sum(traffic.values())
        0
    """
    for key in traffic:
        traffic[key] = 0


def _count(kind, x, group):
    k = group.size()
    nbytes = x.size * x.dtype.size
    traffic[kind] += (k - 1) * nbytes if kind == "all_gather" else 2 * (k - 1) * nbytes // k


def all_gather(x, group):
    """``mx.distributed.all_gather`` (no gradient), counted: ``(K * n, ...)`` for ``(n, ...)``.

    Example:
        >>> import mlx.core as mx
        >>> all_gather(mx.ones((2, 3)), mx.distributed.init()).shape
        (2, 3)
    """
    _count("all_gather", x, group)
    return mx.distributed.all_gather(x, group=group)


def all_max(x, group):
    """``mx.distributed.all_max`` (no gradient), counted.

    Example:
        >>> import mlx.core as mx
        >>> all_max(mx.array([2, 5]), mx.distributed.init()).tolist()
        [2, 5]
    """
    _count("all_max", x, group)
    return mx.distributed.all_max(x, group=group)


def all_sum(x, group):
    """``mx.distributed.all_sum`` (no gradient), counted.

    Example:
        >>> import mlx.core as mx
        >>> all_sum(mx.array([2.0]), mx.distributed.init()).tolist()
        [2.0]
    """
    _count("all_sum", x, group)
    return mx.distributed.all_sum(x, group=group)


def gather(x, group):
    """Every rank's ``x`` stacked, ``(K, *x.shape)``, differentiable across ranks.

    The VJP gives this rank the sum over ranks of the cotangents of its slot.

    Example:
        >>> import mlx.core as mx
        >>> g = mx.distributed.init()
        >>> mx.grad(lambda x: (gather(x, g) * 3).sum())(mx.ones(2)).tolist()
        [3.0, 3.0]
    """
    r = group.rank()

    @mx.custom_function
    def op(x):
        return all_gather(x[None], group)

    @op.vjp
    def op_vjp(primals, cot, output):
        return all_sum(cot, group)[r]

    return op(x)


def reduce_own(partials, group):
    """``sum over ranks of partials``, this rank's slot: ``(K, ...) -> (...)``.

    Rank ``k``'s slot holds the partial results of rank ``k``'s bags; the VJP
    gathers every rank's cotangent into the slots they came from.

    Example:
        >>> import mlx.core as mx
        >>> g = mx.distributed.init()
        >>> mx.grad(lambda p: reduce_own(p, g).sum())(mx.ones((1, 2))).tolist()
        [[1.0, 1.0]]
    """
    k, r = group.size(), group.rank()

    @mx.custom_function
    def op(p):
        return all_sum(p, group)[r]

    @op.vjp
    def op_vjp(primals, cot, output):
        return all_gather(cot, group).reshape(k, *cot.shape)

    return op(partials)


def max_key(values, has, positions):
    """int64 keys whose maximum is the largest value (NaN above +inf), ties to the smallest position.

    ``values`` (float32), ``has`` (bool: this shard holds a candidate) and
    ``positions`` (int32, each candidate's earliest position) share one shape;
    a shard without a candidate gets the smallest key.

    Example:
        >>> import mlx.core as mx
        >>> k = max_key(mx.array([2.0, 2.0, 9.0]), mx.array([True, True, False]), mx.array([5, 3, 0]))
        >>> int(mx.argmax(k))
        1
    """
    key = mx.where(has, _order_key(values), _I32_MIN).astype(mx.int64)
    return key * _LOW + (_LOW - 1 - positions.astype(mx.int64))


def max_own(partials, keys, group, dtype):
    """Max mode's combine: this rank's bags, ``(K, B, D)`` partials and keys -> ``(B, D)``.

    ``partials`` are each shard's maxima over the rows it holds, ``keys``
    their :func:`max_key`. A bag no shard holds a candidate for is 0 (an empty
    bag). The VJP sends each (bag, column) cotangent to the shard whose key
    won, i.e. the earliest position attaining the maximum.

    Example:
        >>> import mlx.core as mx
        >>> g = mx.distributed.init()
        >>> p = mx.array([[[4.0, 1.0]]])
        >>> max_own(p, max_key(p, mx.array([[[True, False]]]), mx.zeros((1, 1, 2), mx.int32)), g, mx.float32).tolist()
        [[4.0, 0.0]]
    """
    k, r = group.size(), group.rank()
    best = all_max(keys, group)
    mine = best == keys  # this shard holds the winning position
    key = (best // _LOW).astype(mx.int32)  # floor division: the order key, sign included
    value = mx.where(key == _I32_MIN, 0.0, _from_order_key(key))[r].astype(dtype)

    @mx.custom_function
    def op(p):
        return value

    @op.vjp
    def op_vjp(primals, cot, output):
        cots = all_gather(cot, group).reshape(k, *cot.shape)
        return mx.where(mine, cots, 0.0).astype(primals[0].dtype)

    return op(partials)


def agree(sizes, group):
    """The elementwise maximum over ranks of a few host ints (a collective and a host sync).

    Example:
        >>> import mlx.core as mx
        >>> agree([3, 0, 1], mx.distributed.init())
        [3, 0, 1]
    """
    if group.size() == 1:
        return list(sizes)
    return all_max(mx.array(sizes, dtype=mx.int32), group).tolist()
