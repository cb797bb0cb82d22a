"""The emulator's ``metal_kernel`` end to end: MLX's call semantics, values checked with NumPy."""

import mlx.core as mx
import numpy as np
import pytest

from emulator.harness import mlx_generated_source
from mlx_embag import emulator
from mlx_embag.emulator import metal_kernel, settings

AXPY = """
    uint i = thread_position_in_grid.x;
    if (i < n) { out[i] = T(alpha) * x[i] + y[i]; }
"""


def _axpy():
    return metal_kernel("axpy", ["alpha", "x", "y", "n"], ["out"], AXPY)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
def test_axpy_scalars_and_dtypes(dtype):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(37).astype(np.float32), rng.standard_normal(37).astype(np.float32)
    xs, ys = mx.array(x).astype(dtype), mx.array(y).astype(dtype)
    (out,) = _axpy()(
        inputs=[2.5, xs, ys, 37],
        output_shapes=[(37,)],
        output_dtypes=[dtype],
        grid=(64, 1, 1),
        threadgroup=(16, 1, 1),
        template=[("T", dtype)],
    )
    assert out.dtype == dtype and out.shape == (37,)
    xe, ye = np.array(xs.astype(mx.float32)), np.array(ys.astype(mx.float32))
    want = np.array(mx.array(2.5 * xe + ye).astype(dtype).astype(mx.float32))
    tol = {mx.float32: 1e-6, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}[dtype]
    np.testing.assert_allclose(np.array(out.astype(mx.float32)), want, rtol=tol, atol=tol)


def test_verbose_prints_mlx_text(capsys):
    k = metal_kernel("copy", ["a"], ["b"], "uint i = thread_position_in_grid.x; b[i] = a[i];")
    a = mx.arange(10, dtype=mx.int32)
    call = dict(output_shapes=[(10,)], output_dtypes=[mx.int32], grid=(10, 1, 1), threadgroup=(4, 1, 1))
    (b,) = k(inputs=[a], verbose=True, **call)
    assert b.tolist() == list(range(10))
    text = mlx_generated_source(
        dict(
            name="copy",
            input_names=["a"],
            output_names=["b"],
            source="uint i = thread_position_in_grid.x; b[i] = a[i];",
        ),
        call,
        [a],
    )
    assert capsys.readouterr().out == f"Generated source code for `copy`:\n```\n{text}\n```\n"


HALF = "uint i = thread_position_in_grid.x; if (i % 2 == 0) { o[i] = 1; }"


def test_outputs_start_as_garbage_unless_init_value():
    k = metal_kernel("half_write", [], ["o"], HALF)
    call = dict(inputs=[], output_shapes=[(3, 4)], grid=(12, 1, 1), threadgroup=(12, 1, 1))
    (f,) = k(output_dtypes=[mx.float32], **call)
    f = np.array(f).ravel()
    assert (f[0::2] == 1).all() and np.isnan(f[1::2]).all()
    (g,) = k(output_dtypes=[mx.int32], init_value=7, **call)
    assert np.array(g).ravel().tolist() == [1, 7] * 6
    (h,) = k(output_dtypes=[mx.bfloat16], init_value=-0.5, **call)
    assert np.array(h.astype(mx.float32)).ravel().tolist() == [1, -0.5] * 6


def test_shape_strides_ndim_buffers():
    src = """
        uint i = thread_position_in_grid.x;
        if (i < (uint)a_ndim) { s[i] = a_shape[i]; st[i] = (int)a_strides[i]; }
        // elem_to_loc from MLX's preamble helpers
        if (i == 3) { s[i] = a[elem_to_loc(5, a_shape, a_strides, a_ndim)]; st[i] = a_ndim; }
    """
    k = metal_kernel("meta", ["a"], ["s", "st"], src)
    a = mx.arange(24, dtype=mx.int32).reshape(2, 3, 4)
    s, st = k(
        inputs=[a],
        output_shapes=[(4,), (4,)],
        output_dtypes=[mx.int32, mx.int32],
        grid=(4, 1, 1),
        threadgroup=(4, 1, 1),
    )
    assert s.tolist() == [2, 3, 4, 5] and st.tolist() == [12, 4, 1, 3]


