"""From the text ``mx.fast.metal_kernel`` generates to a C++ translation unit.

:func:`translation_unit` takes exactly MLX's text (the signature, body and
template instantiation, without MLX's preamble), parses the signature, blanks
the ``[[...]]`` attributes clang rejects, rewrites what C++ spells otherwise
(threadgroup declarations, ``return;`` in kernels that synchronise, ``1.5h``
literals) and appends an ``extern "C"`` entry point that unpacks the buffers
and the thread's attributes. Line and column numbers of the kernel are kept,
so clang's diagnostics point into the source the user wrote.

Example:
    >>> text = ("[[kernel]] void k(\\n"
    ...         "  device float* out [[buffer(0)]],\\n"
    ...         "  uint3 thread_position_in_grid [[thread_position_in_grid]]) {\\n"
    ...         "  out[thread_position_in_grid.x] = 1.5h;\\n"
    ...         "}\\n")
    >>> tu, parsed, needs_fibers = translation_unit("k", text)
    >>> [(p.name, p.kind) for p in parsed.params], needs_fibers
    ([('out', 'buffer'), ('thread_position_in_grid', 'attribute')], False)
    >>> "out[thread_position_in_grid.x] = ((half)1.5);" in tu
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: MLX's ``metal_attributes`` list (name, MSL type): the order in which the
#: generator detects and emits them.
ATTRIBUTES = (
    ("dispatch_quadgroups_per_threadgroup", "uint"),
    ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"),
    ("grid_origin", "uint3"),
    ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"),
    ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"),
    ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"),
    ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"),
    ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"),
    ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"),
    ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"),
    ("threads_per_simdgroup", "uint"),
    ("threads_per_threadgroup", "uint3"),
)
# Where each attribute lives in the runtime's EmuAttrs struct (shim/emu_abi.h),
# which stores grid_size once, as threads_per_grid.
_ATTRIBUTE_FIELDS = {name: name for name, _ in ATTRIBUTES}
_ATTRIBUTE_FIELDS["grid_size"] = "threads_per_grid"

_BUFFER_PARAM = re.compile(
    r"^\s*(?P<const>const\s+)?(?P<space>device|constant)\s+(?P<type>[\w:<>, ]+?)\s*(?P<ref>[*&])\s*"
    r"(?P<name>\w+)\s+\[\[buffer\((?P<index>\d+)\)\]\]\s*(?:,|\)\s*\{)\s*$"
)
_ATTR_PARAM = re.compile(
    r"^\s*(?P<type>uint3|uint)\s+(?P<name>\w+)\s+\[\[(?P<attr>\w+)\]\]\s*(?:,|\)\s*\{)\s*$"
)
# Any of these names means the kernel synchronises: its threads then run as
# fibers. (Plain calls are much faster, so this only errs towards fibers.)
_SYNC_WORDS = re.compile(r"barrier|simd_|quad_|schedule_row_tile")


@dataclass(frozen=True)
class Param:
    """One parameter of the generated kernel signature."""

    name: str
    kind: str  # "buffer" or "attribute"
    ctype: str = ""  # C++ pointee / value type, e.g. "const device float", or "uint3"
    ref: str = "*"
    index: int = -1  # buffer index
    elem_type: str = ""  # e.g. "float", "atomic<float>"
    const: bool = False
    attr: str = ""


@dataclass(frozen=True)
class ParsedKernel:
    """The pieces of MLX's generated source that the runtime needs."""

    params: tuple
    template_args: str | None
    lines_before_signature: int


def numbered(source: str) -> str:
    """``source`` with 1-based line numbers, as compile errors show it.

    Example:
        >>> print(numbered("a\\nb"))
        1: a
        2: b
    """
    lines = source.split("\n")
    width = len(str(len(lines)))
    return "\n".join(f"{i + 1:>{width}}: {line}" for i, line in enumerate(lines))


def parse_signature(kernel_name: str, kernel_source: str) -> tuple[ParsedKernel, int, int]:
    """Parse MLX's generated signature.

    Returns:
        (parsed kernel, index of the first body line, index of the
        instantiation line or -1), line indices 0-based.
    """
    lines = kernel_source.split("\n")
    head = f"[[kernel]] void {kernel_name}("
    try:
        sig = next(i for i, line in enumerate(lines) if line.startswith(head))
    except StopIteration:
        raise ValueError(f"no `{head}` line in the kernel source") from None
    params = []
    i = sig + 1
    while i < len(lines):
        line = lines[i]
        m = _BUFFER_PARAM.match(line)
        if m:
            type_text = " ".join(m["type"].split())
            params.append(
                Param(
                    name=m["name"],
                    kind="buffer",
                    ctype=f"{'const ' if m['const'] else ''}{m['space']} {type_text}",
                    ref=m["ref"],
                    index=int(m["index"]),
                    elem_type=type_text,
                    const=bool(m["const"]),
                )
            )
        else:
            m = _ATTR_PARAM.match(line)
            if not m:
                raise ValueError(f"unrecognised parameter line {i + 1}: {line!r}")
            params.append(Param(name=m["name"], kind="attribute", ctype=m["type"], attr=m["attr"]))
        i += 1
        if line.rstrip().endswith("{"):
            break
    body_start = i
    inst = -1
    template_args = None
    for j in range(len(lines) - 1, body_start - 1, -1):
        if lines[j].startswith("template [[host_name("):
            inst = j
            m = re.search(r"decltype\(" + re.escape(kernel_name) + r"(<.*>)\)", lines[j])
            if not m:
                raise ValueError(f"unrecognised template instantiation line: {lines[j]!r}")
            template_args = m.group(1)
            break
        if lines[j].strip():
            break
    return ParsedKernel(tuple(params), template_args, sig), body_start, inst


