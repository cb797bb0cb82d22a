"""Functional entry points with PyTorch's signatures: validation, then dispatch.

Everything the user passes is checked here, at the boundary, and reduced to
the normalised call of ``_spec.py``; the backends trust it.
"""

from __future__ import annotations

import functools

import mlx.core as mx

from . import _fallback, _plans, reference
from . import backend as _backend
from ._spec import BagSpec, EmbSpec
from ._validate import (
    check_bag_options,
    check_bags,
    check_embedding_options,
    check_index_values,
    check_indices_array,
    check_offset_values,
    check_padding_idx,
    check_per_sample_weights,
    check_positions,
    check_weight,
    warn_sparse,
)


def _unchanged(out):
    return out


def _stand_in_table(weight, indices):
    """A table with no rows or no columns, replaced by one both paths can run.

    MLX refuses a non-empty ``take`` from an empty axis, and in 0.32
    ``segmented_mm`` with zero columns dies of SIGFPE, so such tables run as a
    one-row or one-column zero-padded stand-in. With no rows, every index is
    out of range: the stand-in's indices are all 1, out of range for its one
    row in every integer dtype, so the poison rule gives NaN for every
    non-empty bag, as it would for the real table. Padding is differentiable,
    so the gradient comes back in the original shape. Returns the table, the
    indices and the function that trims the output back to ``D`` columns.
    """
    V, D = weight.shape
    if V and D:
        return weight, indices, _unchanged
    if not V:
        weight = mx.pad(weight, [(0, 1), (0, 0)])
        indices = mx.ones(indices.shape, dtype=indices.dtype)
    if not D:
        weight = mx.pad(weight, [(0, 0), (0, 1)])
    return weight, indices, lambda out: out[..., :D]


_metal_ops_module = None


def _metal_ops():
    # Imported on first use (the reference path never needs it), then kept: an
    # import statement costs a microsecond on every call even when cached.
    global _metal_ops_module
    if _metal_ops_module is None:
        from . import metal_ops

        _metal_ops_module = metal_ops
    return _metal_ops_module


def _renormed_table(input, weight, max_norm, norm_type, backend):
    """The table after PyTorch's in-place renorm over ``input`` (the modules' write-back).

    The factors come from the backend the call resolves to, so the stored
    table equals, bitwise, what that backend's in-call renorm would use.
    """
    input = check_indices_array(input)
    spec = EmbSpec(None, max_norm, norm_type, False, False)
    scale = None
    if (
        input.size
        and _backend.resolve_backend(backend, lambda: _metal_ops().unsupported_embedding(weight, input, spec))
        == "metal"
    ):
        scales = _metal_ops().position_scales
        if _backend.is_auto(backend):  # forward only: the write-back has no gradient
            scales = lambda *a: _fallback.run(
                "position_scales", _metal_ops().position_scales, lambda *_: None, a, backward=False
            )
        scale = scales(weight, input, max_norm, norm_type)
    return reference.renormed_weight(weight, input, max_norm, norm_type, scale)


def _dispatch(op, unsupported, backend, weight, indices, *rest):
    """Run ``op`` (``embedding_bag``/``embedding``) on the backend the call resolves to.

    ``unsupported`` names the ``metal_ops`` function that says why the kernels
    cannot run these arguments; both backends take the same ones.
    """
    weight, indices, trim = _stand_in_table(weight, indices)
    args = (weight, indices, *rest)
    return trim(_route(op, unsupported, backend, args)[1](*args))


def _route(op, unsupported, backend, args):
    """``(kind, fn)``: where ``op``'s normalised ``args`` run (``"metal"``, ``"auto"``: Metal
    with the reference path as fallback, or ``"reference"``) and the function running them.
    The one place that chooses: the first call of a signature and its plan both ask it."""
    name, auto = _backend.resolve_with_auto(backend, lambda: getattr(_metal_ops(), unsupported)(*args))
    if name != "metal":
        return "reference", getattr(reference, op)
    # The resolution asked `unsupported` already: the checked entry points skip asking again.
    metal_fn = getattr(_metal_ops(), _CHECKED[op])
    if not auto:
        return "metal", metal_fn
    return "auto", lambda *a: _fallback.run(op, metal_fn, getattr(reference, op), a)


_CHECKED = {"embedding_bag": "checked_embedding_bag", "embedding": "checked_embedding"}


