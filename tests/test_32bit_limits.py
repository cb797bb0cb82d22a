"""Past the kernels' 32-bit limits: backend="metal" raises naming the limit, "auto"
falls back, and an input MLX cannot flatten is a ValueError (issue 8, item 3).

Everything is built lazily: nothing here evaluates a big array.
"""

from __future__ import annotations

import mlx.core as mx
import pytest
from support import emulated

import mlx_embag as meb
from mlx_embag import metal_ops
from mlx_embag._spec import BagSpec


@pytest.fixture(autouse=True)
def metal_available():
    with emulated(seed=0):
        yield


# 2**26 bags x 64 columns = 2**32 (bag, column) entries: the kernels hold them as int32.
BIG_BAGS = mx.zeros((2**26, 1), dtype=mx.int32)
TABLE = mx.zeros((10, 64))


def test_explicit_metal_raises_naming_the_limit():
    with pytest.raises(ValueError, match=r"backend='metal'.*67108864 \* 64.*2\*\*31 - 1"):
        meb.embedding_bag(BIG_BAGS, TABLE, mode="sum", backend="metal")
    with pytest.raises(ValueError, match=r"backend='metal'.*2\*\*31 - 1"):
        meb.embedding(BIG_BAGS.reshape(-1), TABLE, backend="metal")


def test_auto_falls_back_to_the_reference_path(monkeypatch):
    called = []
    monkeypatch.setattr(metal_ops, "embedding_bag", lambda *a: called.append(a))
    out = meb.embedding_bag(BIG_BAGS, TABLE, mode="sum", backend="auto")
    assert out.shape == (2**26, 64) and not called


def test_metal_entry_point_asserts_the_limit_too():
    spec = BagSpec("sum", 2**26, 1, False, None, None, 2.0, False, False)
    with pytest.raises(ValueError, match=r"2\*\*31 - 1"):
        metal_ops.embedding_bag(TABLE, BIG_BAGS.reshape(-1), None, None, spec)


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_input_too_large_to_flatten_is_a_value_error(backend):
    # B * L = 2**32 indices: reshape(-1) used to die with an OverflowError.
    huge = mx.zeros((2**16, 2**16), dtype=mx.int32)
    with pytest.raises(ValueError, match=r"input has 65536 \* 65536 = 4294967296 indices"):
        meb.embedding_bag(huge, TABLE, mode="sum", backend=backend)
    with pytest.raises(ValueError, match=r"input has 65536 \* 65536 = 4294967296 indices"):
        meb.embedding(huge, TABLE, backend=backend)