def _entry_point(kernel_name: str, parsed: ParsedKernel) -> str:
    args = []
    checks = []
    slot = 0
    for p in parsed.params:
        if p.kind == "buffer":
            if p.ref == "&":
                args.append(f"*({p.ctype}*)__b[{slot}]")
            else:
                args.append(f"({p.ctype}*)__b[{slot}]")
            if p.elem_type.startswith("atomic<"):
                # Instantiate the atomic type so an unsupported one (half,
                # bfloat) is rejected even if the body never touches it.
                checks.append(f"  (void)sizeof(metal::{p.elem_type});")
            slot += 1
        else:
            field = _ATTRIBUTE_FIELDS.get(p.attr)
            if field is None:
                raise ValueError(f"unknown kernel attribute [[{p.attr}]]")
            if p.ctype == "uint3":
                args.append(f"uint3(__a->{field}[0], __a->{field}[1], __a->{field}[2])")
            else:
                args.append(f"__a->{field}")
    call = kernel_name + (parsed.template_args or "")
    joined = ",\n      ".join(args)
    return (
        '#line 1 "<emulator entry point>"\n'
        'extern "C" __attribute__((visibility("default"))) void __emu_entry(void** __b, const EmuAttrs* __a) {\n'
        + "\n".join(checks)
        + ("\n" if checks else "")
        + f"  (void)__b; (void)__a;\n  {call}(\n      {joined});\n}}\n"
    )


def translation_unit(kernel_name: str, kernel_source: str) -> tuple[str, ParsedKernel, bool]:
    """The C++ text clang compiles for one generated kernel source.

    The generated text keeps its line numbers (``#line 1 "kernel.metal"``):
    only `[[...]]` attributes are blanked and body-scope `threadgroup`
    declarations rewritten in place.

    Returns:
        (translation unit, parsed signature, whether threads need fibers)
    """
    parsed, body_start, inst = parse_signature(kernel_name, kernel_source)
    lines = kernel_source.split("\n")
    sig = parsed.lines_before_signature
    for k in range(sig, body_start):
        lines[k] = strip_attributes(lines[k])
    body_end = inst if inst >= 0 else len(lines)
    body = "\n".join(lines[body_start:body_end])
    body = rewrite_threadgroup_declarations(body)
    needs_fibers = bool(_SYNC_WORDS.search(kernel_source))
    if needs_fibers:
        body = mark_returns(body)
    tail = lines[body_end:]
    if inst >= 0:
        tail[0] = strip_attributes(tail[0])
    text = half_literals("\n".join(lines[:body_start] + [body] + tail))
    tu = '#include "metal_shim.h"\n#line 1 "kernel.metal"\n' + text + "\n" + _entry_point(kernel_name, parsed)
    return tu, parsed, needs_fibers


# ---------------------------------------------------------------- source rewriting
_ATTRIBUTE = re.compile(r"\[\[\s*(?:kernel|host_name\([^)]*\)|buffer\(\d+\)|\w+)\s*\]\]")
_TOKEN = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|\.?\d(?:[eEpP][+-]|[\w.])*"
    r"|[A-Za-z_]\w*|\s+|.",
    re.S,
)


def strip_attributes(line: str) -> str:
    """Blank the Metal ``[[...]]`` attributes clang rejects, keeping columns.

    Example:
        >>> strip_attributes("device float* a [[buffer(0)]],")
        'device float* a              ,'
    """
    return _ATTRIBUTE.sub(lambda m: " " * len(m.group(0)), line)


def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for tok in _TOKEN.findall(text):
        if tok in "([{<":
            depth += 1
        elif tok in ")]}>":
            depth -= 1
        if tok == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(tok)
    parts.append("".join(cur))
    return parts