def bag_call(
    input,
    weight,
    offsets,
    max_norm,
    norm_type,
    scale_grad_by_freq,
    mode,
    sparse,
    per_sample_weights,
    include_last_offset,
    padding_idx,
    backend,
    check_indices,
    deterministic,
):
    """:func:`embedding_bag`'s arguments checked and normalised: ``(weight, flat, offsets, psw, spec)``.

    Every argument is required (by name): the public function and the sparse
    lookups of :mod:`mlx_embag.autograd` pass them all.

    Example:
        >>> import mlx.core as mx
        >>> w, flat, off, psw, spec = bag_call(
        ...     mx.array([[1, 2]]), mx.ones((3, 2)), None, None, 2.0, False, "sum", False,
        ...     None, False, None, None, None, None)
        >>> flat.tolist(), spec.bag_size
        ([1, 2], 2)
    """
    weight = check_weight(weight)
    num_embeddings = weight.shape[0]
    input = check_indices_array(input)
    max_norm, norm_type = check_bag_options(
        mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset
    )
    padding_idx = check_padding_idx(padding_idx, num_embeddings)
    flat, offsets, num_bags, bag_size = check_bags(input, offsets, include_last_offset)
    per_sample_weights = check_per_sample_weights(per_sample_weights, mode, input)
    warn_sparse(sparse)
    if _backend.resolve_check_indices(check_indices):
        check_index_values(input, num_embeddings)
        if offsets is not None:
            check_offset_values(offsets, flat.size)

    spec = _bag_spec(
        mode,
        num_bags,
        bag_size,
        bool(include_last_offset) and input.ndim == 1,
        padding_idx,
        max_norm,
        norm_type,
        scale_grad_by_freq,
        _backend.resolve_deterministic(deterministic),
    )
    return weight, flat, offsets, per_sample_weights, spec


# One spec object per distinct call signature: the caches keyed on it then find its hash stored.
_bag_spec = functools.lru_cache(maxsize=1024)(BagSpec)


def embedding_call(
    input,
    weight,
    padding_idx,
    max_norm,
    norm_type,
    scale_grad_by_freq,
    sparse,
    backend,
    check_indices,
    deterministic,
):
    """:func:`embedding`'s arguments checked and normalised: ``(weight, input, spec)``.

    Example:
        >>> import mlx.core as mx
        >>> w, idx, spec = embedding_call(mx.array([0]), mx.ones((3, 2)), -1, None, 2.0, False, False,
        ...                               None, None, None)
        >>> spec.padding_idx
        2
    """
    weight = check_weight(weight)
    num_embeddings = weight.shape[0]
    input = check_indices_array(input)
    max_norm, norm_type = check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse)
    padding_idx = check_padding_idx(padding_idx, num_embeddings)
    check_positions(input.size, "input", " * ".join(map(str, input.shape)) or "1")
    warn_sparse(sparse)
    if _backend.resolve_check_indices(check_indices):
        check_index_values(input, num_embeddings)
    deterministic = _backend.resolve_deterministic(deterministic)
    spec = EmbSpec(padding_idx, max_norm, norm_type, scale_grad_by_freq, deterministic)
    return weight, input, spec


def embedding_bag(
    input,
    weight,
    offsets=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    mode="mean",
    sparse=False,
    per_sample_weights=None,
    include_last_offset=False,
    padding_idx=None,
    *,
    backend=None,
    check_indices=None,
    deterministic=None,
):
    """Sums, means or maxes of bags of embeddings, as ``torch.nn.functional.embedding_bag``.

    Args:
        input (array): integer indices, ``(B, N)`` (B bags of N) or 1-D with ``offsets``.
        weight (array): ``(V, D)`` table (float32, float16 or bfloat16).
        offsets (array, optional): 1-D start of each bag in a 1-D ``input``; ``(B,)``,
            or ``(B+1,)`` with ``include_last_offset=True``.
        max_norm (float, optional): rows referenced by ``input`` whose ``norm_type``-norm
            exceeds it are rescaled to it for this call (the functional form cannot write
            the rescaled rows back; the modules do).
        norm_type (float): the p of the p-norm for ``max_norm`` (``inf`` allowed).
        scale_grad_by_freq (bool): divide each row's gradient by its number of
            occurrences in ``input``. Not with ``mode="max"``.
        mode (str): ``"sum"``, ``"mean"`` or ``"max"``.
        sparse (bool): accepted for porting; the gradient is dense (warns once).
        per_sample_weights (array, optional): weights of ``input``'s shape (mode ``"sum"``).
        include_last_offset (bool): ``offsets`` has B+1 entries, the last ending bag B-1.
        padding_idx (int, optional): a row excluded from every bag and the gradient.
        backend (str, optional): ``"auto"``, ``"metal"`` or ``"reference"``.
        check_indices (bool, optional): check index and offset values on the host
            (raises ``IndexError``/``ValueError``); ``None`` reads ``MLX_EMBAG_CHECK_INDICES``.
            Unchecked, a bag with an out-of-range index or malformed offsets is NaN.
        deterministic (bool, optional): bitwise-reproducible weight gradient;
            ``None`` reads ``MLX_EMBAG_DETERMINISTIC``.

    Returns:
        array: ``(B, D)`` in the table's dtype.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> w = mx.arange(8, dtype=mx.float32).reshape(4, 2)
        >>> meb.embedding_bag(mx.array([0, 1, 3]), w, mx.array([0, 2]), mode="sum").tolist()
        [[2.0, 4.0], [6.0, 7.0]]
    """
    # The options in the order of _plans.BAG_OPTIONS.
    options = (
        max_norm,
        norm_type,
        scale_grad_by_freq,
        mode,
        sparse,
        include_last_offset,
        padding_idx,
        backend,
        check_indices,
        deterministic,
    )
    key = _plans.bag_key(input, weight, offsets, per_sample_weights, options)
    plan = _plans.get(key)
    if plan is not None:
        return plan(weight, input, offsets, per_sample_weights)
    args = dict(zip(_plans.BAG_OPTIONS, options), input=input, weight=weight, offsets=offsets)
    args["per_sample_weights"] = per_sample_weights
    normalised = bag_call(**args)
    out = _dispatch("embedding_bag", "unsupported_bag", backend, *normalised)
    # Only a call that went through every check without raising leaves a plan.
    if key is not None:
        _plans.put(key, _bag_plan(args, normalised))
    return out