def test_non_contiguous_input_is_made_row_contiguous():
    k = metal_kernel("flat", ["a"], ["b"], "uint i = thread_position_in_grid.x; b[i] = a[i];")
    a = mx.arange(12, dtype=mx.float32).reshape(3, 4).T
    (b,) = k(
        inputs=[a], output_shapes=[(12,)], output_dtypes=[mx.float32], grid=(12, 1, 1), threadgroup=(8, 1, 1)
    )
    np.testing.assert_array_equal(np.array(b), np.arange(12).reshape(3, 4).T.ravel())


def test_atomic_outputs_histogram():
    src = """
        uint i = thread_position_in_grid.x;
        atomic_fetch_add_explicit(&h[idx[i]], 1.0f, memory_order_relaxed);
    """
    k = metal_kernel("hist", ["idx"], ["h"], src, atomic_outputs=True)
    idx = np.random.default_rng(1).integers(0, 5, 300).astype(np.int32)
    (h,) = k(
        inputs=[mx.array(idx)],
        output_shapes=[(5,)],
        output_dtypes=[mx.float32],
        grid=(300, 1, 1),
        threadgroup=(64, 1, 1),
        init_value=0,
    )
    np.testing.assert_array_equal(np.array(h), np.bincount(idx, minlength=5))


def test_argument_errors():
    with pytest.raises(ValueError, match="at least one output"):
        metal_kernel("k", ["a"], [], "")
    with pytest.raises(ValueError, match="Unknown compile option `fast`"):
        metal_kernel("k", ["a"], ["b"], "", compile_options={"fast": True})
    with pytest.raises(ValueError, match="math_mode"):
        metal_kernel("k", ["a"], ["b"], "", compile_options={"math_mode": "quick"})
    k = metal_kernel("k", ["a"], ["b"], "b[0] = a[0];")
    call = dict(output_shapes=[(1,)], output_dtypes=[mx.float32], grid=(1, 1, 1), threadgroup=(1, 1, 1))
    with pytest.raises(ValueError, match="Expected `inputs` to have size 1 but got size 2"):
        k(inputs=[mx.zeros(1), mx.zeros(1)], **call)
    with pytest.raises(ValueError, match="Only supports the GPU"):
        k(inputs=[mx.zeros(1)], stream=mx.cpu, **call)
    with pytest.raises(ValueError, match="Invalid template argument"):
        k(inputs=[mx.zeros(1)], template=[("T", "float")], **call)
    with pytest.raises(ValueError, match=r"Thread group size \(2048\)"):
        k(inputs=[mx.zeros(1)], **dict(call, threadgroup=(1024, 2, 1)))


def test_compile_error_names_kernel_and_numbers_source():
    k = metal_kernel("broken", ["a"], ["b"], "b[0] = a[0] +;")
    with pytest.raises(RuntimeError, match="broken") as info:
        k(
            inputs=[mx.zeros(1)],
            output_shapes=[(1,)],
            output_dtypes=[mx.float32],
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
        )
    assert "b[0] = a[0] +;" in str(info.value)


def test_under_grad_via_custom_function_and_refused_under_compile():
    k = metal_kernel("sq", ["x"], ["y"], "uint i = thread_position_in_grid.x; y[i] = x[i] * x[i];")

    def fwd(x):
        return k(
            inputs=[x],
            output_shapes=[x.shape],
            output_dtypes=[x.dtype],
            grid=(x.size, 1, 1),
            threadgroup=(8, 1, 1),
        )[0]

    sq = mx.custom_function(fwd)

    @sq.vjp
    def sq_vjp(primals, cotangent, output):
        return 2 * primals * cotangent  # one primal: passed as itself

    x = mx.arange(6, dtype=mx.float32)
    np.testing.assert_array_equal(np.array(mx.grad(lambda v: sq(v).sum())(x)), 2 * np.arange(6))
    with pytest.raises(RuntimeError, match="mx.compile"):
        mx.eval(mx.compile(fwd)(x))


