"""Our own corpus for the emulator's fidelity (issue 10): for every rule, a
kernel valid MSL that must run here (with its values checked) and one Metal
rejects that must fail to compile here, naming the rule.

All kernels are written for this file.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from emulator.harness import run_kernel
from mlx_embag.emulator import metal_kernel

_X = np.arange(8, dtype=np.float32)


def _run(name, src, header="", out_type="float", n=8, x=_X, x_type="float", **kw):
    kw.setdefault("grid", (n, 1, 1))
    kw.setdefault("threadgroup", (n, 1, 1))
    (out,) = run_kernel(name, [("x", x, x_type)], [("out", (n,), out_type)], src, header=header, **kw)
    return out


def _rejected(name, src, header="", pattern="", **kw):
    with pytest.raises(RuntimeError, match=r"(?s)compilation failed.*" + pattern):
        _run(name, src, header, **kw)


# ---------------------------------------------------------------- 1. header glued to the signature
@pytest.mark.parametrize("tail", ["   ", "\t", "\n    ", "  \t  "])
def test_header_ending_in_blanks_runs(tail):
    header = "\n    inline float twice(float v) { return 2.0f * v; }" + tail
    out = _run("hdr_blank", "  uint i = thread_position_in_grid.x; out[i] = twice(x[i]);", header,
               template=[("T", "float")])
    np.testing.assert_array_equal(out, 2 * _X)
    out = _run("hdr_blank_nt", "  uint i = thread_position_in_grid.x; out[i] = twice(x[i]);", header)
    np.testing.assert_array_equal(out, 2 * _X)


def test_header_glued_to_a_declaration_is_rejected():
    # Without a newline the header's last token runs into `[[kernel]]`: Metal rejects that too.
    _rejected("hdr_glued", "  out[0] = x[0]; (void)thread_position_in_grid;", "inline float twice(float v) { return v; }"
              " int stray", pattern="error")


# ---------------------------------------------------------------- launch limits
def test_grid_entry_past_int32_is_a_type_error_not_a_wrap():
    k = metal_kernel("big_grid", ["x"], ["out"], "out[thread_position_in_grid.x] = x[0];")
    call = dict(inputs=[mx.zeros(8)], output_shapes=[(8,)], output_dtypes=[mx.float32], threadgroup=(1, 1, 1))
    for grid in [(2**32 + 5, 1, 1), (1, 2**31, 1), (4.0, 1, 1)]:
        with pytest.raises(TypeError, match="C int"):
            k(grid=grid, **call)
    with pytest.raises(TypeError, match="threadgroup"):
        k(grid=(8, 1, 1), **{**call, "threadgroup": (2**31, 1, 1)})
    assert k(grid=(np.int64(8), 1, 1), **call)[0].tolist() == [0.0] * 8  # MLX takes __index__ ints
