"""Running MLX-generated Metal kernel source on the CPU.

:func:`launch` takes exactly the text ``mx.fast.metal_kernel`` generates (the
signature, body and template instantiation, without MLX's preamble), turns it
into a C++ translation unit against the MSL shim in ``shim/``, compiles it
(:mod:`.compiler`, cached on disk) and runs the grid with the semantics of
Metal's ``dispatchThreads`` (see ``shim/runtime.cpp``). With ``sanitize=True``
the kernel is built with AddressSanitizer and run in a subprocess
(``_sanitize_worker.py``) so that an out-of-bounds access becomes a Python
exception instead of a crash.

Environment variables (read at every launch):
    MLX_EMBAG_EMULATOR_THREADS: OS threads running threadgroups (default:
        one per CPU, at most 8; 1 reproduces a seeded order exactly).
    MLX_EMBAG_EMULATOR_STACK_KB: stack of each GPU thread run as a fiber
        (default 64, 512 under the sanitizer).
    MLX_EMBAG_EMULATOR_TIMEOUT: seconds before a running kernel is stopped
        with an error (default 300; 0 = never).
    MLX_EMBAG_EMULATOR_CACHE, MLX_EMBAG_EMULATOR_CXX,
    MLX_EMBAG_EMULATOR_UCONTEXT: see :mod:`.compiler`;
    MLX_EMBAG_EMULATOR_LIBASAN: path of the ASan runtime for the sanitizer.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from . import compiler

MAX_THREADS_PER_THREADGROUP = 1024
DEFAULT_STACK_KB = 64
SANITIZE_STACK_KB = 512
DEFAULT_TIMEOUT_S = 300.0

# Bytes per element of every type MLX can put in a signature.
_TYPE_SIZES = {
    "float": 4, "float32_t": 4, "half": 2, "float16_t": 2, "bfloat": 2, "bfloat16_t": 2,
    "bool": 1, "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4,
    "uint32_t": 4, "int": 4, "uint": 4, "int64_t": 8, "uint64_t": 8, "complex64_t": 8,
    "double": 8,
}
_ATTRIBUTE_TYPES = {
    "dispatch_quadgroups_per_threadgroup": "uint", "dispatch_simdgroups_per_threadgroup": "uint",
    "dispatch_threads_per_threadgroup": "uint3", "grid_origin": "uint3", "grid_size": "uint3",
    "quadgroup_index_in_threadgroup": "uint", "quadgroups_per_threadgroup": "uint",
    "simdgroup_index_in_threadgroup": "uint", "simdgroups_per_threadgroup": "uint",
    "thread_execution_width": "uint", "thread_index_in_quadgroup": "uint",
    "thread_index_in_simdgroup": "uint", "thread_index_in_threadgroup": "uint",
    "thread_position_in_grid": "uint3", "thread_position_in_threadgroup": "uint3",
    "threadgroup_position_in_grid": "uint3", "threadgroups_per_grid": "uint3",
    "threads_per_grid": "uint3", "threads_per_simdgroup": "uint", "threads_per_threadgroup": "uint3",
}
# Where each attribute lives in the runtime's EmuAttrs struct.
_ATTRIBUTE_FIELDS = {name: name for name in _ATTRIBUTE_TYPES}
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
    kind: str            # "buffer" or "attribute"
    ctype: str = ""      # C++ pointee / value type, e.g. "const device float", or "uint3"
    ref: str = "*"
    index: int = -1      # buffer index
    elem_type: str = ""  # e.g. "float", "atomic<float>"
    const: bool = False
    attr: str = ""


@dataclass(frozen=True)
class ParsedKernel:
    """The pieces of MLX's generated source that the runtime needs."""

    params: tuple
    template_args: str | None
    lines_before_signature: int


class EmulatorError(RuntimeError):
    """A kernel failed at run time under the emulator."""


def _fail(display_name: str, message: str, exc=RuntimeError):
    return exc(f"[metal_kernel emulator] kernel `{display_name}`: {message}")


def numbered(source: str) -> str:
    """``source`` with 1-based line numbers, as compile errors show it."""
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
            params.append(Param(
                name=m["name"], kind="buffer",
                ctype=f"{'const ' if m['const'] else ''}{m['space']} {type_text}",
                ref=m["ref"], index=int(m["index"]), elem_type=type_text, const=bool(m["const"]),
            ))
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
        + "\n".join(checks) + ("\n" if checks else "")
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
    tu = (
        '#include "metal_shim.h"\n'
        '#line 1 "kernel.metal"\n'
        + text + "\n"
        + _entry_point(kernel_name, parsed)
    )
    return tu, parsed, needs_fibers


