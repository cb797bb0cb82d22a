"""mlx_embag._layout (bag bounds, owners and the poison rule) against the NumPy oracle's
reading of the same offsets (tests/oracle.py: ``oracle_bags``), function by function.

The paths' outputs under the poison rule are checked end to end elsewhere
(test_reference.py, test_metal_ops.py); these tests pin the lazy integer
ops that both paths build on, malformed and uint64 offsets included.
"""

import warnings

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_bags, oracle_owners
from support import emulated

import mlx_embag as meb
from mlx_embag import _layout
from mlx_embag._spec import BagSpec

W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
X1 = mx.array([0, 1, 2, 3])
INDEX_DTYPES = (mx.int8, mx.uint8, mx.int16, mx.int32, mx.uint32, mx.int64, mx.uint64)


def random_offsets(rng, ilo):
    """(offsets as a NumPy int64 array, n): sorted cuts, sometimes broken the ways the rule names."""
    n = int(rng.integers(0, 20))
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(1, 6)) + int(ilo)))
    cuts[0] = 0
    if rng.random() < 0.4:
        cuts[rng.integers(len(cuts))] = rng.integers(-2, n + 3)
    return cuts.astype(np.int64), n


def spec_for(num_bags, ilo, bag_size=None):
    return BagSpec("sum", num_bags, bag_size, ilo, None, None, 2.0, False, False)


def test_index_dtype_widens_only_past_int32():
    assert _layout.index_dtype(2**31 - 1) == mx.int32
    assert _layout.index_dtype(2**31) == mx.int64


@pytest.mark.parametrize("dtype", INDEX_DTYPES, ids=str)
def test_in_range_and_safe_indices(dtype):
    V = 5
    vals = np.array([0, 4, 5, 7, 1, 2**7 - 1])
    if not mx.issubdtype(dtype, mx.unsignedinteger):
        vals = np.concatenate([vals, [-1, -(2**7)]])
    ind = mx.array(vals).astype(dtype)
    want = (vals >= 0) & (vals < V)
    ok, safe = _layout.checked_indices(ind, V)
    np.testing.assert_array_equal(np.array(ok), want)
    np.testing.assert_array_equal(np.array(_layout.in_range(ind, V)), want)
    assert safe.dtype == mx.int32
    np.testing.assert_array_equal(np.array(safe), np.where(want, vals, 0))


def test_row_counts_count_in_range_positions_only():
    V = 6
    vals = np.array([0, 3, 3, 9, -1, 5, 3, 0])
    ok, safe = _layout.checked_indices(mx.array(vals), V)
    got = _layout.row_counts(safe, ok, V)
    assert got.dtype == mx.float32
    np.testing.assert_array_equal(np.array(got), np.bincount(vals[(vals >= 0) & (vals < V)], minlength=V))


def test_offsets_int64_reads_uint64_past_n_as_n_plus_1():
    n = 4
    off = mx.array(np.array([0, 2, 2**63 + 5, 2**64 - 1, 4], np.uint64))
    np.testing.assert_array_equal(np.array(_layout.offsets_int64(off, n)), [0, 2, 5, 5, 4])
    signed = mx.array(np.array([0, -3, 2**40], np.int64))
    np.testing.assert_array_equal(np.array(_layout.offsets_int64(signed, n)), [0, -3, 2**40])
    assert _layout.offsets_int64(mx.array([0, 1], mx.int32), n).dtype == mx.int64


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("ilo", [False, True], ids=["offsets", "include_last_offset"])
def test_bounds_validity_and_owners_match_the_oracle(seed, ilo):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        off, n = random_offsets(rng, ilo)
        bags = oracle_bags(off, n, ilo)
        desc = f"offsets={off.tolist()} n={n} include_last_offset={ilo}"
        for dtype in (mx.int32, mx.int64):
            offsets = mx.array(off).astype(dtype)
            starts, ends = _layout.bag_bounds(offsets, spec_for(len(bags), ilo), n)
            np.testing.assert_array_equal(np.array(starts), [s for s, _, _ in bags], err_msg=desc)
            np.testing.assert_array_equal(np.array(ends), [e for _, e, _ in bags], err_msg=desc)
            earlier = _layout.largest_earlier_offset(_layout.offsets_int64(offsets, n), len(bags))
            np.testing.assert_array_equal(
                np.array(earlier), [max(off[: max(b, 1)]) for b in range(len(bags))], err_msg=desc
            )
            ok = _layout.structurally_valid(offsets, starts, ends, n)
            np.testing.assert_array_equal(np.array(ok), [v for _, _, v in bags], err_msg=desc)
            own = _layout.owners(starts, ends, ok, n)
            np.testing.assert_array_equal(np.array(own), oracle_owners(bags, n), err_msg=desc)


