"""Functional entry points with PyTorch's signatures: validation, then dispatch.

Everything the user passes is checked here, at the boundary, and reduced to
the normalised call of ``_spec.py``; the backends trust it.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import mlx.core as mx
import numpy as np

from . import backend as _backend
from . import reference
from ._spec import MODES, BagSpec, EmbSpec

_FLOAT_TABLES = (mx.float32, mx.float16, mx.bfloat16)
_I32_MAX = 2**31 - 1
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_warned = set()


def _caller_stacklevel():
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level


def _warn_once(key, message, category=UserWarning):
    if key not in _warned:
        _warned.add(key)
        # warnings.warn counts its own caller as 1; _caller_stacklevel counts from here.
        warnings.warn(message, category, stacklevel=_caller_stacklevel())


def _as_array(x, name):
    if isinstance(x, mx.array):
        return x
    if x is None:
        raise TypeError(f"{name} must be an mlx array, got None.")
    try:
        return mx.array(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}.") from e


def _check_int_array(x, name):
    if not mx.issubdtype(x.dtype, mx.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}.")


def _check_weight(weight):
    weight = _as_array(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}.")
    if weight.dtype not in _FLOAT_TABLES:
        raise TypeError(f"weight must be float32, float16 or bfloat16, got {weight.dtype}.")
    return weight


def _check_padding_idx(padding_idx, num_embeddings):
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__}.")
    padding_idx = int(padding_idx)
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"padding_idx must be within [-{num_embeddings}, {num_embeddings - 1}] "
            f"(num_embeddings={num_embeddings}), got {padding_idx}."
        )
    return padding_idx + num_embeddings if padding_idx < 0 else padding_idx


def _check_norm(max_norm, norm_type):
    if max_norm is not None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
            raise TypeError(f"max_norm must be a number or None, got {type(max_norm).__name__}.")
        max_norm = float(max_norm)
        if not max_norm >= 0:
            raise ValueError(f"max_norm must be non-negative, got {max_norm}.")
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be a number, got {type(norm_type).__name__}.")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive (or inf), got {norm_type}.")
    return max_norm, norm_type


def _check_positions(n, name, product):
    """MLX shapes are 32-bit: a flat view of more than 2**31 - 1 indices does not exist."""
    if n > _I32_MAX:
        raise ValueError(
            f"{name} has {product} = {n} indices; at most 2**31 - 1 = {_I32_MAX} are supported "
            "(MLX array shapes are 32-bit, and the indices are read as one flat array)."
        )


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}.")
    return value


def _check_bag_options(mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset):
    """The table-independent options of a bag (functional and module); returns (max_norm, norm_type)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}.")
    _check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    _check_bool(sparse, "sparse")
    _check_bool(include_last_offset, "include_last_offset")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError("scale_grad_by_freq=True is not supported with mode='max'.")
    if mode == "max" and sparse:
        raise ValueError("sparse=True is not supported with mode='max'.")
    return _check_norm(max_norm, norm_type)


def _check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse):
    """The table-independent options of ``embedding`` (functional and module); returns (max_norm, norm_type)."""
    _check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    _check_bool(sparse, "sparse")
    return _check_norm(max_norm, norm_type)


def _warn_sparse():
    _warn_once(
        "sparse",
        "sparse=True: MLX has no sparse arrays, so mlx_embag returns a dense gradient "
        "(same values as PyTorch's sparse gradient, densified).",
    )


def _can_evaluate(*arrays):
    """Evaluate for a host-side check; False inside mx.compile or mx.vmap tracing."""
    try:
        mx.eval(*arrays)
        return True
    except (ValueError, RuntimeError) as e:
        if "transformations" not in str(e) and "compile" not in str(e):
            raise
        _warn_once(
            "check_indices",
            "check_indices is skipped inside mx.compile/mx.vmap, where arrays cannot be "
            "evaluated; invalid bags come out NaN (the poison rule).",
        )
        return False


def _check_index_values(indices, num_embeddings, name="input"):
    """Host check of index values (only with ``check_indices``): raises naming the position."""
    if indices.size == 0 or not _can_evaluate(indices):
        return
    host = np.array(indices)  # the caller asked for a host sync; NumPy keeps uint64 exact
    bad = (host >= num_embeddings) if host.dtype.kind == "u" else ((host < 0) | (host >= num_embeddings))
    if bad.any():
        pos = np.unravel_index(int(np.argmax(bad)), host.shape)
        where = f"{name}[{', '.join(map(str, pos))}]" if pos else name
        raise IndexError(
            f"{where} = {host[pos]} is out of range for a table of "
            f"{num_embeddings} rows (valid: 0..{num_embeddings - 1})."
        )


def _check_offset_values(offsets, n):
    """Host check of ``offsets`` (only with ``check_indices``): start at 0, within N, non-decreasing."""
    if offsets.size == 0 or not _can_evaluate(offsets):
        return
    off = np.array(offsets)  # NumPy keeps uint64 exact (no wrap-around to negative int64)
    if off[0] != 0:
        raise ValueError(f"offsets[0] must be 0, got {off[0]}.")
    past = np.flatnonzero(off > n)
    if past.size:
        i = int(past[0])
        raise ValueError(f"offsets must not exceed the input length {n}: offsets[{i}] = {off[i]}.")
    down = np.flatnonzero(off[1:] < off[:-1])
    if down.size:
        i = int(down[0]) + 1
        raise ValueError(
            f"offsets must be non-decreasing: offsets[{i}] = {off[i]} < offsets[{i - 1}] = {off[i - 1]}."
        )


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
        return weight, indices, lambda out: out
    if not V:
        weight = mx.pad(weight, [(0, 1), (0, 0)])
        indices = mx.ones(indices.shape, dtype=indices.dtype)
    if not D:
        weight = mx.pad(weight, [(0, 0), (0, 1)])
    return weight, indices, lambda out: out[..., :D]