# ---------------------------------------------------------------- source rewriting
_ATTRIBUTE = re.compile(r"\[\[\s*(?:kernel|host_name\([^)]*\)|buffer\(\d+\)|\w+)\s*\]\]")
_TOKEN = re.compile(
    r"//[^\n]*|/\*.*?\*/|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|\.?\d(?:[eEpP][+-]|[\w.])*"
    r"|[A-Za-z_]\w*|\s+|.",
    re.S,
)


def strip_attributes(line: str) -> str:
    """Blank the Metal ``[[...]]`` attributes clang rejects, keeping columns."""
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
            decl = "".join(t for t in toks[i + 1:j] if not t.startswith(("//", "/*")))
            rewritten = _rewrite_declaration(decl, next_id)
            if rewritten is not None:
                stmt, used = rewritten
                next_id += used
                span = "".join(toks[i:j + 1])
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
    from lanes that skipped a SIMD call and ran to the end."""
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
    """Metal's half literals (``1.5h``) become ``((half)1.5)``; C++ has no such suffix."""
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


# ---------------------------------------------------------------- loading and running
_load_lock = threading.Lock()
_runtime_lib = None
_kernel_libs: dict[str, ctypes.CDLL] = {}


def _runtime():
    global _runtime_lib
    with _load_lock:
        if _runtime_lib is None:
            path = compiler.build_runtime(sanitize=False)
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            lib.emu_launch.restype = ctypes.c_int
            lib.emu_launch.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int64),
                ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                ctypes.c_longlong, ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_double,
                ctypes.c_char_p, ctypes.c_int,
            ]
            _runtime_lib = lib
        return _runtime_lib


def _kernel_entry(path: str) -> int:
    with _load_lock:
        lib = _kernel_libs.get(path)
        if lib is None:
            lib = ctypes.CDLL(path)
            _kernel_libs[path] = lib
    return ctypes.cast(lib.__emu_entry, ctypes.c_void_p).value


