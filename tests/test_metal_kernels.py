"""The kernel sources and the seam that builds them (no kernel runs here).

The signatures are MLX's own: ``mx.fast.metal_kernel`` generates the source
on Linux too while tracing inside ``mx.export_function`` (printed to file
descriptor 1 with ``verbose=True``).
"""

from __future__ import annotations

import os
import re
import tempfile

import mlx.core as mx
import pytest

from mlx_embag import kernels
from mlx_embag._sources import HEADER, metal_dir, read_metal, read_source
from mlx_embag.emulator import generator

NAMES = sorted(kernels.KERNELS)


def test_every_kernel_has_a_source_and_every_source_a_kernel():
    files = sorted(p.stem for p in metal_dir().glob("*.metal"))
    assert files == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_source_opens_with_the_layout_comment(name):
    lines = read_metal(name).splitlines()
    head = []
    for line in lines:
        if not line.startswith("//"):
            break
        head.append(line)
    text = "\n".join(head)
    for word in ("Grid", "owns", "Bytes per", "Inputs", "Output"):
        assert word in text, (name, word)


def _generated_source(name, inputs, template, outputs):
    """MLX's generated source for ``name`` with these inputs (export tracing, verbose)."""
    in_names, out_names, atomic = kernels.KERNELS[name]
    k = mx.fast.metal_kernel(
        name=f"mlx_embag_{name}",
        input_names=list(in_names),
        output_names=list(out_names),
        source=read_metal(name),
        header=read_source(HEADER),
        atomic_outputs=atomic,
    )

    def f(*xs):
        return k(
            inputs=[kernels.device_input(x) for x in xs],
            template=template,
            grid=(32, 1, 1),
            threadgroup=(32, 1, 1),
            output_shapes=[(4,)] * len(out_names),
            output_dtypes=outputs,
            verbose=True,
        )[0]

    with tempfile.TemporaryDirectory() as d:
        cap = os.path.join(d, "out.txt")
        fd = os.dup(1)
        with open(cap, "w") as fh:
            os.dup2(fh.fileno(), 1)
            try:
                mx.export_function(os.path.join(d, "k.mlxfn"), f, *inputs)
            finally:
                os.dup2(fd, 1)
                os.close(fd)
        return open(cap).read()


def _signature(text):
    """The generated ``[[kernel]]`` parameter list (the shared header comes before it)."""
    start = text.index("[[kernel]]")
    return text[start : text.index(") {", start)]


def test_tiny_inputs_stay_in_device_memory():
    """Inputs under 8 elements are padded, so MLX never switches them to the constant address space."""
    w = mx.zeros((2, 3), dtype=mx.float16)
    idx = mx.array([1], dtype=mx.int64)
    small = mx.zeros((1,), dtype=mx.int64)
    text = _generated_source(
        "bag_fwd",
        [w, idx, small, small, mx.zeros((1,), mx.float16), mx.zeros((1,)), mx.zeros((8,), mx.int64)],
        [("T", mx.float16), ("O", mx.float16), ("CPT", 1), ("MAXMODE", True)],
        [mx.float16, mx.int32, mx.int32],
    )
    sig = _signature(text)
    assert "constant" not in sig.replace("const device", "")
    params = re.findall(r"\[\[buffer\((\d+)\)\]\]", sig)
    assert params == [str(i) for i in range(10)]  # 7 inputs, 3 outputs, no shape/stride buffers
    assert "thread_position_in_grid" in sig and "[[threads_per_threadgroup]]" in sig


def test_kernel_objects_are_built_once(monkeypatch):
    made = []

    def fake(**kw):
        made.append(kw["name"])
        return object()

    monkeypatch.setattr(kernels, "_factory", lambda: (fake, "test"))
    monkeypatch.setattr(kernels, "_built", {})
    for name in NAMES:
        assert kernels.get(name) is kernels.get(name)
    assert sorted(made) == sorted(f"mlx_embag_{n}" for n in NAMES)


def test_without_metal_or_emulator_the_seam_explains(monkeypatch):
    from mlx_embag import emulator

    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    monkeypatch.setattr(emulator, "is_enabled", lambda: False, raising=False)
    with pytest.raises(RuntimeError, match="emulator"):
        kernels.get("bag_fwd")


@pytest.mark.parametrize("name", NAMES)
def test_no_stray_parameters(name):
    """MLX adds a parameter for every attribute or ``<input>_shape``-like word it finds in the
    source, comments included: each kernel gets exactly its buffers plus the attributes it uses."""
    in_names, out_names, _ = kernels.KERNELS[name]
    text = _generated_source(
        name,
        [mx.zeros((8,))] * len(in_names),
        [("T", mx.float32), ("O", mx.float32), ("VEC", True), ("MAXMODE", True)],
        [mx.float32] * len(out_names),
    )
    sig = _signature(text)
    assert len(re.findall(r"\[\[buffer\(", sig)) == len(in_names) + len(out_names)
    attrs = re.findall(r"\[\[(\w+)\]\]", sig)
    body = read_metal(name)
    code = "\n".join(line.split("//")[0] for line in body.splitlines())
    for a in attrs:
        if a != "kernel":
            assert a in code, f"{name}: parameter {a} only named in a comment"


# The template arguments each kernel is built with (one specialisation of each).
TEMPLATES = {
    "bag_fwd": [("T", mx.float16), ("O", mx.float16), ("CPT", 8), ("MAXMODE", False)],
    "bag_combine": [("T", mx.bfloat16), ("MAXMODE", True)],
    "row_scale": [("T", mx.float32)],
    "bag_bwd": [("VEC", False)],
    "psw_grad": [("T", mx.float16)],
}


@pytest.mark.parametrize("name", NAMES)
def test_emulator_generates_what_mlx_generates(name):
    """Each kernel as the library builds it, shared header included: the emulator's source is MLX's,
    byte for byte."""
    from emulator.harness import mlx_generated_source

    in_names, out_names, atomic = kernels.KERNELS[name]
    make = dict(
        name=f"mlx_embag_{name}",
        input_names=list(in_names),
        output_names=list(out_names),
        source=read_metal(name),
        header=read_source(HEADER),
        atomic_outputs=atomic,
    )
    inputs = [kernels.device_input(mx.zeros((3,), mx.int64)) for _ in in_names]
    template = TEMPLATES.get(name, [])
    call = dict(
        template=template,
        grid=(32, 1, 1),
        threadgroup=(32, 1, 1),
        output_shapes=[(4,)] * len(out_names),
        output_dtypes=[mx.float32] * len(out_names),
    )
    infos = [generator.InputInfo(x.dtype, x.ndim, x.size) for x in inputs]
    _, ours = generator.generate_source(
        make["name"],
        make["input_names"],
        make["output_names"],
        make["source"],
        infos,
        call["output_dtypes"],
        template,
        make["header"],
        atomic,
    )
    text = mlx_generated_source(make, call, inputs)
    assert text == ours
    assert text.startswith(read_source(HEADER))
