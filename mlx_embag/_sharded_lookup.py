"""One rank's part of a sharded ``embedding_bag``: pack, gather, look up its rows, combine.

The scheme (MLX has no ``all_to_all``):

1. Each rank writes its normalised call (``_spec.py``) in a common shape: its
   indices padded to ``n_max`` positions (an out-of-range index as ``-1``, the
   padding as ``-2``), its offsets as ``b_max + 1`` int32 bounds (2-D input and
   ``include_last_offset=False`` rewritten as such; offsets past the call's end
   moved past ``n_max`` so that the poison rule's verdict is kept), and its
   ``per_sample_weights``. One ``all_gather`` gives every rank every call.
2. Each rank gathers the rows it owns for every position of every call into a
   *mini table* (one row per position, plus a zero row) and runs the ordinary
   ``embedding_bag`` (either backend, every option) on it once per calling rank,
   in ``"sum"`` mode (``"max"`` for max): a position it does not own reads the
   zero row as ``padding_idx``, an out-of-range one stays out of range (so a
   poisoned bag is NaN on every shard).
3. The partial bags are combined across ranks (:mod:`._sharded_ops`) and each
   rank keeps its own; mean divides by the bag's count, computed where the call
   was made. The mini table's gradient is per position, so the table's is a
   scatter of it (``scale_grad_by_freq`` divides by the count of the row in the
   call that read it), or, under :func:`mlx_embag.value_and_grad`, a
   :class:`~mlx_embag.RowSparseGrad` of the local block.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag._spec import BagSpec
    >>> spec = BagSpec("sum", 2, None, False, None, None, 2.0, False, False)
    >>> ints, psw = pack(mx.array([4, 9, 1]), mx.array([0, 2]), None, spec, 5, 4, 3, mx.float32, False)
    >>> ints.tolist()
    [4, -1, 1, -2, 0, 2, 3, 3]
"""

from __future__ import annotations

import dataclasses

import mlx.core as mx

from . import functional as F
from ._layout import Layout, in_range, offsets_int64
from ._scatter import scatter_rows
from .reference import _bag_counts, _same

_F32 = mx.float32
_OUT, _FILL = -1, -2  # packed index values: out of range (poisons its bag), filler (reads nothing)


def pack(flat, offsets, psw, spec, num_embeddings, n_max, b_max, dtype, send_psw):
    """This rank's call in the common shape: int32 ``(n_max + b_max + 1,)`` and float32 psw or None."""
    n, b = flat.size, spec.num_bags
    idx = mx.where(in_range(flat, num_embeddings), flat, _OUT).astype(mx.int32)
    idx = mx.concatenate([idx, mx.full((n_max - n,), _FILL, mx.int32)])
    if offsets is None:
        off = mx.arange(b + 1, dtype=mx.int64) * (spec.bag_size or 0)
    else:
        off = offsets_int64(offsets, n)
        off = off[: b + 1] if spec.include_last_offset else mx.concatenate([off[:b], mx.array([n], mx.int64)])
        # Past the call's end is past every call's end: the bag stays broken after padding.
        off = mx.where(off < 0, -1, mx.where(off > n, n_max + 1, off))
    off = mx.concatenate([off.astype(mx.int32), mx.full((b_max - b,), n, mx.int32)])
    ints = mx.concatenate([idx, off])
    if not send_psw:
        return ints, None
    # Rounded to the table's dtype first, as the lookup itself would.
    w = mx.ones((n,), _F32) if psw is None else psw.astype(dtype).astype(_F32)
    return ints, mx.concatenate([w, mx.zeros((n_max - n,), _F32)])


@dataclasses.dataclass
class Routing:
    """Where each gathered position reads from on this rank (arrays of shape ``(K, n_max)``)."""

    local: mx.array  # the mini-table index: own position, zero row P, or P + 1 (out of range)
    owned: mx.array  # this rank holds the row and it is not padding
    safe: mx.array  # the local row of an owned position (0 elsewhere)
    in_block: mx.array  # the local row of any position in this block (padding too), else ``rows``


def route(gidx, row_offset, rows, padding_idx):
    """The :class:`Routing` of gathered global indices ``gidx`` for the block ``[row_offset, +rows)``."""
    p = gidx.size
    inside = mx.logical_and(gidx >= row_offset, gidx < row_offset + rows)
    owned = inside if padding_idx is None else mx.logical_and(inside, gidx != padding_idx)
    pos = mx.arange(p, dtype=mx.int32).reshape(gidx.shape)
    local = mx.where(gidx == _OUT, p + 1, mx.where(owned, pos, p))
    return Routing(
        local=local,
        owned=owned,
        safe=mx.where(owned, gidx - row_offset, 0),
        in_block=mx.where(inside, gidx - row_offset, rows),
    )


