"""A small stand-in for MLX's source generator, for the runtime's own tests.

It writes the signature the way mlx 0.32 does (see
../shared/metal_kernel_internals.md §1.2-1.5) for numpy inputs, so the
runtime tests do not depend on the front end; `run_kernel` launches it and
returns the outputs as numpy arrays.
"""

from __future__ import annotations

import numpy as np

from mlx_embag.emulator import runtime

ATTRIBUTES = [
    ("dispatch_quadgroups_per_threadgroup", "uint"), ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"), ("grid_origin", "uint3"), ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"), ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"), ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"), ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"), ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"), ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"), ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"), ("threads_per_simdgroup", "uint"), ("threads_per_threadgroup", "uint3"),
]
TYPE_NAMES = {
    np.dtype(np.float32): "float", np.dtype(np.float16): "float16_t", np.dtype(np.int32): "int32_t",
    np.dtype(np.int64): "int64_t", np.dtype(np.uint32): "uint32_t", np.dtype(np.int8): "int8_t",
    np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t", np.dtype(np.uint16): "uint16_t",
    np.dtype(np.uint64): "uint64_t", np.dtype(np.bool_): "bool",
}


def type_name(dtype) -> str:
    """MSL name of a numpy dtype; the string "bfloat16" stands for bfloat16 (stored as uint16)."""
    return "bfloat16_t" if dtype == "bfloat16" else TYPE_NAMES[np.dtype(dtype)]


def generate(name, inputs, outputs, source, template=None, header="", atomic_outputs=False):
    """MLX-style (kernel_name, kernel_source) for numpy inputs.

    Args:
        inputs: list of (name, array, msl_type or None).
        outputs: list of (name, msl_type).
        template: list of (name, value) with value a str (type), int or bool.
    """
    kname = "custom_kernel_" + name
    tdef = ""
    if template:
        vals = [str(int(v)) if isinstance(v, bool) else str(v) for _, v in template]
        tdef = "<" + ", ".join(vals) + ">"
        kname += "_" + tdef.replace("<", "_").replace(">", "_").replace(", ", "_").replace("-", "_")[:-1]
    for n, a, t in inputs:
        kname += "_" + t + ("s" if a.ndim == 0 else "c" if a.size < 8 else "")
    for n, t in outputs:
        kname += "_" + t
    text = header
    if template:
        kinds = ["bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "typename"
                 for _, v in template]
        text += "template <" + ", ".join(f"{k} {n}" for k, (n, _) in zip(kinds, template)) + ">\n"
    text += f"[[kernel]] void {kname}(\n"
    params = []
    idx = 0
    for n, a, t in inputs:
        loc = "constant" if a.size < 8 else "device"
        ref = "&" if a.ndim == 0 else "*"
        params.append(f"  const {loc} {t}{ref} {n} [[buffer({idx})]]")
        idx += 1
        if a.ndim > 0:
            for suffix, ptype in (("_shape", "const constant int*"), ("_strides", "const constant int64_t*"),
                                  ("_ndim", "const constant int&")):
                if n + suffix in source:
                    params.append(f"  {ptype} {n}{suffix} [[buffer({idx})]]")
                    idx += 1
    for n, t in outputs:
        t2 = f"atomic<{t}>" if atomic_outputs else t
        params.append(f"  device {t2}* {n} [[buffer({idx})]]")
        idx += 1
    for attr, atype in ATTRIBUTES:
        if attr in source:
            params.append(f"  {atype} {attr} [[{attr}]]")
    text += ",\n".join(params) + ") {\n" + source + "\n}\n"
    if template:
        text += (f'\ntemplate [[host_name("{kname}")]] [[kernel]] decltype({kname}{tdef}) '
                 f"{kname}{tdef};\n")
    return kname, text


NP_OF = {"float": np.float32, "int": np.int32, "uint": np.uint32, "float16_t": np.float16, "bfloat16_t": np.uint16, "int32_t": np.int32,
         "int64_t": np.int64, "uint32_t": np.uint32, "bool": np.bool_, "uint8_t": np.uint8,
         "int8_t": np.int8, "int16_t": np.int16, "uint16_t": np.uint16, "uint64_t": np.uint64}


