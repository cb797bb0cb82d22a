"""The library's environment variables, read in one place.

``MLX_EMBAG_BACKEND`` names the default backend (after any ``use_backend``
context), ``MLX_EMBAG_CHECK_INDICES=1`` turns the host check of index values
on, ``MLX_EMBAG_DETERMINISTIC=1`` the bitwise-reproducible backward; a call's
own ``backend=``/``check_indices=``/``deterministic=`` wins over them. They
are read at each call, not at import, so a test or a notebook can change them
between calls. The emulator's variables (``MLX_EMBAG_EMULATE_METAL`` and
friends) stay in ``mlx_embag.emulator.settings``: the emulator imports
nothing from the rest of the library, so it keeps its own reader.

Example:
    >>> import os
    >>> from mlx_embag import _settings
    >>> os.environ[_settings.DETERMINISTIC] = " On"
    >>> _settings.env_deterministic(), _settings.env_check_indices()
    (True, False)
    >>> del os.environ[_settings.DETERMINISTIC]
"""

from __future__ import annotations

import os

BACKEND = "MLX_EMBAG_BACKEND"
CHECK_INDICES = "MLX_EMBAG_CHECK_INDICES"
DETERMINISTIC = "MLX_EMBAG_DETERMINISTIC"


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` says yes (``1``, ``true``, ``yes`` or ``on``)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_backend() -> str:
    """``MLX_EMBAG_BACKEND`` lower-cased, ``""`` when unset (the caller checks the name)."""
    return os.environ.get(BACKEND, "").strip().lower()


def env_check_indices() -> bool:
    """``MLX_EMBAG_CHECK_INDICES``: what ``check_indices=None`` means (off when unset)."""
    return env_flag(CHECK_INDICES)


def env_deterministic() -> bool:
    """``MLX_EMBAG_DETERMINISTIC``: what ``deterministic=None`` means (off when unset)."""
    return env_flag(DETERMINISTIC)
