"""meb.EmbeddingBag / meb.Embedding module behaviour (issue 2)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import torch  # noqa: E402  (pinned in the test extra: missing must fail, not skip)
from mlx.utils import tree_flatten
from oracle import oracle_embedding, oracle_embedding_bag
from support import assert_close

import mlx_embag as meb


@pytest.mark.parametrize("cls", [meb.EmbeddingBag, meb.Embedding])
def test_init_is_standard_normal(cls):
    mx.random.seed(0)
    w = np.array(cls(3001, 9).weight)
    assert w.shape == (3001, 9)
    assert abs(w.mean()) < 0.03 and abs(w.std() - 1.0) < 0.03, (w.mean(), w.std())


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize("cls", [meb.EmbeddingBag, meb.Embedding])
def test_padding_row_zeroed_and_dtype(cls, dtype):
    m = cls(7, 5, padding_idx=-2, dtype=dtype)
    assert m.weight.dtype == dtype and m.padding_idx == 5
    w = np.array(m.weight.astype(mx.float32))
    assert np.all(w[5] == 0) and np.any(w[[0, 1, 2, 3, 4, 6]] != 0)


@pytest.mark.parametrize("cls", [meb.EmbeddingBag, meb.Embedding])
def test_given_weight_keeps_padding_row(cls):
    W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3) + 1)
    m = cls(4, 3, padding_idx=1, _weight=W)
    assert np.array_equal(np.array(m.weight), np.array(W))
    p = cls.from_pretrained(W, padding_idx=1)
    assert np.array_equal(np.array(p.weight), np.array(W))


def test_repr():
    r = repr(meb.EmbeddingBag(10, 3, mode="sum", padding_idx=2))
    assert r.startswith("EmbeddingBag(") and "10, 3" in r and "sum" in r and "padding_idx=2" in r, r
    r = repr(meb.Embedding(10, 3, max_norm=1.5))
    assert r.startswith("Embedding(") and "10, 3" in r and "max_norm=1.5" in r, r


@pytest.mark.parametrize("cls", [meb.EmbeddingBag, meb.Embedding])
def test_freeze_and_from_pretrained_freeze(cls):
    m = cls(5, 2)
    assert [k for k, _ in tree_flatten(m.trainable_parameters())] == ["weight"]
    m.freeze()
    assert tree_flatten(m.trainable_parameters()) == []
    W = mx.ones((5, 2))
    assert tree_flatten(cls.from_pretrained(W).trainable_parameters()) == []
    assert len(tree_flatten(cls.from_pretrained(W, freeze=False).trainable_parameters())) == 1


@pytest.mark.parametrize("ext", ["safetensors", "npz"])
@pytest.mark.parametrize("cls", [meb.EmbeddingBag, meb.Embedding])
def test_save_load_round_trip(cls, ext, tmp_path):
    a, b = cls(9, 4), cls(9, 4)
    f = str(tmp_path / f"w.{ext}")
    a.save_weights(f)
    b.load_weights(f)
    assert np.array_equal(np.array(a.weight), np.array(b.weight))


def test_embeddingbag_module_matches_oracle_and_grad():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 5)).astype(np.float32)
    inp, off = np.array([0, 3, 3, 5, 1, 2, 0]), np.array([0, 3, 3])
    m = meb.EmbeddingBag(6, 5, mode="mean", padding_idx=0, _weight=mx.array(W))
    cot = rng.standard_normal((3, 5)).astype(np.float32)

    def loss(model):
        return (model(mx.array(inp), mx.array(off)) * mx.array(cot)).sum()

    val, grads = nn.value_and_grad(m, loss)(m)
    eo, edW, _ = oracle_embedding_bag(inp, W, off, mode="mean", padding_idx=0, cotangent=cot)
    assert_close(float(val), float((eo * cot).sum()), 1e-5, 1e-5, "loss")
    assert_close(np.array(grads["weight"]), edW, 1e-5, 1e-5, "module weight grad")


def test_embedding_module_and_as_linear():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((6, 5)).astype(np.float32)
    m = meb.Embedding.from_pretrained(mx.array(W), padding_idx=2)
    inp = np.array([[2, 1], [5, 2]])
    assert_close(np.array(m(mx.array(inp))), oracle_embedding(inp, W, 2)[0], 1e-6, 1e-6, "embedding")
    x = rng.standard_normal((3, 5)).astype(np.float32)
    assert_close(np.array(m.as_linear(mx.array(x))), x.astype(np.float64) @ W.T, 1e-5, 1e-5, "as_linear")


@pytest.mark.parametrize("norm_type", [1.0, 2.0, float("inf")])
def test_max_norm_write_back_matches_torch(norm_type):
    rng = np.random.default_rng(5)
    W = (rng.standard_normal((7, 4)) * 3).astype(np.float32)
    inp, off = np.array([1, 3, 3, 6, 0]), np.array([0, 2, 4])  # position 4 is in the last bag
    m = meb.EmbeddingBag(7, 4, max_norm=1.0, norm_type=norm_type, mode="sum", _weight=mx.array(W))
    out = m(mx.array(inp), mx.array(off))
    t = torch.nn.EmbeddingBag(7, 4, max_norm=1.0, norm_type=norm_type, mode="sum", _weight=torch.tensor(W))
    tout = t(torch.from_numpy(inp), torch.from_numpy(off))
    assert_close(np.array(out), tout.detach().numpy(), 1e-5, 1e-5, "output")
    assert_close(np.array(m.weight), t.weight.detach().numpy(), 1e-5, 1e-5, "written-back weight")
    untouched = [2, 4, 5]
    assert np.array_equal(np.array(m.weight)[untouched], W[untouched])

    e = meb.Embedding(7, 4, max_norm=0.5, norm_type=norm_type, _weight=mx.array(W))
    te = torch.nn.Embedding(7, 4, max_norm=0.5, norm_type=norm_type, _weight=torch.tensor(W))
    inp2 = np.array([[5, 2], [2, 0]])
    assert_close(
        np.array(e(mx.array(inp2))),
        te(torch.from_numpy(inp2)).detach().numpy(),
        1e-5,
        1e-5,
        "embedding output",
    )
    assert_close(np.array(e.weight), te.weight.detach().numpy(), 1e-5, 1e-5, "embedding write-back")


def test_module_call_equals_functional():
    m = meb.EmbeddingBag(11, 3, mode="max", include_last_offset=True)
    x, off = mx.array([1, 2, 10, 4]), mx.array([0, 1, 4])
    assert np.array_equal(
        np.array(m(x, off)),
        np.array(meb.embedding_bag(x, m.weight, off, mode="max", include_last_offset=True)),
    )


def test_max_norm_write_back_covers_trailing_padding_and_invalid_bags():
    """Every row referenced by an in-range index is renormed: trailing positions, padding
    entries and in-range entries of invalid bags included."""
    from oracle import _renorm

    rng = np.random.default_rng(6)
    W = (rng.standard_normal((8, 3)) * 4).astype(np.float32)
    # bag 0 = [1, 2] (2 is padding), bag 1 = [5, 9]: 9 out of range -> invalid; trailing 6
    inp, off = np.array([1, 2, 5, 9, 6]), np.array([0, 2, 4])
    m = meb.EmbeddingBag(
        8, 3, max_norm=1.0, mode="sum", include_last_offset=True, padding_idx=2, _weight=mx.array(W)
    )
    out = np.array(m(mx.array(inp), mx.array(off)))
    expected_w = _renorm(W, inp, 1.0, 2.0)
    assert_close(np.array(m.weight), expected_w, 1e-6, 1e-6, "written-back weight")
    assert np.all(np.linalg.norm(np.array(m.weight)[[1, 2, 5, 6]], axis=1) <= 1.0 + 1e-5)
    assert np.array_equal(np.array(m.weight)[[0, 3, 4, 7]], W[[0, 3, 4, 7]])
    assert_close(out[0], expected_w[1], 1e-6, 1e-6, "bag 0") and np.isnan(out[1]).all()
