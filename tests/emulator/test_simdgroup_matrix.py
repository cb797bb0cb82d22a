"""``<metal_simdgroup_matrix>``: 8x8 matrices spread over a SIMD-group (issue 10, gap 2).

The lane-to-element mapping is checked against MLX's layout, written out here
from ``mlx/backend/metal/kernels/steel/gemm/mma.h`` (``BaseMMAFrag::get_coord``):
``qid = lane / 4; row = (qid & 4) + (lane / 2) % 4; col = (qid & 2) * 2 + (lane % 2) * 2``,
two consecutive elements (row, col), (row, col + 1) per lane.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from emulator.harness import run_kernel


def mlx_coord(lane: int) -> tuple[int, int]:
    qid = lane // 4
    return (qid & 4) + (lane // 2) % 4, (qid & 2) * 2 + (lane % 2) * 2


def test_mlx_layout_covers_the_matrix_once():
    cells = {(r, c + j) for r, c in map(mlx_coord, range(32)) for j in (0, 1)}
    assert cells == {(r, c) for r in range(8) for c in range(8)}


def _one_simdgroup(name, src, x, out_n, out_type="float", x_type="float", template=None):
    (out,) = run_kernel(
        name,
        [("x", x, x_type)],
        [("out", (out_n,), out_type)],
        src,
        grid=(32, 1, 1),
        threadgroup=(32, 1, 1),
        template=template,
    )
    return out


def test_thread_elements_follow_mlx_layout_on_load_and_store():
    x = np.arange(64, dtype=np.float32)
    src = """
  uint lane = thread_index_in_simdgroup;
  simdgroup_float8x8 m;
  simdgroup_load(m, x);
  auto e = m.thread_elements();
  out[lane * 2] = e[0];
  out[lane * 2 + 1] = e[1];
  simdgroup_float8x8 w;
  w.thread_elements()[0] = float(1000 + lane * 2);
  w.thread_elements()[1] = float(1000 + lane * 2 + 1);
  simdgroup_store(w, out + 64);
"""
    out = _one_simdgroup("sgm_layout", src, x, 128)
    loaded, stored = out[:64].reshape(32, 2), out[64:].reshape(8, 8)
    for lane in range(32):
        r, c = mlx_coord(lane)
        np.testing.assert_array_equal(loaded[lane], [r * 8 + c, r * 8 + c + 1])
        np.testing.assert_array_equal(stored[r, c : c + 2], [1000 + 2 * lane, 1001 + 2 * lane])


@pytest.mark.parametrize("t", ["float", "float16_t", "bfloat16_t"])
def test_multiply_accumulate_matches_numpy(t):
    rng = np.random.default_rng(3)
    a, b, c = (rng.integers(-4, 5, (8, 8)).astype(np.float32) / 4 for _ in range(3))
    x = mx.array(np.concatenate([a.ravel(), b.ravel(), c.ravel()]))
    dtype = {"float": mx.float32, "float16_t": mx.float16, "bfloat16_t": mx.bfloat16}[t]
    xin = np.array(x.astype(dtype).view(mx.uint16)) if t == "bfloat16_t" else np.array(x.astype(dtype))
    src = """
  simdgroup_matrix<T, 8, 8> A, B, C, D, E;
  simdgroup_load(A, x);
  simdgroup_load(B, x + 64);
  simdgroup_load(C, x, 8, ulong2(0, 16));         // origin (column 0, row 16): the third matrix
  simdgroup_multiply_accumulate(D, A, B, C);
  simdgroup_store(D, out);
  simdgroup_multiply(E, A, B);
  simdgroup_store(E, out + 64, 16, ulong2(8, 0));  // the right half of a 16-wide 8-row output
  simdgroup_load(A, x, 8, ulong2(0, 0), true);     // A transposed
  simdgroup_multiply(E, A, make_filled_simdgroup_matrix<T, 8, 8>(T(1)));
  simdgroup_store(E, out + 192, 8, ulong2(0, 0), true);
  simdgroup_matrix<T, 8, 8> I(T(2));               // 2 * identity
  simdgroup_multiply(E, I, B);
  simdgroup_store(E, out + 256);
"""
    out = _one_simdgroup(f"sgm_mma_{t}", src, xin, 320, t, t, template=[("T", t)])
    if t == "bfloat16_t":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    out = out.astype(np.float32)
    np.testing.assert_array_equal(out[:64].reshape(8, 8), a @ b + c)
    np.testing.assert_array_equal(out[64:192].reshape(8, 16)[:, 8:], a @ b)
    np.testing.assert_array_equal(out[192:256].reshape(8, 8), (a.T @ np.ones((8, 8), np.float32)).T)
    np.testing.assert_array_equal(out[256:].reshape(8, 8), 2 * b)


def test_a_lane_skipping_a_matrix_operation_is_a_divergence_error():
    src = """
  simdgroup_float8x8 m;
  if (thread_index_in_simdgroup != 5) simdgroup_load(m, x);
  simdgroup_store(m, out);
"""
    with pytest.raises(RuntimeError, match="sgm_diverge"):
        _one_simdgroup("sgm_diverge", src, np.zeros(64, np.float32), 64)


def test_matrix_of_int_is_rejected():
    with pytest.raises(RuntimeError, match="float, half or bfloat"):
        _one_simdgroup(
            "sgm_int",
            "  simdgroup_matrix<int, 8, 8> m; simdgroup_load(m, (device int*)out);",
            np.zeros(64, np.float32),
            64,
        )
