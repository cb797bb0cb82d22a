"""The lean reference forward (``_bag_forward``) against NumPy oracles written from the rules."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_embag import _bag_forward as bf


def _valid_oracle(off, include_last_offset, n):
    """PyTorch's structural rule, bag by bag: offsets[0] == 0, 0 <= start <= end <= N,
    and no start below an earlier offset."""
    off = [int(x) for x in off]
    B = len(off) - 1 if include_last_offset else len(off)
    out = []
    for b in range(B):
        s = off[b]
        e = off[b + 1] if b + 1 < len(off) else n
        out.append(off[0] == 0 and 0 <= s <= e <= n and all(s >= x for x in off[:b]))
    return out


def _max_oracle(rows, ok, bounds):
    out = np.zeros((len(bounds), rows.shape[1]), np.float32)
    for b, (s, e) in enumerate(bounds):
        if e > s:
            out[b] = np.nan if not ok[s:e].all() else rows[s:e].max(axis=0)  # np.max propagates NaN
    return out


def test_order_key_orders_every_float_and_puts_both_nans_on_top():
    finite = np.array([-np.inf, -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, 3e38, np.inf], np.float32)
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF], np.uint32).view(np.float32)
    x = mx.array(np.concatenate([finite, nans]))
    key = np.array(bf.order_key(x)).astype(np.int64)
    assert (np.diff(key[: finite.size]) > 0).all()
    assert (key[finite.size :] > key[finite.size - 1]).all()
    back = np.array(bf.from_order_key(bf.order_key(x))).view(np.uint32)
    np.testing.assert_array_equal(back, np.array(x).view(np.uint32))


@pytest.mark.parametrize("seed", range(6))
def test_segments_follow_the_structural_rule(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(0, 8))
        ilo = bool(rng.integers(0, 2))
        off = rng.integers(-1, n + 2, size=int(rng.integers(1 + ilo, 6)))
        if rng.random() < 0.5:
            off[0] = 0
        B = off.size - ilo
        segs, valid = bf.segments(mx.array(off), ilo, B, n)
        want = _valid_oracle(off, ilo, n)
        assert np.array(valid).reshape(-1).tolist() == want, (off, ilo, n)
        ends = [int(off[b + 1]) if b + 1 < off.size else n for b in range(B)]
        expect = [[int(off[b]), ends[b]] if want[b] else [0, 0] for b in range(B)]
        assert np.array(segs).tolist() == expect


@pytest.mark.parametrize("seed", range(8))
def test_segment_max_matches_numpy_with_nans_infs_zeros_and_bad_indices(seed):
    rng = np.random.default_rng(seed)
    # Seeds 0 and 1 fix the pairing's edge cases: a first bag of one (ending at 1, before
    # pair 0 ends), bags of one at odd and even positions, an odd N, empty bags.
    lens = (
        [np.array([1, 3, 1, 0, 2, 1]), np.array([2, 1, 1, 3, 0])][seed] if seed < 2 else rng.integers(0, 6, 7)
    )
    n = int(lens.sum())
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    rows = rng.standard_normal((n, 5)).astype(np.float32)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)
    mask = rng.random(rows.shape) < 0.25
    rows[mask] = rng.choice(special, mask.sum())
    ok = rng.random(n) > 0.1
    segs = mx.array(np.stack([starts, starts + lens], axis=1).astype(np.int64))
    got = np.array(bf.segment_max(mx.array(rows), mx.array(ok), segs, n))
    want = _max_oracle(rows, ok, list(zip(starts, starts + lens)))
    np.testing.assert_array_equal(got, want)
