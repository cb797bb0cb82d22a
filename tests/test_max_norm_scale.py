"""max_norm's scale is PyTorch's to the bit (issue 8, item 4).

PyTorch CPU reads a row's float norm as a double, computes
max_norm / (norm + 1e-7) in double and rounds that scale to float. A float32
scale is an ulp off for about one row in five; with D = 1 (where the norm is
exact) in max mode that flips the arg-max between near-tied rows, sending the
gradient to a different row than PyTorch's.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from support import emulated

import mlx_embag as meb

TRIALS, V, BAGS, L = 400, 32, 4, 5


def _trials():
    """400 independent trials (V=32, D=1, 4 bags of 5) stacked into one call: trial t
    owns rows [32 t, 32 t + 32), so rows, bags and their renorms never interact."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((TRIALS * V, 1)).astype(np.float32)
    idx = rng.integers(0, V, (TRIALS, BAGS, L)) + (np.arange(TRIALS) * V)[:, None, None]
    cot = rng.standard_normal((TRIALS * BAGS, 1)).astype(np.float32)
    return w, idx.reshape(TRIALS * BAGS, L), cot


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_max_mode_d1_matches_torch_bitwise(backend):
    w, idx, cot = _trials()
    tw = torch.tensor(w, requires_grad=True)
    tout = torch.nn.functional.embedding_bag(torch.tensor(idx), tw, mode="max", max_norm=0.5)
    tout.backward(torch.tensor(cot))

    def f(weight):
        return meb.embedding_bag(mx.array(idx), weight, mode="max", max_norm=0.5, backend=backend)

    with emulated(seed=4) if backend == "metal" else torch.no_grad():
        out = f(mx.array(w))
        grad = mx.grad(lambda weight: (f(weight) * mx.array(cot)).sum())(mx.array(w))
        out, grad = np.array(out), np.array(grad)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    # The same rows get gradient (a flipped arg-max moves a whole cotangent); rows hit by
    # several bags sum them in another order than PyTorch (atomics on the Metal path).
    np.testing.assert_array_equal(grad != 0, tw.grad.numpy() != 0)
    np.testing.assert_allclose(grad, tw.grad.numpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("max_norm", [0.1, 1 / 3, 0.7, 2.0])
@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_renormed_rows_match_torch_bitwise(backend, max_norm):
    """Rows of every magnitude around max_norm (D = 1: the norm is exact): the module's
    written-back table is PyTorch's, bit for bit."""
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((512, 1)) * max_norm * 2).astype(np.float32)
    # max_norm rounded to float, and its neighbours: the double comparison decides these.
    f = np.float32(max_norm)
    edges = [f, -f, np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(np.inf))]
    w[: len(edges), 0] = edges
    x = np.arange(512)
    t = torch.nn.Embedding(512, 1, max_norm=max_norm, _weight=torch.tensor(w))
    t(torch.tensor(x))
    with emulated(seed=5) if backend == "metal" else torch.no_grad():
        m = meb.Embedding(512, 1, max_norm=max_norm, _weight=mx.array(w), backend=backend)
        m(mx.array(x))
        table = np.array(m.weight)
    np.testing.assert_array_equal(table, t.weight.detach().numpy())
