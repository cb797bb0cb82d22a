"""Per-signature call plans: a repeated call skips the checks its signature already passed.

A call's signature is everything the argument checks and the backend choice
read except array values: the arrays' types, shapes and dtypes, every option
with its type (``True`` and ``1`` differ: one is refused), and the context a
``None`` option defers to (the innermost ``use_backend``, the raw strings of
the library's environment variables, whether Metal kernels can run). The
first call of a signature takes the full path; only one that raised nothing
stores a plan, so a bad call raises the same error every time. A plan still
runs every check that reads values (``check_indices``) and the dispatch itself.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag import _plans
    >>> options = (None, 2.0, False, "sum", False, False, None, "reference", None, None)
    >>> key = _plans.bag_key(mx.array([[0, 1]]), mx.ones((3, 2)), None, None, options)
    >>> _plans.put(key, "plan"); _plans.get(key)
    'plan'
    >>> _plans.clear(); _plans.get(key) is None
    True
"""

from __future__ import annotations

import os

import mlx.core as mx

from . import _settings
from . import backend as _backend

_A = mx.array
_LIMIT = 4096  # signatures kept; past it the cache starts afresh
_plans = {}
BAG_OPTIONS = (  # the order of bag_key's options
    "max_norm",
    "norm_type",
    "scale_grad_by_freq",
    "mode",
    "sparse",
    "include_last_offset",
    "padding_idx",
    "backend",
    "check_indices",
    "deterministic",
)
_BACKEND_AT = BAG_OPTIONS.index("backend")
_ENV_NAMES = (_settings.BACKEND, _settings.CHECK_INDICES, _settings.DETERMINISTIC)
try:  # POSIX CPython: os.environ keeps its strings in a dict, which os.environ[...] = edits in place
    _ENV_KEYS = tuple(map(os.environ.encodekey, _ENV_NAMES))
except AttributeError:
    _ENV_KEYS = None


def _environment():
    """The raw values of the library's environment variables, read with one dict lookup each
    (``os.environ.get`` encodes and decodes every time: a microsecond a variable)."""
    data = getattr(os.environ, "_data", None)
    if _ENV_KEYS is None or type(data) is not dict:
        return tuple(map(os.environ.get, _ENV_NAMES))
    return tuple(map(data.get, _ENV_KEYS))


def _context(backend):
    """What ``None`` options defer to, as raw values (no parsing, no checks)."""
    if backend is None:
        stack = getattr(_backend._local, "stack", None)
        backend = stack[-1] if stack else None
    return backend, backend != "reference" and _backend.metal_available(), _environment()


def _array_sig(x):
    # None, or an mx.array's (shape, dtype); anything else (a list, NumPy) is not planned.
    if x is None:
        return None
    if type(x) is not _A:
        raise TypeError
    return x.shape, x.dtype


def bag_key(input, weight, offsets, per_sample_weights, options):
    """The signature of one ``embedding_bag`` call, or None (not planned).

    ``options`` holds the call's keyword arguments in the order of :data:`BAG_OPTIONS`.
    A 1-D input's length is not part of it (no check reads it, and training changes it on
    every batch); ``per_sample_weights`` enters by dtype and whether it has ``input``'s shape.
    """
    if type(input) is not _A or type(weight) is not _A:
        return None
    shape = input.shape
    try:
        psw = per_sample_weights
        if psw is not None:
            if type(psw) is not _A:
                return None
            psw = (psw.dtype, psw.shape == shape)
        return (
            "1d" if len(shape) == 1 else shape,
            input.dtype,
            weight.shape,
            weight.dtype,
            _array_sig(offsets),
            psw,
            options,
            tuple(map(type, options)),
            _context(options[_BACKEND_AT]),
        )
    except TypeError:
        return None


def get(key):
    """The plan stored for ``key``, or None (also for an unhashable ``key``)."""
    if key is None:
        return None
    try:
        return _plans.get(key)
    except TypeError:  # an unhashable option: the full path refuses or takes it
        return None


def put(key, plan) -> None:
    """Store ``plan`` for ``key`` (a None plan or key: nothing to store)."""
    if key is None or plan is None:
        return
    if len(_plans) >= _LIMIT:
        _plans.clear()
    try:
        _plans[key] = plan
    except TypeError:
        pass


def clear() -> None:
    """Forget every plan (the next call of each signature takes the full path)."""
    _plans.clear()
