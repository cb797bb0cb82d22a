"""Row addresses are 64-bit: a table of more than 2**31 elements (4 GiB of float16) through the kernels.

Rows at and beyond element 2**31 (row 2**29 of a D = 4 table) are gathered
by the forward (sum with per_sample_weights and max) and rescaled by
max_norm (row_scale); a 32-bit ``row * D`` would wrap to the start of the
table and give other values. Gradients are not run here: the emulator runs
kernels eagerly, so any VJP would also build the 8 GiB float32 weight
gradient. The backward kernels use the same ``int64_t(row) * D`` addressing.
"""

from __future__ import annotations

import gc

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

from mlx_embag import metal_ops
from mlx_embag._spec import BagSpec

V, D = 2**29 + 8, 4
HIGH = [V - 1, 2**29, 2**29 - 1]


@pytest.fixture(scope="module")
def table():
    with emulated(seed=3):
        yield from _table()


def _table():
    host = np.zeros((V, D), dtype=np.float16)
    for k, r in enumerate(HIGH):
        host[r] = np.arange(4 * k + 1, 4 * k + 5)
    host[5] = [0.5, -0.5, 0.25, 3.0]
    w = mx.array(host)
    del host
    assert w.size > 2**31
    yield w
    del w
    gc.collect()


def test_sum_with_max_norm_beyond_2_to_31_elements(table):
    w = table
    ind = mx.array([HIGH[0], HIGH[1], 5, HIGH[2]])
    off = mx.array([0, 2])
    psw = mx.array([1.0, 2.0, 1.0, -1.0])
    spec = BagSpec("sum", 2, None, False, None, 20.0, 2.0, False, False)
    out = metal_ops.embedding_bag(w, ind, off, psw, spec).astype(mx.float32)
    rows = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0.5, -0.5, 0.25, 3.0], [9, 10, 11, 12]], np.float32)
    norms = np.linalg.norm(rows, axis=1)
    scaled = np.where(norms[:, None] > 20, rows * (20 / (norms[:, None] + 1e-7)), rows)
    scaled = scaled.astype(np.float16).astype(np.float32)
    want = np.stack([scaled[0] + 2 * scaled[1], scaled[2] - scaled[3]])
    np.testing.assert_allclose(np.array(out), want, rtol=1e-3)


def test_max_mode_beyond_2_to_31_elements(table):
    spec = BagSpec("max", 1, None, False, None, None, 2.0, False, False)
    out = metal_ops.embedding_bag(table, mx.array([HIGH[2], 5, HIGH[1]]), mx.array([0]), None, spec)
    np.testing.assert_array_equal(np.array(out.astype(mx.float32)), [[9, 10, 11, 12]])
