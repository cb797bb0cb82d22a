"""The Metal backend against a small, independent NumPy oracle (forward and weight gradient).

The full option matrix is compared with the reference path in
test_metal_ops.py; this file checks the kernels directly against the written
semantics, so that a shared mistake of both paths would show up too.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_embag import metal_ops
from mlx_embag._spec import BagSpec
from test_metal_ops import emulated


@pytest.fixture(autouse=True, scope="module")
def metal_backend():
    with emulated(seed=77):
        yield


def bags_of(ind, off, ilo, n):
    """[(start, end, valid_structure)] per bag, by the poison rule's structural part."""
    b = len(off) - int(ilo)
    out = []
    for k in range(b):
        s = off[k]
        e = off[k + 1] if k + 1 < len(off) else n
        ok = off[0] == 0 and 0 <= s <= e <= n and all(s >= off[c] for c in range(k))
        out.append((s, e, ok))
    return out


def oracle(w, ind, off, ilo, mode, pad, psw, max_norm, cot):
    """(output, weight gradient) in float64, max_norm with the 2-norm."""
    V, D = w.shape
    rows = w.astype(np.float64).copy()
    if max_norm is not None:
        for r in set(int(i) for i in ind if 0 <= i < V):
            nrm = np.linalg.norm(w[r].astype(np.float32))
            if nrm > max_norm:
                rows[r] = w[r] * (max_norm / (nrm + 1e-7))
    out = np.zeros((len(off) - int(ilo), D))
    grad = np.zeros((V, D))
    for b, (s, e, ok) in enumerate(bags_of(ind, off, ilo, len(ind))):
        pos = list(range(s, e)) if ok else []
        if not ok or any(not 0 <= ind[p] < V for p in pos):
            out[b] = np.nan
            continue
        pos = [p for p in pos if ind[p] != pad]
        if not pos:
            continue
        if mode == "max":
            vals = np.stack([rows[ind[p]] for p in pos])
            first = vals.argmax(axis=0)  # numpy: the first maximum
            out[b] = vals.max(axis=0)
            for c in range(D):
                grad[ind[pos[first[c]]], c] += cot[b, c]
            continue
        coef = np.array([1.0 if psw is None else psw[p] for p in pos])
        if mode == "mean":
            coef = coef / len(pos)
        for p, k in zip(pos, coef):
            out[b] += k * rows[ind[p]]
            grad[ind[p]] += k * cot[b]
    return out, grad


@pytest.mark.parametrize("seed", range(3))
def test_against_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        V, D = int(rng.integers(2, 12)), int(rng.choice([3, 8]))
        n = int(rng.integers(0, 30))
        ilo = bool(rng.random() < 0.5)
        off = np.sort(rng.integers(0, n + 1, size=int(rng.integers(1, 5)) + int(ilo)))
        off[0] = 0
        if rng.random() < 0.2:
            off[rng.integers(len(off))] = rng.integers(-1, n + 2)
        ind = rng.integers(0, V, size=n)
        if n and rng.random() < 0.2:
            ind[rng.integers(n)] = rng.choice([-3, V])
        mode = ("sum", "mean", "max")[rng.integers(3)]
        pad = int(rng.integers(V)) if rng.random() < 0.4 else None
        max_norm = 1.5 if rng.random() < 0.3 else None
        w = rng.standard_normal((V, D)).astype(np.float32)
        psw = rng.standard_normal(n).astype(np.float32) if mode == "sum" and rng.random() < 0.5 else None
        B = len(off) - int(ilo)
        cot = rng.standard_normal((B, D)).astype(np.float32)
        spec = BagSpec(mode, B, None, ilo, pad, max_norm, 2.0, False, bool(rng.random() < 0.5))
        args = (mx.array(ind), mx.array(off))
        p = None if psw is None else mx.array(psw)

        def f(w_):
            o = metal_ops.embedding_bag(w_, *args, p, spec)
            return (mx.where(mx.isnan(o), 0.0, o) * mx.array(cot)).sum()

        got = np.array(metal_ops.embedding_bag(mx.array(w), *args, p, spec))
        got_g = np.array(mx.grad(f)(mx.array(w)))
        want, want_g = oracle(w, ind, off, ilo, mode, pad, psw, max_norm, cot)
        msg = f"{spec} off={off.tolist()} ind={ind.tolist()}"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=msg)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=1e-5, err_msg=msg)
