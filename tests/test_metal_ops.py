"""The Metal backend against the reference path and the NumPy oracle (tests/oracle.py):
values, weight and per_sample_weights gradients.

On Linux every kernel runs in the CPU emulator (random threadgroup order); on
a Mac the real kernels run. Cases are random over the whole option matrix but
drawn from a bounded set of kernel specialisations (3 dtypes x 2 index dtypes
x D with and without a multiple of 4 x sum/max), so the emulator compiles
each specialisation once.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding_bag
from support import DTYPES, PATHS_TOL, assert_close

import mlx_embag as meb
from mlx_embag import launchers, metal_ops, reference
from mlx_embag._spec import BagSpec, EmbSpec

METAL_SEED = 1234
pytestmark = pytest.mark.usefixtures("metal")


def value_and_grads(fn, weight, psw, cot):
    """fn's output, and the gradients of sum(out * cot) (NaN outputs masked) w.r.t. weight and psw."""

    def loss(w, p):
        o = fn(w, p).astype(mx.float32)
        return (mx.where(mx.isnan(o), 0.0, o) * cot).sum()

    out = fn(weight, psw)
    if psw is None:
        return out, mx.grad(lambda w: loss(w, None))(weight), None
    gw, gp = mx.grad(loss, argnums=(0, 1))(weight, psw)
    return out, gw, gp


def check_pair(metal_fn, ref_fn, weight, psw, rng, desc):
    ref_out = ref_fn(weight, psw)
    cot = mx.array(rng.standard_normal(ref_out.shape).astype(np.float32))
    got = value_and_grads(metal_fn, weight, psw, cot)
    want = value_and_grads(ref_fn, weight, psw, cot)
    dt = weight.dtype
    assert got[0].dtype == dt and got[1].dtype == dt
    tol = dict(rtol=PATHS_TOL[dt][0], atol=PATHS_TOL[dt][1], scale_atol=True)
    assert_close(got[0], want[0], name=f"output\n{desc}", **tol)
    assert_close(got[1], want[1], name=f"weight gradient\n{desc}", **tol)
    if psw is not None:
        assert got[2].dtype == psw.dtype
        assert_close(got[2], want[2], name=f"per_sample_weights gradient\n{desc}", **tol)
    return got, cot


def check_oracle(got, cot, weight, ind, off, psw, spec, desc):
    """The Metal results against the NumPy float64 oracle (tests/oracle.py), float32 tables."""
    inp = np.array(ind)
    if off is None:
        inp = inp.reshape(spec.num_bags, spec.bag_size)
    out, dw, dp = oracle_embedding_bag(
        inp,
        np.array(weight),
        None if off is None else np.array(off),
        mode=spec.mode,
        per_sample_weights=None if psw is None else np.array(psw.astype(mx.float32)).reshape(inp.shape),
        include_last_offset=spec.include_last_offset,
        padding_idx=spec.padding_idx,
        max_norm=spec.max_norm,
        norm_type=spec.norm_type,
        scale_grad_by_freq=spec.scale_grad_by_freq,
        cotangent=np.array(cot),
    )
    tol = 1e-4
    for name, a, b in (("output", got[0], out), ("weight gradient", got[1], dw)):
        assert_close(a, b, tol, tol, f"oracle {name}\n{desc}")
    if psw is not None:
        rtol, atol = PATHS_TOL[psw.dtype]  # the gradient comes back in psw's dtype
        assert_close(got[2], np.reshape(dp, -1), rtol, atol * 10, f"oracle psw gradient\n{desc}")


