"""The profiler's "cost" build of a kernel and the runtime's recording interface.

A cost build is the kernel's usual translation unit compiled with
SanitizerCoverage (a callback at every basic block and before every load and
store, with the tables of block addresses and of the control-flow graph),
line tables, and ``EMU_COST`` (the shim reports atomics). Flags that would
change the memory picture a GPU compiler produces are fixed here:

- ``-fno-vectorize -fno-slp-vectorize``: no loop or straight-line vectorizer
  merges scalar accesses into vector ones (a vector access in the kernel
  source stays one);
- ``-fno-builtin-memset/-memcpy/-memmove``: no loop becomes a library call
  the callbacks cannot see (loop idiom recognition);
- ``-fno-unroll-loops``: a loop with a data-dependent trip count stays one
  loop (runtime unrolling would spread its accesses over remainder copies);
- ``-mllvm -inline-threshold=100000``: every function is inlined, as GPU
  compilers do, so a branch's reconvergence point lies in the same function;
- ``-mllvm -simplifycfg-sink-common=false`` / ``-simplifycfg-hoist-common=false``:
  the two arms of a branch keep their own accesses (merged, an ``if``/``else``
  becomes one access through a selected pointer, with no source line);
- ``-mllvm -enable-tail-merge=false``: the code generator does not merge the
  identical tails of two arms (their callbacks included) into one block,
  which would credit both arms' accesses to one block run apart for each arm;
- the rest as the plain build (``-O1``, math mode).

Example:
    >>> "-fsanitize-coverage=bb,trace-pc-guard,pc-table,control-flow,trace-loads,trace-stores" in COST_FLAGS
    True
"""

from __future__ import annotations

import ctypes
import platform
import threading
from dataclasses import dataclass

import numpy as np

from . import _abi, _cost_cfg, compiler, runtime, strict
from .translate import ParsedKernel, numbered, translation_unit

COST_FLAGS = [
    "-DEMU_COST=1",
    "-fsanitize-coverage=bb,trace-pc-guard,pc-table,control-flow,trace-loads,trace-stores",
    "-mllvm",
    "-sanitizer-coverage-prune-blocks=0",
    "-gline-tables-only",
    "-fno-vectorize",
    "-fno-slp-vectorize",
    "-fno-unroll-loops",
    "-fno-builtin-memset",
    "-fno-builtin-memcpy",
    "-fno-builtin-memmove",
    "-mllvm",
    "-inline-threshold=100000",
    "-mllvm",
    "-simplifycfg-sink-common=false",
    "-mllvm",
    "-simplifycfg-hoist-common=false",
    "-mllvm",
    "-enable-tail-merge=false",
]

# Figures per site and space as the runtime reports them (shim/cost_record.cpp, Stats).
STAT_FIELDS = (
    "instructions",
    "lanes",
    "bytes",
    "sectors",
    "lines",
    "bank_max",
    "addresses",
    "max_per_address",
)
KINDS = ("load", "store", "atomic")
SOURCE_SITE = 1 << 62  # an atomic's site: this bit | line * 4096 + column
# Length of a call instruction: x86-64 `call rel32`, AArch64 `bl`.
_CALL_BYTES = 5 if platform.machine().lower() in ("x86_64", "amd64") else 4


@dataclass(frozen=True)
class CostKernel:
    """A loaded cost build: what the profiler needs to run and read it."""

    path: str
    entry: int
    parsed: ParsedKernel
    needs_fibers: bool
    load_base: int


_lock = threading.RLock()
_loaded: dict[str, CostKernel] = {}
_libs: list = []  # keeps loaded objects alive


def _bind(rt: ctypes.CDLL) -> ctypes.CDLL:
    if getattr(rt, "_cost_bound", False):
        return rt
    u64p = ctypes.POINTER(ctypes.c_uint64)
    rt.emu_cost_module_count.restype = ctypes.c_int
    rt.emu_cost_module.argtypes = [ctypes.c_int, u64p]
    rt.emu_cost_set_ipdom.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int32)]
    rt.emu_cost_begin.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int,
    ]
    rt.emu_cost_end.restype = ctypes.c_int
    rt.emu_cost_site_count.restype = ctypes.c_int
    rt.emu_cost_site.argtypes = [ctypes.c_int, u64p]
    rt.emu_cost_atomics.argtypes = [u64p]
    rt._cost_bound = True
    return rt


def _words(address: int, count: int) -> list[int]:
    if not count:
        return []
    return np.ctypeslib.as_array((ctypes.c_uint64 * count).from_address(address)).tolist()