def test_switches_and_environment(monkeypatch):
    saved = settings._override
    try:
        settings.reset()
        monkeypatch.setenv("MLX_EMBAG_EMULATE_METAL", "1")
        monkeypatch.setenv("MLX_EMBAG_EMULATOR_SEED", "17")
        monkeypatch.setenv("MLX_EMBAG_EMULATOR_SANITIZE", "1")
        assert emulator.is_enabled() and settings.current() == settings.Settings(True, 17, True)
        monkeypatch.setenv("MLX_EMBAG_EMULATE_METAL", "0")
        monkeypatch.delenv("MLX_EMBAG_EMULATOR_SANITIZE")
        assert not emulator.is_enabled()
        emulator.enable(seed=3)
        assert settings.current() == settings.Settings(True, 3, False)
        emulator.disable()
        assert not emulator.is_enabled()
        monkeypatch.delenv("MLX_EMBAG_EMULATOR_SEED")
        emulator.enable()
        assert settings.current().seed == settings.DEFAULT_SEED  # shuffled unless asked otherwise
        monkeypatch.setenv("MLX_EMBAG_EMULATOR_SEED", "off")
        emulator.enable()
        assert settings.current().seed is None
        monkeypatch.setenv("MLX_EMBAG_EMULATOR_SEED", "x")
        with pytest.raises(ValueError, match="MLX_EMBAG_EMULATOR_SEED"):
            emulator.enable()
        with pytest.raises(TypeError, match="seed"):
            emulator.enable(seed="1")
    finally:
        settings._override = saved


def test_seed_reaches_runtime_and_exposes_order_dependence(monkeypatch):
    # Each threadgroup records its position in a shared counter: the order the grid ran in.
    # One worker thread, so that the seeded order is the only source of order
    # (with several, workers race for the counter and the record varies run to run).
    monkeypatch.setenv("MLX_EMBAG_EMULATOR_THREADS", "1")
    src = """
        if (thread_position_in_threadgroup.x == 0) {
            order[threadgroup_position_in_grid.x] =
                atomic_fetch_add_explicit((device atomic_int*)counter, 1, memory_order_relaxed);
        }
    """
    k = metal_kernel("order", [], ["order", "counter"], src)

    def run(seed):
        order, _ = k(
            inputs=[],
            output_shapes=[(16,), (1,)],
            output_dtypes=[mx.int32, mx.int32],
            grid=(64, 1, 1),
            threadgroup=(4, 1, 1),
            init_value=0,
            seed=seed,
        )
        return order.tolist()

    assert sorted(run(5)) == list(range(16))
    assert run(5) == run(5) and run(5) != run(6)


@pytest.mark.parametrize("mode,want", [(None, 0), ("safe", 0), ("relaxed", 0), ("fast", 1)])
def test_math_mode_reaches_compiler(mode, want):
    src = """
    #ifdef __FAST_MATH__
        o = 1;
    #else
        o = 0;
    #endif
    """
    opts = None if mode is None else {"math_mode": mode}
    k = metal_kernel("mode", [], ["o"], src.replace("o =", "o[0] ="), compile_options=opts)
    (o,) = k(inputs=[], output_shapes=[()], output_dtypes=[mx.int32], grid=(1, 1, 1), threadgroup=(1, 1, 1))
    assert o.shape == () and o.item() == want


def test_empty_grid_and_empty_output():
    k = metal_kernel("noop", [], ["o"], "o[thread_position_in_grid.x] = 1;")
    (o,) = k(
        inputs=[], output_shapes=[(0, 4)], output_dtypes=[mx.float32], grid=(0, 1, 1), threadgroup=(1, 1, 1)
    )
    assert o.shape == (0, 4)