def random_case(rng, *, dtype=None, idx_dtype=None, d=None, mode=None, long_bags=False):
    """One random embedding_bag call: (weight, indices, offsets, psw, spec, description)."""
    dtype = dtype or DTYPES[rng.integers(3)]
    idx_dtype = idx_dtype or (mx.int32, mx.int64)[rng.integers(2)]
    V = int(rng.integers(1, 24))
    D = d if d is not None else int(rng.choice([1, 3, 4, 8, 13, 64]))
    mode = mode or ("sum", "mean", "max")[rng.integers(3)]
    two_d = rng.random() < 0.3
    ilo = bool(rng.random() < 0.5) and not two_d
    if two_d:
        B, L = int(rng.integers(1, 6)), int(rng.integers(0, 7))
        N, off = B * L, None
    else:
        L = None
        N = int(rng.integers(200, 600)) if long_bags else int(rng.integers(0, 48))
        B = int(rng.integers(1, 4)) if long_bags else int(rng.integers(1, 7))
        cuts = np.sort(rng.integers(0, N + 1, size=B + int(ilo)))
        cuts[0] = 0
        if rng.random() < 0.15 and N:  # malformed offsets: the poison rule
            cuts[rng.integers(len(cuts))] = rng.integers(-2, N + 3)
        off = mx.array(cuts.astype(np.int64)).astype(idx_dtype)
    ind = rng.integers(0, V, size=N)
    if rng.random() < 0.3 and N:  # a hot row
        ind[rng.random(N) < 0.6] = rng.integers(V)
    if rng.random() < 0.15 and N:  # an out-of-range index poisons its bag
        ind[rng.integers(N)] = rng.choice([-1, V, 2**31 - 1])
    ind = mx.array(ind).astype(idx_dtype)
    pad = int(rng.integers(0, V)) if rng.random() < 0.3 else None
    max_norm = float(rng.uniform(0.5, 3.0)) if rng.random() < 0.3 else None
    norm_type = float(rng.choice([2.0, 1.0, math.inf, 3.0]))
    sgf = bool(rng.random() < 0.3) and mode != "max"
    det = bool(rng.random() < 0.5)
    weight = mx.array(rng.standard_normal((V, D)).astype(np.float32)).astype(dtype)
    psw = None
    if mode == "sum" and rng.random() < 0.5:
        psw = mx.array(rng.standard_normal(N).astype(np.float32)).astype(
            (mx.float32, mx.float16)[rng.integers(2)]
        )
    spec = BagSpec(mode, B, L, ilo, pad, max_norm, norm_type, sgf, det)
    desc = (
        f"{dtype} {idx_dtype} V={V} D={D} spec={spec} psw={psw is not None}\n"
        f"offsets={None if off is None else off.tolist()}\nindices={ind.tolist()}"
    )
    return weight, ind, off, psw, spec, desc


