"""Our own corpus for the emulator's fidelity (issue 10): for every rule, a
kernel valid MSL that must run here (with its values checked) and one Metal
rejects that must fail to compile here, naming the rule.

All kernels are written for this file.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from emulator.harness import mx_dtype, run_kernel
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
    out = _run(
        "hdr_blank",
        "  uint i = thread_position_in_grid.x; out[i] = twice(x[i]);",
        header,
        template=[("T", "float")],
    )
    np.testing.assert_array_equal(out, 2 * _X)
    out = _run("hdr_blank_nt", "  uint i = thread_position_in_grid.x; out[i] = twice(x[i]);", header)
    np.testing.assert_array_equal(out, 2 * _X)


def test_header_glued_to_a_declaration_is_rejected():
    # Without a newline the header's last token runs into `[[kernel]]`: Metal rejects that too.
    _rejected(
        "hdr_glued",
        "  out[0] = x[0]; (void)thread_position_in_grid;",
        "inline float twice(float v) { return v; } int stray",
        pattern="error",
    )


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


# ---------------------------------------------------------------- 4. float -> bfloat only explicitly
_BF_VALID = {
    "static_cast": "out[i] = static_cast<bfloat>(x[i] * 2.0f);",
    "functional": "out[i] = bfloat(x[i] * 2.0f);",
    "template_T": "out[i] = T(x[i] * 2.0f);",
    "ternary_cast": "out[i] = x[i] > 2.0f ? bfloat(x[i] * 2.0f) : bfloat(-INFINITY);",
    "bfloat_to_float": "bfloat b = bfloat(x[i]); float f = b; out[i] = bfloat(f * 2.0f);",
    "exact_functional": "bfloat b = bfloat(0.0f); out[i] = b + bfloat(x[i] * 2.0f);",
}
_BF_INVALID = {
    "ternary": "out[i] = x[i] > 2.0f ? x[i] : -INFINITY;",
    "init": "bfloat16_t b = x[i] * 2.0f; out[i] = b;",
    "assign": "out[i] = x[i];",
    "compound": "bfloat b = bfloat(0.0f); b += x[i]; out[i] = b;",
    "argument": "out[i] = keep(x[i]);",
    "return": "out[i] = back(x[i]);",
    # Exact constants: clang converts them without a warning, Metal still refuses them.
    "exact_init": "bfloat16_t b = 0.0f; out[i] = b + bfloat(x[i] * 2.0f);",
    "exact_assign": "out[i] = 1.0f;",
}
_BF_HEADER = "inline bfloat keep(bfloat v) { return v; }\ninline bfloat back(float v) { return v * 2.0f; }\n"


@pytest.mark.parametrize("what", sorted(_BF_VALID))
def test_explicit_bfloat_conversions_run(what):
    out = _run(
        f"bf_ok_{what}",
        "  uint i = thread_position_in_grid.x; " + _BF_VALID[what],
        out_type="bfloat16_t",
        template=[("T", "bfloat16_t")],
    )
    got = (out.astype(np.uint32) << 16).view(np.float32)
    want = np.where(_X > 2, 2 * _X, -np.inf) if what == "ternary_cast" else 2 * _X
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("what", sorted(_BF_INVALID))
def test_implicit_float_to_bfloat_is_rejected(what):
    _rejected(
        f"bf_bad_{what}",
        "  uint i = thread_position_in_grid.x; " + _BF_INVALID[what],
        _BF_HEADER if what in ("argument", "return") else "",
        out_type="bfloat16_t",
        pattern=r"implicit conversion to bfloat is not allowed in Metal.*'(const )?float' to '(bfloat|bfloat16_t)'",
    )


# ---------------------------------------------------------------- 5. #pragma unroll 0
_UNROLL_SRC = (
    "  uint i = thread_position_in_grid.x; float s = 0.0f;\n#pragma unroll {n}\n"
    "  for (int k = 0; k < 4; ++k) s += x[i];\n  out[i] = s;"
)


@pytest.mark.parametrize(
    "count,template", [("4", None), ("1", None), ("N", [("N", 2)]), ("(N + 1)", [("N", 0)])]
)
def test_pragma_unroll_with_a_positive_count_runs(count, template):
    out = _run("unroll_ok", _UNROLL_SRC.format(n=count), template=template)
    np.testing.assert_array_equal(out, 4 * _X)
    out = _run("unroll_bare", _UNROLL_SRC.format(n="").replace("unroll ", "unroll"))
    np.testing.assert_array_equal(out, 4 * _X)


@pytest.mark.parametrize("count,template", [("0", None), ("N", [("N", 0)]), ("(N - 2)", [("N", 2)])])
def test_pragma_unroll_0_is_rejected(count, template):
    _rejected("unroll_zero", _UNROLL_SRC.format(n=count), template=template, pattern=r"#pragma unroll 0")


# ---------------------------------------------------------------- 6. address spaces
_AS_HEADER = (
    "struct P { float a; int b; };\nstruct F { float a; };\ninline float by_value(F f) { return f.a; }\ninline float first(const constant float* p) { return p[0]; }\n"
    "inline float first_dev(const device float* p) { return p[0]; }\n"
)
_AS_VALID = {
    # Structs copy in and out of device and threadgroup memory as values.
    "struct_copy": (
        "device F* p = (device F*)out; F v; v.a = x[i] + 1.0f; p[i] = v; "
        "threadgroup F s[8]; s[i] = p[i]; threadgroup_barrier(mem_flags::mem_threadgroup); "
        "F d = s[i]; p[i] = d;"
    ),
    "constant_program_scope": "out[i] = x[i] + K[1] - 1.0f;",
    "struct_copy_forms": (
        "const device F* f = (const device F*)x; F a(f[i]); F b{f[i]}; auto e = f[i]; F d; d = f[i]; "
        "out[i] = by_value(f[i]) + a.a + b.a + e.a + d.a - 4.0f * x[i] + 1.0f;"
    ),
    "constant_struct_array": "out[i] = x[i] + CF[1].a - CF[0].a;",
    "same_space_cast": "device uint* u = (device uint*)out; u[i] = as_type<uint>(x[i] + 1.0f);",
    "const_away_same_space": "((device float*)(x))[0] + 0.0f; out[i] = first_dev(x) + x[i] + 1.0f;",
    "constant_param": "out[i] = first(c) + x[i];",
}
_AS_INVALID = {
    "cast_constant_to_device": (
        "out[i] = ((device float*)c)[0];",
        "cast cannot move a pointer to another address",
    ),
    "cast_device_to_constant": ("out[i] = first((constant float*)x);", "cast cannot move a pointer"),
    "cast_threadgroup_to_device": (
        "threadgroup float s[8]; s[i] = 1; out[i] = *(device float*)&s[i];",
        "cast cannot move a pointer",
    ),
    "write_through_constant": ("((constant float*)c)[0] = 1.0f; out[i] = 0;", "not assignable"),
    "write_constant_param": ("c[0] = 1.0f; out[i] = 0;", "not assignable"),
    "device_to_constant_param": ("out[i] = first(x);", "address space 'device'.*address space 'constant'"),
    "struct_into_constant": ("constant P* q = (constant P*)c; P v; q[0] = v; out[i] = 0;", "error"),
    "struct_to_float": ("const device F* f = (const device F*)x; float v = f[i]; out[i] = v;", "error"),
    "threadgroup_to_thread": ("threadgroup float s[8]; float* t = s; out[i] = t[0];", "threadgroup"),
}
_AS_PROGRAM_SCOPE = {
    "threadgroup_array": "threadgroup float buf[32];\n",
    "device_scalar": "device int counter;\n",
    "plain_global": "float scale = 2.0f;\n",
    "static_global": "static int hits[4];\n",
    "in_namespace": "namespace util { float bias = 1.0f; }\n",
}


def _as_run(name, body, header=""):
    c = np.array([1.0, 2.0], np.float32)  # under 8 elements: MLX passes it in constant memory
    (out,) = run_kernel(
        name,
        [("x", _X), ("c", c)],
        [("out", (8,), "float")],
        "  uint i = thread_position_in_grid.x; " + body,
        header=_AS_HEADER + header,
        grid=(8, 1, 1),
        threadgroup=(8, 1, 1),
    )
    return out


@pytest.mark.parametrize("what", sorted(_AS_VALID))
def test_valid_address_space_use_runs(what):
    header = (
        "constant float K[2] = {1.0f, 2.0f};\nconstexpr constant int unused = 3;\n"
        "constant F CF[2] = {{1.0f}, {2.0f}};\n"
    )
    out = _as_run(f"as_ok_{what}", _AS_VALID[what], header)
    if what == "same_space_cast":
        out = out.view(np.float32)
    np.testing.assert_array_equal(out, _X + 1.0)


@pytest.mark.parametrize("what", sorted(_AS_INVALID))
def test_address_space_violations_are_rejected_in_metal_words(what):
    body, pattern = _AS_INVALID[what]
    with pytest.raises(RuntimeError, match=r"(?s)compilation failed.*" + pattern) as info:
        _as_run(f"as_bad_{what}", body)
    assert "address_space(" not in str(info.value) and "address space '1'" not in str(info.value)


@pytest.mark.parametrize("what", sorted(_AS_PROGRAM_SCOPE))
def test_program_scope_variables_outside_constant_are_rejected(what):
    with pytest.raises(RuntimeError, match="program scope variable must reside in constant address space"):
        _as_run(f"as_scope_{what}", "out[i] = 0;", _AS_PROGRAM_SCOPE[what])


# ---------------------------------------------------------------- 3. vectors through vec<T, N> and aliases
_VEC_SRC = """
  using V2 = vec<T, 2>;
  using V3 = metal::vec<T, 3>;
  typedef vec<T, 4> V4;
  using W4 = V4;
  float4 f = float4(x[0], x[1], x[2], x[3]);
  V4 a = V4(f);                                  // converting
  V4 b = W4(T(f.x), T(f.y), T(f.z), T(f.w));     // element-wise
  V4 c = V4(V2(f.xy), T(f.z), T(f.w));           // concatenating
  V3 d = vec<T, 3>(f.xyz);
  V2 e = V2(T(f.w));                             // splat
  V4 g = V4(float4(a) * 2.0f);                   // back and forth
  for (int k = 0; k < 4; ++k) {
    out[k] = float(a[k]); out[4 + k] = float(b[k]); out[8 + k] = float(c[k]); out[16 + k] = float(g[k]);
  }
  for (int k = 0; k < 3; ++k) out[12 + k] = float(d[k]);
  out[15] = float(e.x + e.y);
