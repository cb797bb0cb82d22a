"""Max mode with NaN in the table: NaN ranks above every number, on every path.

``mode="max"`` takes the maximum of each bag's column, and a maximum that
meets NaN is NaN (``torch.max``, ``np.max`` and ``mx.max`` agree); its
gradient goes to the earliest NaN position, where ``np.argmax`` points.
PyTorch 2.13's ``embedding_bag`` instead folds with ``>`` from the bag's first
entry, so a NaN is kept only when it comes first and is skipped anywhere else:
a test below pins that divergence.
"""

import math

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding_bag
from support import emulated

import mlx_embag as meb

NAN = math.nan
W = np.array(
    [
        [0.5, 1.0, -1.0],
        [NAN, 5.0, 0.0],
        [3.0, 3.0, 3.0],
        [2.0, NAN, NAN],
        [1.0, 9.0, -2.0],
        [-1.0, -1.0, 4.0],
    ],
    np.float32,
)


def _numpy(bags, pad, cot, table=W):
    """Output and weight gradient from tests/oracle.py, whose max mode is np.argmax over
    each bag's non-padding rows (np.max's value), in the table's float32."""
    offsets = np.cumsum([0] + [len(b) for b in bags[:-1]])
    out, grad, _ = oracle_embedding_bag(
        [r for b in bags for r in b], table, offsets, mode="max", padding_idx=pad, cotangent=cot
    )
    return out.astype(np.float32), grad.astype(np.float32)


def _run(backend, x, offsets, pad, cot, dtype=mx.float32, table=W):
    def f(w):
        return meb.embedding_bag(x, w, offsets, mode="max", padding_idx=pad, backend=backend)

    def go():
        w = mx.array(table).astype(dtype)
        out, vjp = mx.vjp(f, [w], [mx.array(cot)])
        return np.array(out[0].astype(mx.float32)), np.array(vjp[0].astype(mx.float32))

    if backend == "metal":
        with emulated(seed=5):
            return go()
    return go()


CASES = {
    "nan later in the bag": ([[0, 1, 2], [3, 4, 3, 1], [5, 2]], None),
    "nan first": ([[1, 0], [3, 2, 4]], None),
    "padding hides a nan row": ([[0, 1, 2], [1, 1], [3, 1]], 1),
    # One long bag (split over threads and threadgroups by the Metal path) with
    # the first NaN deep inside, after an equal NaN-free maximum and before another NaN.
    "long bag": ([[2] * 300 + [4] + [1] * 50 + [3] * 40 + [0] * 400, [5]], None),
}


@pytest.mark.parametrize("backend", ["reference", "metal"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_nan_is_the_maximum_and_takes_the_gradient(backend, case):
    bags, pad = CASES[case]
    cot = np.random.default_rng(3).standard_normal((len(bags), 3)).astype(np.float32)
    want_out, want_grad = _numpy(bags, pad, cot)
    flat = mx.array([r for bag in bags for r in bag])
    offsets = mx.array(np.cumsum([0] + [len(b) for b in bags[:-1]]))
    out, grad = _run(backend, flat, offsets, pad, cot)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(grad, want_grad)
    if len({len(b) for b in bags}) == 1:  # the same bags as 2-D input
        out2, grad2 = _run(backend, mx.array(bags), None, pad, cot)
        np.testing.assert_array_equal(out2, want_out)
        np.testing.assert_array_equal(grad2, want_grad)


@pytest.mark.parametrize("backend", ["reference", "metal"])
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_nan_in_half_tables(backend, dtype):
    # Every number in W is exact in float16 and bfloat16.
    bags = [[0, 1, 2], [4, 3, 5]]
    cot = np.ones((2, 3), np.float32)
    want_out, want_grad = _numpy(bags, None, cot)
    out, grad = _run(backend, mx.array(bags), None, None, cot, dtype)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(grad, want_grad)


def test_pytorch_skips_a_nan_that_is_not_first():
    import torch  # the test extra pins it: a missing torch must fail, not skip
    import torch.nn.functional as F

    x, off = torch.tensor([0, 1, 2]), torch.tensor([0])
    got = F.embedding_bag(x, torch.from_numpy(W), off, mode="max").numpy()
    np.testing.assert_array_equal(got, [[3.0, 5.0, 3.0]])  # row 1's NaN in column 0 is skipped
    ours = np.array(meb.embedding_bag(mx.array([0, 1, 2]), mx.array(W), mx.array([0]), mode="max"))
    assert np.isnan(ours[0, 0]) and ours[0, 1] == 5.0


@pytest.mark.parametrize("backend", ["reference", "metal"])
def test_negative_nan_bit_patterns_are_nan_too(backend):
    # x86's default NaN (0 * inf) has its sign bit set; it must still rank above +inf.
    table = W.copy()
    table[4, 0] = np.array([0xFFC00000], np.uint32).view(np.float32)[0]
    table[5, 0] = np.inf
    bags = [[5, 4, 0], [0, 5, 2]]
    cot = np.ones((2, 3), np.float32)
    want_out, want_grad = _numpy(bags, None, cot, table)
    flat, offsets = mx.array([r for b in bags for r in b]), mx.array([0, 3])
    out, grad = _run(backend, flat, offsets, None, cot, table=table)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(grad, want_grad)