def rewrite_threadgroup_declarations(body: str) -> str:
    """Turn body-scope ``threadgroup T name[N];`` into references to storage
    the runtime shares among the threads of one threadgroup.

    clang refuses automatic variables in an address space, and a blanket
    ``static thread_local`` is wrong through pointers; this keeps the
    declared type (and its address space), so ``&buf[i]`` is still a
    ``threadgroup T*``. Declarations of pointers or references *to*
    threadgroup memory are left alone. Line breaks are preserved.

    Example:
        >>> print(rewrite_threadgroup_declarations("threadgroup float s[4]; threadgroup float* p = s;"))
        threadgroup float (&s)[4] = *(threadgroup float (*)[4])__emu_tg_alloc(0, sizeof(float[4]), alignof(float[4])); threadgroup float* p = s;
    """
    toks = _TOKEN.findall(body)
    out = []
    prev_sig = ";"  # last significant token
    i = 0
    next_id = 0
    while i < len(toks):
        tok = toks[i]
        if tok == "threadgroup" and prev_sig in (";", "{", "}", ")", ":"):
            j = i + 1
            depth = 0
            while j < len(toks) and not (toks[j] == ";" and depth == 0):
                if toks[j] in "([{":
                    depth += 1
                elif toks[j] in ")]}":
                    depth -= 1
                j += 1
            decl = "".join(t for t in toks[i + 1 : j] if not t.startswith(("//", "/*")))
            rewritten = _rewrite_declaration(decl, next_id)
            if rewritten is not None:
                stmt, used = rewritten
                next_id += used
                span = "".join(toks[i : j + 1])
                out.append(stmt + "\n" * span.count("\n"))
                i = j + 1
                prev_sig = ";"
                continue
        out.append(tok)
        if not tok.isspace() and not tok.startswith(("//", "/*")):
            prev_sig = tok
        i += 1
    return "".join(out)


def mark_returns(body: str) -> str:
    """Route the kernel body's ``return;`` through ``__emu_return()``, so the
    runtime can tell lanes that returned (no longer live for SIMD functions)
    from lanes that skipped a SIMD call and ran to the end.

    Example:
        >>> mark_returns("if (i >= n) return; return /* done */ ;")
        'if (i >= n) return __emu_return(); return __emu_return() /* done */ ;'
    """
    toks = _TOKEN.findall(body)
    for i, tok in enumerate(toks):
        if tok != "return":
            continue
        j = i + 1
        while j < len(toks) and (toks[j].isspace() or toks[j].startswith(("//", "/*"))):
            j += 1
        if j < len(toks) and toks[j] == ";":
            toks[i] = "return __emu_return()"
    return "".join(toks)


_HALF_LITERAL = re.compile(r"^((?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)[hH]$")


def half_literals(text: str) -> str:
    """Metal's half literals (``1.5h``) become ``((half)1.5)``; C++ has no such suffix.

    Example:
        >>> half_literals("x = 2h * 1.5h; y = 0x1fh;  // 3h")
        'x = ((half)2) * ((half)1.5); y = 0x1fh;  // 3h'
    """
    toks = _TOKEN.findall(text)
    for i, tok in enumerate(toks):
        if tok[:1].isdigit() or tok[:1] == ".":
            m = _HALF_LITERAL.match(tok)
            if m:
                toks[i] = f"((half){m.group(1)})"
    return "".join(toks)


_DECLARATOR = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$")


def _rewrite_declaration(decl: str, first_id: int):
    """``decl`` is the text after ``threadgroup`` up to ``;``. Returns the
    replacement statement and the number of ids used, or None to keep it."""
    parts = _split_top_level(decl, ",")
    first = parts[0]
    # The first declarator's name is the last identifier before its array
    # dimensions; everything before it is the type.
    m = re.match(r"^(?P<type>.*?[\w>])\s+(?P<decl>[A-Za-z_]\w*\s*(?:\[[^\]]*\]\s*)*)$", first.strip(), re.S)
    if not m or "*" in m["type"] or "&" in m["type"] or "=" in decl or "(" in m["type"]:
        return None
    ctype = " ".join(m["type"].split())
    declarators = [m["decl"]] + [p.strip() for p in parts[1:]]
    stmts = []
    for k, d in enumerate(declarators):
        dm = _DECLARATOR.match(d)
        if not dm:
            return None
        name, dims = dm["name"], "".join(dm["dims"].split())
        full = f"{ctype}{dims}"
        ident = first_id + k
        if dims:
            stmts.append(
                f"threadgroup {ctype} (&{name}){dims} = *(threadgroup {ctype} (*){dims})"
                f"__emu_tg_alloc({ident}, sizeof({full}), alignof({full}));"
            )
        else:
            stmts.append(
                f"threadgroup {ctype}& {name} = *(threadgroup {ctype}*)"
                f"__emu_tg_alloc({ident}, sizeof({ctype}), alignof({ctype}));"
            )
    return " ".join(stmts), len(declarators)
