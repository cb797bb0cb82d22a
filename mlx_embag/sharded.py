"""``ShardedEmbeddingBag``: one ``EmbeddingBag`` table split by rows over ``mx.distributed`` ranks.

Rank ``r`` of ``K`` holds rows ``[r * R, (r + 1) * R)`` with ``R = ceil(V / K)``
(the last block padded with zero rows no index reaches): ``.weight`` is that
block, ``.row_offset`` its first global row. Each rank calls the module on its
own batch and gets its own bags, as if the whole table were local; how the
rows travel is in :mod:`mlx_embag._sharded_lookup` and
:mod:`mlx_embag._sharded_ops`.

Every rank must make the same calls in the same order (they are collectives),
with the same options, and run the same backward passes.
"""

from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx

from . import _sharded_lookup as L
from . import _sharded_ops as ops
from . import functional as F
from ._validate import check_bag_options, check_call_options, check_padding_idx, check_size, check_table_dtype
from ._write_back import renormed_for_call
from .autograd import active_record
from .layers import EmbeddingBag, _Options, _Table


def _check_capacity(capacity):
    if capacity is None:
        return None
    if (
        not isinstance(capacity, tuple)
        or len(capacity) != 2
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in capacity)
    ):
        raise ValueError(
            f"capacity must be None or a tuple (positions, bags) of ints >= 0, got {capacity!r}."
        )
    return capacity


