"""The emulator's switches and their environment twins.

``MLX_EMBAG_EMULATE_METAL=1`` turns the emulator on, ``MLX_EMBAG_EMULATOR_SEED``
seeds the threadgroup order, ``MLX_EMBAG_EMULATOR_SANITIZE=1`` runs kernels
under AddressSanitizer. :func:`enable` / :func:`disable` override them.

A GPU promises no threadgroup order, so the order is shuffled by default
(seed :data:`DEFAULT_SEED`); ``MLX_EMBAG_EMULATOR_SEED=off`` runs the grid in
order, which only helps when debugging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    enabled: bool
    seed: int | None
    sanitize: bool


_override: Settings | None = None

#: Seed used when neither :func:`enable` nor the environment gives one.
DEFAULT_SEED = 0


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` says yes (``1``, ``true``, ``yes`` or ``on``).

    Example:
        >>> import os
        >>> os.environ["MLX_EMBAG_EXAMPLE_FLAG"] = " Yes"
        >>> env_flag("MLX_EMBAG_EXAMPLE_FLAG"), env_flag("MLX_EMBAG_UNSET_FLAG")
        (True, False)
        >>> del os.environ["MLX_EMBAG_EXAMPLE_FLAG"]
    """
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_seed() -> int | None:
    raw = os.environ.get("MLX_EMBAG_EMULATOR_SEED", "").strip()
    if not raw:
        return DEFAULT_SEED
    if raw.lower() in ("off", "none"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"MLX_EMBAG_EMULATOR_SEED must be an integer, got {raw!r}") from None


def current() -> Settings:
    """The settings in force: the last :func:`enable`/:func:`disable`, else the environment.

    Example:
        >>> from mlx_embag import emulator
        >>> emulator.disable()
        >>> emulator.settings.current()
        Settings(enabled=False, seed=None, sanitize=False)
        >>> emulator.reset()
    """
    if _override is not None:
        return _override
    return Settings(env_flag("MLX_EMBAG_EMULATE_METAL"), _env_seed(), env_flag("MLX_EMBAG_EMULATOR_SANITIZE"))


def enable(seed: int | None = None, sanitize: bool = False) -> None:
    """Switch the emulator on.

    ``seed=None`` falls back to ``MLX_EMBAG_EMULATOR_SEED``, else :data:`DEFAULT_SEED`.

    Example:
        >>> from mlx_embag import emulator
        >>> emulator.enable(seed=7)
        >>> emulator.is_enabled(), emulator.settings.current().seed
        (True, 7)
        >>> emulator.reset()
    """
    global _override
    if seed is not None and not isinstance(seed, int):
        raise TypeError(f"enable: seed must be an int or None, got {type(seed).__name__}")
    _override = Settings(
        True, _env_seed() if seed is None else seed, bool(sanitize) or env_flag("MLX_EMBAG_EMULATOR_SANITIZE")
    )


def disable() -> None:
    """Switch the emulator off (the environment is ignored until :func:`reset`).

    Example:
        >>> from mlx_embag import emulator
        >>> emulator.disable()
        >>> emulator.is_enabled()  # whatever MLX_EMBAG_EMULATE_METAL says
        False
        >>> emulator.reset()
    """
    global _override
    _override = Settings(False, None, False)


def reset() -> None:
    """Forget :func:`enable`/:func:`disable`; the environment decides again.

    Example:
        >>> from mlx_embag import emulator
        >>> from_environment = emulator.is_enabled()  # MLX_EMBAG_EMULATE_METAL
        >>> emulator.enable()
        >>> emulator.reset()
        >>> emulator.is_enabled() == from_environment
        True
    """
    global _override
    _override = None


def is_enabled() -> bool:
    """True when the library should build its kernels with the emulator.

    Example:
        >>> from mlx_embag import emulator
        >>> emulator.enable(); emulator.is_enabled()
        True
        >>> emulator.disable(); emulator.is_enabled()
        False
        >>> emulator.reset()
    """
    return current().enabled
