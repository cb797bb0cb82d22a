"""The C ABI between Python and the emulator's runtime library (``shim/runtime.cpp``).

Standard library only: the sanitizer's child process (``_sanitize_worker.py``,
run as a script) imports this module by path and must not pull in mlx. The
buffers only need NumPy's ``.ctypes.data`` and ``.nbytes``.
"""

from __future__ import annotations

import ctypes

_ERROR_BYTES = 4096

# emu_launch(entry, buffers, sizes, n_buffers, grid[3], threadgroup[3], seed, use_fibers,
#            workers, stack_bytes, timeout_s, error, error_len) -> nonzero on error
_LAUNCH_ARGTYPES = [
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_int64),
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_uint),
    ctypes.POINTER(ctypes.c_uint),
    ctypes.c_longlong,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_longlong,
    ctypes.c_double,
    ctypes.c_char_p,
    ctypes.c_int,
]


def load_runtime(path: str) -> ctypes.CDLL:
    """Load the runtime library with ``emu_launch`` typed.

    ``RTLD_GLOBAL``: kernel objects are linked against the runtime's symbols
    (``__emu_tg_alloc``, the SIMD exchange) and resolve them when loaded.
    """
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_launch.argtypes = _LAUNCH_ARGTYPES
    return lib


def load_kernel(path: str) -> tuple[ctypes.CDLL, int]:
    """Load a compiled kernel; returns the library (keep it alive) and its entry point's address."""
    lib = ctypes.CDLL(path)
    return lib, ctypes.cast(lib.__emu_entry, ctypes.c_void_p).value


def launch(
    runtime: ctypes.CDLL,
    entry: int,
    buffers: list,
    grid,
    threadgroup,
    seed: int,
    use_fibers: bool,
    workers: int,
    stack_bytes: int,
    timeout: float,
) -> str | None:
    """Run ``entry`` over the grid; returns the runtime's error message, or None.

    ``buffers`` are C-contiguous NumPy arrays, written in place.
    """
    n = len(buffers)
    # ctypes refuses zero-length arrays; the runtime reads only n entries.
    ptrs = (ctypes.c_void_p * max(n, 1))(*[a.ctypes.data for a in buffers])
    sizes = (ctypes.c_int64 * max(n, 1))(*[a.nbytes for a in buffers])
    g = (ctypes.c_uint * 3)(*grid)
    t = (ctypes.c_uint * 3)(*threadgroup)
    error = ctypes.create_string_buffer(_ERROR_BYTES)
    rc = runtime.emu_launch(
        entry, ptrs, sizes, n, g, t, seed, int(use_fibers), workers, stack_bytes, timeout, error, len(error)
    )
    return error.value.decode(errors="replace") if rc else None
