"""The pure-MLX reference path: the semantics every other path is checked against.

Both entry points take the normalised call of ``_spec.py`` and are
``mx.custom_function``s whose VJPs implement PyTorch's gradients exactly:
straight through ``max_norm``, arg-max routing with earliest-position ties,
``scale_grad_by_freq`` by the documented count. Sums accumulate in float32.

The forward of a bag is a gather followed by a segmented reduction
(``mx.segmented_mm`` for variable-length bags, a reshape for 2-D input); the
gradient is MLX's scatter-add, or, with ``deterministic=True``, a sort by row
followed by a segmented sum so that the order of additions is fixed on every
device.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag import reference
    >>> from mlx_embag._spec import BagSpec
    >>> spec = BagSpec("sum", 2, None, False, None, None, 2.0, False, False)
    >>> w = mx.arange(8, dtype=mx.float32).reshape(4, 2)
    >>> reference.embedding_bag(w, mx.array([0, 1, 3]), mx.array([0, 2]), None, spec).tolist()
    [[2.0, 4.0], [6.0, 7.0]]
"""

from __future__ import annotations

import functools
from dataclasses import replace

import mlx.core as mx

from ._bag_forward import (
    ONE32,
    block_size,
    bounds,
    from_order_key,
    gather_indices,
    grid_reduce,
    order_key,
    pairs,
    poison,
    poison_rows,
    segment_max,
    segment_sum,
)
from ._layout import Layout, checked_indices, renorm_scale, row_counts
from ._scatter import run_sums, scatter_add_axis, scatter_rows
from ._spec import BagSpec, EmbSpec
from ._transforms import loop_vmap, refuse_jvp

_F32 = mx.float32
_NAN = float("nan")


def _gather_rows(weight, safe, max_norm, norm_type):
    """Gathered rows in float32, rescaled as PyTorch's in-place renorm leaves them.

    The rescaled row is rounded to the table's dtype first, because PyTorch
    stores it there before reading it back.
    """
    rows = mx.take(weight, safe, axis=0)
    if max_norm is not None:
        r32 = rows.astype(_F32)
        scale = renorm_scale(r32, max_norm, norm_type)
        rows = (r32 * scale[:, None]).astype(weight.dtype)
    return rows.astype(_F32)


def _rows_at(weight, indices, max_norm, norm_type):
    """``(ok, safe, rows)`` for flat ``indices``: the range check, the in-bounds indices and
    the float32 rows (:func:`_gather_rows`) they read."""
    ok, safe = checked_indices(indices.reshape(-1), weight.shape[0])
    return ok, safe, _gather_rows(weight, safe, max_norm, norm_type)


# --------------------------------------------------------------------------- bag


def _bag_coef(lay: Layout, psw, dtype):
    """Per-position multiplier for sum/mean (None when every position counts 1)."""
    coef = None
    if psw is not None:
        coef = psw.astype(dtype).astype(_F32)
    keep = lay.not_padding()
    if keep is not None:
        coef = keep.astype(_F32) if coef is None else mx.where(keep, coef, 0.0)
    return coef


def _bag_counts(lay: Layout):
    """Per bag: the mean's divisor (non-padding entries), at least 1."""
    keep = lay.not_padding()
    if keep is not None:
        count = lay.segment_count(keep)
    elif lay.is_2d:
        count = mx.full((lay.B,), lay.spec.bag_size, dtype=mx.int32)
    else:
        starts, ends = lay.bounds
        count = mx.where(lay.struct_ok, ends - starts, 0)
    return mx.maximum(count, 1).astype(_F32)


def _sum_forward(rows, lay: Layout, psw, dtype):
    spec, B, d = lay.spec, lay.B, rows.shape[-1]
    coef = _bag_coef(lay, psw, dtype)
    if lay.is_2d:
        L = spec.bag_size
        r = rows if coef is None else rows * coef[:, None]
        out = r.reshape(B, L, d).sum(axis=1) if L else mx.zeros((B, d), _F32)
    else:
        w = mx.ones((1, lay.N), dtype=_F32) if coef is None else coef[None]
        out = mx.segmented_mm(w, rows, lay.segments).reshape(B, d)
    if spec.mode == "mean":
        out = out / _bag_counts(lay)[:, None]
    return out