def test_uint64_offsets_past_2_63_poison_every_later_bag():
    n = 4
    off = np.array([0, 2, 2**63 + 5, 3], np.uint64)
    bags = oracle_bags(off, n)
    assert [v for _, _, v in bags] == [True, False, False, False]
    lay = _layout.Layout(mx.array([0, 1, 2, 3]), mx.array(off), spec_for(4, False), 5)
    np.testing.assert_array_equal(np.array(lay.struct_ok), [v for _, _, v in bags])
    np.testing.assert_array_equal(np.array(lay.owner), [0, 0, -1, -1])


@pytest.mark.parametrize("seed", range(10))
def test_layout_poison_rule_matches_the_oracle(seed):
    """Layout's bag_valid / pos_valid / segment_count: structure plus out-of-range indices."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(10):
        ilo = bool(rng.random() < 0.5)
        off, n = random_offsets(rng, ilo)
        V = int(rng.integers(1, 6))
        ind = rng.integers(0, V, size=n)
        if n and rng.random() < 0.5:
            ind[rng.integers(n)] = rng.choice([-1, V])
        bags = oracle_bags(off, n, ilo)
        valid = [ok and bool(np.all((ind[s:e] >= 0) & (ind[s:e] < V))) for s, e, ok in bags]
        own = oracle_owners(bags, n)
        lay = _layout.Layout(mx.array(ind), mx.array(off), spec_for(len(bags), ilo), V)
        desc = f"offsets={off.tolist()} indices={ind.tolist()} V={V} include_last_offset={ilo}"
        np.testing.assert_array_equal(np.array(lay.bag_valid), valid, err_msg=desc)
        np.testing.assert_array_equal(
            np.array(lay.pos_valid), [o >= 0 and valid[o] for o in own], err_msg=desc
        )
        mask = rng.random(n) < 0.5
        np.testing.assert_array_equal(
            np.array(lay.segment_count(mx.array(mask))),
            [int(mask[s:e].sum()) if ok else 0 for s, e, ok in bags],
            err_msg=desc,
        )


@pytest.mark.parametrize("shape", [(3, 4), (2, 0), (0, 3)])
def test_two_d_input_is_one_bag_per_row(shape):
    B, L = shape
    ind = np.arange(B * L).reshape(B, L) % 5
    if B * L:
        ind[-1, -1] = 7  # out of range: poisons the last bag only
    lay = _layout.Layout(mx.array(ind.reshape(-1)), None, spec_for(B, False, L), 5)
    starts, ends = lay.bounds
    np.testing.assert_array_equal(np.array(starts), np.arange(B) * L)
    np.testing.assert_array_equal(np.array(ends), np.arange(B) * L + L)
    np.testing.assert_array_equal(np.array(lay.owner), np.repeat(np.arange(B), L))
    np.testing.assert_array_equal(np.array(lay.bag_valid), [B * L == 0 or b < B - 1 for b in range(B)])


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_unchecked_uint64_offsets_past_2_63_poison(backend):
    """Read as int64, 2**63 + 5 wrapped to a negative offset, so the next bag (starting
    below it) looked valid. Every bag from that offset on is invalid."""
    off = mx.array(np.array([0, 2, 2**63 + 5, 3], dtype=np.uint64))
    with emulated(seed=2) if backend == "metal" else warnings.catch_warnings():
        out = np.array(meb.embedding_bag(X1, W, off, mode="sum", backend=backend))
    assert np.isnan(out[1:]).all() and not np.isnan(out[0]).any(), out
