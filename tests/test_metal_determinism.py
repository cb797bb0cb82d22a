"""deterministic=True: the Metal weight gradient is bitwise identical across threadgroup orders.

The emulator runs threadgroups (and threads within them) in an order drawn
from its seed, as a GPU schedules them in no fixed order; the sorted,
window-split backward must not care. Hot rows span many windows of the
sorted entries, so the cross-window partial sums are exercised.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

from mlx_embag import metal_ops
from mlx_embag._spec import BagSpec, EmbSpec

SEEDS = (1, 2, 3, 99)


def _run_under_seeds(fn):
    """fn() evaluated under each emulator seed (on a real GPU, runs differ by themselves)."""
    outs = []
    for s in SEEDS:
        with emulated(seed=s):
            outs.append(np.array(fn()))
    return outs


def _case(mode, dtype):
    rng = np.random.default_rng(11)
    V, D, N, B = 9, 12, 400, 5
    ind = rng.integers(0, V, size=N)
    ind[rng.random(N) < 0.5] = 3  # one very hot row: ~200 entries over many windows
    off = np.sort(rng.integers(0, N, size=B))
    off[0] = 0
    w = mx.array(rng.standard_normal((V, D)).astype(np.float32)).astype(dtype)
    cot = mx.array(rng.standard_normal((B, D)).astype(np.float32))
    psw = mx.array(rng.standard_normal(N).astype(np.float32)) if mode == "sum" else None
    spec = BagSpec(mode, B, None, False, 5, 2.0 if mode != "max" else None, 2.0, mode != "max", True)
    return w, mx.array(ind), mx.array(off), psw, cot, spec


@pytest.mark.parametrize("mode,dtype", [("sum", mx.float32), ("mean", mx.bfloat16), ("max", mx.float32)])
def test_bag_weight_gradient_bitwise_across_orders(mode, dtype):
    w, ind, off, psw, cot, spec = _case(mode, dtype)

    def grad():
        f = lambda w_: (metal_ops.embedding_bag(w_, ind, off, psw, spec).astype(mx.float32) * cot).sum()  # noqa
        g = mx.grad(f)(w)
        return g.astype(mx.float32)

    outs = _run_under_seeds(grad)
    assert np.abs(outs[0]).sum() > 0
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()


def test_embedding_gradient_bitwise_across_orders():
    rng = np.random.default_rng(3)
    V, D = 7, 5
    ind = mx.array(np.where(rng.random((30, 11)) < 0.7, 2, rng.integers(0, V, size=(30, 11))))
    w = mx.array(rng.standard_normal((V, D)).astype(np.float32))
    cot = mx.array(rng.standard_normal((30, 11, D)).astype(np.float32))
    spec = EmbSpec(None, None, 2.0, True, True)
    outs = _run_under_seeds(lambda: mx.grad(lambda w_: (metal_ops.embedding(w_, ind, spec) * cot).sum())(w))
    assert np.abs(outs[0]).sum() > 0
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()


def test_environment_variable_selects_the_deterministic_backward(monkeypatch):
    """MLX_EMBAG_DETERMINISTIC=1 (deterministic=None) runs the sorted backward, not the atomic one."""
    import mlx_embag as meb
    from mlx_embag import kernels

    called = []
    real = kernels.call

    def spy(name, *a, **k):
        called.append(name)
        return real(name, *a, **k)

    monkeypatch.setattr(kernels, "call", spy)
    w = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))

    def grad():
        loss = lambda w: meb.embedding_bag(
            mx.array([0, 2, 2, 1]),
            w,
            mx.array([0, 1]),
            mode="sum",  # noqa: E731
            backend="metal",
        ).sum()
        return mx.grad(loss)(w)

    with emulated(seed=1):
        monkeypatch.setenv("MLX_EMBAG_DETERMINISTIC", "1")
        g_det = grad()
        det_calls, called[:] = list(called), []
        monkeypatch.setenv("MLX_EMBAG_DETERMINISTIC", "0")
        g_atomic = grad()
    assert "det_write" in det_calls and "bag_bwd" not in det_calls
    assert "bag_bwd" in called and "det_write" not in called
    want = np.array([[1, 1, 1], [1, 1, 1], [2, 2, 2], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(np.array(g_det), want)
    np.testing.assert_array_equal(np.array(g_atomic), want)


def test_max_deterministic_gradient_is_v_by_d_past_int32(monkeypatch):
    """Max mode sorts flat ``row * D + column`` keys; V * D may pass 2**31, which no MLX shape
    holds, so the gradient must be asked for as (V, D), never (V * D, 1)."""
    import mlx_embag as meb
    from mlx_embag import kernels

    # Reference path: the graph is built lazily, so a 4 GiB table costs nothing here.
    V = 2**29 + 8
    big = mx.zeros((V, 4), mx.float16)
    loss = lambda w: meb.embedding_bag(
        mx.array([[0, V - 1]]),
        w,
        mode="max",  # noqa: E731
        backend="reference",
        deterministic=True,
    ).sum()
    assert mx.grad(loss)(big).shape == (V, 4)

    # Metal path (eager under the emulator): the shape it asks det_write for.
    shapes = {}
    real = kernels.call

    def spy(name, *a, **k):
        shapes[name] = k["output_shapes"]
        return real(name, *a, **k)

    monkeypatch.setattr(kernels, "call", spy)
    w = mx.array(np.arange(15, dtype=np.float32).reshape(5, 3))
    loss = lambda w: meb.embedding_bag(
        mx.array([[0, 4], [2, 2]]),
        w,
        mode="max",  # noqa: E731
        backend="metal",
        deterministic=True,
    ).sum()
    with emulated(seed=2):
        g = mx.grad(loss)(w)
    assert shapes["det_write"] == [(5, 3)]
    want = np.zeros((5, 3), np.float32)
    want[4] = 1
    want[2] = 1
    np.testing.assert_array_equal(np.array(g), want)
