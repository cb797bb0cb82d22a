"""``backend="auto"`` on a Mac whose Metal compiler rejects a kernel (issue 10).

Metal is simulated: ``mx.metal.is_available()`` is True and ``mx.fast.metal_kernel``
is the emulator's, so the library takes its Mac path; one kernel's source is
replaced by one that does not compile.
"""

from __future__ import annotations

import warnings

import mlx.core as mx
import numpy as np
import pytest

import mlx_embag as meb
from mlx_embag import _fallback, emulator, kernels

_BROKEN = "  this is not Metal;"


@pytest.fixture
def simulated_mac(monkeypatch):
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    monkeypatch.setattr(mx.fast, "metal_kernel", emulator.metal_kernel)
    monkeypatch.setattr(kernels, "_built", {})
    monkeypatch.setattr(kernels, "_probed", {})
    monkeypatch.setattr(_fallback, "_backward_checked", set())
    monkeypatch.setattr(_fallback, "_reference_only", set())
    yield monkeypatch


def _break(monkeypatch, name):
    real = kernels.read_metal
    monkeypatch.setattr(kernels, "read_metal", lambda n: _BROKEN if n == name else real(n))


def _bag(w, backend=None, mode="sum"):
    return meb.embedding_bag(mx.array([0, 2, 1, 3]), w, mx.array([0, 1]), mode=mode, backend=backend)


def test_auto_falls_back_and_warns_once_per_specialisation(simulated_mac):
    _break(simulated_mac, "bag_fwd")
    w = mx.arange(8, dtype=mx.float32).reshape(4, 2)
    want = meb.embedding_bag(mx.array([0, 2, 1, 3]), w, mx.array([0, 1]), mode="sum", backend="reference")
    with pytest.warns(RuntimeWarning, match=r"(?s)bag_fwd.*reference path.*compilation failed.*error"):
        got = _bag(w)
    np.testing.assert_array_equal(np.array(got), np.array(want))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(np.array(_bag(w)), np.array(want))  # same specialisation: silent
        g = mx.grad(lambda w: _bag(w).sum())(w)  # gradients too
    np.testing.assert_array_equal(np.array(g), np.array(mx.grad(lambda w: _bag(w, "reference").sum())(w)))
    with pytest.warns(RuntimeWarning, match="bag_fwd"):  # another dtype: its own warning
        _bag(w.astype(mx.float16))


def test_metal_still_raises(simulated_mac):
    _break(simulated_mac, "bag_fwd")
    with pytest.raises(RuntimeError, match="compilation failed"):
        mx.eval(_bag(mx.ones((4, 2)), backend="metal"))


def test_a_backward_kernel_that_fails_is_caught_before_grad(simulated_mac):
    _break(simulated_mac, "bag_bwd")
    w = mx.random.normal((4, 2))
    with pytest.warns(RuntimeWarning, match="bag_bwd"):
        out = _bag(w)
    g = mx.grad(lambda w: _bag(w).sum())(w)
    np.testing.assert_allclose(np.array(g), np.array(mx.grad(lambda w: _bag(w, "reference").sum())(w)))
    np.testing.assert_allclose(np.array(out), np.array(_bag(w, "reference")), rtol=1e-6)


def test_a_planned_signature_still_falls_back_for_a_new_specialisation(simulated_mac):
    # The first call plans the signature with bags short enough for one threadgroup each;
    # a later call of the same signature with a long bag splits it, and its bag_fwd then
    # writes float32 partials: a new specialisation, probed only then. Broken (here: only
    # that one), it must send that call to the reference path with its warning, not raise.
    from mlx_embag import launchers

    real = kernels.read_metal
    only_partials = '  static_assert(!(sizeof(T) == 2 && sizeof(O) == 4), "broken for this test");\n'
    simulated_mac.setattr(
        kernels, "read_metal", lambda n: only_partials + real(n) if n == "bag_fwd" else real(n)
    )
    w = mx.random.normal((64, 8)).astype(mx.float16)
    # 8 bags (no input under 8 elements, which would always take the probing path).
    idx = [mx.array(np.arange(n) % 64, dtype=mx.int32) for n in (16, 65536)]
    offs = [mx.arange(0, n, n // 8, dtype=mx.int32) for n in (16, 65536)]
    want = [meb.embedding_bag(i, w, o, mode="sum", backend="reference") for i, o in zip(idx, offs)]
    assert launchers.forward(65536, 64, 8, 8, 8, -1, 0, mx.float16, False).S > 1  # really split
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = meb.embedding_bag(idx[0], w, offs[0], mode="sum")  # planned here
    np.testing.assert_allclose(np.array(got), np.array(want[0]), rtol=1e-3)
    with pytest.warns(RuntimeWarning, match="bag_fwd"):
        got = meb.embedding_bag(idx[1], w, offs[1], mode="sum")
    np.testing.assert_allclose(np.array(got), np.array(want[1]), rtol=1e-3)


def test_working_kernels_do_not_warn(simulated_mac):
    w = mx.random.normal((16, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("sum", "mean", "max"):
            mx.eval(mx.grad(lambda w: _bag(w, mode=mode).sum())(w))
        mx.eval(meb.embedding(mx.array([[1, 2]]), w, max_norm=1.0))
        mx.eval(meb.EmbeddingBag(16, 8, max_norm=1.0)(mx.array([[1, 2]])))


def test_every_kernel_probe_is_clean_under_the_sanitizer(simulated_mac):
    """The probes run each kernel on zero inputs: no kernel may read or write out of bounds then."""
    simulated_mac.setattr(mx.fast, "metal_kernel", lambda **kw: _Sanitized(**kw))
    w = mx.random.normal((64, 8))
    idx = mx.random.randint(0, 64, (4096,))
    off = mx.array([0, 5, 9])
    psw = mx.random.uniform(shape=idx.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("sum", "max"):
            for det in (False, True):
                f = lambda w, p: meb.embedding_bag(
                    idx,
                    w,
                    off,
                    mode=mode,
                    max_norm=1.0,
                    deterministic=det,
                    per_sample_weights=p if mode == "sum" else None,
                ).sum()
                mx.eval(mx.grad(f, argnums=(0, 1))(w, psw))
        mx.eval(meb.embedding_bag(idx.reshape(1, -1), w, mode="max"))
        emb = meb.EmbeddingBag(64, 8, mode="sum", sparse=True, _weight=w)
        opt = meb.optimizers.SparseAdam(0.1)
        _, grads = meb.value_and_grad(emb, lambda x: emb(x).sum())(idx[:64].reshape(8, 8))
        opt.update(emb, grads)
        mx.eval(emb.parameters(), opt.state)
    probed = {key[0] for key, failure in kernels._probed.items() if failure is None}
    assert probed == set(kernels.KERNELS)


class _Sanitized(emulator.MetalKernel):
    def __call__(self, **kw):
        return super().__call__(sanitize=True, **kw)


def test_max_norm_write_back_falls_back_too(simulated_mac):
    _break(simulated_mac, "row_scale")
    mx.random.seed(0)
    bag = meb.EmbeddingBag(16, 4, max_norm=0.5, mode="sum")
    ref = meb.EmbeddingBag(16, 4, max_norm=0.5, mode="sum", backend="reference")
    ref.weight = mx.array(bag.weight)
    idx = mx.array([[1, 2, 3]])
    with pytest.warns(RuntimeWarning, match="row_scale"):
        out = bag(idx)
    np.testing.assert_allclose(np.array(out), np.array(ref(idx)), rtol=1e-6)
    np.testing.assert_allclose(np.array(bag.weight), np.array(ref.weight), rtol=1e-6)
