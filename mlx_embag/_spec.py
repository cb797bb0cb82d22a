"""The validated, normalised form of a call that every backend receives.

``functional.py`` checks the user's arguments and reduces every call to one
shape: a flat ``indices`` array of N positions, the raw ``offsets`` (or None
for 2-D input, where every bag has ``bag_size`` positions), optional flat
``per_sample_weights``, and a hashable spec with the static options. A backend
(``reference.py`` or ``metal_ops.py``) implements::

    embedding_bag(weight, indices, offsets, per_sample_weights, spec: BagSpec) -> (B, D)
    embedding(weight, indices, spec: EmbSpec) -> indices.shape + (D,)

Both must give the same values and gradients (with respect to ``weight`` and
``per_sample_weights``) and the same poison rule (see ``bag_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

MODES = ("sum", "mean", "max")
FLOAT_TABLES = (mx.float32, mx.float16, mx.bfloat16)  # the table dtypes every path takes


def _cached_hash(self):
    # Every call's spec keys several caches; hashing its fields once, not per lookup.
    d = self.__dict__
    h = d.get("_hash")
    if h is None:
        h = hash(tuple(d.values()))  # the fields, in order (nothing else is stored before _hash)
        object.__setattr__(self, "_hash", h)
    return h


@dataclass(frozen=True)
class BagSpec:
    __hash__ = _cached_hash

    mode: str  # "sum" | "mean" | "max"
    num_bags: int  # B
    bag_size: Optional[int]  # L for 2-D input (offsets is None), else None
    include_last_offset: bool  # offsets has B+1 entries, the last ends bag B-1
    padding_idx: Optional[int]  # normalised into [0, V), or None
    max_norm: Optional[float]
    norm_type: float
    scale_grad_by_freq: bool
    deterministic: bool


@dataclass(frozen=True)
class EmbSpec:
    __hash__ = _cached_hash

    padding_idx: Optional[int]  # normalised into [0, V), or None
    max_norm: Optional[float]
    norm_type: float
    scale_grad_by_freq: bool
    deterministic: bool