"""
_VEC_TYPES = [
    "float",
    "float16_t",
    "bfloat16_t",
    "int8_t",
    "uint8_t",
    "int16_t",
    "uint16_t",
    "int32_t",
    "uint32_t",
    "int64_t",
    "uint64_t",
]


@pytest.mark.parametrize("t", _VEC_TYPES)
def test_every_vector_type_constructs_and_converts_through_aliases(t):
    x = np.array([1.5, 2.0, 0.0, 3.0], np.float32)
    out = _run(
        f"vec_alias_{t}",
        _VEC_SRC,
        x=np.resize(x, 8),
        n=20,
        template=[("T", t)],
        grid=(1, 1, 1),
        threadgroup=(1, 1, 1),
    )
    conv = np.array(mx.array(x).astype(mx_dtype(t)).astype(mx.float32))
    twice = np.array(mx.array(conv * 2).astype(mx_dtype(t)).astype(mx.float32))
    want = np.concatenate([conv, conv, conv, conv[:3], [2 * conv[3]], twice])
    np.testing.assert_array_equal(out, want)


def test_bool_vectors_convert_by_truth():
    src = (
        "  bool4 b = bool4(float4(0.5f, 0.0f, -2.0f, 0.0f));\n"
        "  for (int k = 0; k < 4; ++k) out[k] = b[k] ? 1.0f : 0.0f;\n"
        "  bool2 c = bool2(int2(3, 0)); out[4] = c.x; out[5] = c.y; out[6] = bool3(2)[2]; out[7] = x[0];"
    )
    out = _run("bool_vec", src, grid=(1, 1, 1), threadgroup=(1, 1, 1))
    np.testing.assert_array_equal(out, [1, 0, 1, 0, 1, 0, 1, 0])


def test_casts_after_return_and_preprocessor_lines_in_headers():
    header = (
        "#define SCALE 1.0f\n#include <metal_stdlib>\nusing namespace metal;\n"
        "inline const device float* same(const device float* p) { return (const device float*)p; }\n"
        "inline device float* moved(const constant float* p) { return (device float*)p; }\n"
    )
    out = _as_run("as_return_ok", "out[i] = same(x)[i] + SCALE;", header.split("inline device")[0])
    np.testing.assert_array_equal(out, _X + 1.0)
    with pytest.raises(RuntimeError, match="cast cannot move a pointer"):
        _as_run("as_return_bad", "out[i] = moved(c)[0];", header)


def test_strict_rewrites_keep_line_numbers():
    from mlx_embag.emulator.strict import rewrite_casts, rewrite_unroll

    text = "a;\n  #pragma unroll 4  \n\nfor (;;) {}\n#pragma unroll\nq = (device float*)\n  p[1];\n"
    for rewritten in (rewrite_unroll(text), rewrite_casts(text)):
        assert rewritten.count("\n") == text.count("\n")
    assert "__emu_as_cast<device float*>(\n  p[1])" in rewrite_casts(text)