def default_workers() -> int:
    """OS threads running threadgroups (``MLX_EMBAG_EMULATOR_THREADS``, else one per CPU)."""
    env = os.environ.get("MLX_EMBAG_EMULATOR_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def default_timeout() -> float:
    """Seconds a launch may run before it is stopped (``MLX_EMBAG_EMULATOR_TIMEOUT``; 0 = no limit)."""
    return max(0.0, float(os.environ.get("MLX_EMBAG_EMULATOR_TIMEOUT", DEFAULT_TIMEOUT_S)))


def _stack_bytes(sanitize: bool) -> int:
    kb = int(os.environ.get("MLX_EMBAG_EMULATOR_STACK_KB", SANITIZE_STACK_KB if sanitize else DEFAULT_STACK_KB))
    return max(16, kb) * 1024


def _check_buffers(display_name: str, parsed: ParsedKernel, buffers: list) -> None:
    bufs = [p for p in parsed.params if p.kind == "buffer"]
    if len(buffers) != len(bufs):
        raise _fail(display_name, f"expected {len(bufs)} buffers, got {len(buffers)}", ValueError)
    for p, a in zip(bufs, buffers):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise _fail(display_name, f"buffer `{p.name}` must be a C-contiguous numpy array", ValueError)
        elem = p.elem_type[len("atomic<"):-1] if p.elem_type.startswith("atomic<") else p.elem_type
        size = _TYPE_SIZES.get(elem)
        if size is not None and a.itemsize != size:
            raise _fail(display_name, f"buffer `{p.name}` holds {elem} ({size} bytes per element) but "
                        f"got a {a.dtype} array", ValueError)
        if p.ref == "&" and a.size < 1:
            raise _fail(display_name, f"scalar buffer `{p.name}` is empty", ValueError)
        if not p.const and not a.flags.writeable:
            raise _fail(display_name, f"output buffer `{p.name}` is read-only", ValueError)


def prepare(*, display_name: str, kernel_name: str, kernel_source: str, math_mode: str = "safe",
            sanitize: bool = False):
    """Compile (or fetch from the cache) one kernel; returns (path, parsed, needs_fibers)."""
    try:
        tu, parsed, needs_fibers = translation_unit(kernel_name, kernel_source)
    except ValueError as e:
        raise _fail(display_name, f"cannot parse the generated source: {e}") from None
    try:
        # The sanitizer build drops address spaces (ASan ignores accesses
        # through them), so a plain build runs first to keep Metal's
        # address-space errors in sanitizer mode too.
        path = compiler.build(tu, compiler.kernel_flags(math_mode, False), suffix=kernel_name,
                              source_name="kernel.cpp")
        if sanitize:
            path = compiler.build(tu, compiler.kernel_flags(math_mode, True), suffix=kernel_name + "_asan",
                                  source_name="kernel.cpp")
    except compiler.CompileError as e:
        raise _fail(display_name, f"compilation failed:\n{e}\n\nGenerated source:\n{numbered(kernel_source)}") \
            from None
    return path, parsed, needs_fibers


def launch(*, display_name: str, kernel_name: str, kernel_source: str, buffers: list, grid: tuple,
           threadgroup: tuple, math_mode: str = "safe", seed: int | None = None, sanitize: bool = False,
           workers: int | None = None, timeout: float | None = None) -> None:
    """Compile and run one MLX-generated Metal kernel on the CPU.

    Args:
        display_name: the user's kernel name, used in error messages.
        kernel_name: MLX's mangled name (the function / host name).
        kernel_source: exactly the text MLX generates (without preamble).
        buffers: one C-contiguous numpy array per ``[[buffer(i)]]`` in order;
            outputs are written in place (with ``sanitize=True`` the child's
            results are copied back into them). bfloat16 travels as uint16.
        grid: threads per dimension (3 ints), as ``dispatchThreads``.
        threadgroup: threads per threadgroup (3 ints); clamped to ``grid``.
        math_mode: ``"safe"``, ``"relaxed"`` or ``"fast"``.
        seed: shuffles the threadgroup order (and the order of threads
            within a threadgroup) reproducibly; ``None`` keeps grid order.
        sanitize: build with AddressSanitizer and run in a subprocess, so an
            out-of-bounds access raises instead of corrupting memory.
        workers: OS threads (default :func:`default_workers`).
        timeout: seconds after which a still-running kernel is stopped with
            an error, as a GPU watchdog would (default
            :func:`default_timeout`; 0 = no limit).

    Raises:
        ValueError: a threadgroup above 1024 threads, or buffers that do not
            match the signature.
        RuntimeError: a compile error (with clang's message and the numbered
            source), a divergent barrier or SIMD function, or (sanitizer) an
            out-of-bounds access.
    """
    grid = tuple(int(g) for g in grid)
    threadgroup = tuple(int(t) for t in threadgroup)
    if len(grid) != 3 or len(threadgroup) != 3:
        raise _fail(display_name, "grid and threadgroup must have 3 entries each", ValueError)
    if min(grid) < 0 or min(threadgroup) < 1:
        raise _fail(display_name, f"invalid grid {grid} / threadgroup {threadgroup}", ValueError)
    n_tg = threadgroup[0] * threadgroup[1] * threadgroup[2]
    if n_tg > MAX_THREADS_PER_THREADGROUP:
        # MLX's message, double space included; the check uses the unclamped size.
        raise ValueError(
            f"[metal_kernel] Thread group size ({n_tg}) is greater than  the maximum allowed threads "
            f"per threadgroup ({MAX_THREADS_PER_THREADGROUP})."
        )
    path, parsed, needs_fibers = prepare(display_name=display_name, kernel_name=kernel_name,
                                         kernel_source=kernel_source, math_mode=math_mode, sanitize=sanitize)
    _check_buffers(display_name, parsed, buffers)
    if min(grid) == 0:
        return
    workers = default_workers() if workers is None else max(1, int(workers))
    timeout = default_timeout() if timeout is None else max(0.0, float(timeout))
    seed_value = -1 if seed is None else int(seed) & 0x7FFFFFFFFFFFFFFF
    if sanitize:
        from . import _sanitize_worker

        err = _sanitize_worker.run_in_subprocess(
            kernel_so=str(path), buffers=buffers, const=[p.const for p in parsed.params if p.kind == "buffer"],
            grid=grid, threadgroup=threadgroup, seed=seed_value, use_fibers=needs_fibers, workers=workers,
            stack_bytes=_stack_bytes(True), timeout=timeout,
        )
    else:
        err = run_compiled(str(path), buffers, grid, threadgroup, seed_value, needs_fibers, workers,
                           _stack_bytes(False), timeout)
    if err:
        raise _fail(display_name, err, EmulatorError)


def run_compiled(kernel_so: str, buffers: list, grid: tuple, threadgroup: tuple, seed: int,
                 use_fibers: bool, workers: int, stack_bytes: int, timeout: float = 0.0) -> str | None:
    """Run an already-compiled kernel in this process; returns an error message or None."""
    rt = _runtime()
    entry = _kernel_entry(kernel_so)
    n = len(buffers)
    ptrs = (ctypes.c_void_p * max(n, 1))(*[a.ctypes.data for a in buffers])
    sizes = (ctypes.c_int64 * max(n, 1))(*[a.nbytes for a in buffers])
    g = (ctypes.c_uint * 3)(*grid)
    t = (ctypes.c_uint * 3)(*threadgroup)
    errbuf = ctypes.create_string_buffer(4096)
    rc = rt.emu_launch(entry, ptrs, sizes, n, g, t, seed, int(use_fibers), workers, stack_bytes, timeout,
                       errbuf, len(errbuf))
    return errbuf.value.decode(errors="replace") if rc else None
