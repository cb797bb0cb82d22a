"""mx.vmap over tables and indices: the values match a loop, and mx.grad of mx.vmap keeps
the custom gradients (issue 8, item 2); the calls vmap cannot run raise.

Without a vmap rule MLX vectorised the forward's primitives and differentiated
those: max-mode ties were split, padding rows got gradient, scale_grad_by_freq
and max_norm's straight-through were ignored. Every case here is checked
against the same function written as a Python loop over the batch (one graph,
so the order of additions is the same); the loop itself is checked against
PyTorch elsewhere (test_torch_parity.py). The values under vmap are checked
against the NumPy oracle (tests/oracle.py).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding_bag
from support import assert_close, emulated

import mlx_embag as meb

K, V, D = 3, 9, 4
RNG = np.random.default_rng(8)
# Integer-valued rows: many exact ties in max mode.
TABLE = mx.array(np.round(RNG.standard_normal((V, D)) * 1.5).astype(np.float32))
IDX2 = mx.array(RNG.integers(0, V, (K, 5, 4)))  # K examples of 5 bags of 4
IDX1 = mx.array(RNG.integers(0, V, (K, 13)))  # K examples of 13 positions
OFF = mx.array([0, 4, 4, 9])  # an empty bag, a trailing one
PSW = mx.array(RNG.standard_normal((K, 5, 4)).astype(np.float32))
COT = mx.array(RNG.standard_normal((D,)).astype(np.float32)) + 2.0

BAG_OPTIONS = [
    dict(mode="sum"),
    dict(mode="mean"),
    dict(mode="max"),
    dict(mode="sum", padding_idx=2),
    dict(mode="mean", padding_idx=2),
    dict(mode="max", padding_idx=2),
    dict(mode="sum", scale_grad_by_freq=True),
    dict(mode="mean", scale_grad_by_freq=True, padding_idx=0),
    dict(mode="sum", max_norm=1.0),
    dict(mode="max", max_norm=1.0),
    dict(mode="mean", max_norm=2.0, norm_type=1.0),
    dict(mode="sum", deterministic=True),
    dict(mode="max", deterministic=True),
]


def _grads_agree(vectorised, looped, x):
    gv, gl = mx.grad(vectorised)(x), mx.grad(looped)(x)
    gv, gl = np.array(gv), np.array(gl)
    np.testing.assert_array_equal(gv != 0, gl != 0)  # the same rows and columns get gradient
    np.testing.assert_allclose(gv, gl, rtol=1e-6, atol=1e-6)


def _loss(out):
    return (out * COT).sum()


@pytest.mark.parametrize("kw", BAG_OPTIONS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_bag_2d_over_indices(kw):
    f = lambda w, i: meb.embedding_bag(i, w, backend="reference", **kw)  # noqa: E731
    _grads_agree(
        lambda w: _loss(mx.vmap(lambda i: f(w, i))(IDX2)),
        lambda w: sum(_loss(f(w, IDX2[k])) for k in range(K)),
        TABLE,
    )


@pytest.mark.parametrize("kw", BAG_OPTIONS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_bag_2d_over_tables(kw):
    tables = mx.stack([TABLE * (k + 1) for k in range(K)])
    f = lambda w: meb.embedding_bag(IDX2[0], w, backend="reference", **kw)  # noqa: E731
    _grads_agree(lambda ws: _loss(mx.vmap(f)(ws)), lambda ws: sum(_loss(f(ws[k])) for k in range(K)), tables)


@pytest.mark.parametrize("include_last_offset", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_bag_1d_max_over_indices(include_last_offset, padding_idx):
    """1-D max raised "[Primitive::vjp] Not implemented for View" before."""
    kw = dict(mode="max", include_last_offset=include_last_offset, padding_idx=padding_idx)
    f = lambda w, i: meb.embedding_bag(i, w, OFF, backend="reference", **kw)  # noqa: E731
    _grads_agree(
        lambda w: _loss(mx.vmap(lambda i: f(w, i))(IDX1)),
        lambda w: sum(_loss(f(w, IDX1[k])) for k in range(K)),
        TABLE,
    )


def test_per_sample_weights_gradient():
    def f(w, i, p):
        return meb.embedding_bag(i, w, mode="sum", per_sample_weights=p, padding_idx=1, backend="reference")

    _grads_agree(
        lambda p: _loss(mx.vmap(lambda i, pp: f(TABLE, i, pp))(IDX2, p)),
        lambda p: sum(_loss(f(TABLE, IDX2[k], p[k])) for k in range(K)),
        PSW,
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(padding_idx=2),
        dict(scale_grad_by_freq=True),
        dict(max_norm=1.0),
        dict(deterministic=True),
    ],
    ids=["plain", "padding", "freq", "max_norm", "deterministic"],
)
def test_embedding_over_indices(kw):
    f = lambda w, i: meb.embedding(i, w, backend="reference", **kw)  # noqa: E731
    _grads_agree(
        lambda w: _loss(mx.vmap(lambda i: f(w, i))(IDX2)),
        lambda w: sum(_loss(f(w, IDX2[k])) for k in range(K)),
        TABLE,
    )


def test_vmap_of_grad_agrees_too():
    f = lambda w, i: _loss(meb.embedding_bag(i, w, mode="max", backend="reference"))  # noqa: E731
    per_example = mx.vmap(mx.grad(f), in_axes=(None, 0))(TABLE, IDX2)
    for k in range(K):
        np.testing.assert_array_equal(np.array(per_example[k]), np.array(mx.grad(f)(TABLE, IDX2[k])))


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_1d_sum_mean_raise_under_vmap(mode):
    """MLX traces a custom function's forward before its vmap rule, and the 1-D
    sum/mean forward is mx.segmented_mm, which has no vmap rule: it raises (the
    README says so) rather than giving anything silently different."""
    with pytest.raises(ValueError, match="SegmentedMM"):
        mx.vmap(lambda i: meb.embedding_bag(i, TABLE, OFF, mode=mode, backend="reference"))(IDX1)


def test_metal_path_raises_under_vmap():
    """The forward's Metal kernels have no vmap rule (on a Mac MLX raises for the
    CustomKernel; the emulator refuses vmap's tracers): never a silent result."""
    with emulated(seed=3):
        with pytest.raises((ValueError, RuntimeError), match="vmap"):
            mx.eval(mx.vmap(lambda i: meb.embedding_bag(i, TABLE, mode="max", backend="metal"))(IDX2))


