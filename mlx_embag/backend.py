"""Backend selection: which implementation runs a call.

``backend=`` on every entry point takes ``None``/``"auto"``, ``"metal"`` or
``"reference"``. ``None`` defers to the innermost :func:`use_backend` context,
then to the ``MLX_EMBAG_BACKEND`` environment variable, then to ``"auto"``.
``"auto"`` picks the Metal kernels when a Metal GPU is present (or the Metal
emulator is switched on) and the kernels support the call, else the reference
path.

Example:
    >>> import mlx_embag as meb
    >>> with meb.use_backend("reference"):
    ...     meb.backend.resolve_backend(None)
    'reference'
"""

from __future__ import annotations

import contextlib
import threading

import mlx.core as mx

from . import _settings

# Re-exported: users look for the valid backend names in this module.
from ._validate import BACKENDS, check_backend, check_optional_bool  # noqa: F401

_local = threading.local()


def default_backend() -> str:
    """The backend used when a call passes ``backend=None``.

    The innermost :func:`use_backend` context wins, then ``MLX_EMBAG_BACKEND``,
    then ``"auto"``.

    Example:
        >>> from mlx_embag.backend import default_backend, use_backend
        >>> with use_backend("reference"):
        ...     with use_backend("metal"):
        ...         inner = default_backend()
        ...     outer = default_backend()
        >>> inner, outer
        ('metal', 'reference')
    """
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    env = _settings.env_backend()
    if env:
        return check_backend(env, _settings.BACKEND)
    return "auto"


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed calls with ``name`` as the default backend.

    Args:
        name (str): ``"auto"``, ``"metal"`` or ``"reference"``.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> w = mx.ones((4, 2))
        >>> with meb.use_backend("reference"):
        ...     meb.embedding_bag(mx.array([[0, 1]]), w).tolist()
        [[1.0, 1.0]]
    """
    check_backend(name)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


def metal_available() -> bool:
    """True when Metal kernels can run here: a Metal GPU, or the emulator switched on.

    Example:
        >>> from mlx_embag import emulator
        >>> from mlx_embag.backend import metal_available
        >>> emulator.enable()  # true on any machine once the emulator is on
        >>> metal_available()
        True
        >>> emulator.reset()  # the environment decides again
    """
    if mx.metal.is_available():
        return True
    global _kernels
    if _kernels is None:
        from . import kernels  # kernels imports this module: a top-level import would be circular

        _kernels = kernels  # kept: every call asks, and a cached import still costs a microsecond
    return _kernels.emulator_enabled()


_kernels = None


def metal_unavailable_reason() -> str:
    """The message of the error ``backend="metal"`` raises where no Metal kernel can run.

    It names both ways to get one: Apple silicon with Metal, or the emulator.

    Example:
        >>> from mlx_embag.backend import metal_unavailable_reason
        >>> print(metal_unavailable_reason())  # doctest: +NORMALIZE_WHITESPACE
        backend='metal' needs Apple silicon with Metal (mx.metal.is_available() is False here)
        or the Metal emulator (mlx_embag.emulator.enable() or MLX_EMBAG_EMULATE_METAL=1).
    """
    return (
        "backend='metal' needs Apple silicon with Metal (mx.metal.is_available() is False "
        "here) or the Metal emulator (mlx_embag.emulator.enable() or "
        "MLX_EMBAG_EMULATE_METAL=1)."
    )


def resolve_backend(backend, unsupported=None) -> str:
    """Turn a ``backend=`` argument into ``"metal"`` or ``"reference"``.

    Args:
        backend: The caller's ``backend=`` argument.
        unsupported: Optional thunk saying why the Metal kernels cannot run this
            particular call (a message), or ``None`` when they can. ``"auto"``
            falls back to the reference path on a message; ``"metal"`` raises it.

    Returns:
        str: ``"metal"`` or ``"reference"``.

    Raises:
        RuntimeError: ``"metal"`` was asked for where no Metal kernel can run
            (see :func:`metal_unavailable_reason`).
        ValueError: ``"metal"`` was asked for a call past the kernels' limits.

    Example:
        >>> from mlx_embag import emulator
        >>> from mlx_embag.backend import resolve_backend
        >>> resolve_backend("reference")
        'reference'
        >>> emulator.enable()  # Metal kernels can run, on any machine
        >>> resolve_backend("auto"), resolve_backend("auto", unsupported=lambda: "too big")
        ('metal', 'reference')
        >>> emulator.reset()
    """
    return resolve_with_auto(backend, unsupported)[0]


def resolve_with_auto(backend, unsupported=None):
    """``(resolve_backend(backend, unsupported), is_auto(backend))``, reading the defaults once.

    Example:
        >>> from mlx_embag.backend import resolve_with_auto
        >>> resolve_with_auto("reference")
        ('reference', False)
    """
    name = check_backend(backend) or default_backend()
    if name == "reference":
        return "reference", False
    if name == "metal":
        if not metal_available():
            raise RuntimeError(metal_unavailable_reason())
        reason = None if unsupported is None else unsupported()
        if reason is not None:
            raise ValueError(f"backend='metal' cannot run this call: {reason}")
        return "metal", False
    if not metal_available():
        return "reference", True
    return ("metal" if unsupported is None or unsupported() is None else "reference"), True


def is_auto(backend) -> bool:
    """Whether a ``backend=`` argument means ``"auto"`` (given, or by default).

    Example:
        >>> from mlx_embag.backend import is_auto, use_backend
        >>> is_auto(None), is_auto("metal")
        (True, False)
        >>> with use_backend("metal"):
        ...     is_auto(None)
        False
    """
    return (check_backend(backend) or default_backend()) == "auto"


def resolve_check_indices(value) -> bool:
    """``check_indices=None`` means the ``MLX_EMBAG_CHECK_INDICES`` variable (off by default).

    Example:
        >>> from mlx_embag.backend import resolve_check_indices
        >>> resolve_check_indices(True)
        True
        >>> resolve_check_indices(1)
        Traceback (most recent call last):
            ...
        TypeError: check_indices must be a bool or None, got int.
    """
    value = check_optional_bool(value, "check_indices")
    return _settings.env_check_indices() if value is None else value


def resolve_deterministic(value) -> bool:
    """``deterministic=None`` means the ``MLX_EMBAG_DETERMINISTIC`` variable (off by default).

    Example:
        >>> from mlx_embag.backend import resolve_deterministic
        >>> resolve_deterministic(False)
        False
        >>> resolve_deterministic("on")
        Traceback (most recent call last):
            ...
        TypeError: deterministic must be a bool or None, got str.
    """
    value = check_optional_bool(value, "deterministic")
    return _settings.env_deterministic() if value is None else value
