"""Every malformed call raises an error whose message names the argument (issue 2, Bad input)."""

import warnings

import mlx.core as mx
import numpy as np
import pytest

import mlx_embag as meb

W = mx.array(np.arange(12, dtype=np.float32).reshape(4, 3))
X1 = mx.array([0, 1, 2, 3])
OFF = mx.array([0, 2])
X2 = mx.array([[0, 1], [2, 3]])
EB = meb.embedding_bag
R = dict(backend="reference")

BAG_CASES = [
    ("float input", lambda: EB(mx.array([0.0, 1.0]), W, OFF, **R), (TypeError, ValueError), "input"),
    ("0-d input", lambda: EB(mx.array(1), W, OFF, **R), ValueError, "input"),
    ("3-d input", lambda: EB(mx.zeros((2, 2, 2), mx.int32), W, **R), ValueError, "input"),
    ("offsets with 2-D", lambda: EB(X2, W, OFF, **R), ValueError, "offsets"),
    ("missing offsets", lambda: EB(X1, W, **R), ValueError, "offsets"),
    ("2-D offsets", lambda: EB(X1, W, mx.array([[0, 2]]), **R), ValueError, "offsets"),
    ("float offsets", lambda: EB(X1, W, mx.array([0.0, 2.0]), **R), (TypeError, ValueError), "offsets"),
    ("unknown mode", lambda: EB(X1, W, OFF, mode="min", **R), ValueError, "mode"),
    (
        "psw with mean",
        lambda: EB(X1, W, OFF, mode="mean", per_sample_weights=mx.ones(4), **R),
        (ValueError, NotImplementedError),
        "per_sample_weights",
    ),
    (
        "psw with max",
        lambda: EB(X1, W, OFF, mode="max", per_sample_weights=mx.ones(4), **R),
        (ValueError, NotImplementedError),
        "per_sample_weights",
    ),
    (
        "psw wrong shape",
        lambda: EB(X1, W, OFF, mode="sum", per_sample_weights=mx.ones(3), **R),
        ValueError,
        "per_sample_weights",
    ),
    (
        "padding_idx too big",
        lambda: EB(X1, W, OFF, padding_idx=4, **R),
        (ValueError, IndexError),
        "padding_idx",
    ),
    (
        "padding_idx too small",
        lambda: EB(X1, W, OFF, padding_idx=-5, **R),
        (ValueError, IndexError),
        "padding_idx",
    ),
    (
        "sgf with max",
        lambda: EB(X1, W, OFF, mode="max", scale_grad_by_freq=True, **R),
        (ValueError, NotImplementedError),
        "scale_grad_by_freq",
    ),
    ("1-D weight", lambda: EB(X1, mx.ones(4), OFF, **R), ValueError, "weight"),
    (
        "integer weight",
        lambda: EB(X1, mx.ones((4, 3), mx.int32), OFF, **R),
        (TypeError, ValueError),
        "weight",
    ),
    ("sparse with max", lambda: EB(X1, W, OFF, mode="max", sparse=True, **R), ValueError, "sparse"),
    (
        "include_last_offset with empty offsets",
        lambda: EB(X1, W, mx.array(np.zeros(0, np.int32)), include_last_offset=True, **R),
        ValueError,
        "offsets",
    ),
    (
        "index out of range (checked)",
        lambda: EB(mx.array([0, 7]), W, mx.array([0]), check_indices=True, **R),
        IndexError,
        "7",
    ),
    (
        "negative index (checked)",
        lambda: EB(mx.array([0, -1]), W, mx.array([0]), check_indices=True, **R),
        IndexError,
        "-1",
    ),
    (
        "offsets not from 0 (checked)",
        lambda: EB(X1, W, mx.array([1, 2]), check_indices=True, **R),
        ValueError,
        "offsets",
    ),
    (
        "decreasing offsets (checked)",
        lambda: EB(X1, W, mx.array([0, 3, 2]), check_indices=True, **R),
        ValueError,
        "offsets",
    ),
    (
        "offsets past the input (checked)",
        lambda: EB(X1, W, mx.array([0, 5]), check_indices=True, **R),
        ValueError,
        "offsets",
    ),
]

EMB_CASES = [
    ("float input", lambda: meb.embedding(mx.array([0.5]), W, **R), (TypeError, ValueError), "input"),
    ("1-D weight", lambda: meb.embedding(X1, mx.ones(4), **R), ValueError, "weight"),
    (
        "padding_idx",
        lambda: meb.embedding(X1, W, padding_idx=9, **R),
        (ValueError, IndexError),
        "padding_idx",
    ),
    (
        "index out of range (checked)",
        lambda: meb.embedding(mx.array([[0, 1], [5, 2]]), W, check_indices=True, **R),
        IndexError,
        "5",
    ),
]

