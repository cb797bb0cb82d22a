"""Helpers shared by the test modules: the emulated Metal backend, tolerances, one
``assert_close``, and the random embedding_bag configurations checked against the
NumPy oracle (tests/oracle.py).

A plain module rather than conftest.py: pytest does not mean conftest to be
imported, and several tests need these as functions (different seeds, nested
inside a test), not only as fixtures. conftest.py wraps them as fixtures.
"""

from __future__ import annotations

import contextlib
import math

import mlx.core as mx
import numpy as np

import mlx_embag as meb

DTYPES = (mx.float32, mx.float16, mx.bfloat16)

# (rtol, atol) for one path against the float64 NumPy oracle or PyTorch: half
# tables are rounded once more than the oracle's inputs.
TOL = {mx.float32: (1e-5, 1e-5), mx.float16: (1e-2, 1e-2), mx.bfloat16: (5e-2, 5e-2)}
# (rtol, atol) for the Metal path against the reference path, both at the table's
# dtype: their half results round the same way (tighter than TOL), while float32
# sums in another order (looser). Used with scale_atol=True.
PATHS_TOL = {mx.float32: (2e-5, 2e-5), mx.float16: (4e-3, 4e-3), mx.bfloat16: (3e-2, 3e-2)}


@contextlib.contextmanager
def emulated(seed=None, sanitize=False):
    """Run the enclosed Metal calls on a real GPU, else in the emulator (threadgroup order from seed).

    Uses the emulator's front end (``mlx_embag.emulator.enable``); where the
    front end is not installed it falls back to MLX's own source generator
    plus the emulator runtime (``emulator.harness.OracleKernel``), so these
    tests exercise the kernels either way.
    """
    if mx.metal.is_available():
        yield
        return
    from mlx_embag import backend, emulator, kernels

    if hasattr(emulator, "enable"):
        prev = emulator.settings.current()
        emulator.enable(seed=seed, sanitize=sanitize)
        try:
            yield
        finally:
            # Back to exactly what was in force (the environment's settings, or an override).
            emulator.reset()
            if prev != emulator.settings.current():
                if prev.enabled:
                    emulator.enable(seed=prev.seed, sanitize=prev.sanitize)
                else:
                    emulator.disable()
        return
    from emulator.harness import OracleKernel

    def make(**kw):
        k = OracleKernel(**kw)
        return lambda **call: k(**call, seed=seed, sanitize=sanitize)

    saved = kernels._factory, backend.metal_available
    kernels._factory = lambda: (make, f"oracle-{seed}-{sanitize}")
    backend.metal_available = lambda: True
    try:
        yield
    finally:
        kernels._factory, backend.metal_available = saved


def to_np(a):
    """A NumPy copy; MLX arrays NumPy cannot hold (bfloat16) come back as float32."""
    if isinstance(a, mx.array):
        return np.array(a.astype(mx.float32)) if a.dtype == mx.bfloat16 else np.array(a)
    return np.asarray(a)