def run_kernel(name, inputs, outputs, source, *, grid, threadgroup, template=None, header="",
               atomic_outputs=False, init=None, seed=None, sanitize=False, math_mode="safe", workers=None):
    """Generate, launch and return the outputs (numpy arrays).

    Args:
        inputs: list of (name, array) or (name, array, msl_type).
        outputs: list of (name, shape, msl_type).
        init: fill value for outputs (default NaN / all bits set, like garbage).
    """
    ins = [(i[0], np.require(np.asarray(i[1]), requirements="C"), i[2] if len(i) > 2 else type_name(np.asarray(i[1]).dtype))
           for i in inputs]
    kname, text = generate(name, ins, [(n, t) for n, _, t in outputs], source, template, header,
                           atomic_outputs)
    buffers = []
    for n, a, t in ins:
        buffers.append(a.reshape(1) if a.ndim == 0 else a)
        if a.ndim > 0:
            if n + "_shape" in source:
                buffers.append(np.array(a.shape, np.int32))
            if n + "_strides" in source:
                buffers.append(np.array([s // a.itemsize for s in a.strides], np.int64))
            if n + "_ndim" in source:
                buffers.append(np.array([a.ndim], np.int32))
    outs = []
    for n, shape, t in outputs:
        dt = NP_OF[t]
        if init is None:
            o = np.frombuffer(np.full(int(np.prod(shape)) * np.dtype(dt).itemsize, 0xFF, np.uint8).tobytes(),
                              dtype=dt).reshape(shape).copy()
        else:
            o = np.full(shape, init, dt)
        outs.append(o)
    runtime.launch(display_name=name, kernel_name=kname, kernel_source=text, buffers=buffers + outs,
                   grid=grid, threadgroup=threadgroup, math_mode=math_mode, seed=seed, sanitize=sanitize,
                   workers=workers)
    return outs


# ---------------------------------------------------------------- MLX's own generator as the front end
def mlx_generated_source(make_kwargs: dict, call_kwargs: dict, inputs: list) -> str:
    """The exact source MLX 0.32 generates for one call (what ``verbose=True`` prints).

    ``metal_kernel`` only generates code while tracing inside ``mx.export_function``
    (it raises "No Metal back-end" otherwise), and prints through C++ stdout, so
    file descriptor 1 is captured around an export.
    """
    import os
    import sys
    import tempfile

    import mlx.core as mx

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


class OracleKernel:
    """A test-only ``metal_kernel`` stand-in: MLX's own generator plus the runtime.

    Same constructor and call as ``mx.fast.metal_kernel`` (``ensure_row_contiguous``
    is assumed, inputs are made contiguous). Used to run real kernels through the
    runtime independently of the emulator's front end.
    """

    def __init__(self, name, input_names, output_names, source, header="", ensure_row_contiguous=True,
                 atomic_outputs=False, compile_options=None):
        self.make = dict(name=name, input_names=list(input_names), output_names=list(output_names),
                         source=source, header=header, ensure_row_contiguous=True,
                         atomic_outputs=atomic_outputs)
        self.math_mode = (compile_options or {}).get("math_mode", "safe")
        self._sources = {}

    def __call__(self, *, inputs, output_shapes, output_dtypes, grid, threadgroup, template=None,
                 init_value=None, verbose=False, stream=None, seed=None, sanitize=False):
        import re

        import mlx.core as mx

        arrays = [x if isinstance(x, mx.array) else mx.array(x) for x in inputs]
        call = dict(output_shapes=[tuple(s) for s in output_shapes], output_dtypes=list(output_dtypes),
                    grid=tuple(grid), threadgroup=tuple(threadgroup), template=template, init_value=init_value)
        key = (repr(template), tuple((a.dtype, a.ndim == 0, a.size < 8) for a in arrays), tuple(output_dtypes))
        text = self._sources.get(key)
        if text is None:
            text = mlx_generated_source(self.make, call, [mx.zeros(a.shape, a.dtype) for a in arrays])
            self._sources[key] = text
        kname = re.search(r"\[\[kernel\]\] void (\w+)\(", text).group(1)
        src = self.make["source"]
        buffers = []
        for name, a in zip(self.make["input_names"], arrays):
            host = _to_numpy(a)
            buffers.append(host.reshape(1) if host.ndim == 0 else host)
            if a.ndim > 0:
                if name + "_shape" in src:
                    buffers.append(np.array(a.shape, np.int32))
                if name + "_strides" in src:
                    buffers.append(np.array([s // host.itemsize for s in host.strides], np.int64))
                if name + "_ndim" in src:
                    buffers.append(np.array([a.ndim], np.int32))
        outs = []
        for shape, dt in zip(call["output_shapes"], call["output_dtypes"]):
            if init_value is None:
                # Garbage: all bits set (NaN for floats), as a reused GPU buffer might hold.
                proto = _to_numpy(mx.zeros(shape, dt))
                outs.append(np.full(proto.nbytes, 0xFF, np.uint8).view(proto.dtype).reshape(proto.shape).copy())
            else:
                # Not mx.full(shape, float, dtype=int32): that returns float32 in mlx 0.32.
                outs.append(_to_numpy(mx.array(np.full(shape, init_value, np.float32)).astype(dt)).copy())
        runtime.launch(display_name=self.make["name"], kernel_name=kname, kernel_source=text,
                       buffers=buffers + outs, grid=grid, threadgroup=threadgroup, math_mode=self.math_mode,
                       seed=seed, sanitize=sanitize)
        results = []
        for o, dt in zip(outs, call["output_dtypes"]):
            r = mx.array(o)
            results.append(r.view(mx.bfloat16) if dt == mx.bfloat16 else r)
        return results


def _to_numpy(a):
    import mlx.core as mx

    if a.dtype == mx.bfloat16:
        a = a.view(mx.uint16)
    return np.ascontiguousarray(np.array(a))
