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
# The stored plans by key; functional reads it directly, so it is never replaced, only cleared.
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
EMB_OPTIONS = (  # the order of emb_key's options
    "padding_idx",
    "max_norm",
    "norm_type",
    "scale_grad_by_freq",
    "sparse",
    "backend",
    "check_indices",
    "deterministic",
)
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
    return (data.get(_ENV_KEYS[0]), data.get(_ENV_KEYS[1]), data.get(_ENV_KEYS[2]))


def bag_key(input, weight, offsets, per_sample_weights, options):
    """The signature of one ``embedding_bag`` call, or None (not planned).

    ``options`` holds the call's keyword arguments in the order of :data:`BAG_OPTIONS`.
    A 1-D input's length is not part of it (no check reads it, and training changes it on
    every batch); ``per_sample_weights`` enters by dtype and whether it has ``input``'s shape.
    Anything but an ``mx.array`` (a list, NumPy) among the arrays is not planned.
    """
    # Every call computes this key, hashes it and compares it with the stored one: it is
    # one flat tuple, its parts inlined but the context (a function call, a map or a nested
    # tuple costs a few tenths of a microsecond each).
    if type(input) is not _A or type(weight) is not _A:
        return None
    shape = input.shape
    if offsets is not None:
        if type(offsets) is not _A:
            return None
        offsets = (offsets.shape, offsets.dtype)
    psw = per_sample_weights
    if psw is not None:
        if type(psw) is not _A:
            return None
        psw = (psw.dtype, psw.shape == shape)
    max_norm, norm_type, freq, mode, sparse, last, pad, backend, check, det = options
    return (
        "1d" if len(shape) == 1 else shape,
        input.dtype,
        weight.shape,
        weight.dtype,
        offsets,
        psw,
        options,
        # The types too: True == 1 == 1.0, and the checks refuse some of them.
        type(max_norm),
        type(norm_type),
        type(freq),
        type(mode),
        type(sparse),
        type(last),
        type(pad),
        type(backend),
        type(check),
        type(det),
        _context(backend),
    )


def emb_key(input, weight, options):
    """The signature of one ``embedding`` call, or None (not planned).

    ``options`` holds the call's keyword arguments in the order of :data:`EMB_OPTIONS`.
    The input's whole shape is part of it: the Metal path builds one launch per number of
    positions, and the output takes the input's shape.
    """
    if type(input) is not _A or type(weight) is not _A:
        return None
    pad, max_norm, norm_type, freq, sparse, backend, check, det = options
    return (
        "embedding",  # never equal to a bag key, in the same store
        input.shape,
        input.dtype,
        weight.shape,
        weight.dtype,
        options,
        # The types too, as for bags.
        type(pad),
        type(max_norm),
        type(norm_type),
        type(freq),
        type(sparse),
        type(backend),
        type(check),
        type(det),
        _context(backend),
    )


def _context(backend):
    """What a None option defers to, as raw values (no parsing, no checks): the innermost
    ``use_backend``, whether Metal kernels can run, the environment variables."""
    chosen = backend
    if backend is None:
        # The thread's own attributes: getattr(..., None) of a missing one costs a microsecond.
        stack = _backend._local.__dict__.get("stack")
        chosen = stack[-1] if stack else None
    return chosen, chosen != "reference" and _backend.metal_available(), _environment()


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