@pytest.mark.parametrize("seed", range(8))
def test_embedding_bag_matches_reference_and_oracle(seed):
    rng = np.random.default_rng(seed)
    for _ in range(30):
        w, ind, off, psw, spec, desc = random_case(rng)
        got, cot = check_pair(
            lambda w_, p_: metal_ops.embedding_bag(w_, ind, off, p_, spec),
            lambda w_, p_: reference.embedding_bag(w_, ind, off, p_, spec),
            w,
            psw,
            rng,
            desc,
        )
        # max_norm makes rows' largest entries equal max_norm up to rounding: in max mode
        # the float64 oracle may then break those near-ties differently from float32.
        if w.dtype == mx.float32 and not (spec.mode == "max" and spec.max_norm is not None):
            check_oracle(got, cot, w, ind, off, psw, spec, desc)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("split", [False, True], ids=["one-threadgroup", "split-threadgroups"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_long_bags_split_across_threads(mode, split, dtype, monkeypatch):
    """Bags of hundreds of positions: split over the threads of one threadgroup, or over
    several threadgroups with the second reduction step (bag_combine); ties included, and
    every table dtype (half tables keep float32 partials between the two steps)."""
    if split:
        monkeypatch.setattr(launchers, "SPLIT_POSITIONS", 2)
        assert launchers.splits(400, 2, (1, 64, 1)) > 1
    else:
        monkeypatch.setattr(launchers, "FILL_THREADS", 1)
    rng = np.random.default_rng(7)
    for _ in range(4):
        w, ind, off, psw, spec, desc = random_case(rng, mode=mode, long_bags=True, dtype=dtype)
        if mode == "max":
            w = mx.round(w * 2) / 2  # many exact ties: the earliest position must win
        check_pair(
            lambda w_, p_: metal_ops.embedding_bag(w_, ind, off, p_, spec),
            lambda w_, p_: reference.embedding_bag(w_, ind, off, p_, spec),
            w,
            psw,
            rng,
            desc,
        )


@pytest.mark.parametrize("D", [256, 300], ids=["gradient-row-in-registers", "gradient-row-from-memory"])
def test_psw_gradient_of_wide_rows(D):
    """psw_grad keeps the bag's gradient row in registers up to D = 256, reads it per position above."""
    rng = np.random.default_rng(D)
    for dtype in DTYPES:
        V, N, B = 9, 60, 3
        w = mx.array(rng.standard_normal((V, D)).astype(np.float32)).astype(dtype)
        ind, off = mx.array(rng.integers(0, V, N)), mx.array([0, 25, 26])
        psw = mx.array(rng.standard_normal(N).astype(np.float32)).astype(dtype)
        spec = BagSpec("sum", B, None, False, 1, None, 2.0, False, False)
        check_pair(
            lambda w_, p_: metal_ops.embedding_bag(w_, ind, off, p_, spec),
            lambda w_, p_: reference.embedding_bag(w_, ind, off, p_, spec),
            w,
            psw,
            rng,
            f"{dtype} D={D}",
        )


@pytest.mark.parametrize("seed", range(2))
def test_embedding_matches_reference(seed):
    rng = np.random.default_rng(100 + seed)
    for _ in range(12):
        dtype = DTYPES[rng.integers(3)]
        V, D = int(rng.integers(1, 20)), int(rng.choice([3, 8]))
        shape = [(0,), (7,), (3, 5), (2, 3, 4)][rng.integers(4)]
        ind = rng.integers(0, V, size=shape)
        if ind.size and rng.random() < 0.3:
            ind.flat[rng.integers(ind.size)] = rng.choice([-1, V])
        ind = mx.array(ind).astype((mx.int32, mx.int64)[rng.integers(2)])
        spec = EmbSpec(
            int(rng.integers(V)) if rng.random() < 0.4 else None,
            float(rng.uniform(0.5, 3)) if rng.random() < 0.4 else None,
            float(rng.choice([2.0, 1.0, math.inf])),
            bool(rng.random() < 0.4),
            bool(rng.random() < 0.5),
        )
        w = mx.array(rng.standard_normal((V, D)).astype(np.float32)).astype(dtype)
        desc = f"{dtype} V={V} D={D} {spec} indices={ind.tolist()}"
        check_pair(
            lambda w_, p_: metal_ops.embedding(w_, ind, spec),
            lambda w_, p_: reference.embedding(w_, ind, spec),
            w,
            None,
            rng,
            desc,
        )


def test_known_values_and_poison_rule():
    """Hand-computed results: trailing indices, an empty bag, a poisoned bag, max ties."""
    w = mx.array([[1.0, 5.0], [3.0, 5.0], [2.0, -1.0], [0.0, 0.0]])
    ind = mx.array([0, 1, 2, 1, 9, 3, 3])
    off = mx.array([0, 2, 2, 5, 6])  # bag 2 = [2, 5) holds index 9: poisoned; index 6 trails
    spec = BagSpec("max", 4, None, True, None, None, 2.0, False, False)
    out = metal_ops.embedding_bag(w, ind, off, None, spec)
    got = np.array(out)
    np.testing.assert_array_equal(got[0], [3.0, 5.0])
    np.testing.assert_array_equal(got[1], [0.0, 0.0])
    assert np.isnan(got[2]).all()
    np.testing.assert_array_equal(got[3], [0.0, 0.0])
    # Max-mode gradient: column 1 ties between rows 0 and 1 at positions 0 and 1: row 0 wins.
    g = mx.grad(
        lambda w_: mx.where(mx.isnan(o := metal_ops.embedding_bag(w_, ind, off, None, spec)), 0.0, o).sum()
    )(w)
    np.testing.assert_array_equal(np.array(g), [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])


def test_supports():
    w = mx.zeros((4, 3))
    spec = BagSpec("sum", 2, None, False, None, None, 2.0, False, False)
    assert metal_ops.unsupported_bag(w, mx.array([0, 1]), mx.array([0, 1]), None, spec) is None
    assert (
        metal_ops.unsupported_embedding(w, mx.array([0, 1]), EmbSpec(None, None, 2.0, False, False)) is None
    )
    reason = metal_ops.unsupported_bag(
        mx.zeros((4, 3), dtype=mx.float64), mx.array([0]), mx.array([0]), None, spec
    )
    assert "float64" in reason


def test_supports_falls_back_past_int32_entries():
    """(bag, column) entries are int32 in the kernels: "auto" sends bigger outputs to the reference."""
    w = mx.zeros((2, 2**20))
    big = BagSpec("sum", 2**11, None, False, None, None, 2.0, False, False)
    assert "2**31 - 1" in metal_ops.unsupported_bag(w, mx.array([0]), mx.array([0]), None, big)
    ok = BagSpec("sum", 2**10, None, False, None, None, 2.0, False, False)
    assert metal_ops.unsupported_bag(w, mx.array([0]), mx.array([0]), None, ok) is None


@pytest.mark.parametrize("deterministic", [False, True])
def test_module_training_gradients_match(deterministic):
    """nn.value_and_grad through meb.EmbeddingBag / meb.Embedding: the Metal and reference
    backends give the same loss and parameter gradients (psw gradient included)."""
    import mlx.nn as nn

    rng = np.random.default_rng(9)
    ind = mx.array(rng.integers(0, 30, size=40))
    off = mx.array([0, 5, 5, 17, 30])
    psw = mx.array(rng.standard_normal(40).astype(np.float32))

    def grads(backend):
        mx.random.seed(4)
        bag = meb.EmbeddingBag(30, 8, mode="sum", padding_idx=3, backend=backend, deterministic=deterministic)
        emb = meb.Embedding(30, 8, scale_grad_by_freq=True, backend=backend, deterministic=deterministic)

        def loss(model, p):
            return (model.bag(ind, off, p) ** 2).sum() + (model.emb(ind.reshape(8, 5)) * 0.5).sum()

        model = nn.Module()
        model.bag, model.emb = bag, emb
        val, g = nn.value_and_grad(model, lambda m: loss(m, psw))(model)
        gp = mx.grad(lambda p: loss(model, p))(psw)
        return val, [g["bag"], g["emb"]], gp

    (v1, g1, p1), (v2, g2, p2) = grads("metal"), grads("reference")
    np.testing.assert_allclose(v1.item(), v2.item(), rtol=1e-5)
    np.testing.assert_allclose(np.array(g1[0]["weight"]), np.array(g2[0]["weight"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(g1[1]["weight"]), np.array(g2[1]["weight"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(p1), np.array(p2), rtol=1e-5, atol=1e-5)
    assert np.abs(np.array(g1[0]["weight"])).sum() > 0


@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("mode", ["sum", "max"])
def test_degenerate_tables(shape, mode):
    """An empty table poisons every bag that holds an index; D = 0 gives (B, 0); gradients keep the shape."""
    w = mx.zeros(shape)
    spec = BagSpec(mode, 2, None, False, None, 1.0, 2.0, False, False)
    for ind, poisoned in ((mx.array([0, 1]), shape[0] == 0), (mx.array([], dtype=mx.int32), False)):
        off = mx.array([0, ind.size // 2])
        out = metal_ops.embedding_bag(w, ind, off, None, spec)
        assert out.shape == (2, shape[1])
        want = np.full((2, shape[1]), np.nan if poisoned else 0.0)
        np.testing.assert_array_equal(np.array(out), want)
        g = mx.grad(
            lambda w_: mx.where(
                mx.isnan(o := metal_ops.embedding_bag(w_, ind, off, None, spec)), 0.0, o
            ).sum()
        )(w)
        assert g.shape == shape
    e = metal_ops.embedding(w, mx.array([[0, 1]]), EmbSpec(None, None, 2.0, False, False))
    assert e.shape == (1, 2, shape[1]) and (shape[0] > 0 or np.isnan(np.array(e)).all())
