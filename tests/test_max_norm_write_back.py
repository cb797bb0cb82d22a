"""The modules' max_norm write-back keeps the table differentiable and vmap-safe
(issue 8, item 1), on both backends, against PyTorch 2.13 CPU."""

from __future__ import annotations

import warnings

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch
from support import emulated

import mlx_embag as meb

BACKENDS = ("reference", "metal")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "reference":
        yield "reference"
        return
    with emulated(seed=11):
        yield "metal"


def _table(seed=0, V=10, D=4):
    return (np.random.default_rng(seed).standard_normal((V, D)) * 2).astype(np.float32)


def test_issue_example_second_call_gets_its_gradient(backend):
    """The issue's reproduction: the second call's rows got zero gradient (PyTorch: 1)."""
    m = meb.Embedding(10, 4, max_norm=1.0, _weight=2 * mx.ones((10, 4)), backend=backend)
    loss = lambda m: m(mx.array([1, 2])).sum() + m(mx.array([4, 5])).sum()  # noqa: E731
    _, g = nn.value_and_grad(m, loss)(m)
    expected = np.zeros((10, 4), np.float32)
    expected[[1, 2, 4, 5]] = 1.0
    np.testing.assert_array_equal(np.array(g["weight"]), expected)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_bag_used_twice_in_one_loss_matches_torch(backend, mode):
    W = _table(1)
    a, b = np.array([[1, 2, 2], [3, 1, 0]]), np.array([[2, 5, 6]])
    ca, cb = np.ones((2, 4), np.float32) * np.arange(1, 5), np.ones((1, 4), np.float32) * 3
    m = meb.EmbeddingBag(10, 4, max_norm=1.5, mode=mode, _weight=mx.array(W), backend=backend)

    def loss(m):
        return (m(mx.array(a)) * mx.array(ca)).sum() + (m(mx.array(b)) * mx.array(cb)).sum()

    value, g = nn.value_and_grad(m, loss)(m)
    t = torch.nn.EmbeddingBag(10, 4, max_norm=1.5, mode=mode, _weight=torch.tensor(W))
    tl = (t(torch.tensor(a)) * torch.tensor(ca)).sum() + (t(torch.tensor(b)) * torch.tensor(cb)).sum()
    tl.backward()
    np.testing.assert_allclose(value.item(), tl.item(), rtol=1e-6)
    np.testing.assert_allclose(np.array(g["weight"]), t.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    if mode != "max":  # (in max mode only arg-max rows get one)
        # Rows 5 and 6 appear only in the second call: they must get its gradient.
        assert np.abs(np.array(g["weight"])[[5, 6]]).sum(axis=1).min() > 0
    _assert_table_is_torch(m.weight, t.weight, backend)


def _assert_table_is_torch(weight, tweight, backend):
    """Bitwise on the reference path (PyTorch's norm order for these short rows); the
    Metal kernel reduces a row's norm in SIMD order, which may move it by an ulp."""
    if backend == "reference":
        np.testing.assert_array_equal(np.array(weight), tweight.detach().numpy())
    else:
        np.testing.assert_allclose(np.array(weight), tweight.detach().numpy(), rtol=3e-7, atol=0)


def test_as_linear_tied_table_matches_torch(backend):
    W = _table(3)
    x = np.array([[1, 7], [3, 3]])
    m = meb.Embedding(10, 4, max_norm=1.0, _weight=mx.array(W), backend=backend)
    _, g = nn.value_and_grad(m, lambda m: m.as_linear(m(mx.array(x))).sum())(m)
    t = torch.nn.Embedding(10, 4, max_norm=1.0, _weight=torch.tensor(W))
    (t(torch.tensor(x)) @ t.weight.T).sum().backward()
    np.testing.assert_allclose(np.array(g["weight"]), t.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    _assert_table_is_torch(m.weight, t.weight, backend)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("cls", ["bag", "embedding"])
def test_written_rows_are_the_rows_the_forward_used(backend, dtype, cls):
    """Bitwise: the output is a lookup of the table that was stored back."""
    rng = np.random.default_rng(4)
    W = mx.array(rng.standard_normal((64, 12)).astype(np.float32) * 3).astype(dtype)
    x = mx.array(rng.integers(0, 64, (40, 3)))
    if cls == "bag":
        m = meb.EmbeddingBag(64, 12, max_norm=1.3, mode="sum", _weight=W, backend=backend)
        out = m(x)
        again = meb.embedding_bag(x, m.weight, mode="sum", backend=backend)
    else:
        m = meb.Embedding(64, 12, max_norm=1.3, _weight=W, backend=backend)
        out = m(x)
        again = meb.embedding(x, m.weight, backend=backend)
    np.testing.assert_array_equal(np.array(out.astype(mx.float32)), np.array(again.astype(mx.float32)))
    # ... and the same as the functional form's in-call renorm.
    kw = dict(mode="sum") if cls == "bag" else {}
    fn = meb.embedding_bag if cls == "bag" else meb.embedding
    functional = fn(x, W, max_norm=1.3, backend=backend, **kw)
    np.testing.assert_array_equal(np.array(out.astype(mx.float32)), np.array(functional.astype(mx.float32)))


@pytest.mark.parametrize("cls", ["bag", "embedding"])
def test_vmap_restores_the_table_and_warns(cls):
    """A max_norm module inside mx.vmap: no tracer stays in weight; the table is the one
    from before the call, later calls work, and a warning says why."""
    W = mx.array(_table(5))
    if cls == "bag":
        m = meb.EmbeddingBag(10, 4, max_norm=1.0, mode="sum", _weight=W, backend="reference")
    else:
        m = meb.Embedding(10, 4, max_norm=1.0, _weight=W, backend="reference")
    before = m.weight
    xs = mx.array([[1, 2], [3, 4], [5, 6]])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        shaped = (lambda x: x[None]) if cls == "bag" else (lambda x: x)  # a bag of the pair
        out = mx.vmap(lambda x: m(shaped(x)).sum() + m(shaped(x + 1)).sum())(xs)
    assert any("inside mx.vmap" in str(r.message) for r in rec)
    assert m.weight is before
    expected = [
        (
            meb.embedding(mx.array(x), W, max_norm=1.0).sum()
            + meb.embedding(mx.array(x) + 1, W, max_norm=1.0).sum()
        ).item()
        for x in np.array(xs)
    ]
    np.testing.assert_allclose(np.array(out), expected, rtol=1e-6)
    # The module still works (a tracer in weight would raise "without a primitive").
    m(mx.array([[7, 8]]) if cls == "bag" else mx.array([7, 8]))
    mx.eval(m.weight)
    assert np.abs(np.linalg.norm(np.array(m.weight)[[7, 8]], axis=1) - 1.0).max() < 1e-5


def test_compile_with_declared_state_writes_back():
    W = _table(6)
    m = meb.EmbeddingBag(10, 4, max_norm=1.0, mode="sum", _weight=mx.array(W))
    t = torch.nn.EmbeddingBag(10, 4, max_norm=1.0, mode="sum", _weight=torch.tensor(W))
    step = mx.compile(lambda x: m(x).sum(), inputs=m.state, outputs=m.state)
    for x in ([[1, 2]], [[3, 1]], [[9, 9]]):
        out = step(mx.array(x))
        tout = t(torch.tensor(x)).sum()
        np.testing.assert_allclose(out.item(), tout.item(), rtol=1e-6)
        np.testing.assert_array_equal(np.array(m.weight), t.weight.detach().numpy())


def test_failed_call_leaves_the_table():
    m = meb.EmbeddingBag(10, 4, max_norm=1.0, _weight=mx.array(_table(7)))
    before = m.weight
    with pytest.raises(ValueError, match="offsets"):
        m(mx.array([[1, 2]]), mx.array([0]))
    assert m.weight is before
