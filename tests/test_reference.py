"""The reference path against the NumPy oracle (tests/oracle.py), over random configurations."""

import math

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding, oracle_embedding_bag
from support import TOL, assert_close, bag_config, random_bag_config, run_meb, to_np

import mlx_embag as meb


def check_against_oracle(inp, offsets, W, cfg, dtype, rng):
    B = inp.shape[0] if inp.ndim == 2 else (len(offsets) - (1 if cfg["include_last_offset"] else 0))
    cot = rng.standard_normal((B, W.shape[1])).astype(np.float32)
    Wq = to_np(mx.array(W).astype(dtype))  # oracle sees the rounded table
    psw = cfg["per_sample_weights"]
    if psw is not None and dtype != mx.float32:
        cfg = dict(cfg, per_sample_weights=to_np(mx.array(psw).astype(dtype)))
    cotq = to_np(mx.array(cot).astype(dtype))
    out, dW, dP = run_meb(inp, offsets, Wq, cfg, dtype, cot)
    eo, edW, edP = oracle_embedding_bag(inp, Wq, offsets, cotangent=cotq, **cfg)
    rtol, atol = TOL[dtype]
    ctx = f"cfg={ {k: v for k, v in cfg.items() if k != 'per_sample_weights'} } inp={inp.tolist()} off={None if offsets is None else offsets.tolist()}"
    assert_close(out, eo, rtol, atol, "forward " + ctx)
    assert_close(dW, edW, rtol, atol, "weight grad " + ctx)
    if edP is not None:
        assert_close(dP, edP, rtol, atol, "psw grad " + ctx)


@pytest.mark.parametrize("seed", range(200))
def test_random_configs_float32(seed):
    rng = np.random.default_rng(seed)
    inp, offsets, W, cfg = random_bag_config(rng)
    check_against_oracle(inp, offsets, W, cfg, mx.float32, rng)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("seed", range(40))
def test_random_configs_half(seed, dtype):
    rng = np.random.default_rng(1000 + seed)
    inp, offsets, W, cfg = random_bag_config(rng)
    check_against_oracle(inp, offsets, W, cfg, dtype, rng)


@pytest.mark.parametrize("seed", range(60))
def test_poison_rule_random(seed):
    rng = np.random.default_rng(5000 + seed)
    inp, offsets, W, cfg = random_bag_config(rng, allow_invalid=True)
    check_against_oracle(inp, offsets, W, cfg, mx.float32, rng)


@pytest.mark.parametrize("offsets", [[1, 2], [0, 3, 2], [0, 9], [0, 2, 1, 4], [0, -1]])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_malformed_offsets_poison(offsets, mode):
    rng = np.random.default_rng(7)
    inp = np.array([0, 1, 2, 3, 1], np.int32)
    W = rng.standard_normal((5, 3)).astype(np.float32)
    cfg = bag_config(mode=mode)
    check_against_oracle(inp, np.array(offsets, np.int32), W, cfg, mx.float32, rng)


def test_poison_nan_and_no_gradient_explicit():
    W = np.arange(12, dtype=np.float32).reshape(4, 3)
    inp = np.array([0, 1, 9, 2, 3], np.int64)
    cfg = bag_config(mode="sum", per_sample_weights=np.ones(5, np.float32))
    out, dW, dP = run_meb(inp, np.array([0, 2]), W, cfg)
    assert np.isnan(out[1]).all() and np.allclose(out[0], W[0] + W[1])
    assert np.allclose(dW[2], 0) and np.allclose(dW[3], 0) and np.allclose(dW[0], 1)
    assert np.allclose(dP, [W[0].sum(), W[1].sum(), 0, 0, 0])


def test_max_tie_earliest_position():
    W = np.array([[1.0, 2.0], [1.0, 5.0], [0.0, 0.0]], np.float32)
    cfg = bag_config(mode="max")
    out, dW, _ = run_meb(np.array([1, 0, 2]), np.array([0]), W, cfg)
    assert_close(out, [[1.0, 5.0]], 0, 0, "max out")
    assert_close(dW, [[0, 0], [1, 1], [0, 0]], 0, 0, "tie goes to earliest position (row 1)")


@pytest.mark.parametrize("seed", range(60))
def test_embedding_random(seed):
    rng = np.random.default_rng(9000 + seed)
    V, D = int(rng.integers(1, 10)), int(rng.choice([1, 4, 7]))
    shape = [tuple(), (5,), (2, 3), (2, 1, 3)][seed % 4]
    inp = rng.integers(0, V, size=shape).astype(rng.choice([np.int32, np.int64]))
    if seed % 5 == 0 and inp.size:
        inp.reshape(-1)[0] = V + 2  # invalid position -> NaN row, no gradient
    pad = int(rng.integers(-V, V)) if rng.random() < 0.4 else None
    mn = float(rng.uniform(0.5, 2)) if rng.random() < 0.4 else None
    nt = float(rng.choice([1.0, 2.0, math.inf]))
    sg = bool(rng.random() < 0.3)
    W = rng.standard_normal((V, D)).astype(np.float32)
    cot = rng.standard_normal(shape + (D,)).astype(np.float32)
    w = mx.array(W)

    def f(w):
        return meb.embedding(
            mx.array(inp),
            w,
            padding_idx=pad,
            max_norm=mn,
            norm_type=nt,
            scale_grad_by_freq=sg,
            backend="reference",
        )

    out, (dW,) = f(w), mx.vjp(f, [w], [mx.array(cot)])[1]
    eo, edW, _ = oracle_embedding(inp, W, pad, mn, nt, sg, cotangent=cot)
    assert_close(np.array(out), eo, 1e-5, 1e-5, "embedding forward")
    assert_close(np.array(dW), edW, 1e-5, 1e-5, "embedding weight grad")