def _max_mask(lay: Layout):
    keep = lay.not_padding()
    return lay.pos_valid if keep is None else mx.logical_and(lay.pos_valid, keep)


def _same(values, best):
    """``values == best``, where NaN equals NaN: the positions that attain a bag's max."""
    return mx.logical_or(values == best, mx.logical_and(mx.isnan(values), mx.isnan(best)))


# The smallest int32, order_key(-inf): what a bag's maximum starts from.
_I32_MIN = -(2**31)


def _max_forward(rows, lay: Layout):
    B, d = lay.B, rows.shape[-1]
    if lay.is_2d:
        L = lay.spec.bag_size
        if L == 0:
            return mx.zeros((B, d), _F32)
        if lay.spec.padding_idx is None:
            # Every bag has L > 0 entries; invalid bags are NaN-ed by the caller.
            return rows.reshape(B, L, d).max(axis=1)
        mask = _max_mask(lay)
        out = mx.where(mask[:, None], rows, -float("inf")).reshape(B, L, d).max(axis=1)
        has = mask.reshape(B, L).any(axis=1)
    else:
        mask = _max_mask(lay)
        dest = mx.where(mask, lay.owner, B)
        # A float scatter-maximum keeps or drops NaN depending on the order it
        # meets them; on order keys NaN is simply the largest value.
        keys = mx.full((B + 1, d), _I32_MIN, dtype=mx.int32).at[dest].maximum(order_key(rows))
        out = from_order_key(keys[:B])
        has = lay.segment_count(mask) > 0
    return mx.where(has[:, None], out, 0.0)


def _spread(lay: Layout, per_bag, fill):
    """(B, D) per-bag values -> per position; ``fill`` where a position has no bag.

    2-D input gives a (B, L, D) broadcast (no copy: MLX's scatter reads it in
    place), 1-D input an (N, D) gather.
    """
    if lay.is_2d:
        L, d = lay.spec.bag_size, per_bag.shape[-1]
        return mx.broadcast_to(per_bag[:, None, :], (lay.B, L, d))
    ext = mx.concatenate([per_bag, mx.full((1, per_bag.shape[-1]), fill, per_bag.dtype)])
    return mx.take(ext, mx.where(lay.owner >= 0, lay.owner, lay.B), axis=0)


