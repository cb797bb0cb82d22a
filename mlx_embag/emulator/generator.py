"""The source text MLX 0.32 generates for ``mx.fast.metal_kernel``, byte for byte.

A kernel that would not compile on a Mac must not compile here either, so
the quirks of MLX 0.32.4's signature writer are kept: substring detection in
``source`` only, a fixed attribute order (:data:`ATTRIBUTES`), the
``constant`` address space for inputs under 8 elements, and the early ``) {``
after the first output when shape/strides/ndim parameters exist, there are two
or more outputs and no attribute is used.

Example:
    >>> import mlx.core as mx
    >>> name, text = generate_source(
    ...     "myexp", ["inp"], ["out"], "out[0] = inp[0];",
    ...     [InputInfo(mx.float32, ndim=1, size=16)], [mx.float32], template=[("T", mx.float32)])
    >>> name  # MLX's double underscore before the template part
    'custom_kernel_myexp__float_float_float'
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from .translate import ATTRIBUTES

#: Inputs with fewer elements than this live in the ``constant`` address space.
MAX_CONSTANT_ARRAY_SIZE = 8

_TYPE_NAMES = {
    mx.float32: "float",
    mx.float16: "float16_t",
    mx.bfloat16: "bfloat16_t",
    mx.float64: "double",
    mx.complex64: "complex64_t",
    mx.bool_: "bool",
    mx.int8: "int8_t",
    mx.int16: "int16_t",
    mx.int32: "int32_t",
    mx.int64: "int64_t",
    mx.uint8: "uint8_t",
    mx.uint16: "uint16_t",
    mx.uint32: "uint32_t",
    mx.uint64: "uint64_t",
}


@dataclass(frozen=True)
class InputInfo:
    """What the generator needs to know about one input array."""

    dtype: mx.Dtype
    ndim: int
    size: int


def type_string(dtype) -> str:
    """MSL spelling of an MLX dtype (``get_type_string``), e.g. ``float16_t``.

    >>> type_string(mx.bfloat16)
    'bfloat16_t'
    """
    try:
        return _TYPE_NAMES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"Unsupported compilation type: {dtype!r}") from None


def template_value(value) -> str:
    """One template argument as MLX writes it: bool as 1/0, int, or a dtype's MSL name."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            # MLX casts to a C++ int; nanobind refuses what does not fit.
            raise ValueError(f"template: int value {value} does not fit in a 32-bit int")
        return str(value)
    if isinstance(value, mx.Dtype):
        return type_string(value)
    raise ValueError("Invalid template argument. Must be `mlx.core.Dtype`, `int` or `bool`.")


def _template_kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return "typename"


def write_template(template) -> str:
    """``<float, 4, 1>`` for ``[("T", mx.float32), ("N", 4), ("B", True)]``."""
    return "<" + ", ".join(template_value(v) for _, v in template) + ">"


def template_hash(template_def: str) -> str:
    """MLX 0.32.4's ``make_template_hash``: ``<float, -3>`` becomes ``_float__3``."""
    h = template_def.replace("<", "_").replace(">", "_").replace(", ", "_").replace("-", "_")
    return h[:-1]


def detect_shape_info(input_names, source: str) -> list[tuple[bool, bool, bool]]:
    """Per input, whether ``source`` mentions ``<name>_shape``, ``_strides``, ``_ndim`` (substrings)."""
    return [(n + "_shape" in source, n + "_strides" in source, n + "_ndim" in source) for n in input_names]


def detect_attributes(source: str) -> list[tuple[str, str]]:
    """The ``(attribute, type)`` pairs whose names occur anywhere in ``source``, in MLX's order."""
    return [(a, t) for a, t in ATTRIBUTES if a in source]


def kernel_name(name: str, inputs, output_dtypes, template=None) -> str:
    """The mangled function / host name MLX gives a specialisation."""
    out = "custom_kernel_" + name
    if template:
        out += "_" + template_hash(write_template(template))
    for info in inputs:
        out += "_" + type_string(info.dtype)
        if info.ndim == 0:
            out += "s"
        elif info.size < MAX_CONSTANT_ARRAY_SIZE:
            out += "c"
    for dt in output_dtypes:
        out += "_" + type_string(dt)
    return out


def generate_source(
    name,
    input_names,
    output_names,
    source,
    inputs,
    output_dtypes,
    template=None,
    header="",
    atomic_outputs=False,
) -> tuple[str, str]:
    """``(kernel_name, kernel_source)`` exactly as MLX 0.32.4 builds them (no preamble).

    Args:
        inputs: one :class:`InputInfo` per input name.
        output_dtypes: one MLX dtype per output name.
        template: ``[(name, value)]`` with value a dtype, int or bool (or None).
    """
    template = list(template or [])
    for entry in template:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"template: expected (name, value) pairs with a str name, got {entry!r}")
    kname = kernel_name(name, inputs, output_dtypes, template)
    shape_infos = detect_shape_info(input_names, source)
    attributes = ["  " + t + " " + a + " [[" + a + "]]" for a, t in detect_attributes(source)]

    parts = [header]
    if template:
        parts.append("template <" + ", ".join(_template_kind(v) + " " + n for n, v in template) + ">\n")
    parts.append("[[kernel]] void " + kname + "(\n")
    index = 0
    for n, info, (has_shape, has_strides, has_ndim) in zip(input_names, inputs, shape_infos):
        loc = "constant" if info.size < MAX_CONSTANT_ARRAY_SIZE else "device"
        ref = "&" if info.ndim == 0 else "*"
        parts.append(f"  const {loc} {type_string(info.dtype)}{ref} {n} [[buffer({index})]],\n")
        index += 1
        if info.ndim > 0:
            if has_shape:
                parts.append(f"  const constant int* {n}_shape [[buffer({index})]],\n")
                index += 1
            if has_strides:
                parts.append(f"  const constant int64_t* {n}_strides [[buffer({index})]],\n")
                index += 1
            if has_ndim:
                parts.append(f"  const constant int& {n}_ndim [[buffer({index})]],\n")
                index += 1
    n_args = len(input_names) + len(output_names)
    for n, dt in zip(output_names, output_dtypes):
        t = type_string(dt)
        if atomic_outputs:
            t = f"atomic<{t}>"
        parts.append(f"  device {t}* {n} [[buffer({index})]]")
        # MLX compares the buffer index (not the argument count): the quirk kept here.
        parts.append(",\n" if index < n_args - 1 or attributes else ") {\n")
        index += 1
    for i, attr in enumerate(attributes):
        parts.append(attr + (",\n" if i < len(attributes) - 1 else ") {\n"))
    parts.append(source + "\n}\n")
    if template:
        tdef = write_template(template)
        parts.append(
            f'\ntemplate [[host_name("{kname}")]] [[kernel]] decltype({kname}{tdef}) {kname}{tdef};\n'
        )
    return kname, "".join(parts)
