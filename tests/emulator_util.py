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
