"""The argument checks of the functional entry points and the modules.

Each check names the argument it refuses and, where there are choices, lists
them; a check that normalises returns the argument in the form the library
keeps (an ``mx.array``, a ``padding_idx`` within ``[0, V)``, floats for the
norm options). The functional entry points and the ``nn.Module`` classes both
import from here, so a module refuses a bad option with the message a
functional call gives, and refuses it when it is built.

Example:
    >>> from mlx_embag._validate import check_padding_idx
    >>> check_padding_idx(-1, 10)
    9
    >>> check_padding_idx(10, 10)
    Traceback (most recent call last):
        ...
    ValueError: padding_idx must be within [-10, 9] (num_embeddings=10), got 10.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import mlx.core as mx
import numpy as np

from ._spec import FLOAT_TABLES, MODES
from ._transforms import evaluate_unless_traced

BACKENDS = ("auto", "metal", "reference")

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


def as_array(x, name):
    """``x`` as an ``mx.array``; ``TypeError`` naming ``name`` when it cannot be one."""
    if isinstance(x, mx.array):
        return x
    if x is None:
        raise TypeError(f"{name} must be an mlx array, got None.")
    try:
        return mx.array(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}.") from e


def check_int_array(x, name):
    if not mx.issubdtype(x.dtype, mx.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}.")


def check_indices_array(x, name="input"):
    """``x`` as an integer ``mx.array`` (the indices of a call)."""
    x = as_array(x, name)
    check_int_array(x, name)
    return x


def check_table_dtype(dtype, name="dtype"):
    if dtype not in FLOAT_TABLES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {dtype}.")


def check_table_shape(table, name):
    """``table`` as a 2-D ``mx.array`` (any dtype: ``from_pretrained`` leaves the dtype to ``weight``)."""
    table = as_array(table, name)
    if table.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_embeddings, embedding_dim), got shape {table.shape}.")
    return table


def check_weight(weight):
    """A 2-D floating table of one of ``FLOAT_TABLES``."""
    weight = check_table_shape(weight, "weight")
    check_table_dtype(weight.dtype, "weight")
    return weight


def check_size(value, name):
    """A positive int (``num_embeddings``, ``embedding_dim``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}.")
    return int(value)


def check_padding_idx(padding_idx, num_embeddings):
    """``padding_idx`` normalised into ``[0, num_embeddings)``, or None."""
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


def check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}.")
    return value


def check_optional_bool(value, name):
    """A bool, or None for "the environment decides" (``check_indices``, ``deterministic``)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None, got {type(value).__name__}.")
    return value


def check_backend(name, arg="backend"):
    """One of :data:`BACKENDS`, or None for the default."""
    if name is None:
        return None
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{arg} must be one of {', '.join(map(repr, BACKENDS))} or None, got {name!r}.")
    return name


def check_call_options(backend, check_indices, deterministic):
    """The per-call options a module keeps, refused when it is built rather than at its first call."""
    check_backend(backend)
    check_optional_bool(check_indices, "check_indices")
    check_optional_bool(deterministic, "deterministic")


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


def check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse):
    """The table-independent options of ``embedding`` (functional and module); returns (max_norm, norm_type)."""
    check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    check_bool(sparse, "sparse")
    return _check_norm(max_norm, norm_type)


def check_bag_options(mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset):
    """The table-independent options of a bag (functional and module); returns (max_norm, norm_type)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}.")
    check_bool(scale_grad_by_freq, "scale_grad_by_freq")
    check_bool(sparse, "sparse")
    check_bool(include_last_offset, "include_last_offset")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError("scale_grad_by_freq=True is not supported with mode='max'.")
    if mode == "max" and sparse:
        raise ValueError("sparse=True is not supported with mode='max'.")
    return _check_norm(max_norm, norm_type)


def check_positions(n, name, product):
    """MLX shapes are 32-bit: a flat view of more than 2**31 - 1 indices does not exist."""
    if n > _I32_MAX:
        raise ValueError(
            f"{name} has {product} = {n} indices; at most 2**31 - 1 = {_I32_MAX} are supported "
            "(MLX array shapes are 32-bit, and the indices are read as one flat array)."
        )


def check_bags(input, offsets, include_last_offset):
    """The bags of an ``embedding_bag`` call: ``(flat indices, offsets, num_bags, bag_size)``.

    A 2-D ``input`` is B bags of ``bag_size`` (no offsets); a 1-D one is cut by ``offsets``.
    """
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError("offsets must be None when input is 2-D (each row is a bag).")
        num_bags, bag_size = input.shape
        check_positions(num_bags * bag_size, "input", f"{num_bags} * {bag_size}")
        return input.reshape(-1), None, num_bags, bag_size
    if input.ndim != 1:
        raise ValueError(f"input must be 1-D (with offsets) or 2-D, got {input.ndim}-D.")
    if offsets is None:
        raise ValueError("offsets is required when input is 1-D.")
    offsets = check_indices_array(offsets, "offsets")
    if offsets.ndim != 1:
        raise ValueError(f"offsets must be 1-D, got shape {offsets.shape}.")
    if include_last_offset and offsets.size == 0:
        raise ValueError("offsets must have at least one element with include_last_offset=True.")
    return input, offsets, offsets.size - 1 if include_last_offset else offsets.size, None


def check_per_sample_weights(per_sample_weights, mode, input):
    """``per_sample_weights`` flattened (mode ``"sum"`` only, ``input``'s shape), or None."""
    if per_sample_weights is None:
        return None
    if mode != "sum":
        raise NotImplementedError(f"per_sample_weights is only supported with mode='sum', got mode={mode!r}.")
    per_sample_weights = as_array(per_sample_weights, "per_sample_weights")
    if not mx.issubdtype(per_sample_weights.dtype, mx.floating):
        raise TypeError(f"per_sample_weights must be floating point, got {per_sample_weights.dtype}.")
    if per_sample_weights.shape != input.shape:
        raise ValueError(
            f"per_sample_weights must have input's shape {input.shape}, got {per_sample_weights.shape}."
        )
    return per_sample_weights.reshape(-1)


def warn_sparse(sparse):
    """Say once that ``sparse=True`` outside :func:`mlx_embag.value_and_grad` gives a dense gradient."""
    if sparse:
        _warn_once(
            "sparse",
            "sparse=True: under mx.grad or nn.value_and_grad the gradient is dense (same values "
            "as PyTorch's sparse gradient, densified); mlx_embag.value_and_grad gives a "
            "row-sparse one (mlx_embag.RowSparseGrad).",
        )


def _can_evaluate(*arrays):
    """Evaluate for a host-side check; False inside mx.compile or mx.vmap tracing."""
    if evaluate_unless_traced(*arrays):
        return True
    _warn_once(
        "check_indices",
        "check_indices is skipped inside mx.compile/mx.vmap, where arrays cannot be "
        "evaluated; invalid bags come out NaN (the poison rule).",
    )
    return False


def check_index_values(indices, num_embeddings, name="input"):
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


def check_offset_values(offsets, n):
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
