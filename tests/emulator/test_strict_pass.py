"""Every kernel in metal/ passes the strict pass, over the specialisations the library uses."""

from __future__ import annotations

import mlx.core as mx
import pytest

import mlx_embag as meb
from mlx_embag import emulator, kernels
from mlx_embag.emulator import strict


@pytest.fixture
def checked(monkeypatch):
    names = []
    real = strict.check

    def record(tu, kernel_source, signature_line, flags):
        real(tu, kernel_source, signature_line, flags)
        names.append(kernel_source)

    monkeypatch.setattr(strict, "check", record)
    emulator.enable()
    yield names
    emulator.reset()


def _exercise(dtype):
    w = mx.random.normal((64, 8)).astype(dtype)
    idx = mx.random.randint(0, 64, (4096,))
    off = mx.array([0, 5, 9])
    psw = mx.random.uniform(shape=idx.shape)
    for mode in ("sum", "mean", "max"):
        for det in (False, True):
            f = lambda w, p: meb.embedding_bag(
                idx,
                w,
                off,
                mode=mode,
                max_norm=1.0,
                deterministic=det,
                per_sample_weights=p if mode == "sum" else None,
                backend="metal",
            ).sum()
            mx.eval(mx.grad(f, argnums=(0, 1))(w, psw))
    big = lambda w: meb.embedding_bag(idx.reshape(1, -1), w, mode="max", backend="metal").sum()
    mx.eval(mx.grad(big)(w), meb.embedding(idx[:16], w, scale_grad_by_freq=True, backend="metal"))
    # The sparse optimizers' fused step, every rule (template RULE).
    for opt in (
        meb.optimizers.SparseSGD(0.1),
        meb.optimizers.SparseAdagrad(0.1),
        meb.optimizers.SparseAdam(0.1),
        meb.optimizers.RowWiseAdagrad(0.1),
    ):
        emb = meb.EmbeddingBag(64, 8, mode="sum", sparse=True, _weight=w, backend="metal")
        _, grads = meb.value_and_grad(emb, lambda x: emb(x).sum())(idx[:64].reshape(8, 8))
        opt.update(emb, grads)
        mx.eval(emb.parameters(), opt.state)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_every_metal_kernel_passes_the_strict_pass(checked, dtype):
    _exercise(dtype)
    seen = {name for name in kernels.KERNELS if any(f"custom_kernel_mlx_embag_{name}_" in s for s in checked)}
    assert seen == set(kernels.KERNELS)
