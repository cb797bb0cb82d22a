"""Finding the ``.metal`` kernel sources, installed or in a source checkout.

The sources live in the repository's top-level ``metal/`` folder; the wheel
carries them as ``mlx_embag/_metal`` (``pyproject.toml``, force-include).
"""

from __future__ import annotations

import functools
from pathlib import Path

_PKG = Path(__file__).resolve().parent
#: The header every kernel is built with (``kernels.get`` passes it as ``header=``).
HEADER = "embag_common.h"


def metal_dir() -> Path:
    """The folder holding the kernel sources (``mlx_embag/_metal`` or ``<checkout>/metal``)."""
    for candidate in (_PKG / "_metal", _PKG.parent / "metal"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"mlx_embag: kernel sources not found in {_PKG / '_metal'} or {_PKG.parent / 'metal'}; "
        "the installation is incomplete."
    )


@functools.lru_cache(maxsize=None)
def read_source(filename: str) -> str:
    """The text of ``metal/<filename>`` (read once per process)."""
    path = metal_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"mlx_embag: kernel source {path} is missing.")
    return path.read_text()


def read_metal(name: str) -> str:
    """The body of kernel ``name``: the text of ``metal/<name>.metal``."""
    return read_source(f"{name}.metal")