def _metal_ops():
    from . import metal_ops

    return metal_ops


def _renormed_table(input, weight, max_norm, norm_type, backend):
    """The table after PyTorch's in-place renorm over ``input`` (the modules' write-back).

    The factors come from the backend the call resolves to, so the stored
    table equals, bitwise, what that backend's in-call renorm would use.
    """
    input = _as_array(input, "input")
    _check_int_array(input, "input")
    spec = EmbSpec(None, max_norm, norm_type, False, False)
    scale = None
    if input.size and _backend.resolve_backend(
        backend, lambda: _metal_ops().unsupported_embedding(weight, input, spec)
    ) == "metal":
        scale = _metal_ops().position_scales(weight, input, max_norm, norm_type)
    return reference.renormed_weight(weight, input, max_norm, norm_type, scale)


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
    weight = _check_weight(weight)
    V, D = weight.shape
    input = _as_array(input, "input")
    _check_int_array(input, "input")
    max_norm, norm_type = _check_bag_options(
        mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset
    )
    padding_idx = _check_padding_idx(padding_idx, V)

    if input.ndim == 2:
        if offsets is not None:
            raise ValueError("offsets must be None when input is 2-D (each row is a bag).")
        num_bags, bag_size = input.shape
        _check_positions(num_bags * bag_size, "input", f"{num_bags} * {bag_size}")
        flat = input.reshape(-1)
    elif input.ndim == 1:
        if offsets is None:
            raise ValueError("offsets is required when input is 1-D.")
        offsets = _as_array(offsets, "offsets")
        _check_int_array(offsets, "offsets")
        if offsets.ndim != 1:
            raise ValueError(f"offsets must be 1-D, got shape {offsets.shape}.")
        if include_last_offset and offsets.size == 0:
            raise ValueError("offsets must have at least one element with include_last_offset=True.")
        num_bags = offsets.size - 1 if include_last_offset else offsets.size
        bag_size = None
        flat = input
    else:
        raise ValueError(f"input must be 1-D (with offsets) or 2-D, got {input.ndim}-D.")

    if per_sample_weights is not None:
        if mode != "sum":
            raise NotImplementedError(
                f"per_sample_weights is only supported with mode='sum', got mode={mode!r}."
            )
        per_sample_weights = _as_array(per_sample_weights, "per_sample_weights")
        if not mx.issubdtype(per_sample_weights.dtype, mx.floating):
            raise TypeError(f"per_sample_weights must be floating point, got {per_sample_weights.dtype}.")
        if per_sample_weights.shape != input.shape:
            raise ValueError(
                f"per_sample_weights must have input's shape {input.shape}, got {per_sample_weights.shape}."
            )
        per_sample_weights = per_sample_weights.reshape(-1)
    if sparse:
        _warn_sparse()

    if _backend.resolve_check_indices(check_indices):
        _check_index_values(input, V)
        if offsets is not None:
            _check_offset_values(offsets, flat.size)

    spec = BagSpec(
        mode=mode,
        num_bags=num_bags,
        bag_size=bag_size,
        include_last_offset=bool(include_last_offset) and input.ndim == 1,
        padding_idx=padding_idx,
        max_norm=max_norm,
        norm_type=norm_type,
        scale_grad_by_freq=scale_grad_by_freq,
        deterministic=_backend.resolve_deterministic(deterministic),
    )
    weight, flat, trim = _stand_in_table(weight, flat)
    args = (weight, flat, offsets, per_sample_weights, spec)
    if _backend.resolve_backend(backend, lambda: _metal_ops().unsupported_bag(*args)) == "metal":
        return trim(_metal_ops().embedding_bag(*args))
    return trim(reference.embedding_bag(*args))


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
    weight = _check_weight(weight)
    V, _ = weight.shape
    input = _as_array(input, "input")
    _check_int_array(input, "input")
    max_norm, norm_type = _check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse)
    padding_idx = _check_padding_idx(padding_idx, V)
    _check_positions(input.size, "input", " * ".join(map(str, input.shape)) or "1")
    if sparse:
        _warn_sparse()
    if _backend.resolve_check_indices(check_indices):
        _check_index_values(input, V)
    spec = EmbSpec(
        padding_idx=padding_idx,
        max_norm=max_norm,
        norm_type=norm_type,
        scale_grad_by_freq=scale_grad_by_freq,
        deterministic=_backend.resolve_deterministic(deterministic),
    )
    weight, input, trim = _stand_in_table(weight, input)
    unsupported = lambda: _metal_ops().unsupported_embedding(weight, input, spec)  # noqa: E731
    if _backend.resolve_backend(backend, unsupported) == "metal":
        return trim(_metal_ops().embedding(weight, input, spec))
    return trim(reference.embedding(weight, input, spec))