def test_oracle_against_hand_values():
    """The oracle itself, against values worked out by hand."""
    W = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    out, dW, dP = oracle_embedding_bag(
        [0, 1, 2, 2], W, [0, 2], mode="sum", per_sample_weights=[1.0, 2.0, 1.0, 0.5]
    )
    assert np.allclose(out, [[1, 4], [4.5, 6]])
    assert np.allclose(dW, [[1, 1], [2, 2], [1.5, 1.5]])
    assert np.allclose(dP, [1, 2, 7, 7])
    out, dW, _ = oracle_embedding_bag([0, 2, 2], W, [0], mode="mean", padding_idx=0, scale_grad_by_freq=True)
    assert np.allclose(out, [[3, 4]]) and np.allclose(dW, [[0, 0], [0, 0], [0.5, 0.5]])
    out, _, _ = oracle_embedding_bag([2], W, [0], mode="sum", max_norm=1.0)
    assert np.allclose(out, [[0.6, 0.8]], atol=1e-6)


def test_long_bags_odd_width_accumulate_in_float32():
    rng = np.random.default_rng(13)
    W = rng.standard_normal((31, 4099)).astype(np.float32)
    inp = rng.integers(0, 31, size=257)
    off = np.array([0, 1, 100, 100, 256])
    for dt in (mx.float16, mx.bfloat16):
        Wq = to_np(mx.array(W).astype(dt))
        out = meb.embedding_bag(
            mx.array(inp), mx.array(Wq).astype(dt), mx.array(off), mode="sum", backend="reference"
        )
        # accumulated in float32 and rounded once: within one ulp of the rounded exact sum
        # (a float16/bfloat16 accumulator drifts by many ulps over 156 terms)
        e = to_np(mx.array(oracle_embedding_bag(inp, Wq, off, mode="sum")[0]).astype(dt))
        ulp = 2.0**-10 if dt == mx.float16 else 2.0**-7
        assert_close(to_np(out), e, ulp, 1e-4, f"long bags {dt}")


@pytest.mark.parametrize("offsets", [[0, 2, 6], [0, 3, 2], [1, 2, 5], [0, 2, 2], [0, 0, 5], [0, 5, 5]])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_malformed_offsets_include_last_offset_poison(offsets, mode):
    rng = np.random.default_rng(8)
    inp = np.array([0, 1, 2, 3, 1], np.int64)
    W = rng.standard_normal((5, 3)).astype(np.float32)
    cfg = bag_config(mode=mode, include_last_offset=True)
    check_against_oracle(inp, np.array(offsets, np.int64), W, cfg, mx.float32, rng)


def test_deterministic_flag_does_not_change_reference():
    for seed in range(5):
        rng = np.random.default_rng(300 + seed)
        inp, offsets, W, cfg = random_bag_config(rng)
        kw = {k: cfg[k] for k in ("mode", "include_last_offset", "padding_idx")}

        def f(w, det):
            return meb.embedding_bag(
                mx.array(inp),
                w,
                None if offsets is None else mx.array(offsets),
                backend="reference",
                deterministic=det,
                **kw,
            ).sum()

        w = mx.array(W)
        g1, g2 = mx.grad(lambda w: f(w, True))(w), mx.grad(lambda w: f(w, False))(w)
        assert np.array_equal(np.array(g1), np.array(g2))


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    given = None

if given is not None:

    @settings(max_examples=80, deadline=None)
    @given(st.integers(0, 2**32 - 1), st.booleans())
    def test_hypothesis_configs(seed, invalid):
        rng = np.random.default_rng(seed)
        inp, offsets, W, cfg = random_bag_config(rng, allow_invalid=invalid)
        check_against_oracle(inp, offsets, W, cfg, mx.float32, rng)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("index_dtype", ["int32", "int64", "uint32", "uint64", "int8", "uint16"])
def test_embedding_rows_come_back_bit_for_bit_and_bad_indices_as_nan(dtype, index_dtype):
    """The reference embedding divides each row by 1 (or NaN for a bad index): -0.0, inf and
    a stored NaN come back unchanged in every table dtype; an index out of range either way
    (negative, or past the table, whatever its integer type) gives a NaN row."""
    w = np.array([[-0.0, 1.5, np.inf], [np.nan, -np.inf, 0.0], [2.0, -3.0, 0.25]], dtype=np.float32)
    table = mx.array(w).astype(getattr(mx, dtype))
    signed = not index_dtype.startswith("u")
    idx = np.array([[2, 0], [1, 3]] if not signed else [[2, 0], [1, -1]], dtype=index_dtype)
    out = meb.embedding(mx.array(idx), table, backend="reference")
    assert out.dtype == table.dtype and out.shape == (2, 2, 3)
    got = np.array(out.astype(mx.float32))
    expected = np.array(table.astype(mx.float32))
    # Row by row: NaN where NumPy says so, the same bits elsewhere (-0.0 keeps its sign).
    for pos, row in ((0, 0), (0, 1), (1, 0)):
        r = expected[int(idx[pos][row])]
        np.testing.assert_array_equal(np.signbit(got[pos, row]), np.signbit(r))
        np.testing.assert_array_equal(got[pos, row], r)
    assert np.isnan(got[1, 1]).all()
