"""mlx_embag.backend: which implementation a call runs on (backend=, use_backend,
MLX_EMBAG_BACKEND), and the environment's defaults for check_indices and deterministic."""

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

import mlx_embag as meb
from mlx_embag import backend

W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
X1 = mx.array([0, 1, 2, 3])
OFF = mx.array([0, 2])
EB = meb.embedding_bag
R = dict(backend="reference")


def test_backend_selection_env_and_context(monkeypatch):
    W, x, off = mx.ones((3, 2)), mx.array([0, 2]), mx.array([0])
    monkeypatch.setenv("MLX_EMBAG_BACKEND", "reference")
    assert np.allclose(np.array(meb.embedding_bag(x, W, off, mode="sum")), 2)
    with meb.use_backend("reference"):
        assert np.allclose(np.array(meb.embedding_bag(x, W, off, mode="sum")), 2)
    if not mx.metal.is_available():
        with meb.use_backend("metal"):
            with pytest.raises(RuntimeError):
                mx.eval(meb.embedding_bag(x, W, off, mode="sum"))
        monkeypatch.setenv("MLX_EMBAG_BACKEND", "auto")
        assert np.allclose(np.array(meb.embedding_bag(x, W, off, mode="sum")), 2)


def test_metal_backend_unavailable_is_clear():
    if mx.metal.is_available():
        pytest.skip("Metal present on this machine: covered by the Metal tests")
    with pytest.raises(RuntimeError) as info:
        mx.eval(EB(X1, W, OFF, backend="metal"))
    assert "metal" in str(info.value).lower()


def test_unknown_backend():
    with pytest.raises(ValueError) as info:
        EB(X1, W, OFF, backend="cuda")
    assert "backend" in str(info.value)


def test_check_indices_from_environment(monkeypatch):
    monkeypatch.setenv("MLX_EMBAG_CHECK_INDICES", "1")
    with pytest.raises(IndexError):
        EB(mx.array([0, 8]), W, mx.array([0]), **R)
    monkeypatch.setenv("MLX_EMBAG_CHECK_INDICES", "0")
    out = EB(mx.array([0, 8]), W, mx.array([0]), **R)
    assert np.isnan(np.array(out)).all()


def test_use_backend_nests_and_refuses_unknown_names(monkeypatch):
    monkeypatch.delenv("MLX_EMBAG_BACKEND", raising=False)
    assert backend.default_backend() == "auto"
    with meb.use_backend("reference"):
        with meb.use_backend("metal"):
            assert backend.default_backend() == "metal"
        assert backend.default_backend() == "reference"
    with pytest.raises(ValueError, match="backend"):
        with meb.use_backend("cuda"):
            pass
    assert backend.default_backend() == "auto"
    monkeypatch.setenv("MLX_EMBAG_BACKEND", "Reference")
    assert backend.default_backend() == "reference"
    monkeypatch.setenv("MLX_EMBAG_BACKEND", "cuda")
    with pytest.raises(ValueError, match="MLX_EMBAG_BACKEND"):
        backend.default_backend()


def test_resolve_backend_where_metal_can_run():
    """ "auto" takes the kernels unless the call is past their limits; "metal" raises the reason."""
    with emulated(seed=0):
        assert backend.resolve_backend("auto") == "metal"
        assert backend.resolve_backend("auto", lambda: "too big") == "reference"
        assert backend.resolve_backend("metal", lambda: None) == "metal"
        assert backend.resolve_backend("reference", lambda: None) == "reference"
        with pytest.raises(ValueError, match="cannot run this call: too big"):
            backend.resolve_backend("metal", lambda: "too big")


@pytest.mark.skipif(mx.metal.is_available(), reason="Metal present on this machine")
def test_resolve_backend_without_metal(monkeypatch):
    monkeypatch.delenv("MLX_EMBAG_EMULATE_METAL", raising=False)
    assert not backend.metal_available()
    assert backend.resolve_backend(None) == "reference"
    assert backend.resolve_backend("auto", lambda: None) == "reference"
    with pytest.raises(RuntimeError, match="needs Apple silicon"):
        backend.resolve_backend("metal")


@pytest.mark.parametrize(
    "name,resolve",
    [
        ("MLX_EMBAG_CHECK_INDICES", backend.resolve_check_indices),
        ("MLX_EMBAG_DETERMINISTIC", backend.resolve_deterministic),
    ],
)
def test_environment_defaults_yield_to_the_argument(monkeypatch, name, resolve):
    monkeypatch.delenv(name, raising=False)
    assert resolve(None) is False
    monkeypatch.setenv(name, "1")
    assert resolve(None) is True and resolve(False) is False
    monkeypatch.setenv(name, "0")
    assert resolve(None) is False and resolve(True) is True
    with pytest.raises(TypeError):
        resolve(1)