def _flat(x):
    return x if x is None or x.ndim == 1 else x.reshape(-1)


def _bag_plan(args, normalised):
    """The fast path of a signature :func:`bag_call` and :func:`_dispatch` just accepted:
    ``plan(weight, input, offsets, per_sample_weights)``. The checks that read only shapes,
    dtypes and options are not repeated; those that read index or offset VALUES
    (``check_indices``) run on every call, as does the dispatch."""
    weight, flat, offsets, psw, spec = normalised
    if 0 in weight.shape:
        return None  # the stand-in table: rare, always the full path
    kind, _ = _route("embedding_bag", "unsupported_bag", args["backend"], normalised)
    inner = reference.bag_runner(spec, weight.shape[0], psw is not None)
    run = lambda w, i, o, p: inner(w, _flat(i), o, _flat(p))  # noqa: E731
    if kind != "reference":
        # The kernels read the indices and weights flat, whatever their shape: no reshape.
        metal = _metal_ops().bag_runner(spec, weight, args["input"], offsets, args["per_sample_weights"])
        # "auto": the same probing and fallback as the full path, keyed as it is.
        run = metal if kind == "metal" else _fallback.runner("embedding_bag", metal, run, normalised)
    return _checking(run, args, weight.shape[0])


def embedding(
    input,
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    sparse=False,
    *,
    backend=None,
    check_indices=None,
    deterministic=None,
):
    """Rows of ``weight`` at ``input``, as ``torch.nn.functional.embedding``.

    Args:
        input (array): integer indices of any shape ``(*)``.
        weight (array): ``(V, D)`` table (float32, float16 or bfloat16).
        padding_idx (int, optional): a row that receives no gradient (the forward still
            returns it).
        max_norm (float, optional): referenced rows with a larger ``norm_type``-norm are
            rescaled to it for this call.
        norm_type (float): the p of the p-norm for ``max_norm``.
        scale_grad_by_freq (bool): divide each row's gradient by its count in ``input``.
        sparse (bool): accepted for porting; the gradient is dense (warns once).
        backend, check_indices, deterministic: as in :func:`embedding_bag`. Unchecked,
            an out-of-range index gives a NaN row and no gradient.

    Returns:
        array: ``(*, D)`` in the table's dtype.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> w = mx.arange(6, dtype=mx.float32).reshape(3, 2)
        >>> meb.embedding(mx.array([[2, 0]]), w).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    # The options in the order of _plans.EMB_OPTIONS.
    options = (
        padding_idx,
        max_norm,
        norm_type,
        scale_grad_by_freq,
        sparse,
        backend,
        check_indices,
        deterministic,
    )
    key = _plans.emb_key(input, weight, options)
    plan = _plans.get(key)
    if plan is not None:
        return plan(weight, input)
    args = dict(zip(_plans.EMB_OPTIONS, options), input=input, weight=weight)
    normalised = embedding_call(**args)
    out = _dispatch("embedding", "unsupported_embedding", backend, *normalised)
    if key is not None:
        _plans.put(key, _emb_plan(args, normalised))
    return out


def _emb_plan(args, normalised):
    """:func:`_bag_plan` for :func:`embedding`: ``plan(weight, input)``."""
    weight, input, spec = normalised
    if 0 in weight.shape:
        return None
    num_embeddings = weight.shape[0]
    kind, _ = _route("embedding", "unsupported_embedding", args["backend"], normalised)
    run = reference.embedding_runner(spec, num_embeddings)
    if kind != "reference":
        metal = _metal_ops().embedding_runner(spec, weight, input)
        run = metal if kind == "metal" else _fallback.runner("embedding", metal, run, normalised)
    return _checking(run, args, num_embeddings)


def _checking(run, args, num_embeddings):
    """``run`` behind the per-call work a plan still owes: the sparse warning and the
    checks that read index and offset values (``check_indices``)."""
    check = _backend.resolve_check_indices(args["check_indices"])
    sparse = args["sparse"]
    if not (check or sparse):
        return run

    def owed(input, offsets):
        if sparse:
            warn_sparse(sparse)
        if check:
            check_index_values(input, num_embeddings)
            if offsets is not None:
                check_offset_values(offsets, input.size)

    if "offsets" in args:  # embedding_bag's

        def plan(weight, input, offsets, psw):
            owed(input, offsets)
            return run(weight, input, offsets, psw)

    else:

        def plan(weight, input):
            owed(input, None)
            return run(weight, input)

    return plan
