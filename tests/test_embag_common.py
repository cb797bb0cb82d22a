"""metal/embag_common.h and mlx_embag/_embag_common.py name the same slots, flags and limits.

Python parses the header, so the two can only disagree if the parser misreads
it: the first test compiles the header and reads every name back from a
kernel. The others keep the kernels on the names (no slot or flag numbers)
and the names well formed.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

from mlx_embag import _embag_common as common
from mlx_embag import kernels
from mlx_embag._sources import HEADER, metal_dir, read_source

METAL = {p.stem: p.read_text() for p in sorted(metal_dir().glob("*.metal"))}
PY = {p.name: p.read_text() for p in sorted(Path(common.__file__).parent.glob("*.py"))}


def test_python_reads_what_the_kernels_compile():
    names = sorted(common.NAMES)
    body = "\n".join(f"out[{i}] = int64_t({n});" for i, n in enumerate(names))
    body += "\n(void)thread_position_in_grid;"
    with emulated(seed=0):
        make, _ = kernels._factory()
        k = make(
            name="embag_common_names",
            input_names=["unused"],
            output_names=["out"],
            source=body,
            header=read_source(HEADER),
        )
        (out,) = k(
            inputs=[mx.zeros((8,), mx.int64)],
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
            output_shapes=[(len(names),)],
            output_dtypes=[mx.int64],
        )
    assert dict(zip(names, np.array(out).tolist())) == common.NAMES


@pytest.mark.parametrize("name", sorted(METAL))
def test_kernels_use_names_not_numbers(name):
    code = "\n".join(line.split("//")[0] for line in METAL[name].splitlines())
    assert not re.search(r"\bf?params\[\s*\d", code), f"{name}: a params slot by number"
    assert not re.search(r"flags\s*&\s*\d", code), f"{name}: a flag by number"
    used = set(re.findall(r"\b(?:P|F|FLAG)_[A-Z_]+\b", code))
    assert used <= set(common.NAMES), f"{name}: {sorted(used - set(common.NAMES))} not in {HEADER}"


def test_python_uses_only_names_the_header_defines():
    for file, text in PY.items():
        used = set(re.findall(r"\bcommon\.([A-Z][A-Z0-9_]*)\b", text))
        assert used <= set(common.NAMES), f"{file}: {sorted(used - set(common.NAMES))} not in {HEADER}"
    with pytest.raises(KeyError, match="valid: N, V, D"):
        common.params(Q=1)


def test_slots_and_flags_are_well_formed():
    bag_slots = [common.NAMES[f"P_{n}"] for n in ("N", "V", "D", "NOFF", "PAD", "FLAGS", "B", "S")]
    assert sorted(bag_slots) == list(range(8))
    assert len(set(common.FPARAM_SLOTS.values())) == len(common.FPARAM_SLOTS)
    flags = [v for k, v in common.NAMES.items() if k.startswith("FLAG_")]
    assert len(set(flags)) == len(flags) and all(f > 0 and f & (f - 1) == 0 for f in flags)
    assert common.POISONED < 0, "a bag's count is never negative"


def test_header_is_invisible_to_mlx_detection():
    """MLX never searches the header for attributes, but the emulator runs every kernel as fibers
    when any of its source names a synchronising call: the header must name none."""
    text = read_source(HEADER)
    assert not re.search(r"barrier|simd_|quad_", text)
    assert "[[" not in text
