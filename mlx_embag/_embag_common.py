"""The names ``metal/embag_common.h`` defines, read from the header itself.

The kernels and the Python launchers share parameter slots, flag bits and the
threadgroup limit. Parsing them out of the one header the kernels compile
(rather than writing them again here) means moving a slot or a bit changes
both sides at once. Every ``NAME = value`` line of an ``enum`` counts; a value
is an integer or an earlier name.

Example:
    >>> from mlx_embag import _embag_common as common
    >>> common.P_D, common.FLAG_PSW, common.TG_MAX
    (2, 2, 256)
    >>> common.params(N=5, D=3, FLAGS=common.FLAG_MEAN).tolist()
    [5, 0, 3, 0, 0, 1, 0, 0]
"""

from __future__ import annotations

import functools
import re

import mlx.core as mx

from ._sources import HEADER, read_source

_DEFINITION = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+|[A-Z][A-Z0-9_]*)\s*,", re.M)


def parse(text: str) -> dict:
    """``{name: int}`` for every ``NAME = value,`` line of ``text`` (values: integers or earlier names).

    Example:
        >>> parse("enum : int {\\n  A = 3,  // three\\n  B = A,\\n  C = -1,\\n};")
        {'A': 3, 'B': 3, 'C': -1}
    """
    names = {}
    for name, value in _DEFINITION.findall(text):
        if name in names:
            raise ValueError(f"{HEADER}: {name} is defined twice.")
        names[name] = names[value] if value in names else int(value)
    return names


NAMES = parse(read_source(HEADER))
globals().update(NAMES)

#: Slot names of the int64 ``params`` input (``P_N`` ...) and of row_scale's ``fparams`` (``F_...``).
PARAM_SLOTS = {k[2:]: v for k, v in NAMES.items() if k.startswith("P_")}
FPARAM_SLOTS = {k[2:]: v for k, v in NAMES.items() if k.startswith("F_")}


def _fill(slots: dict, values: dict, dtype) -> mx.array:
    unknown = sorted(set(values) - set(slots))
    if unknown:
        raise KeyError(f"no slot named {', '.join(unknown)} in {HEADER}; valid: {', '.join(slots)}.")
    out = [0] * (max(slots.values()) + 1)
    for name, value in values.items():
        out[slots[name]] = value
    return mx.array(out, dtype=dtype)


# Cached: a launch with the same sizes reuses one constant array instead of
# building one per call (the host cost of a call is part of its cost).
@functools.lru_cache(maxsize=1024)
def params(**values) -> mx.array:
    """The int64 ``params`` input, each value in its named slot (``N=``, ``D=``, ``WINDOW=`` ...), 0 elsewhere.

    The array is shared between calls with the same values: treat it as read-only.

    Example:
        >>> params(M=10, WINDOW=4).tolist()
        [10, 0, 0, 4, 0, 0, 0, 0]
    """
    return _fill(PARAM_SLOTS, values, mx.int64)


@functools.lru_cache(maxsize=256)
def fparams(**values) -> mx.array:
    """row_scale's float32 ``fparams`` input, each value in its named slot (shared, read-only).

    Example:
        >>> fparams(NORM_TYPE=2.0).tolist()
        [0.0, 0.0, 0.0, 0.0, 2.0]
    """
    return _fill(FPARAM_SLOTS, values, mx.float32)
