"""Compiling and launching MLX-generated Metal kernel source on the CPU.

:func:`launch` takes exactly the text ``mx.fast.metal_kernel`` generates,
turns it into a C++ translation unit against the MSL shim (:mod:`.translate`),
compiles it (:mod:`.compiler`, cached on disk) and runs the grid through the
runtime library (:mod:`._abi`) with the semantics of Metal's
``dispatchThreads`` (see ``shim/runtime.cpp``). With ``sanitize=True``
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

import os
import threading

import numpy as np

from . import _abi, compiler, strict
from .translate import ParsedKernel, numbered, translation_unit

MAX_THREADS_PER_THREADGROUP = 1024
DEFAULT_STACK_KB = 64
SANITIZE_STACK_KB = 512
DEFAULT_TIMEOUT_S = 300.0

# Bytes per element of every type MLX can put in a signature.
_TYPE_SIZES = {
    "float": 4,
    "float32_t": 4,
    "half": 2,
    "float16_t": 2,
    "bfloat": 2,
    "bfloat16_t": 2,
    "bool": 1,
    "int8_t": 1,
    "uint8_t": 1,
    "int16_t": 2,
    "uint16_t": 2,
    "int32_t": 4,
    "uint32_t": 4,
    "int": 4,
    "uint": 4,
    "int64_t": 8,
    "uint64_t": 8,
    "complex64_t": 8,
    "double": 8,
}


class EmulatorError(RuntimeError):
    """A kernel failed at run time under the emulator."""


def _fail(display_name: str, message: str, exc=RuntimeError):
    return exc(f"[metal_kernel emulator] kernel `{display_name}`: {message}")


_load_lock = threading.Lock()
_runtime_lib = None
_kernel_libs: dict[str, tuple] = {}  # path -> (library kept loaded, entry address)


def _runtime():
    global _runtime_lib
    with _load_lock:
        if _runtime_lib is None:
            _runtime_lib = _abi.load_runtime(str(compiler.build_runtime(sanitize=False)))
        return _runtime_lib


def _kernel_entry(path: str) -> int:
    with _load_lock:
        loaded = _kernel_libs.get(path)
        if loaded is None:
            loaded = _kernel_libs[path] = _abi.load_kernel(path)
    return loaded[1]


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
    kb = int(
        os.environ.get("MLX_EMBAG_EMULATOR_STACK_KB", SANITIZE_STACK_KB if sanitize else DEFAULT_STACK_KB)
    )
    return max(16, kb) * 1024


def _check_buffers(display_name: str, parsed: ParsedKernel, buffers: list) -> None:
    bufs = [p for p in parsed.params if p.kind == "buffer"]
    if len(buffers) != len(bufs):
        raise _fail(display_name, f"expected {len(bufs)} buffers, got {len(buffers)}", ValueError)
    for p, a in zip(bufs, buffers):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise _fail(display_name, f"buffer `{p.name}` must be a C-contiguous numpy array", ValueError)
        elem = p.elem_type[len("atomic<") : -1] if p.elem_type.startswith("atomic<") else p.elem_type
        size = _TYPE_SIZES.get(elem)
        if size is not None and a.itemsize != size:
            raise _fail(
                display_name,
                f"buffer `{p.name}` holds {elem} ({size} bytes per element) but got a {a.dtype} array",
                ValueError,
            )
        if p.ref == "&" and a.size < 1:
            raise _fail(display_name, f"scalar buffer `{p.name}` is empty", ValueError)
        if not p.const and not a.flags.writeable:
            raise _fail(display_name, f"output buffer `{p.name}` is read-only", ValueError)


def prepare(
    *,
    display_name: str,
    kernel_name: str,
    kernel_source: str,
    math_mode: str = "safe",
    sanitize: bool = False,
):
    """Compile (or fetch from the cache) one kernel; returns (path, parsed, needs_fibers)."""
    try:
        tu, parsed, needs_fibers = translation_unit(kernel_name, kernel_source)
    except ValueError as e:
        raise _fail(display_name, f"cannot parse the generated source: {e}") from None
    try:
        flags = compiler.kernel_flags(math_mode, False)
        strict.check(tu, kernel_source, parsed.lines_before_signature, flags)
        if sanitize:
            flags = compiler.kernel_flags(math_mode, True)
        path = compiler.build(
            tu, flags, suffix=kernel_name + ("_asan" if sanitize else ""), source_name="kernel.cpp"
        )
    except compiler.CompileError as e:
        raise _fail(
            display_name, f"compilation failed:\n{e}\n\nGenerated source:\n{numbered(kernel_source)}"
        ) from None
    return path, parsed, needs_fibers


def launch(
    *,
    display_name: str,
    kernel_name: str,
    kernel_source: str,
    buffers: list,
    grid: tuple,
    threadgroup: tuple,
    math_mode: str = "safe",
    seed: int | None = None,
    sanitize: bool = False,
    workers: int | None = None,
    timeout: float | None = None,
) -> None:
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
    if min(grid) < 0 or min(threadgroup) < 1 or max(grid + threadgroup) >= 2**31:
        raise _fail(display_name, f"invalid grid {grid} / threadgroup {threadgroup}", ValueError)
    n_tg = threadgroup[0] * threadgroup[1] * threadgroup[2]
    if n_tg > MAX_THREADS_PER_THREADGROUP:
        # MLX's message, double space included; the check uses the unclamped size.
        raise ValueError(
            f"[metal_kernel] Thread group size ({n_tg}) is greater than  the maximum allowed threads "
            f"per threadgroup ({MAX_THREADS_PER_THREADGROUP})."
        )
    path, parsed, needs_fibers = prepare(
        display_name=display_name,
        kernel_name=kernel_name,
        kernel_source=kernel_source,
        math_mode=math_mode,
        sanitize=sanitize,
    )
    _check_buffers(display_name, parsed, buffers)
    if min(grid) == 0:
        return
    workers = default_workers() if workers is None else max(1, int(workers))
    timeout = default_timeout() if timeout is None else max(0.0, float(timeout))
    from .profile import recorder

    prof = recorder()
    if prof is not None:  # a cost build on one worker, recorded (sanitize and seed do not apply)
        err = prof._record(
            display_name=display_name,
            kernel_name=kernel_name,
            kernel_source=kernel_source,
            buffers=buffers,
            grid=grid,
            threadgroup=threadgroup,
            math_mode=math_mode,
            stack_bytes=_stack_bytes(False),
            timeout=timeout,
        )
        if err:
            raise _fail(display_name, err, EmulatorError)
        return
    seed_value = -1 if seed is None else int(seed) & 0x7FFFFFFFFFFFFFFF
    how = _abi.Launch(
        tuple(grid), tuple(threadgroup), seed_value, needs_fibers, workers, _stack_bytes(sanitize), timeout
    )
    if sanitize:
        from . import _sanitize_worker

        const = [p.const for p in parsed.params if p.kind == "buffer"]
        err = _sanitize_worker.run_in_subprocess(kernel_so=str(path), buffers=buffers, const=const, how=how)
    else:
        err = run_compiled(str(path), buffers, how)
    if err:
        raise _fail(display_name, err, EmulatorError)


def run_compiled(kernel_so: str, buffers: list, how: _abi.Launch) -> str | None:
    """Run an already-compiled kernel in this process; returns an error message or None."""
    return _abi.launch(_runtime(), _kernel_entry(kernel_so), buffers, how)
