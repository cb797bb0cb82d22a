"""Adversarial indices and offsets under the emulator's AddressSanitizer: no out-of-bounds access.

Indices negative, equal to V, 2**31 - 1 and (int64) 2**40; offsets negative,
decreasing, past N and near the int64 limit. Every kernel runs (forward,
max_norm scaling, atomic and deterministic weight gradients, max mode,
per_sample_weights gradient), and the results still follow the poison rule
(compared with the reference path). Needs the emulator: on a Mac this file
checks the same values on the GPU without the sanitizer.

``kernels.device_input`` pads every input under 8 elements up to 8, so in
``CASES`` (3-6 offsets, 4-8 indices) a read just past the end of indices,
offsets, per_sample_weights or the (B,) / (V,) side arrays lands in padding
and ASan cannot see it. ``UNPADDED_CASES`` repeat the same adversarial values
with every one of those inputs at 8 elements or more (9-11 bags, 20-170
positions, V = 10), and the long ones split bags over 2 threads along y and
(split-bags) over up to 9 threadgroups, so every kernel runs on exact-size
buffers.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_embag import launchers, metal_ops, reference
from mlx_embag._spec import BagSpec, EmbSpec

METAL_SEED, METAL_SANITIZE = 5, True
pytestmark = pytest.mark.usefixtures("metal")


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
    (
        "mean",
        mx.int64,
        [1, 2**40, 3, -(2**40), 4, 0, 5],
        [0, 2, 2, BIG, -BIG, 4],
        False,
        False,
        None,
        True,
        True,
    ),
    (
        "max",
        mx.int64,
        [2, 2, 6, 1, 0, 2**31 - 1, 4],
        [0, 3, 2, 9, 2**63 - 1],
        False,
        False,
        0.5,
        False,
        False,
    ),
    ("max", mx.int32, [3, -5, 1, 1, 0, 2], [0, 4, 1, 100], False, False, None, False, True),
    ("sum", mx.int64, [0, 1, 2, 3], [5, 0, 4], False, True, None, False, True),
]


def _check_bag_case(case, V, D, split, monkeypatch):
    if split:  # every bag over several threadgroups, then bag_combine
        monkeypatch.setattr(launchers, "SPLIT_POSITIONS", 1)
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


@pytest.mark.parametrize("split", [False, True], ids=["whole-bags", "split-bags"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_adversarial_bag_inputs(case, split, monkeypatch):
    _check_bag_case(case, V, D, split, monkeypatch)


VL = 10  # over 8 rows, so the (V,) frequency input is not padded either
I31, I63 = 2**31 - 1, 2**63 - 1


def _rows(n, bad=()):
    """``n`` valid rows of a VL-row table, with ``bad`` = {position: value} put in."""
    ind = [(3 * i + 1) % VL for i in range(n)]
    for i, v in dict(bad).items():
        ind[i] = v
    return ind


UNPADDED_CASES = [
    # (mode, index dtype, indices, offsets, include_last_offset, psw, max_norm, sgf, deterministic), D.
    # Without include_last_offset the last bag ends at N, not at an offset: the cases that cover a
    # backward kernel that way keep that bag valid, so the kernel walks it (a read of offsets[B] shows).
    (
        (
            "sum",
            mx.int32,
            _rows(24, {4: -1, 11: VL, 14: I31}),
            [0, 3, 5, 5, 9, 12, 14, 17, 19, 22, 24],
            True,
            True,
            1.0,
            True,
            False,
        ),
        5,
    ),
    (
        (
            "mean",
            mx.int64,
            _rows(22, {1: 2**40, 6: -(2**40), 16: VL}),
            [0, 2, 2, 5, -BIG, 9, 12, 12, 15, 18, 20],
            False,
            False,
            None,
            True,
            True,
        ),
        4,
    ),
    (
        (
            "max",
            mx.int64,
            _rows(21, {2: VL, 5: I31, 8: I31}),
            [0, 3, 2, 6, 9, 12, 12, 15, 18, I63],
            False,
            False,
            0.5,
            False,
            False,
        ),
        5,
    ),
    # B * D > 7 * 32: det_write's partial sums (one per 32 (bag, column) entries) are not padded either.
    (
        (
            "max",
            mx.int32,
            _rows(20, {1: -5, 13: VL}),
            [0, 4, 1, 6, 9, 12, 14, 17, 100],
            False,
            False,
            None,
            False,
            True,
        ),
        28,
    ),
    (
        (
            "sum",
            mx.int64,
            _rows(24, {3: 2**40, 9: -1}),
            [0, 2, 4, 4, 7, 10, 13, 16, 18, 20, 22],
            False,
            True,
            2.0,
            True,
            True,
        ),
        4,
    ),
    (
        (
            "mean",
            mx.int32,
            _rows(20, {0: VL}),
            [2, 4, 4, 7, 9, 11, 13, 15, 17, 20],
            True,
            False,
            None,
            True,
            False,
        ),
        5,
    ),
    # Long bags: two threads along y per bag; split-bags gives 4-9 chunks per bag (bag_combine).
    (
        (
            "sum",
            mx.int64,
            _rows(160, {5: VL, 50: -1}),
            [0, 30, 30, 64, 70, 100, 110, 130, 150, 160],
            True,
            True,
            1.0,
            True,
            True,
        ),
        5,
    ),
    (
        (
            "max",
            mx.int32,
            _rows(170, {20: I31}),
            [0, 40, 40, 90, 85, 100, 120, 130, 150, 160],
            False,
            False,
            0.5,
            False,
            False,
        ),
        4,
    ),
    (
        (
            "mean",
            mx.int64,
            _rows(40, {2: VL}),
            [0, 4, 19, 19, 22, 25, 30, 34, 37],
            False,
            False,
            None,
            True,
            False,
        ),
        5,
    ),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole-bags", "split-bags"])
@pytest.mark.parametrize("case", UNPADDED_CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(UNPADDED_CASES)])
def test_adversarial_bag_inputs_unpadded(case, split, monkeypatch):
    bag_case, d = case
    ind, off, ilo = bag_case[2:5]
    assert min(len(ind), len(off) - ilo) >= 8  # no input padded by device_input
    _check_bag_case(bag_case, VL, d, split, monkeypatch)


EMB_CASES = {
    "padded": (V, [[0, -1, 6], [2**31 - 1, 3, 3]]),
    "unpadded": (VL, [[0, -1, 10, 9], [2**31 - 1, 3, 3, 8], [9, 9, -(2**31), 1]]),
}


@pytest.mark.parametrize("size", sorted(EMB_CASES))
@pytest.mark.parametrize("deterministic", [False, True])
def test_adversarial_embedding(deterministic, size):
    rows, ind = EMB_CASES[size]
    ind = mx.array(np.array(ind, dtype=np.int64)).astype(mx.int32)
    w = mx.array(np.random.default_rng(1).standard_normal((rows, D)).astype(np.float32))
    spec = EmbSpec(3, 1.0, math.inf, True, deterministic)
    cot = mx.ones((*ind.shape, D))
    got = _values_and_grads(lambda w_, p_: metal_ops.embedding(w_, ind, spec), w, None, cot)
    want = _values_and_grads(lambda w_, p_: reference.embedding(w_, ind, spec), w, None, cot)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-5, atol=1e-5, equal_nan=True)
