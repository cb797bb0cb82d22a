"""The emulator's sanitizer mode: AddressSanitizer builds run in a subprocess.

An out-of-bounds device or threadgroup access must fail the call with a
Python exception naming the kernel; correct kernels (barriers and SIMD
functions included, which switch fiber stacks under ASan) must still give
exact results.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator.harness import run_kernel

SHIFT_READ = """
  uint i = thread_position_in_grid.x;
  out[i] = x[i + shift] * 2.0f;
"""


def test_out_of_bounds_device_read_is_caught():
    x = np.arange(10, dtype=np.float32)
    with pytest.raises(
        RuntimeError, match=r"(?s)kernel `oob_read`.*AddressSanitizer.*heap-buffer-overflow"
    ) as info:
        run_kernel(
            "oob_read",
            [("x", x), ("shift", np.int32(1))],
            [("out", (10,), "float")],
            SHIFT_READ,
            grid=(10, 1, 1),
            threadgroup=(4, 1, 1),
            sanitize=True,
        )
    msg = str(info.value)
    assert "READ of size 4" in msg
    assert "kernel.metal" in msg  # the report points into the kernel source


def test_same_kernel_in_bounds_passes_with_exact_results():
    x = np.arange(10, dtype=np.float32)
    (out,) = run_kernel(
        "oob_read",
        [("x", x), ("shift", np.int32(1))],
        [("out", (9,), "float")],
        SHIFT_READ,
        grid=(9, 1, 1),
        threadgroup=(4, 1, 1),
        sanitize=True,
    )
    np.testing.assert_array_equal(out, x[1:] * 2)


def test_out_of_bounds_output_write_is_caught():
    src = """
  uint i = thread_position_in_grid.x;
  out[i + 1] = float(i);
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `oob_write`.*WRITE of size 4"):
        run_kernel(
            "oob_write",
            [("x", np.zeros(8, np.float32))],
            [("out", (16,), "float")],
            src,
            grid=(16, 1, 1),
            threadgroup=(16, 1, 1),
            sanitize=True,
        )


TG_OOB = """
  threadgroup float buf[32];
  threadgroup float other[32];
  uint t = thread_index_in_threadgroup;
  buf[t] = x[thread_position_in_grid.x];
  other[t] = 0.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[thread_position_in_grid.x] = buf[t + reach] + float(simd_sum(1));
"""


def test_out_of_bounds_threadgroup_access_is_caught():
    x = np.arange(64, dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"(?s)kernel `tg_oob`.*AddressSanitizer"):
        run_kernel(
            "tg_oob",
            [("x", x), ("reach", np.uint32(1))],
            [("out", (64,), "float")],
            TG_OOB,
            grid=(64, 1, 1),
            threadgroup=(32, 1, 1),
            sanitize=True,
        )


def test_barriers_and_simd_under_the_sanitizer():
    x = np.arange(64, dtype=np.float32)
    (out,) = run_kernel(
        "tg_oob",
        [("x", x), ("reach", np.uint32(0))],
        [("out", (64,), "float")],
        TG_OOB,
        grid=(64, 1, 1),
        threadgroup=(32, 1, 1),
        sanitize=True,
        seed=3,
    )
    np.testing.assert_array_equal(out, x + 32)


def test_runtime_errors_still_reported_under_the_sanitizer():
    src = """
  if (thread_index_in_threadgroup == 0) return;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[thread_position_in_grid.x] = 1.0f;
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `san_barrier`.*returned without reaching it"):
        run_kernel(
            "san_barrier",
            [("x", np.zeros(8, np.float32))],
            [("out", (8,), "float")],
            src,
            grid=(8, 1, 1),
            threadgroup=(8, 1, 1),
            sanitize=True,
        )


def test_address_space_errors_survive_sanitizer_mode():
    header = "float f(const device float* p) { return p[0]; }\n"
    with pytest.raises(RuntimeError, match=r"(?s)kernel `san_as`.*compilation failed.*address space"):
        run_kernel(
            "san_as",
            [("x", np.zeros(8, np.float32)), ("idx", np.zeros(3, np.float32))],
            [("out", (1,), "float")],
            "  out[0] = f(idx);\n  (void)thread_position_in_grid;",
            header=header,
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
            sanitize=True,
        )


def test_endless_kernel_is_stopped_under_the_sanitizer_too():
    from emulator.harness import generate
    from mlx_embag.emulator import runtime

    src = (
        "  device atomic_uint* flag = (device atomic_uint*)out;\n"
        "  while (atomic_load_explicit(&flag[0], memory_order_relaxed) != 7u) {}\n"
        "  out[thread_position_in_grid.x] = x[0];"
    )
    kname, text = generate("endless_asan", [("x", np.zeros(8, np.float32), "float")], [("out", "float")], src)
    with pytest.raises(RuntimeError, match=r"(?s)kernel `endless_asan`.*still running after 1 s"):
        runtime.launch(
            display_name="endless_asan",
            kernel_name=kname,
            kernel_source=text,
            buffers=[np.zeros(8, np.float32), np.zeros(8, np.float32)],
            grid=(8, 1, 1),
            threadgroup=(8, 1, 1),
            timeout=1.0,
            sanitize=True,
        )


def test_out_of_bounds_read_of_a_small_constant_input_is_caught():
    # 3 elements: MLX binds it as `const constant int32_t*`; index 3 is one past the end.
    src = "  uint i = thread_position_in_grid.x;\n  out[i] = float(idx[i + 1]);"
    idx = np.array([5, 6, 7], np.int32)
    with pytest.raises(RuntimeError, match=r"(?s)kernel `small_oob`.*heap-buffer-overflow.*READ of size 4"):
        run_kernel(
            "small_oob",
            [("idx", idx)],
            [("out", (3,), "float")],
            src,
            grid=(3, 1, 1),
            threadgroup=(32, 1, 1),
            sanitize=True,
        )
    (out,) = run_kernel(
        "small_oob",
        [("idx", idx)],
        [("out", (2,), "float")],
        src,
        grid=(2, 1, 1),
        threadgroup=(32, 1, 1),
        sanitize=True,
    )
    np.testing.assert_array_equal(out, [6, 7])
