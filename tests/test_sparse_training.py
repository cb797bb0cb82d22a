"""Row-sparse gradients and the sparse optimizers (issue 12) against PyTorch 2.13 CPU and NumPy.

PyTorch's references: ``nn.EmbeddingBag(sparse=True)`` / ``nn.Embedding(sparse=True)``
with ``SGD``, ``Adagrad`` and ``SparseAdam``. Not compared with PyTorch, with the reason:
``scale_grad_by_freq`` (PyTorch refuses it with sparse gradients; checked against the
dense path and a NumPy count), ``RowWiseAdagrad`` (FBGEMM's rule, no PyTorch optimizer:
checked against a NumPy oracle fed PyTorch's gradients), out-of-range indices (PyTorch
raises; the poison rule is checked on its own).
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import torch  # noqa: E402  (pinned in the test extra: missing must fail, not skip)
from support import sparse_adam_step_extra_bytes

import mlx_embag as meb

V, D, B, STEPS = 40, 5, 12, 12
RTOL, ATOL = 1e-4, 1e-5
R = dict(backend="reference")


def batches(seed=3, pad=None):
    """STEPS batches of 1-D bags (lengths 0..5, so empty bags occur), ids in [0, V)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        lens = rng.integers(0, 6, size=B)
        ids = rng.integers(0, V // 2, size=int(lens.sum())) * 2 % V  # rows repeat; odd rows never seen
        if pad is not None and ids.size:
            ids[rng.random(ids.size) < 0.2] = pad
        off = np.concatenate([[0], np.cumsum(lens)[:-1]])
        psw = rng.uniform(-1.0, 1.0, size=ids.size).astype(np.float32)
        psw[::5] = 0.0  # listed rows with a zero gradient: they must still count for SparseAdam
        y = rng.standard_normal(B).astype(np.float32)
        out.append((ids.astype(np.int64), off.astype(np.int64), psw, y))
    return out


def initial(seed=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((V, D)).astype(np.float32), (rng.standard_normal((1, D)) * 0.5).astype(
        np.float32
    )


class Model(nn.Module):
    def __init__(self, W0, A0, **kw):
        super().__init__()
        self.emb = meb.EmbeddingBag(V, D, sparse=True, _weight=mx.array(W0), **{**R, **kw})
        self.head = nn.Linear(D, 1)
        self.head.weight, self.head.bias = mx.array(A0), mx.zeros((1,))

    def __call__(self, ids, off, psw=None):
        return self.head(self.emb(ids, off, per_sample_weights=psw)).squeeze(-1)


def mlx_loss(model, ids, off, *rest):
    *psw, y = rest  # per_sample_weights only in sum mode (mx.compile takes arrays only)
    return ((model(ids, off, *psw) - y) ** 2).mean()


def torch_run(make_opts, kw, pad=None):
    """Losses and final table of PyTorch's model trained on :func:`batches`."""
    W0, A0 = initial()
    emb = torch.nn.EmbeddingBag(V, D, sparse=True, _weight=torch.tensor(W0), **kw)
    head = torch.nn.Linear(D, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(A0))
        head.bias.zero_()
    opts = make_opts(list(emb.parameters()), list(head.parameters()))
    losses = []
    for ids, off, psw, y in batches(pad=pad):
        for o in opts:
            o.zero_grad()
        tpsw = torch.tensor(psw) if kw["mode"] == "sum" else None
        pred = head(emb(torch.tensor(ids), torch.tensor(off), per_sample_weights=tpsw)).squeeze(-1)
        loss = ((pred - torch.tensor(y)) ** 2).mean()
        loss.backward()
        for o in opts:
            o.step()
        losses.append(loss.item())
    return np.array(losses), emb.weight.detach().numpy()


def mlx_run(opt, kw, pad=None, how="eager"):
    """The issue's eager loop on the same data; ``how="recipe"``: ``meb.compiled_step``;
    ``how="whole"``: the whole step under one ``mx.compile``, as MLX users write it."""
    W0, A0 = initial()
    model = Model(W0, A0, **kw)
    loss_and_grad = meb.value_and_grad(model, mlx_loss)
    if how == "recipe":
        step = meb.compiled_step(model, mlx_loss, opt)
    elif how == "whole":
        opt.init(model.trainable_parameters())
        state = [model.state, opt.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(*batch):
            loss, grads = loss_and_grad(model, *batch)
            opt.update(model, grads)
            return loss

    losses = []
    for ids, off, psw, y in batches(pad=pad):
        psw = psw if kw["mode"] == "sum" else None
        batch = [mx.array(x) for x in (ids, off, psw, y) if x is not None]
        if how == "eager":
            loss, grads = loss_and_grad(model, *batch)
            opt.update(model, grads)
        else:
            loss = step(*batch)
        mx.eval(loss, model.parameters(), opt.state)
        losses.append(loss.item())
    return np.array(losses), np.array(model.emb.weight)


def assert_close(got, want, what):
    bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL)
    assert not bad.any(), (
        f"{what}: first mismatches at {np.argwhere(bad)[:5].tolist()}: {got[bad][:5]} vs {want[bad][:5]}"
    )


KW = dict(mode="sum")
OPTIMIZERS = {
    # name: (PyTorch optimizers for (table, dense params), the MLX optimizer)
    "sgd": (lambda e, d: [torch.optim.SGD(e + d, lr=0.05)], lambda: meb.optimizers.SparseSGD(0.05)),
    "adagrad": (lambda e, d: [torch.optim.Adagrad(e + d, lr=0.1)], lambda: meb.optimizers.SparseAdagrad(0.1)),
    "sparse_adam": (
        lambda e, d: [torch.optim.SparseAdam(e, lr=0.05), torch.optim.Adam(d, lr=0.05)],
        lambda: optim.MultiOptimizer(
            [meb.optimizers.SparseAdam(0.05), optim.Adam(0.05, bias_correction=True)],
            [lambda path, g: path.startswith("emb")],
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_matches_pytorch(name):
    make_torch, make_mlx = OPTIMIZERS[name]
    want_losses, want_w = torch_run(make_torch, KW)
    got_losses, got_w = mlx_run(make_mlx(), KW)
    assert_close(got_losses, want_losses, f"{name} losses")
    assert_close(got_w, want_w, f"{name} table")


@pytest.mark.parametrize("how", ["recipe", "whole"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_training_gives_the_eager_tables(name, how):
    make_torch, make_mlx = OPTIMIZERS[name]
    want_losses, want_w = torch_run(make_torch, KW)
    eager_losses, eager_w = mlx_run(make_mlx(), KW)
    got_losses, got_w = mlx_run(make_mlx(), KW, how=how)
    assert_close(got_losses, want_losses, f"{name} {how} losses against PyTorch")
    assert_close(got_w, want_w, f"{name} {how} table against PyTorch")
    np.testing.assert_allclose(got_w, eager_w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("how", ["recipe", "whole"])
def test_compiled_rowwise_adagrad_gives_the_eager_table(how):
    # The eager table matches the NumPy oracle (test_rowwise_adagrad_matches_numpy_oracle).
    eager_losses, eager_w = mlx_run(meb.optimizers.RowWiseAdagrad(0.1), KW)
    got_losses, got_w = mlx_run(meb.optimizers.RowWiseAdagrad(0.1), KW, how=how)
    np.testing.assert_allclose(got_losses, eager_losses, rtol=1e-6)
    np.testing.assert_allclose(got_w, eager_w, rtol=1e-6, atol=1e-7)


def test_sparse_adam_with_padding_and_mean_matches_pytorch():
    kw = dict(mode="mean", padding_idx=4)
    want_losses, want_w = torch_run(OPTIMIZERS["sparse_adam"][0], kw, pad=4)
    got_losses, got_w = mlx_run(OPTIMIZERS["sparse_adam"][1](), kw, pad=4)
    assert_close(got_losses, want_losses, "losses")
    assert_close(got_w, want_w, "table")


def rowwise_oracle(W, g, acc, lr, eps):
    """FBGEMM's exact row-wise Adagrad on the rows of ``g`` (a dict row -> summed gradient)."""
    for r, gr in g.items():
        acc[r] += np.mean(gr.astype(np.float64) ** 2)
        W[r] -= lr * gr / (np.sqrt(acc[r]) + eps)


def rowwise_oracle_run(lr, eps):
    """Losses and final table of PyTorch's model trained with PyTorch's gradients and the
    row-wise formula in NumPy (:func:`rowwise_oracle`)."""
    W0, A0 = initial()
    # The oracle trains PyTorch's model with PyTorch's gradients and the formula in NumPy.
    emb = torch.nn.EmbeddingBag(V, D, sparse=True, mode="sum", _weight=torch.tensor(W0))
    head = torch.nn.Linear(D, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(A0))
        head.bias.zero_()
    acc = np.zeros(V)
    dense_acc = {"w": np.zeros(1), "b": np.zeros(())}
    want = []
    for ids, off, psw, y in batches():
        emb.zero_grad(), head.zero_grad()
        pred = head(emb(torch.tensor(ids), torch.tensor(off), per_sample_weights=torch.tensor(psw))).squeeze(
            -1
        )
        loss = ((pred - torch.tensor(y)) ** 2).mean()
        loss.backward()
        want.append(loss.item())
        g = emb.weight.grad.coalesce()
        rows = {int(r): v.numpy() for r, v in zip(g.indices()[0], g.values())}
        with torch.no_grad():
            W = emb.weight.numpy()
            rowwise_oracle(W, rows, acc, lr, eps)
            hw, hb = head.weight.numpy(), head.bias.numpy()
            rowwise_oracle(hw, {0: head.weight.grad.numpy()[0]}, dense_acc["w"], lr, eps)
            gb = head.bias.grad.numpy()
            dense_acc["b"] = dense_acc["b"] + np.mean(gb.astype(np.float64) ** 2)
            hb -= lr * gb / (np.sqrt(dense_acc["b"]) + eps)
    return np.array(want), emb.weight.detach().numpy()


def test_rowwise_adagrad_matches_numpy_oracle():
    lr, eps = 0.1, 1e-8
    want_losses, want_w = rowwise_oracle_run(lr, eps)
    got_losses, got_w = mlx_run(meb.optimizers.RowWiseAdagrad(lr, eps=eps), KW)
    assert_close(got_losses, want_losses, "losses")
    assert_close(got_w, want_w, "table")


# ----------------------------------------------------------------- the gradient itself


def _grads(module, call):
    loss, grads = meb.value_and_grad(module, lambda: call(module).sum() * 1.0)()
    return grads["weight"]


def _torch_grad(module, call):
    call(module).sum().backward()
    return module.weight.grad


@pytest.mark.parametrize(
    "kw",
    [
        dict(mode="sum"),
        dict(mode="mean", padding_idx=2),
        dict(mode="sum", include_last_offset=True, padding_idx=0),
    ],
)
def test_to_dense_and_listed_rows_match_pytorch(kw):
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((V, D)).astype(np.float32)
    ids = np.array([2, 7, 7, 0, 9, 2, 11, 30, 0, 5], dtype=np.int64)
    off = np.array([0, 3, 3, 6] + ([10] if kw.get("include_last_offset") else []), dtype=np.int64)
    psw = rng.uniform(-1, 1, ids.size).astype(np.float32)
    psw[1] = 0.0  # row 7 at position 1: listed, zero contribution
    cot = rng.standard_normal((4, D)).astype(np.float32)
    pkw = dict(per_sample_weights=psw) if kw["mode"] == "sum" else {}
    t = torch.nn.EmbeddingBag(V, D, sparse=True, _weight=torch.tensor(W0), **kw)
    tg = _torch_grad(
        t,
        lambda m: (
            m(torch.tensor(ids), torch.tensor(off), **{k: torch.tensor(v) for k, v in pkw.items()})
            * torch.tensor(cot)
        ),
    )
    m = meb.EmbeddingBag(V, D, sparse=True, _weight=mx.array(W0), **kw, **R)
    g = _grads(
        m,
        lambda m: m(mx.array(ids), mx.array(off), **{k: mx.array(v) for k, v in pkw.items()}) * mx.array(cot),
    )
    assert isinstance(g, meb.RowSparseGrad) and g.shape == (V, D) and g.dtype == mx.float32
    assert_close(np.array(g.to_dense()), tg.to_dense().numpy(), "to_dense")
    tc = tg.coalesce()
    c = g.coalesce()
    assert c.indices.tolist() == tc.indices()[0].tolist()
    assert_close(np.array(c.values), tc.values().numpy(), "coalesced values")


def test_embedding_listed_rows_and_values_match_pytorch():
    W0 = np.random.default_rng(1).standard_normal((V, D)).astype(np.float32)
    ids = np.array([[3, 1, 3], [1, 0, 8]])
    t = torch.nn.Embedding(V, D, padding_idx=1, sparse=True, _weight=torch.tensor(W0))
    tg = _torch_grad(t, lambda m: m(torch.tensor(ids)) ** 2).coalesce()
    m = meb.Embedding(V, D, padding_idx=1, sparse=True, _weight=mx.array(W0), **R)
    c = _grads(m, lambda m: m(mx.array(ids)) ** 2).coalesce()
    assert c.indices.tolist() == tg.indices()[0].tolist() == [0, 3, 8]
    assert_close(np.array(c.values), tg.values().numpy(), "values")


def test_poisoned_bags_and_trailing_positions_list_nothing():
    m = meb.EmbeddingBag(6, 2, mode="sum", sparse=True, include_last_offset=True, **R)
    # bag 0 = [1, 2]; bag 1 = [9, 3] holds an out-of-range index; position 4 is after the last offset
    g = _grads(m, lambda m: m(mx.array([1, 2, 9, 3, 4]), mx.array([0, 2, 4])))
    assert g.indices.tolist() == [1, 2, -1, -1, -1]
    assert np.array(g.to_dense()).sum(axis=1).tolist() == [0, 2, 2, 0, 0, 0]


@pytest.mark.parametrize("layer", ["bag", "embedding"])
def test_scale_grad_by_freq_matches_dense_path_and_counts(layer):
    ids = mx.array([[4, 4, 1], [4, 0, 1]])
    W0 = mx.array(np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32))
    if layer == "bag":
        m = meb.EmbeddingBag(6, 3, mode="sum", sparse=True, scale_grad_by_freq=True, _weight=W0, **R)
    else:
        m = meb.Embedding(6, 3, sparse=True, scale_grad_by_freq=True, _weight=W0, **R)
    got = np.array(_grads(m, lambda m: m(ids)).to_dense())
    _, dense = nn.value_and_grad(m, lambda: m(ids).sum())()
    np.testing.assert_allclose(got, np.array(dense["weight"]), rtol=1e-6)
    # NumPy: each occurrence contributes 1 / (occurrences of its row): rows 4, 1, 0 get 1 each.
    np.testing.assert_allclose(
        got, np.array([[1] * 3, [1] * 3, [0] * 3, [0] * 3, [1] * 3, [0] * 3]), rtol=1e-6
    )


def test_without_sparse_modules_it_is_nn_value_and_grad():
    m = meb.EmbeddingBag(5, 2, mode="sum", **R)
    f = lambda: (m(mx.array([[1, 2]])) ** 2).sum()  # noqa: E731
    (l1, g1), (l2, g2) = meb.value_and_grad(m, f)(), nn.value_and_grad(m, f)()
    assert l1.item() == l2.item() and isinstance(g1["weight"], mx.array)
    assert np.array_equal(np.array(g1["weight"]), np.array(g2["weight"]))


def test_table_also_used_densely_gets_a_dense_gradient():
    m = meb.Embedding(7, 3, sparse=True, **R)
    x = mx.array([[1, 5, 1]])
    f = lambda: (m.as_linear(m(x)) ** 2).sum()  # noqa: E731
    with pytest.warns(UserWarning, match="dense"):
        _, g = meb.value_and_grad(m, f)()
    _, want = nn.value_and_grad(m, f)()
    assert isinstance(g["weight"], mx.array)
    np.testing.assert_allclose(np.array(g["weight"]), np.array(want["weight"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stock", [lambda: optim.Adam(0.1), lambda: optim.SGD(0.1)])
def test_stock_optimizers_refuse_a_row_sparse_gradient(stock):
    m = meb.Embedding(7, 3, sparse=True, **R)
    _, g = meb.value_and_grad(m, lambda: m(mx.array([1])).sum())()
    with pytest.raises(TypeError, match="RowSparseGrad"):
        stock().update(m, g)
    opt = stock()
    opt.init(m.trainable_parameters())  # the state made from arrays, so the update itself refuses
    with pytest.raises(TypeError, match="RowSparseGrad"):
        opt.update(m, g)
    with pytest.raises((TypeError, AttributeError), match="RowSparseGrad"):
        optim.clip_grad_norm(g, 1.0)


def test_deterministic_tables_are_bitwise_equal_across_runs():
    kw = dict(mode="sum", deterministic=True)
    runs = [mlx_run(meb.optimizers.SparseAdam(0.05), kw)[1] for _ in range(2)]
    assert np.array_equal(runs[0], runs[1])


def test_the_step_updates_the_table_in_place():
    extra = sparse_adam_step_extra_bytes(R["backend"])
    assert extra < 8 * 2**20, f"the step allocated {extra / 2**20:.1f} MiB beyond the table and state"


def test_max_norm_training_matches_pytorch():
    # The module renorms the rows it reads and writes them back, as PyTorch's in-place renorm.
    kw = dict(mode="sum", max_norm=1.5)
    make_torch = lambda e, d: [torch.optim.SGD(e + d, lr=0.05)]  # noqa: E731
    want_losses, want_w = torch_run(make_torch, kw)
    got_losses, got_w = mlx_run(meb.optimizers.SparseSGD(0.05), kw)
    assert_close(got_losses, want_losses, "losses")
    assert_close(got_w, want_w, "table")
    # The write-back is the module's own use of its table, not a dense one: the gradient stays row-sparse.
    m = meb.EmbeddingBag(V, D, sparse=True, **kw, **R)
    _, g = meb.value_and_grad(m, lambda: m(mx.array([[1, 2]])).sum())()
    assert isinstance(g["weight"], meb.RowSparseGrad) and g["weight"].indices.tolist() == [1, 2]


def test_metal_path_gives_the_reference_gradient():
    from support import emulated

    ids, off = mx.array([3, 1, 3, 0, 7, 9]), mx.array([0, 2, 2, 5])
    psw = mx.array([0.5, -1.0, 2.0, 0.0, 1.5, 1.0])
    W0 = mx.array(np.random.default_rng(4).standard_normal((12, 8)).astype(np.float32))
    got = {}
    for backend in ("reference", "metal"):
        m = meb.EmbeddingBag(12, 8, mode="sum", sparse=True, padding_idx=0, _weight=W0, backend=backend)
        with emulated(seed=1):
            g = _grads(m, lambda m: m(ids, off, per_sample_weights=psw) ** 2)
            got[backend] = (g.indices.tolist(), np.array(g.to_dense()))
    assert got["metal"][0] == got["reference"][0] == [3, 1, 3, -1, 7, 9]
    np.testing.assert_allclose(got["metal"][1], got["reference"][1], rtol=2e-5, atol=2e-5)


def test_frozen_unused_nested_and_repeated_tables():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [
                meb.Embedding(9, 2, sparse=True, **R),
                meb.Embedding(9, 2, sparse=True, **R),
                meb.EmbeddingBag(9, 2, mode="sum", sparse=True, **R),
            ]
            self.layers[2].freeze()

        def __call__(self, x):
            a = self.layers[0]
            # layers[0] twice (its entries concatenate), layers[1] never, layers[2] frozen
            return (a(x) * 2).sum() + a(x[:1]).sum() + self.layers[2](x[None]).sum()

    net = Net()
    x = mx.array([5, 1, 5])
    _, grads = meb.value_and_grad(net, lambda: net(x))()
    used, unused = grads["layers"][0]["weight"], grads["layers"][1]["weight"]
    assert used.indices.tolist() == [5, 1, 5, 5]
    assert np.array(used.to_dense())[:, 0].tolist() == [0, 2, 0, 0, 0, 5, 0, 0, 0]
    assert isinstance(unused, meb.RowSparseGrad) and unused.indices.size == 0 and unused.shape == (9, 2)
    assert "weight" not in grads["layers"][2]
    opt = meb.optimizers.SparseAdam(0.1)
    before = np.array(net.layers[1].weight)
    opt.update(net, grads)  # an empty gradient leaves its table as it was
    mx.eval(net.parameters(), opt.state)
    assert np.array_equal(np.array(net.layers[1].weight), before)


def test_eval_of_the_tree_accepts_it_and_sgd_moves_only_the_listed_rows():
    m = meb.EmbeddingBag(50, 3, mode="sum", sparse=True, **R)
    _, g = meb.value_and_grad(m, lambda x: m(x).sum())(mx.array([[1, 2]]))
    mx.eval(g)  # a foreign leaf to MLX: accepted, its arrays not reached (the update evaluates them)
    opt = meb.optimizers.SparseSGD(1.0)
    w0 = np.array(m.weight)
    opt.update(m, g)
    w1 = np.array(m.weight)
    assert np.array_equal(w1[[1, 2]], w0[[1, 2]] - 1) and np.array_equal(
        np.delete(w1, [1, 2], 0), np.delete(w0, [1, 2], 0)
    )


def test_metal_path_sums_duplicate_rows_like_the_reference_path():
    from support import emulated

    from mlx_embag.sparse_grad import row_runs

    rng = np.random.default_rng(6)
    idx = mx.array(rng.integers(-1, 9, size=300).astype(np.int32))  # -1: entries that list nothing
    vals = mx.array(rng.standard_normal((300, 33)).astype(np.float32))
    want = [np.array(a) for a in row_runs(idx, vals, "reference")]
    with emulated(seed=2):
        got = [np.array(a) for a in row_runs(idx, vals, "metal")]
        again = [np.array(a) for a in row_runs(idx, vals, "metal")]
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[2])
    np.testing.assert_allclose(got[1], want[1], rtol=2e-5, atol=2e-5)
    assert all(np.array_equal(a, b) for a, b in zip(got, again))  # fixed order: the same bits