def frequencies(rt: Routing, rows):
    """float32 ``(K * n_max,)``: per owned position, its row's count in the call it came from."""
    k = rt.owned.shape[0]
    key = mx.arange(k, dtype=mx.int32)[:, None] * (rows + 1) + mx.where(rt.owned, rt.safe, rows)
    key = key.reshape(-1)
    return mx.take(mx.zeros((k * (rows + 1),), _F32).at[key].add(1.0), key)


def listed(rt: Routing, goff, lspec):
    """bool ``(K * n_max,)``: the positions a row-sparse gradient lists (owned, in a valid bag)."""
    p = rt.local.size
    valid = [Layout(rt.local[i], goff[i], lspec, p + 1).pos_valid for i in range(rt.local.shape[0])]
    return mx.logical_and(rt.owned.reshape(-1), mx.concatenate(valid))


def mini_table(table, rt: Routing, listed, freq, record, deterministic):
    """The rows every position reads, ``(P + 1, D)``, the last a zero row; differentiable.

    The VJP scatters the per-position gradient into the block (divided by
    ``freq`` when given), or, with a ``record`` of :mod:`mlx_embag.autograd`,
    leaves it there for a :class:`~mlx_embag.RowSparseGrad` (listing the
    ``listed`` positions' rows) and hands the block a zero nobody reads.
    """
    rows_n, d = table.shape
    safe = rt.safe.reshape(-1)
    gathered = mx.take(mx.stop_gradient(table), safe, axis=0)
    mini = mx.concatenate([gathered, mx.zeros((1, d), table.dtype)])
    call = {"indices": mx.where(listed.reshape(-1), safe, -1), "freq": freq, "rows": None}
    if record is not None:
        record.calls.append(call)

    @mx.custom_function
    def tap(w, m):
        return m

    @tap.vjp
    def tap_vjp(primals, cot, output):
        w, m = primals
        if record is not None:
            call["cot"] = cot
            return mx.zeros_like(w), mx.zeros_like(m)
        coef = None if freq is None else 1.0 / mx.maximum(freq, 1.0)
        dw = scatter_rows(cot[:-1].astype(_F32), safe, coef, rows_n, deterministic)
        return dw.astype(w.dtype), mx.zeros_like(m)

    out = tap(table, mini)
    call["rows"] = out
    return out


def local_spec(spec, b_max, p):
    """The spec of one calling rank's lookup on the mini table of ``p + 1`` rows."""
    return dataclasses.replace(
        spec,
        mode="max" if spec.mode == "max" else "sum",
        num_bags=b_max,
        bag_size=None,
        include_last_offset=True,
        padding_idx=p,
        max_norm=None,
        scale_grad_by_freq=False,
    )


def max_candidates(mini, part, local, goff, owned, lspec, start, n_max):
    """For one calling rank's bags: ``(has, valid, position)`` of this shard's maxima.

    ``has`` (B, 1): this shard holds a non-padding position of the valid bag;
    ``valid`` (B, 1): the bag is not poisoned; ``position`` (B, D): the earliest
    of its positions attaining ``part`` (``n_max`` where none), the tie-break
    across shards.
    """
    b, d = part.shape
    lay = Layout(local, goff, lspec, mini.shape[0])
    mask = mx.logical_and(owned, lay.pos_valid)
    has = (lay.segment_count(mask) > 0)[:, None]
    rows = mx.stop_gradient(mini[start : start + n_max])
    dest = mx.where(mask, lay.owner, b)
    ext = mx.concatenate([mx.stop_gradient(part), mx.full((1, d), float("nan"), part.dtype)])
    hit = mx.logical_and(mask[:, None], _same(rows, mx.take(ext, dest, axis=0)))
    cand = mx.where(hit, mx.arange(n_max, dtype=mx.int32)[:, None], n_max)
    pos = mx.full((b + 1, d), n_max, dtype=mx.int32).at[dest].minimum(cand)[:b]
    return has, lay.bag_valid[:, None], pos


def mean_counts(flat, offsets, spec, num_embeddings):
    """float32 ``(B,)``: each of this rank's bags' mean divisor (non-padding entries, at least 1)."""
    return _bag_counts(Layout(flat, offsets, spec, num_embeddings))


def lookup_parts(mini, rt: Routing, goff, gpsw, lspec, backend):
    """``(K, b_max, D)``: this shard's partial bags for every calling rank."""
    k, n_max = rt.local.shape
    parts = []
    for i in range(k):
        psw = None if gpsw is None else gpsw[i]
        parts.append(
            F._dispatch("embedding_bag", "unsupported_bag", backend, mini, rt.local[i], goff[i], psw, lspec)
        )
    return mx.stack(parts)
