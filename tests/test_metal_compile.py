"""Compiled training through the Metal kernels (Apple silicon only).

The emulator runs kernels eagerly, so it cannot run inside ``mx.compile``;
this file therefore runs only where Metal exists. It is in addition to the
emulator tests of every kernel (test_metal_ops.py and friends), which cover
the same values eagerly.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

import mlx_embag as meb

pytestmark = pytest.mark.skipif(
    not mx.metal.is_available(),
    reason="mx.compile over Metal kernels needs Apple silicon (the emulator is eager)",
)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_compiled_training_step_matches_eager(mode, deterministic):
    rng = np.random.default_rng(0)
    idx = mx.array(rng.integers(0, 50, size=(16, 6)))
    y = mx.array(rng.integers(0, 3, size=16))

    def make():
        mx.random.seed(1)
        emb = meb.EmbeddingBag(50, 12, mode=mode, backend="metal", deterministic=deterministic)
        return nn.Sequential(emb, nn.Linear(12, 3))

    def losses(compiled):
        model = make()
        opt = optim.SGD(learning_rate=0.5)
        loss_and_grad = nn.value_and_grad(model, lambda m: nn.losses.cross_entropy(m(idx), y).mean())

        def step():
            loss, grads = loss_and_grad(model)
            opt.update(model, grads)
            return loss

        if compiled:
            state = [model.state, opt.state]
            step = mx.compile(step, inputs=state, outputs=state)
        out = []
        for _ in range(10):
            out.append(step().item())
        return out

    np.testing.assert_allclose(losses(True), losses(False), rtol=1e-4)
