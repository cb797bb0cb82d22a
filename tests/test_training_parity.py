"""A tiny bag-of-words classifier trained with PyTorch and with meb.EmbeddingBag (eager and
mx.compile'd step), SGD, same initial weights: the loss curves agree (rtol 1e-3)."""

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import torch  # noqa: E402  (pinned in the test extra: missing must fail, not skip)

import mlx_embag as meb

V, D, C, STEPS, LR = 40, 7, 3, 25, 0.3

CONFIGS = {
    "mean_padding": dict(mode="mean", padding_idx=0),
    "sum_psw_maxnorm": dict(mode="sum", max_norm=1.2, psw=True),
    "max": dict(mode="max"),
    "sum_lastoffset_padding": dict(mode="sum", include_last_offset=True, padding_idx=3),
}


def data(cfg):
    rng = np.random.default_rng(11)
    lens = rng.integers(0, 7, size=16)
    N = int(lens.sum())
    inp = rng.integers(0, V, size=N).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    if cfg.get("include_last_offset"):
        off = np.concatenate([off, [N]])
    y = rng.integers(0, C, size=16).astype(np.int64)
    psw = rng.uniform(0.5, 1.5, size=N).astype(np.float32) if cfg.get("psw") else None
    W0 = rng.standard_normal((V, D)).astype(np.float32)
    A0 = (rng.standard_normal((C, D)) * 0.3).astype(np.float32)
    b0 = np.zeros(C, np.float32)
    return inp, off, y, psw, W0, A0, b0


def torch_curve(cfg):
    inp, off, y, psw, W0, A0, b0 = data(cfg)
    kw = {k: v for k, v in cfg.items() if k != "psw"}
    bag = torch.nn.EmbeddingBag(V, D, _weight=torch.tensor(W0), **kw)
    lin = torch.nn.Linear(D, C)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(A0))
        lin.bias.copy_(torch.tensor(b0))
    opt = torch.optim.SGD(list(bag.parameters()) + list(lin.parameters()), lr=LR)
    ti, to, ty = torch.from_numpy(inp), torch.from_numpy(off), torch.from_numpy(y)
    tp = None if psw is None else torch.from_numpy(psw)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(bag(ti, to, per_sample_weights=tp)), ty)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


class Model(nn.Module):
    def __init__(self, W0, A0, b0, **kw):
        super().__init__()
        self.bag = meb.EmbeddingBag(V, D, _weight=mx.array(W0), **kw)
        self.lin = nn.Linear(D, C)
        self.lin.weight = mx.array(A0)
        self.lin.bias = mx.array(b0)

    def __call__(self, x, off, psw):
        return self.lin(self.bag(x, off, per_sample_weights=psw))


def mlx_curve(cfg, compiled):
    inp, off, y, psw, W0, A0, b0 = data(cfg)
    kw = {k: v for k, v in cfg.items() if k != "psw"}
    model = Model(W0, A0, b0, backend="reference", **kw)
    opt = optim.SGD(learning_rate=LR)
    x, o, t = mx.array(inp), mx.array(off), mx.array(y)
    p = None if psw is None else mx.array(psw)

    def loss_fn(m):
        return nn.losses.cross_entropy(m(x, o, p), t, reduction="mean")

    def step():
        loss, grads = nn.value_and_grad(model, loss_fn)(model)
        opt.update(model, grads)
        return loss

    state = [model.state, opt.state]
    if compiled:
        step = partial(mx.compile, inputs=state, outputs=state)(step)
    losses = []
    for _ in range(STEPS):
        loss = step()
        mx.eval(state, loss)
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_curve_matches_torch(name, compiled):
    cfg = CONFIGS[name]
    t = torch_curve(cfg)
    m = mlx_curve(cfg, compiled)
    assert t[-1] < t[0], "the classifier should learn something"
    bad = np.flatnonzero(~np.isclose(m, t, rtol=1e-3, atol=0))
    assert bad.size == 0, f"first diverging step {bad[:3]}: mlx {m[bad[:3]]} torch {t[bad[:3]]}"
