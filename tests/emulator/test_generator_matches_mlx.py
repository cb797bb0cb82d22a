"""The emulator's generator against MLX's own: byte-identical source for random signatures.

MLX generates the source only while tracing (inside ``mx.export_function``)
and prints it with ``verbose=True``; ``emulator.harness.mlx_generated_source``
captures that text, which is the oracle here.
"""

import random

import mlx.core as mx
import pytest

from emulator.harness import mlx_generated_source
from mlx_embag.emulator import generator
from mlx_embag.emulator.generator import ATTRIBUTES, InputInfo

DTYPES = [
    mx.float32,
    mx.float16,
    mx.bfloat16,
    mx.int32,
    mx.int64,
    mx.uint32,
    mx.uint8,
    mx.int8,
    mx.int16,
    mx.uint16,
    mx.uint64,
    mx.bool_,
]
SHAPES = [(), (1,), (7,), (8,), (3, 2), (2, 4), (0, 3), (5, 5), (2, 1, 3), (100,)]


def _ours(make, call, inputs):
    infos = [InputInfo(a.dtype, a.ndim, a.size) for a in inputs]
    return generator.generate_source(
        make["name"],
        make["input_names"],
        make["output_names"],
        make["source"],
        infos,
        call["output_dtypes"],
        call.get("template"),
        make.get("header", ""),
        make.get("atomic_outputs", False),
    )


def _check(make, call, inputs):
    call = dict(
        dict(grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)] * len(make["output_names"])), **call
    )
    expected = mlx_generated_source(make, call, inputs)
    name, text = _ours(make, call, inputs)
    assert text == expected
    assert f"void {name}(" in expected


def _random_case(rng: random.Random):
    n_in = rng.randint(0, 4)
    n_out = rng.randint(1, 3)
    in_names = [f"in{i}" for i in range(n_in)]
    out_names = [f"out{i}" for i in range(n_out)]
    words = [a for a, _ in rng.sample(ATTRIBUTES, rng.randint(0, 4))]
    for n in in_names:
        for suffix in ("_shape", "_strides", "_ndim"):
            if rng.random() < 0.3:
                words.append(n + suffix)
    rng.shuffle(words)
    source = "// " + " ".join(words) + "\n  out0[0] = 0;"
    inputs = [mx.zeros(rng.choice(SHAPES), rng.choice(DTYPES)) for _ in in_names]
    template = None
    if rng.random() < 0.5:
        kinds = [lambda: rng.choice(DTYPES), lambda: rng.randint(-40, 40), lambda: rng.random() < 0.5]
        template = [(f"P{i}", rng.choice(kinds)()) for i in range(rng.randint(1, 3))]
    make = dict(
        name=f"k{rng.randint(0, 99)}",
        input_names=in_names,
        output_names=out_names,
        source=source,
        header=rng.choice(["", "#define FOO 1\n", "constant int K = 3;\n"]),
        atomic_outputs=rng.random() < 0.2,
    )
    call = dict(output_dtypes=[rng.choice(DTYPES) for _ in out_names], template=template)
    return make, call, inputs


@pytest.mark.parametrize("seed", range(200))
def test_random_signatures_match_mlx(seed):
    make, call, inputs = _random_case(random.Random(seed))
    _check(make, call, inputs)


def test_docs_myexp_example():
    # The docs print `custom_kernel_myexp_float_float16_t_float16_t`; 0.32 has a double underscore.
    source = """
        uint elem = thread_position_in_grid.x;
        T tmp = inp[elem];
        out[elem] = metal::exp(tmp);
    """
    make = dict(name="myexp", input_names=["inp"], output_names=["out"], source=source)
    inputs = [mx.zeros((4, 16), mx.float16)]
    call = dict(output_dtypes=[mx.float16], template=[("T", mx.float32)])
    _check(make, call, inputs)
    assert (
        _ours(make, dict(call, output_shapes=[(4, 16)]), inputs)[0]
        == "custom_kernel_myexp__float_float16_t_float16_t"
    )


def test_every_attribute_in_fixed_order_and_dispatch_pairs():
    # Substring detection: `dispatch_threads_per_threadgroup` also brings `threads_per_threadgroup`.
    words = " ".join(a for a, _ in reversed(ATTRIBUTES))
    _check(
        dict(name="attrs", input_names=["a"], output_names=["o"], source="// " + words),
        dict(output_dtypes=[mx.float32]),
        [mx.zeros((9,))],
    )
    _, text = _ours(
        dict(name="d", input_names=[], output_names=["o"], source="dispatch_threads_per_threadgroup"),
        dict(output_dtypes=[mx.float32]),
        [],
    )
    assert "uint3 threads_per_threadgroup [[threads_per_threadgroup]]" in text


def test_scalar_small_and_large_inputs_address_spaces():
    inputs = [mx.array(1.5), mx.zeros((7,), mx.int32), mx.zeros((8,), mx.int32), mx.zeros((0, 3))]
    make = dict(
        name="spaces",
        input_names=["s", "c", "d", "e"],
        output_names=["o"],
        source="s_shape s_ndim c_shape d_strides e_ndim thread_position_in_grid",
    )
    _check(make, dict(output_dtypes=[mx.float32]), inputs)
    _, text = _ours(make, dict(output_dtypes=[mx.float32]), inputs)
    assert "  const constant float& s [[buffer(0)]],\n" in text
    assert "s_shape" not in text.split("{")[0]  # 0-d inputs never get shape parameters
    assert "  const constant int32_t* c [[buffer(1)]],\n" in text
    assert "  const device int32_t* d [[buffer(3)]],\n" in text
    assert "  const constant float* e [[buffer(5)]],\n" in text


def test_early_close_quirk_with_two_outputs_and_no_attributes():
    # MLX compares the buffer index with n_inputs + n_outputs - 1: the list closes after the first output.
    make = dict(name="quirk", input_names=["a"], output_names=["o1", "o2"], source="a_shape")
    _check(make, dict(output_dtypes=[mx.int32, mx.int32]), [mx.zeros((9,))])
    _, text = _ours(make, dict(output_dtypes=[mx.int32, mx.int32]), [mx.zeros((9,))])
    assert text.count(") {\n") == 2


def test_negative_and_bool_template_values():
    make = dict(name="tpl", input_names=["a"], output_names=["o"], source="thread_position_in_grid")
    call = dict(output_dtypes=[mx.float32], template=[("n", -12), ("B", False), ("T", mx.bfloat16)])
    _check(make, call, [mx.zeros((9,))])
    assert _ours(make, call, [mx.zeros((9,))])[0] == "custom_kernel_tpl___12_0_bfloat16_t_float_float"


def test_bad_template_value_and_dtype_raise():
    with pytest.raises(ValueError, match="Invalid template argument"):
        generator.template_value("float")
    with pytest.raises(ValueError, match="32-bit"):
        generator.template_value(2**40)
    with pytest.raises(ValueError, match="template: expected"):
        generator.generate_source("k", [], ["o"], "", [], [mx.float32], template=[("T",)])
    with pytest.raises(ValueError, match="Unsupported compilation type"):
        generator.type_string("float32")
