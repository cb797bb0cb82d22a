"""Running kernels for the emulator's tests.

`run_kernel` takes NumPy inputs, writes the signature with the package's own
generator (`mlx_embag.emulator.generator`), binds the buffers as the front end
does (`kernel.input_buffers`, `kernel.output_buffer`) and calls
`runtime.launch` directly, so a test can set the runtime's options (workers,
seed, sanitizer, math mode) per call and gets NumPy outputs back.

`mlx_generated_source` and `OracleKernel` take the source from MLX's own
generator instead: the oracle for the package's generator, and a way to run
real kernels without trusting it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import mlx.core as mx
import numpy as np

from mlx_embag.emulator import generator, kernel, runtime

# MSL spelling -> MLX dtype, for every type a test may name.
_DTYPES = {
    generator.type_string(d): d
    for d in (
        mx.float32,
        mx.float16,
        mx.bfloat16,
        mx.bool_,
        mx.int8,
        mx.int16,
        mx.int32,
        mx.int64,
        mx.uint8,
        mx.uint16,
        mx.uint32,
        mx.uint64,
    )
}


def mx_dtype(t) -> mx.Dtype:
    """The MLX dtype of an MSL type name (``"float"``, ``"bfloat16_t"``) or of a NumPy dtype."""
    if isinstance(t, str):
        return _DTYPES[t]
    return mx.array(np.zeros((0,), t)).dtype


def generate(name, inputs, outputs, source, template=None, header="", atomic_outputs=False):
    """``(kernel_name, kernel_source)`` from the package's generator, for NumPy inputs.

    Args:
        inputs: list of (name, array, msl_type).
        outputs: list of (name, msl_type).
        template: list of (name, value), value an MSL type name, int or bool.
    """
    infos = [generator.InputInfo(mx_dtype(t), np.ndim(a), np.size(a)) for _, a, t in inputs]
    template = [(n, mx_dtype(v) if isinstance(v, str) else v) for n, v in template or ()]
    return generator.generate_source(
        name,
        [n for n, _, _ in inputs],
        [n for n, _ in outputs],
        source,
        infos,
        [mx_dtype(t) for _, t in outputs],
        template,
        header,
        atomic_outputs,
    )


def run_kernel(
    name,
    inputs,
    outputs,
    source,
    *,
    grid,
    threadgroup,
    template=None,
    header="",
    atomic_outputs=False,
    init=None,
    seed=None,
    sanitize=False,
    math_mode="safe",
    workers=None,
):
    """Generate, launch and return the outputs (NumPy arrays; bfloat16 as uint16 bits).

    Args:
        inputs: list of (name, array) or (name, array, msl_type).
        outputs: list of (name, shape, msl_type).
        init: fill value for outputs (default: all bits set, like garbage).
    """
    ins = []
    for entry in inputs:
        a = np.require(np.asarray(entry[1]), requirements="C")
        ins.append((entry[0], a, entry[2] if len(entry) > 2 else generator.type_string(mx_dtype(a.dtype))))
    kname, text = generate(
        name, ins, [(n, t) for n, _, t in outputs], source, template, header, atomic_outputs
    )
    buffers = kernel.input_buffers(
        [a for _, a, _ in ins], generator.detect_shape_info([n for n, _, _ in ins], source)
    )
    outs = [kernel.output_buffer(shape, mx_dtype(t), init) for _, shape, t in outputs]
    runtime.launch(
        display_name=name,
        kernel_name=kname,
        kernel_source=text,
        buffers=buffers + outs,
        grid=grid,
        threadgroup=threadgroup,
        math_mode=math_mode,
        seed=seed,
        sanitize=sanitize,
        workers=workers,
    )
    return outs


# ---------------------------------------------------------------- MLX's own generator as the front end
def mlx_generated_source(make_kwargs: dict, call_kwargs: dict, inputs: list) -> str:
    """The exact source MLX 0.32 generates for one call (what ``verbose=True`` prints).

    ``metal_kernel`` only generates code while tracing inside ``mx.export_function``
    (it raises "No Metal back-end" otherwise), and prints through C++ stdout, so
    file descriptor 1 is captured around an export.
    """
    k = mx.fast.metal_kernel(**make_kwargs)

    def f(*xs):
        return k(inputs=list(xs), verbose=True, **call_kwargs)

    read_fd, write_fd = os.pipe()
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(write_fd, 1)
    try:
        with tempfile.TemporaryDirectory() as d:
            mx.export_function(os.path.join(d, "k.mlxfn"), f, *inputs)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_fd)
    text = os.read(read_fd, 1 << 22).decode()
    os.close(read_fd)
    return text.split("```\n", 1)[1].rsplit("\n```", 1)[0]


class OracleKernel(kernel.MetalKernel):
    """The emulator's ``metal_kernel`` with its source from MLX's own generator.

    Same constructor and call as ``mx.fast.metal_kernel`` (``ensure_row_contiguous``
    is assumed); ``seed`` and ``sanitize`` as :class:`MetalKernel`'s. Runs real
    kernels through the runtime without depending on the package's generator.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sources = {}

    def generate(self, inputs, output_dtypes, template=None) -> tuple[str, str]:
        key = (
            repr(template),
            tuple((a.dtype, a.ndim == 0, a.size < 8) for a in inputs),
            tuple(output_dtypes),
        )
        text = self._sources.get(key)
        if text is None:
            make = dict(
                name=self.name,
                input_names=self.input_names,
                output_names=self.output_names,
                source=self.source,
                header=self.header,
                ensure_row_contiguous=True,
                atomic_outputs=self.atomic_outputs,
            )
            # The text does not depend on the launch geometry: any valid one will do.
            call = dict(
                output_shapes=[(1,)] * len(self.output_names),
                output_dtypes=list(output_dtypes),
                grid=(1, 1, 1),
                threadgroup=(1, 1, 1),
                template=template,
            )
            text = mlx_generated_source(make, call, [mx.zeros(a.shape, a.dtype) for a in inputs])
            self._sources[key] = text
        return re.search(r"\[\[kernel\]\] void (\w+)\(", text).group(1), text
