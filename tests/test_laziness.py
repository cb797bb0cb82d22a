"""No host sync in the forward or backward path (issue 2, Laziness).

Inside mx.compile tracing any mx.eval / .item() / .tolist() / NumPy round trip raises, so a
compiled forward + backward that runs proves the path is lazy; the eager graph is also built
with mx.eval patched to raise.
"""

import warnings

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding, oracle_embedding_bag
from support import assert_close

import mlx_embag as meb

CASES = [
    dict(mode="sum"),
    dict(mode="mean", padding_idx=2),
    dict(mode="max"),
    dict(mode="sum", psw=True, max_norm=1.0),
    dict(mode="mean", scale_grad_by_freq=True, include_last_offset=True),
    dict(mode="max", include_last_offset=True, max_norm=0.7, norm_type=float("inf")),
    dict(mode="sum", two_d=True, psw=True, padding_idx=-1),
]


def setup(case, rng):
    V, D = 9, 5
    W = rng.standard_normal((V, D)).astype(np.float32) * 2
    if case.get("two_d"):
        inp, off = rng.integers(0, V, size=(3, 4)), None
    else:
        inp = rng.integers(0, V, size=11)
        inp[7] = V + 3  # one poisoned bag
        off = np.array([0, 3, 3, 6] + ([11] if case.get("include_last_offset") else []))
    psw = rng.standard_normal(inp.shape).astype(np.float32) if case.get("psw") else None
    kw = {k: v for k, v in case.items() if k not in ("psw", "two_d")}
    return inp.astype(np.int32), off, W, psw, kw


def make_fn(inp, off, psw, kw, **extra):
    x = mx.array(inp)
    o = None if off is None else mx.array(off)

    def f(w, p, c):
        out = meb.embedding_bag(
            x, w, o, per_sample_weights=p if psw is not None else None, backend="reference", **kw, **extra
        )
        return (out * c).sum(), out

    return mx.value_and_grad(f, argnums=(0, 1) if psw is not None else 0)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_compiled_forward_backward_matches_oracle(i):
    rng = np.random.default_rng(i)
    inp, off, W, psw, kw = setup(CASES[i], rng)
    g = make_fn(inp, off, psw, kw)
    p = mx.array(psw) if psw is not None else mx.zeros((1,))
    B = inp.shape[0] if off is None else len(off) - int(kw.get("include_last_offset", False))
    cot = rng.standard_normal((B, W.shape[1])).astype(np.float32)
    (_, out), grads = mx.compile(g)(mx.array(W), p, mx.array(cot))
    eo, edW, edP = oracle_embedding_bag(
        inp, W, off, per_sample_weights=psw, cotangent=cot, **{k: v for k, v in kw.items()}
    )
    assert_close(np.array(out), eo, 1e-5, 1e-5, "compiled forward")
    dW = grads[0] if psw is not None else grads
    assert_close(np.array(dW), edW, 1e-5, 1e-5, "compiled weight grad")
    if psw is not None:
        assert_close(np.array(grads[1]), edP, 1e-5, 1e-5, "compiled psw grad")


@pytest.mark.parametrize("i", range(len(CASES)))
def test_eager_graph_built_without_eval(i, monkeypatch):
    rng = np.random.default_rng(100 + i)
    inp, off, W, psw, kw = setup(CASES[i], rng)
    g = make_fn(inp, off, psw, kw)
    p = mx.array(psw) if psw is not None else mx.zeros((1,))
    w = mx.array(W)
    mx.eval(w, p)

    def no_eval(*a, **k):
        raise AssertionError("mx.eval called in the forward/backward path")

    monkeypatch.setattr(mx, "eval", no_eval)
    monkeypatch.setattr(mx, "async_eval", no_eval)
    (_, out), grads = g(w, p, mx.ones((1,)))
    monkeypatch.undo()
    mx.eval(out, grads)


def test_compiled_embedding_matches_oracle():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((6, 3)).astype(np.float32) * 2
    inp = np.array([[0, 5, 9], [2, 2, 1]], np.int32)  # 9 is out of range -> NaN row
    cot = rng.standard_normal((2, 3, 3)).astype(np.float32)

    def f(w, c):
        out = meb.embedding(
            mx.array(inp), w, padding_idx=1, max_norm=1.0, scale_grad_by_freq=True, backend="reference"
        )
        return (mx.where(mx.isnan(out), 0, out) * c).sum(), out

    (_, out), dW = mx.compile(mx.value_and_grad(f))(mx.array(W), mx.array(cot))
    eo, edW, _ = oracle_embedding(inp, W, 1, 1.0, 2.0, True, cotangent=cot)
    assert_close(np.array(out), eo, 1e-5, 1e-5, "compiled embedding")
    assert_close(np.array(dW), edW, 1e-5, 1e-5, "compiled embedding grad")


def test_check_indices_under_compile_warns_and_poisons(monkeypatch):
    import mlx_embag._validate as checks

    monkeypatch.setattr(checks, "_warned", set())  # the warning is once per process
    W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    x, off = mx.array([0, 1, 7, 2]), mx.array([0, 2])

    def f(w, x, off):  # indices are traced inputs: they cannot be evaluated while compiling
        return meb.embedding_bag(x, w, off, mode="sum", check_indices=True, backend="reference")

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = np.array(mx.compile(f)(W, x, off))
    assert any("check_indices" in str(r.message) for r in rec), [str(r.message) for r in rec]
    assert np.allclose(out[0], [3, 5, 7]) and np.isnan(out[1]).all()


@pytest.mark.parametrize("two_d", [True, False])
def test_forward_mode_raises_rather_than_guessing(two_d):
    # The README says mx.jvp is unsupported; it must fail loudly, never return a wrong tangent.
    w = mx.ones((4, 3))
    x, off = (mx.array([[0, 1], [2, 2]]), None) if two_d else (mx.array([0, 1, 2]), mx.array([0, 1]))
    for mode in ("sum", "max"):
        with pytest.raises(ValueError, match="mx.jvp .forward mode. is not supported"):
            mx.jvp(
                lambda w: meb.embedding_bag(x, w, off, mode=mode, backend="reference"), [w], [mx.ones_like(w)]
            )
    with pytest.raises(ValueError, match="mx.jvp .forward mode. is not supported"):
        mx.jvp(lambda w: meb.embedding(x, w, backend="reference"), [w], [mx.ones_like(w)])