MOD_CASES = [
    ("EmbeddingBag num_embeddings", lambda: meb.EmbeddingBag(0, 3), ValueError, "num_embeddings"),
    ("EmbeddingBag negative dim", lambda: meb.EmbeddingBag(4, -1), ValueError, "embedding_dim"),
    ("EmbeddingBag float size", lambda: meb.EmbeddingBag(4.5, 3), (TypeError, ValueError), "num_embeddings"),
    ("EmbeddingBag mode", lambda: meb.EmbeddingBag(4, 3, mode="avg"), ValueError, "mode"),
    (
        "EmbeddingBag padding_idx",
        lambda: meb.EmbeddingBag(4, 3, padding_idx=4),
        (ValueError, IndexError),
        "padding_idx",
    ),
    (
        "EmbeddingBag sgf+max",
        lambda: meb.EmbeddingBag(4, 3, mode="max", scale_grad_by_freq=True),
        (ValueError, NotImplementedError),
        "scale_grad_by_freq",
    ),
    (
        "EmbeddingBag sparse+max",
        lambda: meb.EmbeddingBag(4, 3, mode="max", sparse=True),
        ValueError,
        "sparse",
    ),
    (
        "EmbeddingBag _weight shape",
        lambda: meb.EmbeddingBag(4, 3, _weight=mx.zeros((5, 3))),
        ValueError,
        "_weight",
    ),
    ("EmbeddingBag backend", lambda: meb.EmbeddingBag(4, 3, backend="cuda"), ValueError, "backend"),
    (
        "EmbeddingBag check_indices",
        lambda: meb.EmbeddingBag(4, 3, check_indices="yes"),
        TypeError,
        "check_indices",
    ),
    (
        "EmbeddingBag deterministic",
        lambda: meb.EmbeddingBag(4, 3, deterministic=1),
        TypeError,
        "deterministic",
    ),
    ("Embedding backend", lambda: meb.Embedding(4, 3, backend="foo"), ValueError, "backend"),
    ("Embedding deterministic", lambda: meb.Embedding(4, 3, deterministic="on"), TypeError, "deterministic"),
    ("Embedding num_embeddings", lambda: meb.Embedding(-2, 3), ValueError, "num_embeddings"),
    (
        "Embedding padding_idx",
        lambda: meb.Embedding(4, 3, padding_idx=-5),
        (ValueError, IndexError),
        "padding_idx",
    ),
    (
        "EmbeddingBag.from_pretrained 1-D",
        lambda: meb.EmbeddingBag.from_pretrained(mx.ones(4)),
        ValueError,
        "embeddings",
    ),
    (
        "Embedding.from_pretrained 3-D",
        lambda: meb.Embedding.from_pretrained(mx.ones((2, 2, 2))),
        ValueError,
        "embeddings",
    ),
]


@pytest.mark.parametrize(
    "name,call,exc,needle",
    BAG_CASES + EMB_CASES + MOD_CASES,
    ids=[c[0] for c in BAG_CASES + EMB_CASES + MOD_CASES],
)
def test_bad_input_raises_naming_argument(name, call, exc, needle):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as info:
            mx.eval(call())
    assert needle in str(info.value), f"{name}: message {str(info.value)!r} does not name {needle!r}"


def test_checked_index_error_names_position():
    with pytest.raises(IndexError) as info:
        EB(mx.array([0, 1, 2, 9, 1]), W, mx.array([0, 2]), check_indices=True, **R)
    msg = str(info.value)
    assert "9" in msg and "3" in msg, msg  # value 9 at position 3


def test_checked_index_error_names_the_position_in_its_shape():
    with pytest.raises(IndexError, match=r"input\[1, 0\] = -1"):
        EB(mx.array([[0, 1], [-1, 2]]), W, check_indices=True, **R)
    with pytest.raises(IndexError, match=r"input\[0, 1, 1\] = 9"):
        meb.embedding(mx.array([[[0, 1], [2, 9]]]), W, check_indices=True, backend="reference")


def test_checked_uint64_offsets_are_not_wrapped():
    # 2**63 + 5 read as int64 would be negative and reported as "decreasing".
    off = mx.array(np.array([0, 2**63 + 5], dtype=np.uint64))
    with pytest.raises(ValueError, match=r"exceed the input length 4: offsets\[1\] = 9223372036854775813"):
        EB(X1, W, off, check_indices=True, **R)


def test_unchecked_bad_values_poison_instead_of_raising():
    out = np.array(EB(mx.array([0, 1, 99, 2]), W, mx.array([0, 2]), mode="sum", **R))
    assert np.allclose(out[0], np.array(W)[0] + np.array(W)[1]) and np.isnan(out[1]).all()
    out = np.array(meb.embedding(mx.array([1, -3]), W, **R))
    assert np.allclose(out[0], np.array(W)[1]) and np.isnan(out[1]).all()


def test_sparse_warns_once_and_gives_dense_gradient(monkeypatch):
    import mlx_embag._validate as checks

    monkeypatch.setattr(checks, "_warned", set())

    def f(w):
        return EB(X1, w, OFF, mode="sum", sparse=True, **R).sum()

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g = mx.grad(f)(W)
        mx.grad(f)(W)
        meb.embedding(X1, W, sparse=True, **R)
    msgs = [str(r.message) for r in rec if "sparse" in str(r.message)]
    assert len(msgs) == 1, msgs
    assert g.shape == W.shape and np.allclose(np.array(g), 1.0)


def test_checked_0d_input_names_it_without_brackets():
    with pytest.raises(IndexError, match=r"^input = 9 is out of range"):
        meb.embedding(mx.array(9), W, check_indices=True, **R)


def test_sparse_warning_points_at_the_caller(monkeypatch):
    from mlx_embag import _validate

    for call in (
        lambda: meb.EmbeddingBag(4, 3, mode="sum", sparse=True)(X2),
        lambda: meb.Embedding(4, 3, sparse=True)(X1),
        lambda: EB(X1, W, OFF, mode="sum", sparse=True, **R),
    ):
        monkeypatch.setattr(_validate, "_warned", set())
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            call()
        (warning,) = [r for r in rec if "sparse" in str(r.message)]
        assert warning.filename == __file__, warning.filename
