"""The machine the benchmark runs on: its name and, for Apple chips, its memory bandwidth.

Example:
    >>> from mlx_embag.bench.hardware import chip_bandwidth_gbs
    >>> chip_bandwidth_gbs("Apple M3 Max")
    400.0
"""

from __future__ import annotations

import platform
from typing import Optional

import mlx.core as mx

# Unified-memory bandwidth of Apple chips in GB/s (Apple's published figures),
# keyed by the ``device_name`` MLX reports. Binned variants with a narrower bus
# (e.g. the 30-core M3 Max at 300 GB/s) share a name: use --bandwidth-gbs there.
CHIP_BANDWIDTH_GBS = {
    "Apple M1": 68.25,
    "Apple M1 Pro": 200.0,
    "Apple M1 Max": 400.0,
    "Apple M1 Ultra": 800.0,
    "Apple M2": 100.0,
    "Apple M2 Pro": 200.0,
    "Apple M2 Max": 400.0,
    "Apple M2 Ultra": 800.0,
    "Apple M3": 100.0,
    "Apple M3 Pro": 150.0,
    "Apple M3 Max": 400.0,
    "Apple M3 Ultra": 819.0,
    "Apple M4": 120.0,
    "Apple M4 Pro": 273.0,
    "Apple M4 Max": 546.0,
    "Apple M5": 153.0,
}


def device_name() -> str:
    """The device name MLX reports (the processor's name where it reports none).

    Example:
        >>> isinstance(device_name(), str)
        True
    """
    # Older MLX releases have only the Metal-specific call.
    info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
    return str(info.get("device_name", platform.processor() or "unknown"))


def chip_bandwidth_gbs(name: str) -> Optional[float]:
    """Memory bandwidth of an Apple chip from its MLX device name, or None if unknown.

    Example:
        >>> chip_bandwidth_gbs("Apple M1 Pro (16-core)"), chip_bandwidth_gbs("AMD EPYC")
        (200.0, None)
    """
    name = name.strip()
    if name in CHIP_BANDWIDTH_GBS:
        return CHIP_BANDWIDTH_GBS[name]
    # Longest known prefix, so "Apple M2 Max (38-core)" still resolves.
    hits = [k for k in CHIP_BANDWIDTH_GBS if name.startswith(k)]
    return CHIP_BANDWIDTH_GBS[max(hits, key=len)] if hits else None
