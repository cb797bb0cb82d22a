"""From MLX's source text to C++: the rewrites, and MLX's own generated text through the runtime."""

from __future__ import annotations

import re

import numpy as np

from mlx_embag.emulator import runtime, translate


def test_runs_the_exact_source_mlx_generates():
    """The runtime parses MLX 0.32's real output: template with int and bool arguments, shape/strides/ndim
    buffers, 0-d `constant T&` inputs, atomic outputs and the host_name instantiation line."""
    import mlx.core as mx

    src = """
  uint i = thread_position_in_grid.x;
  if (i >= uint(n)) return;
  int64_t loc = elem_to_loc(int64_t(i), w_shape, w_strides, w_ndim);
  T v = w[loc] * T(s);
  if (B) v = v + T(N);
  atomic_fetch_add_explicit(&acc[0], float(v), memory_order_relaxed);
  atomic_fetch_add_explicit(&cnt[0], 1, memory_order_relaxed);
"""
    from emulator.harness import mlx_generated_source

    text = mlx_generated_source(
        dict(
            name="probe",
            input_names=["w", "s", "n"],
            output_names=["acc", "cnt"],
            source=src,
            atomic_outputs=True,
        ),
        dict(
            template=[("T", mx.float32), ("N", 3), ("B", True)],
            grid=(40, 1, 1),
            threadgroup=(32, 1, 1),
            output_shapes=[(1,), (1,)],
            output_dtypes=[mx.float32, mx.int32],
            init_value=0,
        ),
        [mx.zeros((5, 8)), mx.array(0.5), mx.array(37)],
    )
    kname = re.search(r"\[\[kernel\]\] void (\w+)\(", text).group(1)
    assert kname == "custom_kernel_probe__float_3_1_float_floats_int32_ts_float_int32_t"
    w = np.arange(40, dtype=np.float32).reshape(5, 8)
    acc, cnt = np.zeros(1, np.float32), np.zeros(1, np.int32)
    runtime.launch(
        display_name="probe",
        kernel_name=kname,
        kernel_source=text,
        buffers=[
            w,
            np.array(w.shape, np.int32),
            np.array([8, 1], np.int64),
            np.array([2], np.int32),
            np.array([0.5], np.float32),
            np.array([37], np.int32),
            acc,
            cnt,
        ],
        grid=(40, 1, 1),
        threadgroup=(32, 1, 1),
        seed=1,
    )
    assert cnt[0] == 37
    assert acc[0] == (w.reshape(-1)[:37] * 0.5 + 3).sum()


def test_source_rewrites_keep_line_numbers_and_leave_pointers_alone():
    body = (
        "  threadgroup float a[4], b[2][3];\n"
        "  threadgroup float* p = a;   // threadgroup float c[9]; (a comment)\n"
        "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "  threadgroup T\n    multi[N * 2];\n"
        "  if (x) return;\n"
        "  half h = 1.5h + 2h; float f = 0x1fh; // 3h\n"
    )
    out = translate.rewrite_threadgroup_declarations(body)
    assert out.count("\n") == body.count("\n")
    assert "threadgroup float (&a)[4] = *(threadgroup float (*)[4])__emu_tg_alloc(0," in out
    assert "threadgroup float (&b)[2][3] = *(threadgroup float (*)[2][3])__emu_tg_alloc(1," in out
    assert "threadgroup float* p = a;   // threadgroup float c[9]; (a comment)" in out
    assert "threadgroup T (&multi)[N*2] = *(threadgroup T (*)[N*2])__emu_tg_alloc(2," in out
    assert "threadgroup_barrier(mem_flags::mem_threadgroup);" in out
    assert (
        translate.mark_returns("  if (x) return;\n  return ;")
        == "  if (x) return __emu_return();\n  return __emu_return() ;"
    )
    assert (
        translate.half_literals("half h = 1.5h + 2h; float f = 0x1fh; // 3h")
        == "half h = ((half)1.5) + ((half)2); float f = 0x1fh; // 3h"
    )
    assert (
        translate.strip_attributes("  const device float* a [[buffer(0)]],")
        == "  const device float* a " + " " * len("[[buffer(0)]]") + ","
    )


def test_oracle_kernel_runs_mlx_docs_example_in_every_float_dtype():
    """The docs' `myexp` kernel through MLX's own generator and the runtime (bfloat16 as uint16 included)."""
    import mlx.core as mx

    from emulator.harness import OracleKernel

    src = """
        uint elem = thread_position_in_grid.x;
        T tmp = inp[elem];
        out[elem] = metal::exp(tmp);
        flag[elem] = flag[elem] + 1;
    """
    k = OracleKernel(name="myexp", input_names=["inp"], output_names=["out", "flag"], source=src)
    for dt in (mx.float32, mx.float16, mx.bfloat16):
        a = mx.linspace(-2, 2, 64).astype(dt).reshape(4, 16)
        out, flag = k(
            inputs=[a],
            template=[("T", dt)],
            grid=(a.size, 1, 1),
            threadgroup=(256, 1, 1),
            output_shapes=[a.shape, a.shape],
            output_dtypes=[dt, mx.int32],
            init_value=-1,
            seed=1,
        )
        ref = np.exp(np.array(a.astype(mx.float32)))
        tol = {mx.float32: 1e-6, mx.float16: 1e-3, mx.bfloat16: 1e-2}[dt]
        np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, rtol=tol)
        assert out.dtype == dt
        np.testing.assert_array_equal(np.array(flag), 0)  # int32 init_value -1, plus one


def test_oracle_kernel_outputs_without_init_value_start_as_garbage():
    import mlx.core as mx

    from emulator.harness import OracleKernel

    k = OracleKernel(
        name="evens",
        input_names=["x"],
        output_names=["out"],
        source="  uint i = thread_position_in_grid.x;\n  if (i % 2 == 0) out[i] = x[i];",
    )
    x = mx.arange(10, dtype=mx.float32)
    (out,) = k(
        inputs=[x], grid=(10, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(10,)], output_dtypes=[mx.float32]
    )
    out = np.array(out)
    np.testing.assert_array_equal(out[::2], np.arange(0, 10, 2))
    assert np.isnan(out[1::2]).all()
