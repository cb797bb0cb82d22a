"""mlx_embag/_cost.py against sector counts done by hand, and the backward's use of it.

Hand counts follow the module's conventions: 32-byte sectors summed over SIMD-group
instructions, a value all lanes of a SIMD-group read costs one sector, an atomic
instruction moves its sectors twice.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from support import PATHS_TOL, assert_close

from mlx_embag import _cost, launchers, metal_ops, reference
from mlx_embag._spec import BagSpec

F32 = dict(index_bytes=4, weight_bytes=4)


def test_block_counts_the_sectors_a_row_block_straddles():
    assert _cost.block(512, 512) == 16  # 512-byte rows start on sector boundaries
    assert _cost.block(16, 16) == 1  # 16-byte rows never cross one
    # 12-byte rows start at 0, 4, ..., 28 within a sector: those at 24 and 28 cross.
    assert _cost.block(12, 12) == (6 * 1 + 2 * 2) / 8
    # 400-byte rows start at 0 or 16: 100 bytes from there take 4 sectors either way.
    assert _cost.block(100, 400) == 4


def test_atomic_backward_one_bag_d128():
    """8 positions of one bag, D = 128 float32: 32 threads of 4 columns, one SIMD-group."""
    steps = _cost.atomic_backward(8, 1, 128, 8, **F32)
    # 8 uniform loads (meta, 5 params, 2 offsets); the bag's gradient row, 512 bytes = 16
    # sectors; 8 index loads of a sector; per position 4 atomic instructions of 32
    # consecutive floats (128 bytes = 4 sectors), moved both ways: 8 * 4 * 4 * 2 = 256.
    assert steps[0].name == "bag_bwd"
    assert steps[0].sectors == 8 + 16 + 8 + 256
    assert steps[0].atomics == 8 * 128
    # The (8, 128) float32 gradient's zero fill: 4096 bytes.
    assert [(s.name, s.sectors) for s in steps[1:]] == [("zero-fill grad (MLX fill)", 128)]
    half = _cost.atomic_backward(8, 1, 128, 8, index_bytes=4, weight_bytes=2)
    assert half[-1].sectors == 128 + 64  # the cast reads float32, writes float16


def test_atomic_backward_narrow_rows_keep_a_row_in_one_instruction():
    """D = 4, 64 bags of one position: one column per thread, 8 rows per SIMD-group."""
    assert launchers.bag_geometry(4, 64, 64, vector=4 >= launchers.ATOMIC_VEC_MIN_D)[0] is False
    (k, fill) = _cost.atomic_backward(64, 64, 4, 10, **F32)
    # 8 SIMD-groups x 8 uniform loads; 64 gradient rows of 16 bytes (a sector each); 64
    # indices read 8 to a sector; 64 rows of 16 bytes added atomically, both ways.
    assert k.sectors == 64 + 64 + 8 + 2 * 64
    assert fill.sectors == 5  # 10 x 4 floats


def test_argsort_counts_mlx_merge_sort():
    # 1024 int32 keys fit one threadgroup (256 threads x 4): keys read, uint32 indices
    # written; then the astype to int32 reads and writes 4 KiB.
    one = _cost.argsort_steps(1024, 4)
    assert [s.sectors for s in one] == [128 + 128, 128 + 128]
    # 4096 keys: two blocks of 2048 (512 threads x 4), one merge pass. Block sort reads
    # the keys (512) and writes keys and indices (1024); the pass reads and writes both
    # (2048) and binary-searches 3 block boundaries (3 x (13 probes + 1 write)); the
    # indices are copied out (1024).
    (sort, cast) = _cost.argsort_steps(4096, 4)
    assert sort.sectors == 512 + 1024 + (2048 + 3 * 14) + 1024
    assert cast.sectors == 1024


def test_sorted_backward_one_bag_d32():
    """32 positions of one bag over 4 rows, D = 32 float32: one window of 32 entries."""
    steps = {s.name: s.sectors for s in _cost.sorted_backward(32, 1, 32, 4, **F32)}
    # bag_owner, one SIMD-group: 7 uniform loads, 128 bytes of indices, owner and coef
    # written and first filled with -1 (4 x 4 sectors).
    assert steps["bag_owner"] == 7 + 4 + 16
    assert steps["owner >= 0 (MLX)"] == 4 + 1
    assert steps["where (MLX)"] == 1 + 4 + 4
    assert steps["take sorted keys (MLX gather)"] == 4 + 32 + 4  # one sector per gathered key
    # det_partial: 3 params, the two boundary keys, 128 bytes of partial sums.
    assert steps["det_partial (threadgroup 32x2)"] == 3 + 2 + 4
    # det_write: 4 params and 3 per-window keys; per entry 4 uniform loads and a 128-byte
    # source row; per run a key and a written 128-byte row, runs = distinct rows expected
    # from 32 uniform draws of 4.
    runs = 4 * (1 - 0.75**32)
    assert steps["det_write"] == pytest.approx(4 + 3 + 32 * (4 + 4) + runs * (1 + 4))
    assert steps["zero-fill grad (MLX fill)"] == 16


def test_hot_rows_prefer_sorted_and_spread_rows_prefer_atomic():
    # 4096 positions over 10 rows, D = 512: atomics move each contribution's 64 sectors
    # twice, the sorted pass reads each source row once and writes 10 rows.
    assert _cost.prefers_sorted(4096, 4096, 512, 10, **F32)
    # 16384 positions over 1e5 rows, D = 128: nearly every row distinct, and the sort costs extra.
    assert not _cost.prefers_sorted(16384, 512, 128, 100_000, **F32)
    assert not _cost.prefers_sorted(16384, 512, 128, 100_000, max_mode=True, **F32)


@pytest.mark.usefixtures("metal")
@pytest.mark.parametrize("V", [10, 10_000])
def test_deterministic_false_takes_the_cheaper_variant(V, monkeypatch):
    """512 bags of one position, D = 48: the sorted variant where 10 rows take every
    position, the atomic one over 10,000 rows; the gradient matches the reference either way."""
    used = []
    for name in ("bag_bwd", "sorted_scatter"):
        real = getattr(launchers, name)
        monkeypatch.setattr(launchers, name, lambda *a, _r=real, _n=name, **k: used.append(_n) or _r(*a, **k))
    rng = np.random.default_rng(3)
    B, D = 512, 48
    w = mx.array(rng.standard_normal((V, D)).astype(np.float32))
    ind = mx.array(rng.integers(0, V, B))
    off = mx.arange(B)
    spec = BagSpec("sum", B, None, False, None, None, 2.0, False, False)
    cot = mx.array(rng.standard_normal((B, D)).astype(np.float32))

    def grad(fn):
        return mx.grad(lambda w_: (fn(w_, ind, off, None, spec) * cot).sum())(w)

    got = grad(metal_ops.embedding_bag)
    want = grad(reference.embedding_bag)
    assert used == (["sorted_scatter"] if V == 10 else ["bag_bwd"])
    assert_close(got, want, *PATHS_TOL[mx.float32], name="weight gradient")
