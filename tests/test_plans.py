"""Per-signature call plans (issue 11, host cost per call): a repeated signature skips only
the checks that read no values; a call with new VALUES raises or poisons as a first call would."""

import math

import mlx.core as mx
import numpy as np
import pytest
from support import emulated

import mlx_embag as meb
from mlx_embag import _plans, _settings, emulator

W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
EB = meb.embedding_bag


@pytest.fixture(autouse=True)
def fresh_plans():
    _plans.clear()
    yield
    _plans.clear()


def _fresh_error(call):
    """The error a call raises with no plan stored (the full path)."""
    _plans.clear()
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


def _error(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_check_indices_runs_every_call(backend):
    with emulated():
        good, bad = mx.array([[0, 1], [2, 3]]), mx.array([[0, 1], [2, 4]])
        call = lambda x: EB(x, W, mode="sum", check_indices=True, backend=backend)  # noqa: E731
        expected = _fresh_error(lambda: call(bad))
        call(good)
        call(good)  # the plan exists now
        assert _plans._plans
        assert _error(lambda: call(bad)) == expected == (IndexError, expected[1])
        assert "input[1, 1] = 4" in expected[1]


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_offset_values_checked_every_call(backend):
    with emulated():
        x = mx.array([0, 1, 2, 3])
        call = lambda off: EB(x, W, off, check_indices=True, backend=backend)  # noqa: E731
        expected = _fresh_error(lambda: call(mx.array([0, 3, 2])))
        call(mx.array([0, 2, 3]))
        call(mx.array([0, 1, 3]))
        assert _error(lambda: call(mx.array([0, 3, 2]))) == expected
        assert expected[0] is ValueError and "non-decreasing" in expected[1]


@pytest.mark.parametrize("backend", ["reference", "metal"])
@pytest.mark.parametrize("layout", ["1d", "2d"])
def test_unchecked_bad_index_poisons_on_a_repeat(backend, layout):
    with emulated():
        rows = [[0, 1], [2, 3], [1, 1]]
        off = mx.array([0, 2, 4]) if layout == "1d" else None

        def call(r):
            x = mx.array(r)
            return EB(x.reshape(-1) if off is not None else x, W, off, mode="sum", backend=backend)

        first = np.array(call(rows))
        second = np.array(call([[0, 1], [2, 9], [1, 1]]))
        w = np.array(W)
        np.testing.assert_array_equal(first, np.stack([w[r].sum(0) for r in rows]))
        assert np.isnan(second[1]).all()
        np.testing.assert_array_equal(second[[0, 2]], first[[0, 2]])


def test_option_types_are_part_of_the_signature():
    x = mx.array([[0, 1]])
    EB(x, W, scale_grad_by_freq=True, backend="reference")
    expected = _fresh_error(lambda: EB(x, W, scale_grad_by_freq=1, backend="reference"))
    EB(x, W, scale_grad_by_freq=True, backend="reference")
    assert _error(lambda: EB(x, W, scale_grad_by_freq=1, backend="reference")) == expected
    assert expected[0] is TypeError and "scale_grad_by_freq" in expected[1]


def test_environment_change_between_calls(monkeypatch):
    good, bad = mx.array([[0, 1]]), mx.array([[0, 7]])
    monkeypatch.delenv(_settings.CHECK_INDICES, raising=False)
    assert math.isnan(EB(bad, W, backend="reference")[0, 0].item())  # unchecked: poisoned
    monkeypatch.setenv(_settings.CHECK_INDICES, "1")
    EB(good, W, backend="reference")
    with pytest.raises(IndexError, match=r"input\[0, 1\] = 7"):
        EB(bad, W, backend="reference")
    monkeypatch.setenv(_settings.BACKEND, "bogus")
    with pytest.raises(ValueError, match=_settings.BACKEND):
        EB(good, W)


@pytest.mark.skipif(mx.metal.is_available(), reason="Metal cannot be switched off on a Mac")
def test_metal_switched_off_between_calls():
    x = mx.array([[0, 1]])
    with emulated():
        with meb.use_backend("reference"):
            EB(x, W)
        with meb.use_backend("metal"):
            EB(x, W)
    emulator.disable()
    try:
        with meb.use_backend("metal"), pytest.raises(RuntimeError, match="backend='metal'"):
            EB(x, W)
        assert EB(x, W).tolist() == EB(x, W, backend="reference").tolist()  # auto: the reference path
    finally:
        emulator.reset()


def test_plan_gives_the_full_paths_values():
    rng = np.random.default_rng(0)
    w = mx.array(rng.standard_normal((50, 8)).astype(np.float32))
    psw = mx.array(rng.standard_normal(12).astype(np.float32))
    with emulated():
        for backend in ("reference", "metal", "auto"):
            for mode in ("sum", "mean", "max"):
                for layout in ("1d", "2d"):
                    kw = dict(mode=mode, backend=backend, padding_idx=3)
                    if mode == "sum" and layout == "1d":
                        kw["per_sample_weights"] = psw
                    _plans.clear()
                    for trial in range(3):
                        x = mx.array(rng.integers(0, 50, 12))
                        off = mx.array(np.sort(rng.integers(0, 13, 4)) * np.array([0, 1, 1, 1]))
                        args = (x, w, off) if layout == "1d" else (x.reshape(3, 4), w)
                        assert len(_plans._plans) == min(trial, 1)
                        got = np.array(EB(*args, **kw))  # planned from the second trial on
                        saved = dict(_plans._plans)
                        _plans.clear()
                        np.testing.assert_array_equal(got, np.array(EB(*args, **kw)))
                        _plans._plans.update(saved)


@pytest.mark.parametrize("backend", ["reference", "metal", "auto"])
def test_one_plan_serves_every_1d_length(backend):
    rng = np.random.default_rng(1)
    w = mx.array(rng.standard_normal((20, 4)).astype(np.float32))
    with emulated():
        for n in (5, 9, 1, 13, 0):
            x = mx.array(rng.integers(0, 20, n))
            off = mx.array([0, min(2, n), n])
            psw = mx.array(rng.standard_normal(n).astype(np.float32))
            got = np.array(EB(x, w, off, mode="sum", per_sample_weights=psw, backend=backend))
            assert len(_plans._plans) == 1
            saved = dict(_plans._plans)
            _plans.clear()
            np.testing.assert_array_equal(
                got, np.array(EB(x, w, off, mode="sum", per_sample_weights=psw, backend=backend))
            )
            _plans._plans.update(saved)
        with pytest.raises(ValueError, match="per_sample_weights"):
            EB(x, w, off, mode="sum", per_sample_weights=mx.ones(n + 1), backend=backend)


# ------------------------------------------------------------------ embedding's plans

EMB = meb.embedding


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_embedding_check_indices_runs_every_call(backend):
    with emulated():
        call = lambda x: EMB(mx.array(x), W, check_indices=True, backend=backend)  # noqa: E731
        expected = _fresh_error(lambda: call([[0, 1], [2, 4]]))
        call([[0, 1], [2, 3]])
        call([[3, 1], [2, 0]])  # planned now
        assert len(_plans._plans) == 1
        assert _error(lambda: call([[0, 1], [2, 4]])) == expected == (IndexError, expected[1])
        assert "input[1, 1] = 4" in expected[1]


@pytest.mark.parametrize("backend", ["reference", "metal", "auto"])
def test_embedding_unchecked_bad_index_poisons_on_a_repeat(backend):
    w = np.array(W)
    with emulated():
        EMB(mx.array([[0, 1]]), W, backend=backend)
        got = np.array(EMB(mx.array([[3, -1]]), W, backend=backend))  # planned
        assert len(_plans._plans) == 1
        np.testing.assert_array_equal(got[0, 0], w[3])
        assert np.isnan(got[0, 1]).all()


def test_embedding_option_types_are_part_of_the_signature():
    x = mx.array([0, 1])
    EMB(x, W, scale_grad_by_freq=True, backend="reference")
    expected = _fresh_error(lambda: EMB(x, W, scale_grad_by_freq=1, backend="reference"))
    EMB(x, W, scale_grad_by_freq=True, backend="reference")
    assert _error(lambda: EMB(x, W, scale_grad_by_freq=1, backend="reference")) == expected
    assert expected[0] is TypeError and "scale_grad_by_freq" in expected[1]


def test_embedding_and_bag_plans_are_kept_apart():
    x = mx.array([[0, 1], [2, 3]])
    bag = EB(x, W, mode="sum", backend="reference")
    rows = EMB(x, W, backend="reference")
    assert len(_plans._plans) == 2
    # Each repeat finds its own plan: a bag's (2, 3), an embedding's (2, 2, 3).
    assert EB(x, W, mode="sum", backend="reference").shape == bag.shape == (2, 3)
    assert EMB(x, W, backend="reference").shape == rows.shape == (2, 2, 3)


@pytest.mark.parametrize("backend", ["reference", "metal", "auto"])
def test_embedding_plan_gives_the_full_paths_values_and_gradients(backend):
    rng = np.random.default_rng(2)
    w_np = rng.standard_normal((30, 5)).astype(np.float32)
    options = [
        {},
        {"padding_idx": 4},
        {"max_norm": 1.0},
        {"scale_grad_by_freq": True, "padding_idx": -1},
    ]
    with emulated():
        for dtype in (mx.float32, mx.float16):
            w = mx.array(w_np).astype(dtype)
            for kw in options:
                for shape in ((7,), (2, 3), (2, 1, 2), (), (0, 3)):
                    x = mx.array(rng.integers(0, 30, shape).astype(np.int32))
                    cot = mx.array(rng.standard_normal(shape + (5,)).astype(np.float32)).astype(dtype)

                    def run():
                        f = lambda w_: EMB(x, w_, backend=backend, **kw)  # noqa: E731
                        out, (dw,) = f(w), mx.vjp(f, [w], [cot])[1]
                        return np.array(out.astype(mx.float32)), np.array(dw.astype(mx.float32))

                    _plans.clear()
                    full = run()
                    assert len(_plans._plans) == 1
                    planned = run()
                    for a, b in zip(planned, full):
                        np.testing.assert_array_equal(a, b)
                    if "max_norm" not in kw:  # NumPy's rows of the table, in its dtype
                        table = w_np.astype(np.float16 if dtype == mx.float16 else np.float32)
                        np.testing.assert_array_equal(planned[0], table[np.array(x)].astype(np.float32))
