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
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0xFF800001], np.uint32).view(np.float32)
    x = mx.array(np.concatenate([finite, nans]))
    key = np.array(bf.order_key(x)).astype(np.int64)
    assert (np.diff(key[: finite.size]) > 0).all()
    assert (key[finite.size :] > key[finite.size - 1]).all()
    assert key[0] == -(2**31)  # -inf: the key segment_max clamps a foreign maximum to
    back = np.array(bf.from_order_key(bf.order_key(x))).view(np.uint32)
    np.testing.assert_array_equal(back, np.array(x).view(np.uint32))


@pytest.mark.parametrize("seed", range(6))
def test_bounds_follow_the_structural_rule(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(0, 8))
        ilo = bool(rng.integers(0, 2))
        dtype = [np.int32, np.int64, np.uint32, np.uint64][int(rng.integers(0, 4))]
        off = rng.integers(-1, n + 2, size=int(rng.integers(1 + ilo, 6)))
        if rng.random() < 0.5:
            off[0] = 0
        if np.dtype(dtype).kind == "u":
            off = np.where(off < 0, 2**31 + 5, off)  # a huge unsigned offset, past every N
        B = off.size - ilo
        ext, valid = bf.bounds(mx.array(off.astype(dtype)), ilo, B, n)
        want = _valid_oracle(off, ilo, n)
        assert np.array(valid).reshape(-1).tolist() == want, (off, ilo, n)
        full = list(off) + ([] if ilo else [n])
        assert ext.dtype == mx.uint32
        # Negative offsets read as unsigned, hence past N: every bound lands in [0, N].
        assert np.array(ext).tolist() == [int(x) if 0 <= int(x) <= n else n for x in full]


def _bounds_of(lens, rng):
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return [int(x) for x in starts], int(np.sum(lens))


# Bags of 0..3 and odd lengths at odd and even starts, a first bag shorter than a block,
# empty bags first, between and last.
_LENGTHS = [
    [1, 3, 1, 0, 2, 1],
    [2, 1, 1, 3, 0],
    [0, 0, 1, 0, 5, 7, 0],
    [3, 2, 9, 1, 1, 17, 0, 0],
    [0],
    [4],
]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("seed", range(10))
def test_segment_max_matches_numpy_with_nans_infs_zeros_and_bad_indices(seed, k):
    rng = np.random.default_rng(seed)
    lens = np.array(_LENGTHS[seed]) if seed < len(_LENGTHS) else rng.integers(0, 12, 9)
    starts, n = _bounds_of(lens, rng)
    rows = rng.standard_normal((n, 5)).astype(np.float32)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)
    mask = rng.random(rows.shape) < 0.25
    rows[mask] = rng.choice(special, mask.sum())
    ok = rng.random(n) > 0.1
    ext, valid = bf.bounds(mx.array(np.array(starts, np.int32)), False, len(starts), n)
    got = np.array(bf.segment_max(mx.array(rows), mx.array(ok), ext, valid, k))
    want = _max_oracle(rows, ok, list(zip(starts, starts[1:] + [n])))
    np.testing.assert_array_equal(got, want)
    # A zero maximum may come out as either zero (the blocks' max ties +0.0 and -0.0);
    # everything else, NaN included, matches bit for bit up to NaN payloads.
    nz = (want != 0) & ~np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[nz], want.view(np.uint32)[nz])


@pytest.mark.parametrize("seed", range(12))
def test_segment_max_on_malformed_offsets(seed):
    """Invalid bags (negative, decreasing, past-N offsets, offsets[0] != 0) come out NaN,
    and the valid bags around them keep their maxima, for every block size."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        ilo = bool(rng.integers(0, 2))
        starts, n = _bounds_of(rng.integers(0, 9, int(rng.integers(1, 7))), rng)
        off = np.array(starts + ([n] if ilo else []))
        i = int(rng.integers(0, off.size))
        off[i] = rng.integers(-2, n + 3)
        rows = rng.standard_normal((n, 3)).astype(np.float32)
        rows[rng.random(rows.shape) < 0.1] = np.nan
        ok = rng.random(n) > 0.05
        B = off.size - ilo
        ext, valid = bf.bounds(mx.array(off.astype(np.int64)), ilo, B, n)
        good = _valid_oracle(off, ilo, n)
        ends = [int(off[b + 1]) if b + 1 < off.size else n for b in range(B)]
        want = _max_oracle(rows, ok, [(int(off[b]), ends[b]) if good[b] else (0, 0) for b in range(B)])
        want[~np.array(good, bool)] = np.nan
        for k in (1, 2, 3, 5):
            got = np.array(bf.segment_max(mx.array(rows), mx.array(ok), ext, valid, k))
            np.testing.assert_array_equal(got, want, err_msg=f"off={off} ilo={ilo} k={k}")


def test_block_size_grows_with_the_mean_bag_length():
    assert [bf.block_size(n, 10) for n in (0, 10, 29, 30, 80, 160, 640, 10**6)] == [1, 1, 1, 2, 2, 4, 16, 16]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("L", [0, 1, 2, 3])
def test_grid_reduce_matches_numpy_with_bad_indices_and_weights(mode, L):
    rng = np.random.default_rng(L)
    B, d = 5, 4
    rows = rng.standard_normal((B * L, d)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.15] = -0.0
    rows[rng.random(rows.shape) < 0.1] = np.inf
    ok = rng.random(B * L) > 0.15
    coef = rng.standard_normal(B * L).astype(np.float32) if mode == "sum" else None
    got = np.array(
        bf.grid_reduce(mx.array(rows), mx.array(ok), None if coef is None else mx.array(coef), B, L, mode)
    )
    want = np.zeros((B, d), np.float32)
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN in both
        for b in range(B):
            r = rows[b * L : (b + 1) * L] * (1 if coef is None else coef[b * L : (b + 1) * L, None])
            if L and not ok[b * L : (b + 1) * L].all():
                want[b] = np.nan
            elif L:
                # A zero-started sum (PyTorch's): a lone -0.0 sums to +0.0; max keeps it.
                want[b] = (
                    r.max(0) if mode == "max" else (np.float32(0) + r.sum(0)) / (L if mode == "mean" else 1)
                )
    np.testing.assert_array_equal(got, want)
    if L == 1:  # bit for bit, the sign of a zero included
        keep = ok[:, None] & np.isfinite(want)
        np.testing.assert_array_equal(got.view(np.uint32)[keep], want.view(np.uint32)[keep])