class ShardedEmbeddingBag(_Table):
    """An :class:`~mlx_embag.EmbeddingBag` whose table is split by rows across a distributed group.

    Takes every option of :class:`~mlx_embag.EmbeddingBag` (same semantics: the
    output and the gradients are those of the full table), plus:

    Args:
        group (mx.distributed.Group, optional): the ranks sharing the table
            (default ``mx.distributed.init()``; a group of size 1 holds it all).
        capacity (tuple, optional): ``(positions, bags)``, the largest flat index
            count and bag count any rank passes. All ranks pad their batch to a
            common size for ``all_gather``; by default each call agrees on it with
            a small ``all_max`` and a host sync, with ``capacity`` there is none
            (a larger batch raises ``ValueError``). With ``capacity`` every rank
            must pass ``per_sample_weights`` or none must.

    ``_weight`` is the full ``(V, D)`` table; each rank keeps its block. The
    training recipe is data-parallel: each rank differentiates its own loss, and
    the table's gradient on each rank is its block's gradient for the sum of
    all ranks' losses (``nn.value_and_grad``, or :func:`mlx_embag.value_and_grad`
    with ``sparse=True`` for a :class:`~mlx_embag.RowSparseGrad` of the block).

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> group = mx.distributed.init()  # launched with mlx.launch: one rank of many
        >>> bag = meb.ShardedEmbeddingBag(10, 3, mode="sum", group=group)
        >>> bag.weight.shape, bag.row_offset
        ((10, 3), 0)
        >>> bag(mx.array([[1, 2], [3, 9]])).shape
        (2, 3)
    """

    _OPTIONS = EmbeddingBag._OPTIONS

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: Optional[mx.array] = None,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        dtype=mx.float32,
        *,
        group=None,
        capacity=None,
        backend=None,
        check_indices=None,
        deterministic=None,
    ):
        super().__init__()
        check_bag_options(mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset)
        V, D = check_size(num_embeddings, "num_embeddings"), check_size(embedding_dim, "embedding_dim")
        if V >= 2**31:
            raise ValueError(f"num_embeddings must be below 2**31 for a sharded table, got {V}.")
        group = mx.distributed.init() if group is None else group
        padding_idx = check_padding_idx(padding_idx, V)
        check_call_options(backend, check_indices, deterministic)
        rows = math.ceil(V / group.size())
        lo = min(group.rank() * rows, V)
        hi = min(lo + rows, V)
        if _weight is not None:
            if tuple(_weight.shape) != (V, D):
                raise ValueError(f"_weight must have shape ({V}, {D}), got {tuple(_weight.shape)}.")
            check_table_dtype(_weight.dtype, "_weight")
            block = _weight[lo:hi]
        else:
            check_table_dtype(dtype)
            block = mx.random.normal((hi - lo, D), dtype=dtype)  # N(0, 1), as PyTorch
            if padding_idx is not None and lo <= padding_idx < hi:
                block[padding_idx - lo] = 0
        self.weight = mx.concatenate([block, mx.zeros((rows - (hi - lo), D), block.dtype)])
        self.num_embeddings, self.embedding_dim = V, D
        self.row_offset = group.rank() * rows
        object.__setattr__(self, "group", group)  # not a child module or parameter
        object.__setattr__(self, "capacity", _check_capacity(capacity))
        options = {name: value for name, value in locals().items() if name in self._OPTIONS}
        self._options = _Options(**{**options, "padding_idx": padding_idx})

    def _extra_repr(self):
        rank = f"rank={self.group.rank()}/{self.group.size()}, rows=[{self.row_offset}, +{self['weight'].shape[0]})"
        return f"{super()._extra_repr()}, {rank}"

    def _sizes(self, n, b, has_psw):
        """``(n_max, b_max, send_psw)`` common to every rank (agreed, or the capacity)."""
        if self.capacity is None:
            return tuple(ops.agree([n, b, int(has_psw)], self.group))
        n_max, b_max = self.capacity
        if n > n_max or b > b_max:
            raise ValueError(f"this call has {n} positions and {b} bags, above capacity=({n_max}, {b_max}).")
        return n_max, b_max, has_psw

    def __call__(self, input, offsets=None, per_sample_weights=None):
        block = self["weight"]  # not self.weight: that counts as a dense use (autograd.py)
        V, D, group = self.num_embeddings, self.embedding_dim, self.group
        stand_in = mx.broadcast_to(mx.zeros((1, D), block.dtype), (V, D))  # never evaluated
        options = {name: getattr(self._options, name) for name in self._OPTIONS}
        _, flat, offsets, psw, spec = F.bag_call(
            input=input, weight=stand_in, offsets=offsets, per_sample_weights=per_sample_weights,
            **{**options, "sparse": False},
        )  # fmt: skip
        n, b = flat.size, spec.num_bags
        n_max, b_max, send_psw = self._sizes(n, b, psw is not None)
        if b_max == 0:
            return mx.zeros((0, D), block.dtype)
        k = group.size()
        ints, psw_p = L.pack(flat, offsets, psw, spec, V, n_max, b_max, block.dtype, send_psw)
        gathered = ops.all_gather(ints, group).reshape(k, -1)
        gidx, goff = gathered[:, :n_max], gathered[:, n_max:]
        gpsw = None if psw_p is None else ops.gather(psw_p, group)
        rows = block.shape[0]
        rt = L.route(gidx, self.row_offset, rows, spec.padding_idx)
        table = block if spec.max_norm is None else renormed_for_call(self, rt.in_block.reshape(-1))
        p = gidx.size
        lspec = L.local_spec(spec, b_max, p)
        freq = L.frequencies(rt, rows) if spec.scale_grad_by_freq else None
        listed = L.listed(rt, goff, lspec)
        mini = L.mini_table(table, rt, listed, freq, active_record(self), spec.deterministic)
        parts = L.lookup_parts(mini, rt, goff, gpsw, lspec, self.backend)
        if spec.mode == "max":
            keys = []
            for i in range(k):
                has, ok, pos = L.max_candidates(
                    mini, parts[i], rt.local[i], goff[i], rt.owned[i], lspec, i * n_max, n_max
                )
                keys.append(ops.max_key(parts[i].astype(mx.float32), mx.logical_or(has, ~ok), pos))
            own = ops.max_own(parts, mx.stack(keys), group, block.dtype)
        else:
            own = ops.reduce_own(parts, group)
        out = own[:b]
        if spec.mode == "mean" and b:  # (a rank with no bags has no counts to take)
            out = (out.astype(mx.float32) / L.mean_counts(flat, offsets, spec, V)[:, None]).astype(
                block.dtype
            )
        self._store(table)
        return out

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        **kw,
    ):
        """A :class:`ShardedEmbeddingBag` over the full table ``embeddings``: each rank keeps its block.

        Example:
            >>> import mlx.core as mx, mlx_embag as meb
            >>> bag = meb.ShardedEmbeddingBag.from_pretrained(mx.eye(3), mode="sum", group=mx.distributed.init())
            >>> bag(mx.array([[0, 2]])).tolist()
            [[1.0, 0.0, 1.0]]
        """
        return cls._pretrained(locals())
