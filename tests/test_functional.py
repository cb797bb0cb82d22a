"""mlx_embag.functional: the public entry points' handling of their arguments (index,
offset and per_sample_weights dtypes, empty input) and their dispatch to either backend.

Malformed calls are in test_bad_input.py; tables with no rows or columns (the
stand-in table) in test_degenerate_tables.py.
"""

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding_bag
from support import TOL, assert_close, emulated, to_np

import mlx_embag as meb
from mlx_embag import functional


def test_empty_inputs():
    W = np.ones((4, 3), np.float32)
    for mode in ("sum", "mean", "max"):
        out = meb.embedding_bag(
            mx.array(np.zeros(0, np.int32)), mx.array(W), mx.array([0, 0, 0]), mode=mode, backend="reference"
        )
        assert_close(np.array(out), np.zeros((3, 3)), 0, 0, f"empty 1-D {mode}")
        out = meb.embedding_bag(
            mx.array(np.zeros((2, 0), np.int32)), mx.array(W), mode=mode, backend="reference"
        )
        assert_close(np.array(out), np.zeros((2, 3)), 0, 0, f"(B,0) {mode}")


@pytest.mark.parametrize("idt", [mx.uint8, mx.int8, mx.int16, mx.uint32, mx.int32, mx.int64])
@pytest.mark.parametrize("odt", [mx.int32, mx.int64, mx.uint16])
def test_any_integer_index_dtypes(idt, odt):
    rng = np.random.default_rng(11)
    W = rng.standard_normal((7, 33)).astype(np.float32)
    inp, off = np.array([6, 0, 3, 3, 1, 5]), np.array([0, 2, 2, 5])
    out = meb.embedding_bag(
        mx.array(inp).astype(idt), mx.array(W), mx.array(off).astype(odt), mode="mean", backend="reference"
    )
    assert out.dtype == mx.float32
    assert_close(
        np.array(out),
        oracle_embedding_bag(inp, W, off, mode="mean")[0],
        1e-5,
        1e-5,
        f"indices {idt} offsets {odt}",
    )


@pytest.mark.parametrize("tdt", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("pdt", [mx.float32, mx.float16, mx.bfloat16])
def test_psw_any_float_dtype_cast_to_table(tdt, pdt):
    rng = np.random.default_rng(12)
    W = rng.standard_normal((5, 4)).astype(np.float32)
    inp, off = np.array([0, 4, 2, 2]), np.array([0, 1])
    psw = rng.standard_normal(4).astype(np.float32)
    w, p = mx.array(W).astype(tdt), mx.array(psw).astype(pdt)
    out = meb.embedding_bag(
        mx.array(inp), w, mx.array(off), mode="sum", per_sample_weights=p, backend="reference"
    )
    assert out.dtype == tdt, (out.dtype, tdt)
    e = oracle_embedding_bag(inp, to_np(w), off, mode="sum", per_sample_weights=to_np(p.astype(tdt)))[0]
    assert_close(to_np(out), e, *TOL[tdt], f"table {tdt} psw {pdt}")


@pytest.mark.parametrize("deterministic", [False, True])
def test_functional_backend_metal(deterministic):
    """meb.embedding_bag / meb.embedding with backend='metal' run the kernels and match the reference."""
    with emulated(seed=1234):
        _metal_matches_reference(deterministic)


def _metal_matches_reference(deterministic):
    rng = np.random.default_rng(5)
    w = mx.array(rng.standard_normal((11, 6)).astype(np.float32))
    ind = mx.array(rng.integers(0, 11, size=(4, 5)))
    for mode in ("sum", "mean", "max"):
        kw = dict(mode=mode, padding_idx=2, deterministic=deterministic)
        f = lambda w_, b: meb.embedding_bag(ind, w_, backend=b, **kw).sum()  # noqa: E731
        np.testing.assert_allclose(
            np.array(meb.embedding_bag(ind, w, backend="metal", **kw)),
            np.array(meb.embedding_bag(ind, w, backend="reference", **kw)),
            rtol=1e-6,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            np.array(mx.grad(f)(w, "metal")), np.array(mx.grad(f)(w, "reference")), rtol=1e-6, atol=1e-6
        )
    e = lambda w_, b: meb.embedding(ind, w_, padding_idx=1, backend=b, deterministic=deterministic)  # noqa
    np.testing.assert_array_equal(np.array(e(w, "metal")), np.array(e(w, "reference")))


@pytest.mark.parametrize("op", ["embedding_bag", "embedding"])
def test_dispatch_runs_the_resolved_backend(op, monkeypatch):
    """An explicit backend reaches exactly that module's function, with the checked arguments
    (on the Metal path its ``checked_`` form: the dispatch has asked ``unsupported_*`` already)."""
    from mlx_embag import metal_ops, reference

    calls = []
    for name, module, fn in (("reference", reference, op), ("metal", metal_ops, "checked_" + op)):
        real = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    x, w = mx.array([[0, 1], [2, 0]]), mx.ones((3, 2))
    getattr(meb, op)(x, w, backend="reference")
    assert calls == ["reference"]
    with emulated(seed=0):
        mx.eval(getattr(meb, op)(x, w, backend="metal"))
    assert calls == ["reference", "metal"]


@pytest.mark.parametrize("shape", [(3, 2), (0, 2), (3, 0), (0, 0)])
def test_stand_in_table_keeps_or_pads_and_trims(shape):
    w, ind = mx.zeros(shape), mx.array([0, 2])
    table, idx, trim = functional._stand_in_table(w, ind)
    V, D = shape
    assert table.shape == (max(V, 1), max(D, 1))
    if V:
        np.testing.assert_array_equal(np.array(idx), [0, 2])
    else:  # every index out of range of the one stand-in row
        np.testing.assert_array_equal(np.array(idx), [1, 1])
    assert trim(mx.zeros((2, table.shape[1]))).shape == (2, D)