def prepare(display_name: str, kernel_name: str, kernel_source: str, math_mode: str) -> CostKernel:
    """Compile (cached) and load the cost build of one kernel; register its post-dominators."""
    tu, parsed, needs_fibers = translation_unit(kernel_name, kernel_source)
    flags = compiler.kernel_flags(math_mode, False)
    try:
        strict.check(tu, kernel_source, parsed.lines_before_signature, flags)
        path = str(
            compiler.build(tu, flags + COST_FLAGS, suffix=kernel_name + "_cost", source_name="kernel.cpp")
        )
    except compiler.CompileError as e:
        raise RuntimeError(
            f"[metal_kernel emulator] kernel `{display_name}`: compilation failed:\n{e}\n\n"
            f"Generated source:\n{numbered(kernel_source)}"
        ) from None
    with _lock:
        if path in _loaded:
            return _loaded[path]
        rt = _bind(runtime._runtime())
        before = rt.emu_cost_module_count()
        lib, entry = _abi.load_kernel(path)
        _libs.append(lib)
        module = rt.emu_cost_module_count() - 1
        if module < before:
            raise RuntimeError(
                f"[metal_kernel emulator] kernel `{display_name}`: the cost build registered no blocks"
            )
        info = (ctypes.c_uint64 * 7)()
        rt.emu_cost_module(module, info)
        _base, count, pcs_at, npcs, cfs_at, ncfs, load_base = list(info)
        pcs = _words(pcs_at, 2 * npcs)[0::2]
        ipdom = _cost_cfg.instrumented_post_dominators(pcs, _words(cfs_at, ncfs))
        if len(ipdom) != count:
            raise RuntimeError(
                f"[metal_kernel emulator] kernel `{display_name}`: inconsistent coverage tables"
            )
        rt.emu_cost_set_ipdom(module, (ctypes.c_int32 * max(count, 1))(*ipdom))
        kernel = CostKernel(path, entry, parsed, needs_fibers, load_base)
        _loaded[path] = kernel
        return kernel


@dataclass(frozen=True)
class RawSite:
    """One instruction site's figures as recorded: ``line`` in the generated source (or None)."""

    line: int | None
    kind: str
    device: dict
    threadgroup: dict


def run(kernel: CostKernel, buffers: list, how: _abi.Launch) -> tuple[str | None, list[RawSite], dict]:
    """Run a cost build over the grid while recording.

    Returns:
        (the runtime's error or None, the sites, launch atomics per space:
        ``{"device": (ops, addresses, max_per_address), "threadgroup": ...}``)
    """
    with _lock:
        rt = _bind(runtime._runtime())
        n = len(buffers)
        ptrs = (ctypes.c_void_p * max(n, 1))(*[a.ctypes.data for a in buffers])
        sizes = (ctypes.c_int64 * max(n, 1))(*[a.nbytes for a in buffers])
        if rt.emu_cost_begin(ptrs, sizes, n):
            return "the profiler records at most 63 buffers", [], {}
        try:
            err = _abi.launch(rt, kernel.entry, buffers, how)
        finally:
            oom = rt.emu_cost_end()
        if oom and not err:
            err = "the profiler ran out of memory recording this launch"
        raw = []
        out = (ctypes.c_uint64 * (2 + 2 * len(STAT_FIELDS)))()
        for s in range(rt.emu_cost_site_count()):
            rt.emu_cost_site(s, out)
            raw.append(list(out))
        atom = (ctypes.c_uint64 * 6)()
        rt.emu_cost_atomics(atom)
    # A site is a callback's return address; the call itself carries the access's line.
    code_pcs = [r[0] - kernel.load_base - _CALL_BYTES for r in raw if not r[0] & SOURCE_SITE]
    lines = _cost_cfg.source_lines(kernel.path, code_pcs)
    sites = []
    k = len(STAT_FIELDS)
    for r in raw:
        line = (
            (r[0] & (SOURCE_SITE - 1)) // 4096
            if r[0] & SOURCE_SITE
            else lines[r[0] - kernel.load_base - _CALL_BYTES]
        )
        dev = dict(zip(STAT_FIELDS, r[2 : 2 + k]))
        tg = dict(zip(STAT_FIELDS, r[2 + k : 2 + 2 * k]))
        sites.append(RawSite(line, KINDS[r[1]], dev, tg))
    atomics = {"device": tuple(atom[0:3]), "threadgroup": tuple(atom[3:6])}
    return err, sites, atomics
