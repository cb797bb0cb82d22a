"""Tables with no rows or no columns, on both paths (issue 2, bad input; issue 3, same results).

MLX itself refuses a take from an empty axis and, in 0.32, dies of SIGFPE in
``segmented_mm`` with zero columns; these calls must neither crash nor raise
anything but the documented errors. With no rows every index is out of range,
so the poison rule makes every non-empty bag NaN (PyTorch raises instead).
"""

import math

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

import mlx_embag as meb

BACKENDS = ("reference", "metal")
INPUTS = {  # (input, offsets, number of bags, which bags are empty)
    "1-D": (mx.array([0, 1, 1]), mx.array([0, 1, 1]), [False, True, False]),
    "2-D": (mx.array([[0, 1], [1, 0]]), None, [False, False]),
}


def _run(backend, fn):
    if backend == "metal":
        with emulated(seed=3):
            return fn()
    return fn()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", sorted(INPUTS))
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_zero_columns(backend, layout, mode):
    x, offsets, empty = INPUTS[layout]
    psw = mx.ones(x.shape) if mode == "sum" else None

    def loss(w, p):
        return meb.embedding_bag(x, w, offsets, mode=mode, per_sample_weights=p, backend=backend).sum()

    def go():
        w = mx.zeros((4, 0))
        out = meb.embedding_bag(x, w, offsets, mode=mode, per_sample_weights=psw, backend=backend)
        if psw is None:
            return out, mx.grad(lambda w: loss(w, None))(w), None
        gw, gp = mx.grad(loss, argnums=(0, 1))(w, psw)
        return out, gw, gp

    out, gw, gp = _run(backend, go)
    assert out.shape == (len(empty), 0) and out.dtype == mx.float32
    assert gw.shape == (4, 0)
    if gp is not None:
        np.testing.assert_array_equal(np.array(gp), np.zeros(x.shape, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_columns_embedding(backend):
    def go():
        w = mx.zeros((4, 0), mx.float16)
        out = meb.embedding(mx.array([[3, 0, 1]]), w, backend=backend)
        g = mx.grad(lambda w: meb.embedding(mx.array([3, 3]), w, backend=backend).sum())(w)
        return out, g

    out, g = _run(backend, go)
    assert out.shape == (1, 3, 0) and out.dtype == mx.float16
    assert g.shape == (4, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", sorted(INPUTS))
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_zero_rows_poison_every_nonempty_bag(backend, layout, mode):
    x, offsets, empty = INPUTS[layout]
    psw = mx.full(x.shape, 2.0) if mode == "sum" else None

    def go():
        w = mx.zeros((0, 3))
        out = meb.embedding_bag(x, w, offsets, mode=mode, per_sample_weights=psw, backend=backend)
        if psw is None:
            return (
                out,
                mx.grad(lambda w: meb.embedding_bag(x, w, offsets, mode=mode, backend=backend).sum())(w),
                None,
            )

        def loss(w, p):
            return meb.embedding_bag(x, w, offsets, mode=mode, per_sample_weights=p, backend=backend).sum()

        gw, gp = mx.grad(loss, argnums=(0, 1))(w, psw)
        return out, gw, gp

    out, gw, gp = _run(backend, go)
    want = np.array([[0.0 if e else math.nan] * 3 for e in empty], np.float32)
    np.testing.assert_array_equal(np.array(out), want)
    assert gw.shape == (0, 3)
    if gp is not None:  # a poisoned bag sends no gradient anywhere
        np.testing.assert_array_equal(np.array(gp), np.zeros(x.shape, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows_embedding_is_nan(backend):
    out = _run(backend, lambda: meb.embedding(mx.array([0, 2]), mx.zeros((0, 2)), backend=backend))
    np.testing.assert_array_equal(np.array(out), np.full((2, 2), math.nan, np.float32))


def test_zero_rows_checked_raises_naming_input():
    with pytest.raises(IndexError, match="input"):
        meb.embedding_bag(mx.array([0]), mx.zeros((0, 3)), mx.array([0]), check_indices=True)
    with pytest.raises(IndexError, match="input"):
        meb.embedding(mx.array([0]), mx.zeros((0, 3)), check_indices=True)


def test_zero_rows_unsigned_indices_still_out_of_range():
    out = meb.embedding_bag(
        mx.array([0, 5], mx.uint32),
        mx.zeros((0, 2)),
        mx.array([0], mx.uint32),
        mode="sum",
        backend="reference",
    )
    assert np.isnan(np.array(out)).all()
