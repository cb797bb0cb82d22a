"""Adversarial indices and offsets under the emulator's AddressSanitizer: no out-of-bounds access.

Indices negative, equal to V, 2**31 - 1 and (int64) 2**40; offsets negative,
decreasing, past N and near the int64 limit. Every kernel runs (forward,
max_norm scaling, atomic and deterministic weight gradients, max mode,
per_sample_weights gradient), and the results still follow the poison rule
(compared with the reference path). Needs the emulator: on a Mac this file
checks the same values on the GPU without the sanitizer.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_embag import metal_ops, reference
from mlx_embag._spec import BagSpec, EmbSpec
from test_metal_ops import emulated


@pytest.fixture(autouse=True, scope="module")
def sanitized():
    with emulated(seed=5, sanitize=True):
        yield


V, D = 6, 5
BIG = 2**62


def _values_and_grads(fn, w, psw, cot):
    def loss(w_, p_):
        o = fn(w_, p_)
        return (mx.where(mx.isnan(o), 0.0, o) * cot).sum()

    if psw is None:
        return fn(w, None), mx.grad(lambda w_: loss(w_, None))(w)
    return (fn(w, psw),) + tuple(mx.grad(loss, argnums=(0, 1))(w, psw))


CASES = [
    # (mode, index dtype, indices, offsets, include_last_offset, psw, max_norm, sgf, deterministic)
    ("sum", mx.int32, [0, -1, 5, 6, 2**31 - 1, 1, 2, 3], [0, 1, 3, 5, 8], True, True, 1.0, False, False),
    ("mean", mx.int64, [1, 2**40, 3, -2**40, 4, 0, 5], [0, 2, 2, BIG, -BIG, 4], False, False, None, True, True),
    ("max", mx.int64, [2, 2, 6, 1, 0, 2**31 - 1, 4], [0, 3, 2, 9, 2**63 - 1], False, False, 0.5, False, False),
    ("max", mx.int32, [3, -5, 1, 1, 0, 2], [0, 4, 1, 100], False, False, None, False, True),
    ("sum", mx.int64, [0, 1, 2, 3], [5, 0, 4], False, True, None, False, True),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole-bags", "split-bags"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_adversarial_bag_inputs(case, split, monkeypatch):
    if split:  # every bag over several threadgroups, then bag_combine
        monkeypatch.setattr(metal_ops, "SPLIT_POSITIONS", 1)
    mode, idt, ind, off, ilo, with_psw, max_norm, sgf, det = case
    rng = np.random.default_rng(0)
    ind = mx.array(np.array(ind, dtype=np.int64)).astype(idt)
    off = mx.array(np.array(off, dtype=np.int64))
    B = off.size - int(ilo)
    w = mx.array(rng.standard_normal((V, D)).astype(np.float32))
    psw = mx.array(rng.standard_normal(ind.size).astype(np.float32)) if with_psw else None
    cot = mx.array(rng.standard_normal((B, D)).astype(np.float32))
    spec = BagSpec(mode, B, None, ilo, None, max_norm, 2.0, sgf, det)
    got = _values_and_grads(lambda w_, p_: metal_ops.embedding_bag(w_, ind, off, p_, spec), w, psw, cot)
    want = _values_and_grads(lambda w_, p_: reference.embedding_bag(w_, ind, off, p_, spec), w, psw, cot)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-5, atol=1e-5, equal_nan=True)
    assert np.isnan(np.array(got[0])).any()  # every case poisons at least one bag


@pytest.mark.parametrize("deterministic", [False, True])
def test_adversarial_embedding(deterministic):
    ind = mx.array(np.array([[0, -1, 6], [2**31 - 1, 3, 3]], dtype=np.int64)).astype(mx.int32)
    w = mx.array(np.random.default_rng(1).standard_normal((V, D)).astype(np.float32))
    spec = EmbSpec(3, 1.0, math.inf, True, deterministic)
    cot = mx.ones((2, 3, D))
    got = _values_and_grads(lambda w_, p_: metal_ops.embedding(w_, ind, spec), w, None, cot)
    want = _values_and_grads(lambda w_, p_: reference.embedding(w_, ind, spec), w, None, cot)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-5, atol=1e-5, equal_nan=True)
