"""The sparse optimizers' Metal path (``metal/sparse_update.metal``) under the emulator, or on a Mac.

Oracles: the reference optimizers (MLX ops, themselves checked against PyTorch in
test_sparse_training.py), PyTorch 2.13 CPU (``SGD``, ``Adagrad``, ``SparseAdam`` with
sparse gradients) and the NumPy row-wise Adagrad oracle. Not compared with PyTorch,
with the reason: ``scale_grad_by_freq`` and poisoned bags (PyTorch refuses the first
with sparse gradients and raises on out-of-range indices): compared with the
reference path. Compiled training over the kernels runs only on Apple silicon (the
emulator cannot run inside ``mx.compile``); the eager tests cover the same values.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from support import emulated, sparse_adam_step_extra_bytes
from test_sparse_training import (
    KW,
    OPTIMIZERS,
    V,
    assert_close,
    mlx_run,
    rowwise_oracle_run,
    torch_run,
)

import mlx_embag as meb
from mlx_embag import RowSparseGrad, kernels, optimizers

MAKE = {
    "sgd": lambda b: meb.optimizers.SparseSGD(0.1, backend=b),
    "adagrad": lambda b: meb.optimizers.SparseAdagrad(0.1, backend=b),
    "adam": lambda b: meb.optimizers.SparseAdam(0.1, betas=(0.8, 0.9), backend=b),
    "rowwise": lambda b: meb.optimizers.RowWiseAdagrad(0.1, backend=b),
}
# Metal against the reference path at the table's dtype: both round the same float32
# update to the table's dtype; float32 sums run in another order.
PATHS_TOL = {mx.float32: (2e-5, 2e-5), mx.float16: (4e-3, 4e-3), mx.bfloat16: (3e-2, 3e-2)}


def gradient(seed, Vt, D, dtype, K=150):
    """Entries with a hot row spanning three windows of 32, unlisted entries (-1), repeats."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(-1, Vt, K)
    idx[rng.permutation(K)[:70]] = 3
    vals = rng.standard_normal((K, D)).astype(np.float32)
    vals[idx < 0] = 0.0  # as value_and_grad gives them
    return RowSparseGrad(mx.array(idx.astype(np.int32)), mx.array(vals).astype(dtype), Vt)


def train(rule, backend, dtype=mx.float32, Vt=20, D=33, steps=3, seed=0):
    """The table and state after ``steps`` updates with different gradients."""
    opt = MAKE[rule](backend)
    W0 = np.random.default_rng(seed + 100).standard_normal((Vt, D)).astype(np.float32)
    params = {"w": mx.array(W0).astype(dtype)}
    for s in range(steps):
        params = opt.apply_gradients({"w": gradient(seed + s, Vt, D, dtype)}, params)
        mx.eval(params, opt.state)
    state = {k: np.array(v) for k, v in opt.state["w"].items()}
    return np.array(params["w"].astype(mx.float32)), state


# D: 8 threads (TY > 1 but with the row-wise rule); 64 threads; 256 threads of two columns.
CASES = [(D, mx.float32) for D in (5, 33, 300)] + [(D, mx.float16) for D in (5, 33)] + [(33, mx.bfloat16)]