def test_vmap_over_tables():
    rng = np.random.default_rng(8)
    Ws = rng.standard_normal((3, 5, 4)).astype(np.float32)
    inp, off = np.array([0, 4, 4, 1, 3]), np.array([0, 2, 2])

    def f(w):
        return meb.embedding_bag(mx.array(inp), w, mx.array(off), mode="max", backend="reference")

    out = np.array(mx.vmap(f)(mx.array(Ws)))
    for k in range(3):
        assert_close(
            out[k], oracle_embedding_bag(inp, Ws[k], off, mode="max")[0], 1e-6, 1e-6, f"vmap table {k}"
        )


VMAP_CASES = [  # (mode, 2-D?, padding_idx)
    ("sum", True, None),
    ("mean", True, 0),
    ("max", True, 0),
    ("max", True, None),
    ("max", False, None),
    ("max", False, 2),
]


@pytest.mark.parametrize("mode,two_d,pad", VMAP_CASES)
def test_vmap_over_indices_matches_a_loop(mode, two_d, pad):
    # MLX 0.32's `unbatched & batched` drops the batch axis under vmap; the
    # layout code must not use it (this gave one result for two, and counted padding).
    W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    xs = np.array([[0, 1, 2, 3], [3, 3, 0, 0], [0, 0, 2, 1]])
    off = None if two_d else mx.array([0, 2])

    def f(x):
        x = x.reshape(2, 2) if two_d else x
        return meb.embedding_bag(x, W, off, mode=mode, padding_idx=pad, backend="reference")

    got = np.array(mx.vmap(f)(mx.array(xs)))
    for k, x in enumerate(xs):
        want = oracle_embedding_bag(
            x.reshape(2, 2) if two_d else x,
            np.array(W),
            None if two_d else np.array([0, 2]),
            mode=mode,
            padding_idx=pad,
        )[0]
        assert_close(got[k], want, 1e-6, 1e-6, f"vmap over indices, row {k}")


def test_vmap_over_one_d_sum_raises_rather_than_guessing():
    # mx.segmented_mm has no vmap rule in MLX 0.32: a loud error, never a wrong answer.
    W = mx.ones((4, 3))
    with pytest.raises(ValueError, match="SegmentedMM"):
        mx.vmap(lambda x: meb.embedding_bag(x, W, mx.array([0, 2]), mode="sum", backend="reference"))(
            mx.array([[0, 1, 2, 3], [3, 3, 0, 0]])
        )
