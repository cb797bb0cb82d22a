"""Kernels that must fail under the emulator, with an error that names them.

What Metal's compiler rejects, clang's message with line numbers, too much
threadgroup memory, faults (wild writes, division by zero, stack overflow) and
endless loops: each raises in Python, and the process goes on.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from emulator.harness import run_kernel
from mlx_embag.emulator import runtime

REJECTED = {
    "double": ("double d = x[0]; out[0] = d;", "__metal_has_no_double_type"),
    "std": ("out[0] = std::max(x[0], 1.0f);", "std"),
    "printf": ('printf("%f", x[0]); out[0] = 0;', "printf"),
    "include": ("out[0] = 0;", "file not found"),
    "new": ("float* p = new float[3]; out[0] = p[0];", "new"),
    "throw": ("if (x[0] > 0) throw 1; out[0] = 0;", "exceptions"),
    "atomic_half": (
        "atomic_fetch_add_explicit((device atomic<half>*)out, half(1), memory_order_relaxed);",
        "Metal atomics exist only for",
    ),
    # Metal has no 64-bit atomic_fetch_* (only void atomic_min/max_explicit on atomic_ulong, recent GPUs).
    "atomic_long_add": (
        "atomic_fetch_add_explicit((device atomic<long>*)out, 1l, memory_order_relaxed);",
        "Metal has no 64-bit atomic_fetch_add_explicit",
    ),
    "atomic_ulong_fetch_max": (
        "atomic_fetch_max_explicit((device atomic_ulong*)out, 1ul, memory_order_relaxed);",
        "Metal has no 64-bit atomic_fetch_max_explicit",
    ),
    "atomic_ulong_or": (
        "atomic_fetch_or_explicit((device atomic_ulong*)out, 1ul, memory_order_relaxed);",
        "Metal has no 64-bit atomic_fetch_or_explicit",
    ),
    "constant_to_device": ("out[0] = f(idx);", "address space"),
    "implicit_vector_conversion": (
        "int4 a = int4(1); uint4 b = a; out[0] = float(b.x);",
        "cannot initialize",
    ),
}


@pytest.mark.parametrize("what", sorted(REJECTED))
def test_what_metal_rejects_does_not_compile(what):
    body, pattern = REJECTED[what]
    header = "#include <vector>\n" if what == "include" else ""
    if what == "constant_to_device":
        header = "float f(const device float* p) { return p[0]; }\n"
    with pytest.raises(RuntimeError) as info:
        run_kernel(
            f"reject_{what}",
            [("x", np.zeros(8, np.float32)), ("idx", np.zeros(3, np.float32))],
            [("out", (1,), "float")],
            "  " + body + "\n  (void)thread_position_in_grid;",
            header=header,
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
        )
    msg = str(info.value)
    assert f"kernel `reject_{what}`" in msg and "compilation failed" in msg
    assert pattern in msg
    assert re.search(r"^ *1: ", msg, re.M)  # the numbered generated source follows clang's message


def test_compile_error_reports_clang_message_with_line_numbers():
    with pytest.raises(RuntimeError) as info:
        run_kernel(
            "typo",
            [("x", np.zeros(8, np.float32))],
            [("out", (1,), "float")],
            "  out[0] = x[0] +* ;\n  (void)thread_position_in_grid;",
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
        )
    msg = str(info.value)
    assert "kernel.metal:5:20: error: expected expression" in msg
    assert "\n5:   out[0] = x[0] +* ;" in msg


def test_threadgroup_memory_over_32kb_is_an_error():
    src = """
  threadgroup float big[8192];
  threadgroup float more[4];
  big[thread_index_in_threadgroup] = 1.0f;
  more[0] = 2.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[0] = big[0] + more[0];
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `tg_big`.*exceeds the 32 KB"):
        run_kernel(
            "tg_big",
            [("x", np.zeros(8, np.float32))],
            [("out", (1,), "float")],
            src,
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
        )


FAULTS = {
    "wild_write": ("  out[thread_position_in_grid.x + (1ul << 42)] = 1.0f;", "segmentation fault"),
    "div_zero": ("  out[thread_position_in_grid.x] = float(100 / int(x[0]));", "integer division by zero"),
    "recursion": (
        "  out[thread_position_in_grid.x] = f(int(thread_position_in_grid.x) + 1000000);\n"
        "  threadgroup_barrier(mem_flags::mem_none);",
        "overflowed its 64 KB stack",
    ),
}


@pytest.mark.parametrize("what", sorted(FAULTS))
def test_faults_in_kernel_code_raise_instead_of_killing_python(what):
    body, pattern = FAULTS[what]
    header = "float f(int n) { volatile float pad[64]; pad[n % 64] = 1.0f; return n <= 0 ? 0.0f : pad[3] + f(n - 1); }\n"
    with pytest.raises(RuntimeError, match=rf"(?s)kernel `fault_{what}`.*{pattern}"):
        run_kernel(
            f"fault_{what}",
            [("x", np.zeros(8, np.float32))],
            [("out", (8,), "float")],
            body,
            header=header,
            grid=(8, 1, 1),
            threadgroup=(8, 1, 1),
        )
    # The process is intact and the next launch works.
    (out,) = run_kernel(
        "after_fault",
        [("x", np.zeros(8, np.float32))],
        [("out", (8,), "float")],
        "  out[thread_position_in_grid.x] = 2.0f;",
        grid=(8, 1, 1),
        threadgroup=(8, 1, 1),
    )
    np.testing.assert_array_equal(out, 2.0)


def test_endless_kernel_is_stopped_by_the_watchdog():
    src = """
  // Spinning on a flag no thread will ever set (a GPU would hang or be reset too).
  device atomic_uint* flag = (device atomic_uint*)out;
  while (atomic_load_explicit(&flag[0], memory_order_relaxed) != 7u) {}
  out[thread_position_in_grid.x] = x[0];
"""
    import time

    from emulator.harness import generate

    kname, text = generate("endless", [("x", np.zeros(8, np.float32), "float")], [("out", "float")], src)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)kernel `endless`.*still running after 1 s"):
        runtime.launch(
            display_name="endless",
            kernel_name=kname,
            kernel_source=text,
            buffers=[np.zeros(8, np.float32), np.zeros(64, np.float32)],
            grid=(64, 1, 1),
            threadgroup=(32, 1, 1),
            timeout=1.0,
            workers=2,
        )
    assert time.monotonic() - start < 30