def test_grad_through_a_bare_kernel_raises_as_on_metal():
    k = metal_kernel("bare", ["x"], ["y"], "uint i = thread_position_in_grid.x; y[i] = 3 * x[i];")

    def f(x):
        return k(
            inputs=[x],
            output_shapes=[x.shape],
            output_dtypes=[x.dtype],
            grid=(x.size, 1, 1),
            threadgroup=(8, 1, 1),
        )[0].sum()

    assert f(mx.ones(5)).item() == 15
    with pytest.raises(RuntimeError, match="VJP is not implemented for the custom kernel `bare`"):
        mx.eval(mx.grad(f)(mx.ones(5)))


def test_jvp_and_vmap_through_a_bare_kernel_raise_as_on_metal():
    # The NumPy round trip cuts the graph: MLX's fallback JVP gave silent zero tangents.
    k = metal_kernel("bare_fwd", ["x"], ["y"], "uint i = thread_position_in_grid.x; y[i] = x[i] * x[i];")

    def f(x):
        return k(
            inputs=[x],
            output_shapes=[x.shape],
            output_dtypes=[x.dtype],
            grid=(x.size, 1, 1),
            threadgroup=(8, 1, 1),
        )[0]

    x, t = mx.arange(4, dtype=mx.float32), mx.ones(4)
    want = r"JVP is not implemented for the custom kernel `bare_fwd`.*\[Primitive::jvp\] Not implemented for CustomKernel"
    with pytest.raises(ValueError, match=want):  # Metal's type (std::invalid_argument)
        mx.jvp(f, [x], [t])
    with pytest.raises(RuntimeError, match=want):  # and the emulator's earlier one
        mx.jvp(f, [x], [t])
    with pytest.raises(RuntimeError, match="mx.vmap"):
        mx.vmap(f)(mx.ones((2, 4)))

    # A kernel whose inputs carry no tangent is a constant, as on Metal.
    _, (tangent,) = mx.jvp(lambda s: f(x) * s, [t], [t])
    assert tangent.tolist() == [0, 1, 4, 9]

    # The library's pattern, a custom_function with a vjp only: reverse mode works, forward mode raises
    # (on Metal MLX's jvp descends into the body and meets the CustomKernel).
    sq = mx.custom_function(f)

    @sq.vjp
    def sq_vjp(primals, cotangent, output):
        return 2 * primals * cotangent

    assert mx.grad(lambda v: sq(v).sum())(x).tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError, match=want):
        mx.jvp(sq, [x], [t])


def test_library_metal_path_refuses_jvp_under_the_emulator():
    import mlx_embag as meb

    saved = settings._override
    try:
        emulator.enable()
        w = mx.array(np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32))
        idx = mx.array([[0, 1, 1], [5, 2, 0]])

        def loss(w, backend):
            return meb.embedding_bag(idx, w, mode="sum", backend=backend).sum()

        np.testing.assert_array_equal(
            np.array(mx.grad(loss)(w, "metal")), np.array(mx.grad(loss)(w, "reference"))
        )
        with pytest.raises(ValueError, match="JVP is not implemented for the custom kernel"):
            mx.jvp(lambda v: meb.embedding_bag(idx, v, mode="sum", backend="metal"), [w], [mx.ones_like(w)])
    finally:
        settings._override = saved


def test_python_scalars_convert_like_mlx():
    # int -> int32 unless it does not fit (int64); bool -> bool; each a 0-d `constant T&` input.
    k = metal_kernel("scal", ["a", "b"], ["o"], "o[0] = a + (b ? 1 : 0);")
    call = dict(output_shapes=[(1,)], output_dtypes=[mx.int64], grid=(1, 1, 1), threadgroup=(1, 1, 1))
    assert k(inputs=[2**40, True], **call)[0].item() == 2**40 + 1
    assert k(inputs=[-5, False], **call)[0].item() == -5
    name, _ = k.generate([mx.array(2**40), mx.array(True)], [mx.int64])
    assert name == "custom_kernel_scal_int64_ts_bools_int64_t"
    with pytest.raises(TypeError, match="inputs"):
        k(inputs=["x", True], **call)
