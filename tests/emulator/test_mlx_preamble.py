"""MLX's preamble index helpers (elem_to_loc & co., LoopedElemToLoc) give the
offsets NumPy gives for the same strided view."""

import numpy as np

from emulator.harness import generate
from mlx_embag.emulator import runtime

SRC = """
  uint3 p = thread_position_in_grid;
  uint3 n = threads_per_grid;
  uint i = (p.z * n.y + p.y) * n.x + p.x;
  int64_t g = elem_to_loc(p, x_shape, x_strides, x_ndim);
  vec<int64_t, 2> two = elem_to_loc_2_nd(p, x_shape, x_strides, y_strides, x_ndim);
  vec<int64_t, 3> three = elem_to_loc_3_nd(p, x_shape, x_strides, y_strides, x_strides, x_ndim);
  out[5 * i + 0] = g;
  out[5 * i + 1] = two.y;
  out[5 * i + 2] = three.x + three.z - three.y;
  out[5 * i + 3] = elem_to_loc(int64_t(i), x_shape, x_strides, x_ndim);
  // Walk the leading two axes from element 0 in steps of 1 and 3.
  LoopedElemToLoc<2, int64_t> one_by_one(2), three_by_three(2);
  for (uint s = 0; s < i; ++s) one_by_one.next(x_shape, x_strides);
  for (uint s = 0; s < i / 3; ++s) three_by_three.next(3, x_shape, x_strides);
  out[5 * i + 4] = one_by_one.location() * 1000 + three_by_three.location();
"""


def _strides(a):
    return np.array([s // a.itemsize for s in a.strides], np.int64)


def test_index_helpers_match_numpy_offsets():
    base = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    x = base.transpose(3, 1, 0, 2)  # (5, 3, 2, 4), strided
    y = np.ascontiguousarray(x)
    shape = np.array(x.shape, np.int32)
    kname, text = generate(
        "preamble_idx", [("x", base, "float"), ("y", y, "float")], [("out", "int64_t")], SRC
    )
    n = x.size
    out = np.full(5 * n, -7, np.int64)
    runtime.launch(
        display_name="preamble_idx",
        kernel_name=kname,
        kernel_source=text,
        # MLX passes y's strides alone: the source names neither y_shape nor y_ndim.
        buffers=[
            base.reshape(-1),
            shape,
            _strides(x),
            np.array([4], np.int32),
            y.reshape(-1),
            _strides(y),
            out,
        ],
        grid=(4, 2, 15),
        threadgroup=(4, 2, 1),
    )
    out = out.reshape(n, 5)
    offset = x.reshape(-1).astype(np.int64)  # base holds its own offsets
    np.testing.assert_array_equal(out[:, 0], offset)
    np.testing.assert_array_equal(out[:, 1], np.arange(n))
    np.testing.assert_array_equal(out[:, 2], 2 * offset - np.arange(n))
    np.testing.assert_array_equal(out[:, 3], offset)
    # The leading axes (5, 3): step i is element (i // 3, i % 3); axis 0 runs on past
    # its extent of 5 rather than wrapping, as MLX's iterator does.
    s0, s1 = _strides(x)[:2]
    i = np.arange(n)
    looped = (i // 3) * s0 + (i % 3) * s1
    np.testing.assert_array_equal(out[:, 4], looped * 1000 + looped[i // 3 * 3])