def _max_backward(rows, out, cot, lay: Layout):
    """The weight gradient of max mode: each (bag, column) cotangent goes to the
    row at the earliest position attaining the maximum (the earliest NaN when
    the maximum is NaN), and nowhere else."""
    B, N, d = lay.B, lay.N, rows.shape[-1]
    out = out.astype(_F32)
    if lay.is_2d:
        # The first True of a boolean argmax is the earliest position on every
        # device (ties go to the lower index in MLX's Metal reduction too),
        # which is exactly PyTorch's rule; comparing with the output also
        # places NaN maxima, which an argmax of the values may not.
        L = lay.spec.bag_size
        first = mx.arange(B, dtype=mx.int32)[:, None] * L
        if lay.spec.padding_idx is None:  # N > 0 here, so every bag has L > 0 entries
            vals, live = rows, lay.bag_valid
        else:
            mask = _max_mask(lay)
            vals = mx.where(mask[:, None], rows, -float("inf"))
            live = mx.logical_and(lay.bag_valid, mask.reshape(B, L).any(axis=1))
        if L > 1:
            hit = _same(vals.reshape(B, L, d), out[:, None, :])
            pos = first + mx.argmax(hit, axis=1).astype(mx.int32)
        else:
            pos = mx.broadcast_to(first, (B, d))
    else:
        mask = _max_mask(lay)
        # Variable-length bags: the smallest position holding the bag's maximum.
        here = mx.arange(N, dtype=mx.int32)[:, None]
        dest = mx.where(mask, lay.owner, B)
        out_ext = mx.concatenate([out, mx.full((1, d), _NAN, dtype=_F32)])
        hit = mx.logical_and(mask[:, None], _same(rows, mx.take(out_ext, dest, axis=0)))
        cand = mx.where(hit, here, N)
        pos = mx.full((B + 1, d), N, dtype=mx.int32).at[dest].minimum(cand)[:B]
        live = mx.logical_and(lay.bag_valid, lay.segment_count(mask) > 0)
        pos = mx.minimum(pos, N - 1)
    row = mx.take(lay.safe, pos)
    cot = mx.where(live[:, None], cot, 0.0)
    V = lay.V
    if lay.spec.deterministic:
        # One key per (row, column); V * d may pass 2**31, which no MLX shape holds.
        key = row.astype(mx.int64) * d + mx.arange(d, dtype=mx.int64)[None]
        srt, sums = run_sums(key.reshape(-1), cot.reshape(-1, 1), None)
        return mx.zeros((V, d), dtype=_F32).at[srt // d, srt % d].add(sums[:, 0])
    return scatter_add_axis(row, cot, V)


_sized = functools.lru_cache(maxsize=1024)(lambda spec, num_bags: replace(spec, num_bags=num_bags))


def _forward(spec: BagSpec, num_embeddings, weight, indices, psw, offsets):
    """``(out, rows)`` of one call: the poisoned (B, D) result in float32 and the
    gathered float32 rows. Without ``padding_idx`` it takes the lean ops of
    ``_bag_forward``; with it, the :class:`~._layout.Layout` route."""
    B = spec.num_bags
    if spec.padding_idx is None:
        ok, safe = gather_indices(indices, num_embeddings)
        rows = _gather_rows(weight, safe, spec.max_norm, spec.norm_type)
        coef = None if psw is None else psw.astype(weight.dtype).astype(_F32)
        if offsets is None:
            return grid_reduce(rows, ok, coef, B, spec.bag_size, spec.mode), rows
        n = indices.size
        ext, valid = bounds(offsets, spec.include_last_offset, B, n)
        if spec.mode == "max":
            return segment_max(rows, ok, ext, valid, block_size(n, B)), rows
        segs = pairs(ext, B)
        if spec.mode == "mean":
            # The count of a valid bag; an invalid one divides by NaN.
            den = mx.maximum((segs[:, 1:] - segs[:, :1]).astype(_F32), ONE32) / poison(valid)
        else:
            den = poison(valid)
        return segment_sum(rows, ok, coef, segs, den), rows
    lay = Layout(indices, offsets, spec, num_embeddings)
    rows = _gather_rows(weight, lay.safe, spec.max_norm, spec.norm_type)
    if spec.mode == "max":
        out = _max_forward(rows, lay)
    else:
        out = _sum_forward(rows, lay, psw, weight.dtype)
    return mx.where(lay.bag_valid[:, None], out, _NAN), rows


@functools.lru_cache(maxsize=None)
def _bag_function(spec: BagSpec, num_embeddings: int, has_psw: bool):
    """The custom function of one static configuration: ``bag(weight, indices, [psw], [offsets])``.

    Only arrays are passed (see ``_transforms``): ``psw`` when ``has_psw``,
    ``offsets`` for 1-D input (``spec.bag_size is None``). ``spec.num_bags`` is
    0 unless it cannot be read from the arrays (2-D input with ``L == 0``): one
    function serves every batch size (:func:`_shapeless`).
    """
    has_offsets = spec.bag_size is None
    keep_rows = spec.mode == "max" or has_psw

    def sized(indices, extra):
        if spec.num_bags:
            return spec
        if has_offsets:
            return _sized(spec, extra[-1].size - spec.include_last_offset)
        return _sized(spec, indices.size // spec.bag_size)

    def layout(spec, indices, extra):
        return Layout(indices, extra[-1] if has_offsets else None, spec, num_embeddings)

    @mx.custom_function
    def bag(weight, indices, *extra):
        # No differentiation through the forward's own primitives: the VJP below
        # is the gradient, and mx.jvp must reach the rule that refuses it.
        weight = mx.stop_gradient(weight)
        psw = mx.stop_gradient(extra[0]) if has_psw else None
        offsets = extra[-1] if has_offsets else None
        out, rows = _forward(sized(indices, extra), num_embeddings, weight, indices, psw, offsets)
        # The max and per-sample-weight gradients need the gathered rows again: hand them
        # to the VJP rather than gathering twice (no other output: each costs host time).
        return (out.astype(weight.dtype), rows) if keep_rows else (out.astype(weight.dtype),)

    @bag.vjp
    def bag_vjp(primals, cotangents, outputs):
        weight, indices, *extra = primals
        psw = extra[0] if has_psw else None
        out, rows = outputs[0], outputs[1] if keep_rows else None
        cot = cotangents[0].astype(_F32)
        spec_ = sized(indices, extra)
        lay = layout(spec_, indices, extra)
        d_psw = None

        def grads(dw, d_psw):
            rest = [mx.zeros_like(x) for x in extra]
            if has_psw:
                rest[0] = d_psw
            return (dw, mx.zeros_like(indices), *rest)

        if lay.N == 0:
            return grads(mx.zeros_like(weight), None if psw is None else mx.zeros_like(psw))
        if spec.mode == "max":
            dw = _max_backward(rows, out, cot, lay)
        else:
            # Invalid bags send nothing; the mean divides per bag, before spreading.
            cot = mx.where(lay.bag_valid[:, None], cot, 0.0)
            if spec.mode == "mean":
                cot = cot / _bag_counts(lay)[:, None]
            g = _spread(lay, cot, 0.0)
            shape = g.shape[:-1]
            coef = _bag_coef(lay, psw, weight.dtype)
            if spec.scale_grad_by_freq:
                inv = 1.0 / mx.maximum(lay.frequencies(), 1.0)
                coef = inv if coef is None else coef * inv
            if psw is not None:
                keep = lay.pos_valid
                if lay.not_padding() is not None:
                    keep = mx.logical_and(keep, lay.not_padding())
                dot = (rows.reshape(g.shape) * g).sum(axis=-1).reshape(-1)
                d_psw = mx.where(keep, dot, 0.0).astype(psw.dtype)
            coef = None if coef is None else coef.reshape(shape)
            dw = scatter_rows(g, lay.safe.reshape(shape), coef, num_embeddings, spec.deterministic)
        return grads(dw.astype(weight.dtype), d_psw)

    return refuse_jvp(loop_vmap(bag))


def embedding_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec):
    """Reference ``embedding_bag`` on a normalised call (see ``_spec.py``).

    Args:
        weight (array): ``(V, D)`` table, float32/float16/bfloat16.
        indices (array): flat ``(N,)`` integer indices.
        offsets (array or None): raw 1-D offsets, or None for 2-D input.
        per_sample_weights (array or None): flat ``(N,)`` weights (mode ``"sum"``).
        spec (BagSpec): the static options.

    Returns:
        array: ``(B, D)`` in the table's dtype.

    Example:
        >>> import mlx.core as mx
        >>> spec = BagSpec("max", 2, 2, False, None, None, 2.0, False, False)
        >>> w = mx.array([[1.0, 4.0], [3.0, 2.0]])
        >>> embedding_bag(w, mx.array([0, 1, 1, 1]), None, None, spec).tolist()
        [[3.0, 4.0], [3.0, 2.0]]
    """
    d = weight.shape[1]
    if spec.num_bags == 0:
        return mx.zeros((0, d), dtype=weight.dtype)
    fn = _bag_function(_shapeless(spec), weight.shape[0], per_sample_weights is not None)
    extra = [x for x in (per_sample_weights, offsets) if x is not None]
    return fn(weight, indices, *extra)[0]


def bag_runner(spec: BagSpec, num_embeddings: int, has_psw: bool):
    """:func:`embedding_bag` of one call signature, its custom function looked up once:
    ``run(weight, indices, offsets, per_sample_weights)`` (for the functional layer's plans).
        >>> run = bag_runner(BagSpec("sum", 1, None, False, None, None, 2.0, False, False), 2, False)
        >>> run(mx.eye(2), mx.array([0, 1]), mx.array([0]), None).tolist()
        [[1.0, 1.0]]
    """
    if spec.num_bags == 0:
        return lambda w, i, o, p: embedding_bag(w, i, o, p, spec)
    fn = _bag_function(_shapeless(spec), num_embeddings, has_psw)
    if spec.bag_size is None:  # 1-D input: the offsets come last
        return (lambda w, i, o, p: fn(w, i, p, o)[0]) if has_psw else (lambda w, i, o, p: fn(w, i, o)[0])
    return (lambda w, i, o, p: fn(w, i, p)[0]) if has_psw else (lambda w, i, o, p: fn(w, i)[0])


@functools.lru_cache(maxsize=1024)
def _shapeless(spec: BagSpec) -> BagSpec:
    """``spec`` with ``num_bags = 0`` where the arrays carry it (the offsets' length,
    or N / L for 2-D input), so that a new batch size builds no new custom function."""
    return spec if spec.bag_size == 0 else replace(spec, num_bags=0)


# --------------------------------------------------------------------- embedding


@functools.lru_cache(maxsize=None)
def _embedding_function(spec: EmbSpec, num_embeddings: int):
    V = num_embeddings

    @mx.custom_function
    def emb(weight, indices):
        weight = mx.stop_gradient(weight)
        if spec.max_norm is not None:
            ok, _, rows = _rows_at(weight, indices, spec.max_norm, spec.norm_type)
            out = (rows / poison(ok)[:, None]).astype(weight.dtype)
            return out.reshape(*indices.shape, weight.shape[1])
        # Any shape: the gather keeps the indices' shape, and the rows their dtype.
        ok, safe = gather_indices(indices, V)
        return poison_rows(mx.take(weight, safe, axis=0), ok)

    @emb.vjp
    def emb_vjp(primals, cot, out):
        weight, indices = primals
        flat = indices.reshape(-1)
        ok, safe = checked_indices(flat, V)
        keep = ok if spec.padding_idx is None else mx.logical_and(ok, flat != spec.padding_idx)
        coef = keep.astype(_F32)
        if spec.scale_grad_by_freq:
            coef = coef / mx.maximum(mx.take(row_counts(safe, ok, V), safe), 1.0)
        g = cot.reshape(-1, weight.shape[1]).astype(_F32)
        dw = scatter_rows(g, safe, coef, V, spec.deterministic)
        return dw.astype(weight.dtype), mx.zeros_like(indices)

    return refuse_jvp(loop_vmap(emb))


def embedding(weight, indices, spec: EmbSpec):
    """Reference ``embedding`` on a normalised call: ``indices.shape + (D,)``.

    Args:
        weight (array): ``(V, D)`` table.
        indices (array): integer indices of any shape.
        spec (EmbSpec): the static options.

    Example:
        >>> import mlx.core as mx
        >>> spec = EmbSpec(None, None, 2.0, False, False)
        >>> embedding(mx.eye(3), mx.array([[2], [0]]), spec).tolist()
        [[[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]]
    """
    return _embedding_function(spec, weight.shape[0])(weight, indices)


def embedding_runner(spec: EmbSpec, num_embeddings: int):
    """:func:`embedding` for every call with this ``spec`` and table height:
    ``run(weight, indices)`` (the functional layer's call plans use it).

    Example:
        >>> import mlx.core as mx
        >>> run = embedding_runner(EmbSpec(None, None, 2.0, False, False), 3)
        >>> run(mx.eye(3), mx.array([2, 5])).tolist()
        [[0.0, 0.0, 1.0], [nan, nan, nan]]
    """
    return _embedding_function(spec, num_embeddings)


def renormed_weight(weight, indices, max_norm, norm_type, scale=None):
    """The table after PyTorch's in-place ``embedding_renorm_`` over ``indices``.

    The modules store this back after a call with ``max_norm``. Only rows
    referenced by an in-range index change; duplicates write identical values.
    ``scale`` is each position's factor when a backend has computed it (the
    Metal path's ``row_scale`` kernel), so that the table matches that
    backend's own in-call renorm bitwise; by default it is computed here.

    Example:
        >>> import mlx.core as mx
        >>> w = mx.array([[3.0, 4.0], [0.3, 0.4]])
        >>> [round(v, 4) for v in renormed_weight(w, mx.array([0, 1]), 1.0, 2.0).reshape(-1).tolist()]
        [0.6, 0.8, 0.3, 0.4]
    """
    V = weight.shape[0]
    ok, safe, rows = _rows_at(weight, indices, None, norm_type)
    if scale is None:
        scale = renorm_scale(rows, max_norm, norm_type)
    scale = mx.where(ok, scale, 1.0)
    # A row referenced only by out-of-range positions (mapped to row 0) keeps scale 1.
    per_row = mx.ones((V,), dtype=_F32).at[safe].minimum(scale)
    new_rows = (rows * mx.take(per_row, safe)[:, None]).astype(weight.dtype)
    out = mx.array(weight)
    out[safe] = new_rows
    return mx.stop_gradient(out)