def assert_close(actual, expected, rtol, atol, name="value", *, scale_atol=False):
    """allclose with NaN == NaN; on failure prints the first mismatching indices.

    With ``scale_atol`` the absolute tolerance grows with the largest finite
    expected magnitude (at least 1), for results whose size follows the data.
    """
    a = np.asarray(to_np(actual), dtype=np.float64)
    e = np.asarray(to_np(expected), dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    if scale_atol:
        fin = np.isfinite(e)
        atol = atol * (max(1.0, float(np.abs(e[fin]).max())) if fin.any() else 1.0)
    ok = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        bad = np.argwhere(~ok)[:5]
        lines = [
            f"  at {tuple(int(x) for x in i)}: got {a[tuple(i)]!r}, expected {e[tuple(i)]!r}" for i in bad
        ]
        raise AssertionError(
            f"{name}: {int((~ok).sum())} of {ok.size} mismatch "
            f"(rtol={rtol}, atol={atol}); first:\n" + "\n".join(lines)
        )


def bag_config(**options):
    """The options of an ``embedding_bag`` call as the oracle and ``run_meb`` take them:
    PyTorch's defaults (mode ``"mean"``), overridden by ``options``."""
    cfg = dict(
        mode="mean",
        include_last_offset=False,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        per_sample_weights=None,
    )
    unknown = set(options) - set(cfg)
    assert not unknown, f"not an embedding_bag option: {unknown}"
    cfg.update(options)
    return cfg


def random_bag_config(rng, allow_invalid=False):
    """A small random configuration; bag lengths drawn from 0 so empty bags occur."""
    V = int(rng.integers(1, 12))
    D = int(rng.choice([1, 3, 5, 8, 17]))
    mode = str(rng.choice(["sum", "mean", "max"]))
    two_d = rng.random() < 0.3
    cfg = bag_config(mode=mode)
    if two_d:
        B, L = int(rng.integers(1, 5)), int(rng.integers(0, 5))
        inp = rng.integers(0, V, size=(B, L))
        offsets = None
    else:
        B = int(rng.integers(1, 6))
        lens = rng.integers(0, 5, size=B)
        N = int(lens.sum())
        inp = rng.integers(0, V, size=N)
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
        if rng.random() < 0.4:
            cfg["include_last_offset"] = True
            offsets = np.concatenate([offsets, [N]])
    if rng.random() < 0.3:
        cfg["padding_idx"] = int(rng.integers(-V, V))
    if rng.random() < 0.3:
        cfg["max_norm"] = float(rng.uniform(0.5, 3.0))
        cfg["norm_type"] = float(rng.choice([1.0, 2.0, 3.0, math.inf]))
    if mode != "max" and rng.random() < 0.3:
        cfg["scale_grad_by_freq"] = True
    if mode == "sum" and rng.random() < 0.5:
        cfg["per_sample_weights"] = rng.standard_normal(inp.shape).astype(np.float32)
    if allow_invalid and inp.size and rng.random() < 0.5:
        flat = inp.reshape(-1)
        flat[int(rng.integers(0, flat.size))] = int(rng.choice([-1, V, V + 7]))
    idt = rng.choice([np.int32, np.int64])
    inp = inp.astype(idt)
    if offsets is not None:
        offsets = np.asarray(offsets).astype(idt)
    W = rng.standard_normal((V, D)).astype(np.float32) * 1.5
    return inp, offsets, W, cfg


def run_meb(inp, offsets, W, cfg, dtype=mx.float32, cot=None, backend="reference"):
    """Forward, weight gradient and per_sample_weights gradient from mlx_embag via mx.vjp."""
    psw = cfg.get("per_sample_weights")
    w = mx.array(W).astype(dtype)
    x = mx.array(inp)
    off = None if offsets is None else mx.array(offsets)
    kw = {
        k: cfg[k]
        for k in ("mode", "include_last_offset", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq")
    }

    if psw is None:

        def f(w):
            return meb.embedding_bag(x, w, off, backend=backend, **kw)

        prim = [w]
    else:

        def f(w, p):
            return meb.embedding_bag(x, w, off, per_sample_weights=p, backend=backend, **kw)

        prim = [w, mx.array(psw).astype(dtype)]
    out = f(*prim)
    c = mx.ones(out.shape, dtype) if cot is None else mx.array(cot).astype(dtype)
    _, grads = mx.vjp(f, prim, [c])
    mx.eval(out, grads)
    return to_np(out), to_np(grads[0]), (None if psw is None else to_np(grads[1]))


def sparse_adam_step_extra_bytes(backend, V=500_000, D=16):
    """Peak bytes a steady SparseAdam step allocates beyond the table and its state.

    At 4e6 x 64 a copy of the table costs 1 GB; a 32 MiB table is enough to tell
    an in-place step (well under 8 MiB) from one that copies (the table or a moment).
    """
    model = meb.EmbeddingBag(V, D, mode="sum", sparse=True, backend=backend)
    opt = meb.optimizers.SparseAdam(1e-3)
    loss_and_grad = meb.value_and_grad(model, lambda x: (model(x) ** 2).sum())
    x = mx.random.randint(0, V, (256, 8))
    for i in range(3):
        if i == 2:
            mx.clear_cache()
            base = mx.get_active_memory()
            mx.reset_peak_memory()
        loss, grads = loss_and_grad(x)
        opt.update(model, grads)
        mx.eval(loss, model.parameters(), opt.state)
    return mx.get_peak_memory() - base