@pytest.mark.parametrize("D, dtype", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("rule", sorted(MAKE))
def test_fused_step_matches_the_reference_optimizer(rule, D, dtype):
    want_w, want_state = train(rule, "reference", dtype, D=D)
    with emulated(seed=1):
        got_w, got_state = train(rule, "metal", dtype, D=D)
    rtol, atol = PATHS_TOL[dtype]
    np.testing.assert_allclose(got_w, want_w, rtol=rtol, atol=atol)
    assert sorted(got_state) == sorted(want_state)
    for k in want_state:  # float32 accumulators of sums of squares: relative to their size
        np.testing.assert_allclose(
            got_state[k], want_state[k], rtol=2e-5, atol=2e-5 * np.abs(want_state[k]).max()
        )


@pytest.mark.parametrize("rule", sorted(MAKE))
def test_fused_step_stays_in_bounds_under_the_sanitizer(rule):
    # AddressSanitizer build: a read or write out of bounds raises naming the kernel.
    want_w, _ = train(rule, "reference", D=9, steps=1)
    with emulated(seed=15, sanitize=True):
        got_w, _ = train(rule, "metal", D=9, steps=1)
    np.testing.assert_allclose(got_w, want_w, rtol=2e-5, atol=2e-5)


def test_fused_sums_are_the_deterministic_backwards_bits(monkeypatch):
    # SparseSGD's update is -lr * sum: the fused kernel and the split path (det_partial /
    # det_write sums, then MLX ops) must give the same bits, hot row across windows included.
    with emulated(seed=2):
        fused = train("sgd", "metal", D=40, steps=2)[0]
        monkeypatch.setattr(optimizers._RowOptimizer, "_fused", lambda *a: None)
        split = train("sgd", "metal", D=40, steps=2)[0]
    assert np.array_equal(fused, split)


@pytest.mark.parametrize("rule", ["adam", "rowwise"])
def test_same_bits_whatever_the_threadgroup_order(rule):
    runs = []
    for seed in (3, 4):
        with emulated(seed=seed):
            w, state = train(rule, "metal", D=33)
        runs.append([w, *state.values()])
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_metal_training_matches_pytorch(name):
    make_torch, make_mlx = OPTIMIZERS[name]
    want_losses, want_w = torch_run(make_torch, KW)
    with emulated(seed=5):
        got_losses, got_w = mlx_run(make_mlx(), {**KW, "backend": "metal"})
    assert_close(got_losses, want_losses, f"{name} losses")
    assert_close(got_w, want_w, f"{name} table")


def test_metal_rowwise_adagrad_matches_numpy_oracle():
    want_losses, want_w = rowwise_oracle_run(0.1, 1e-8)
    with emulated(seed=6):
        got_losses, got_w = mlx_run(meb.optimizers.RowWiseAdagrad(0.1, eps=1e-8), {**KW, "backend": "metal"})
    assert_close(got_losses, want_losses, "losses")
    assert_close(got_w, want_w, "table")


def test_metal_sparse_adam_with_padding_and_mean_matches_pytorch():
    kw = dict(mode="mean", padding_idx=4)
    want_losses, want_w = torch_run(OPTIMIZERS["sparse_adam"][0], kw, pad=4)
    with emulated(seed=7):
        got_losses, got_w = mlx_run(OPTIMIZERS["sparse_adam"][1](), {**kw, "backend": "metal"}, pad=4)
    assert_close(got_losses, want_losses, "losses")
    assert_close(got_w, want_w, "table")


def test_metal_deterministic_training_is_bitwise_repeatable():
    kw = dict(mode="sum", deterministic=True, backend="metal")
    runs = []
    for seed in (8, 9):
        with emulated(seed=seed):
            runs.append(mlx_run(OPTIMIZERS["sparse_adam"][1](), kw)[1])
    assert np.array_equal(runs[0], runs[1])


def _poisoned_freq_run(rule, backend, steps=10):
    """A scale_grad_by_freq table trained alone on bags with repeats, padding and, every other
    step, a poisoned bag (an index past the table)."""
    rng = np.random.default_rng(11)
    W0 = mx.array(rng.standard_normal((V, 6)).astype(np.float32))
    emb = meb.EmbeddingBag(
        V, 6, mode="sum", sparse=True, scale_grad_by_freq=True, padding_idx=2, _weight=W0, backend=backend
    )
    opt = MAKE[rule](None)

    def loss(ids, off, y):
        out = emb(ids, off)
        return (mx.where(mx.isnan(out), 0.0, out - y) ** 2).sum()

    loss_and_grad = meb.value_and_grad(emb, loss)
    for s in range(steps):
        ids = rng.integers(0, 12, 40)
        ids[::7] = 2
        if s % 2:
            ids[5] = V + 3  # poisons bag 1 (positions 5-9): it sends no gradient
        off = np.arange(0, 40, 5)
        y = rng.standard_normal((8, 6)).astype(np.float32)
        _, grads = loss_and_grad(mx.array(ids), mx.array(off), mx.array(y))
        if s % 2:
            assert grads["weight"].indices[5:10].tolist() == [-1] * 5
        opt.update(emb, grads)
        mx.eval(emb.parameters(), opt.state)
    return np.array(emb.weight)


@pytest.mark.parametrize("rule", sorted(MAKE))
def test_scale_grad_by_freq_and_poisoned_bags_match_the_reference_path(rule):
    want = _poisoned_freq_run(rule, "reference")
    with emulated(seed=10):
        got = _poisoned_freq_run(rule, "metal")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lazy", [False, True], ids=["as-run", "lazy-state-reads"])
def test_the_metal_step_updates_the_table_and_state_in_place(lazy, monkeypatch):
    # As test_sparse_training's. The emulator runs a kernel eagerly, but on a Mac the kernel's
    # reads of the old moments are in the lazy graph, and MLX would copy both moments (32 MiB
    # each here) when it scatters the increments into them unless the sync point has evaluated
    # the kernel first: "lazy-state-reads" adds such reads (gathers, as MLX sees them the same)
    # to the kernel's outputs. Without that evaluation the step allocates ~62 MiB here.
    if lazy:
        real = optimizers._sparse_kernels.sparse_update

        def reads_state_lazily(rule, skey, order, values, part, states, *rest):
            outs = real(rule, skey, order, values, part, states, *rest)
            rows = mx.where(skey >= 0, skey, 0)
            touch = sum(mx.take(x, rows, axis=0).sum() * 0 for x in states)
            return [o + touch.astype(o.dtype) for o in outs]

        monkeypatch.setattr(optimizers._sparse_kernels, "sparse_update", reads_state_lazily)
    with emulated(seed=12):
        extra = sparse_adam_step_extra_bytes("metal")
    assert extra < 8 * 2**20, f"the step allocated {extra / 2**20:.1f} MiB beyond the table and state"


def test_auto_takes_the_reference_path_when_the_kernel_does_not_build(monkeypatch):
    def broken(*args):
        raise kernels.KernelUnavailable("does not build")

    want = train("adam", "reference")[0]
    with emulated(seed=13):
        monkeypatch.setattr(optimizers._sparse_kernels, "step", broken)
        got = train("adam", "auto")[0]
        with pytest.raises(kernels.KernelUnavailable):
            train("adam", "metal")
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_bad_backend_and_unsupported_tables_are_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        meb.optimizers.SparseAdam(0.1, backend="cuda")
    g = RowSparseGrad(mx.array([1]), mx.ones((1, 2), mx.float64), 3)
    with emulated(seed=14), pytest.raises(ValueError, match="float32, float16 or bfloat16 tables"):
        meb.optimizers.SparseSGD(0.1, backend="metal").apply_gradients(
            {"w": g}, {"w": mx.zeros((3, 2), mx.float64)}
        )


@pytest.mark.skipif(
    not mx.metal.is_available(),
    reason="mx.compile over Metal kernels needs Apple silicon (the emulator is eager)",
)
@pytest.mark.parametrize("how", ["recipe", "whole"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_metal_training_gives_the_eager_tables(name, how):
    # Compiled, SparseSGD stays fused; the rules with state take the split path (see _sparse_kernels).
    make_mlx = OPTIMIZERS[name][1]
    kw = {**KW, "backend": "metal"}
    _, eager_w = mlx_run(make_mlx(), kw)
    _, got_w = mlx_run(make_mlx(), kw, how=how)
    np.testing.assert_allclose(got_w, eager_w, rtol=1e-5, atol=1e-6)
