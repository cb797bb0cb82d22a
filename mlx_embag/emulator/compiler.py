"""Compiling emulator translation units to shared objects, with a disk cache.

The compiler is clang: a system ``clang++`` when one is installed and newer
than the one in the ``ziglang`` wheel, else ``python -m ziglang c++``;
``MLX_EMBAG_EMULATOR_CXX`` (a command line, e.g. ``"clang++-19"``) overrides
both. Objects are cached under ``MLX_EMBAG_EMULATOR_CACHE``, else
``$XDG_CACHE_HOME/mlx_embag/emulator``, else ``~/.cache/mlx_embag/emulator``,
keyed by a hash of the source, the flags, the compiler's version and the shim.
Writes go to a temporary file that is renamed into place, so concurrent
processes never see half-written objects.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .settings import env_flag

SHIM_DIR = Path(__file__).resolve().parent / "shim"
SHIM_INCLUDE = SHIM_DIR / "include"

# Flags every kernel gets. -nostdinc/-nostdinc++ and no C++ library: Metal
# has neither, so `std::`, printf and foreign includes fail as they would on a Mac.
_KERNEL_FLAGS = [
    "-std=c++20",
    "-fPIC",
    "-shared",
    "-nostdinc",
    "-nostdinc++",
    "-nostdlib++",
    "-fno-exceptions",
    "-fno-rtti",
    "-fvisibility=hidden",
    "-Xclang",
    "-ffloat16-excess-precision=none",
    "-Xclang",
    "-fbfloat16-excess-precision=none",
    "-Wno-unknown-attributes",
    "-Wno-user-defined-literals",
    "-ferror-limit=20",
    # GPUs wrap integer overflow and kernels pun through pointer casts; without
    # these, clang's optimiser may silently delete such code.
    "-fwrapv",
    "-fno-strict-aliasing",
    # Metal has no implicit conversions between vector types (int4 -> uint4).
    "-flax-vector-conversions=none",
]
_MATH_FLAGS = {
    "safe": ["-fno-fast-math"],
    "relaxed": ["-fno-fast-math", "-ffp-contract=fast"],
    "fast": ["-ffast-math"],
}
_OPT_FLAGS = ["-O1"]
_SANITIZE_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g1"]

_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


class CompileError(RuntimeError):
    """clang rejected a translation unit; the message holds its diagnostics."""


def cache_dir() -> Path:
    """The directory holding compiled objects (created on demand)."""
    env = os.environ.get("MLX_EMBAG_EMULATOR_CACHE")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "mlx_embag" / "emulator"
    base.mkdir(parents=True, exist_ok=True)
    return base


def _version_of(cmd: list[str]) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"clang version (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(g) for g in m.groups()) if m else None


@functools.lru_cache(maxsize=1)
def compiler() -> tuple[tuple[str, ...], str]:
    """The clang command to use and its version string.

    Raises:
        RuntimeError: when no usable clang is found.
    """
    env = os.environ.get("MLX_EMBAG_EMULATOR_CXX")
    if env:
        cmd = shlex.split(env)
        ver = _version_of(cmd)
        if ver is None:
            raise RuntimeError(f"MLX_EMBAG_EMULATOR_CXX={env!r} is not a working clang.")
        return tuple(cmd), ".".join(map(str, ver))
    zig = [sys.executable, "-m", "ziglang", "c++"]
    zig_ver = _version_of(zig)
    system = shutil.which("clang++")
    sys_ver = _version_of([system]) if system else None
    # The zig build is the tested default; a system clang only when strictly newer.
    if sys_ver is not None and (zig_ver is None or sys_ver > zig_ver):
        cmd, ver = [system], sys_ver
    elif zig_ver is not None:
        cmd, ver = zig, zig_ver
    else:
        raise RuntimeError("The Metal emulator needs clang: `pip install ziglang` (or install clang++).")
    return tuple(cmd), ".".join(map(str, ver))


@functools.lru_cache(maxsize=1)
def shim_digest() -> str:
    """Hash of every shim file: a change to the shim invalidates the cache."""
    h = hashlib.sha256()
    for p in sorted(SHIM_DIR.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(SHIM_DIR).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def kernel_flags(math_mode: str, sanitize: bool) -> list[str]:
    """The clang flags for a kernel translation unit."""
    if math_mode not in _MATH_FLAGS:
        raise ValueError(f"math_mode must be 'safe', 'relaxed' or 'fast', got {math_mode!r}.")
    flags = list(_KERNEL_FLAGS) + _OPT_FLAGS + _MATH_FLAGS[math_mode]
    flags += ["-I", str(SHIM_DIR), "-I", str(SHIM_INCLUDE)]
    if sanitize:
        flags += _SANITIZE_FLAGS
    return flags


def runtime_flags(sanitize: bool) -> list[str]:
    """The clang flags for the runtime library (which may use libc).

    ``MLX_EMBAG_EMULATOR_UCONTEXT=1`` selects the portable ucontext fiber
    switch instead of the x86-64 assembly one (to test it).
    """
    flags = [
        "-std=c++17",
        "-O2",
        "-fPIC",
        "-shared",
        "-nostdlib++",
        "-fno-exceptions",
        "-fno-rtti",
        "-fvisibility=hidden",
        "-I",
        str(SHIM_DIR),
    ]
    if sanitize:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    if env_flag("MLX_EMBAG_EMULATOR_UCONTEXT"):
        flags += ["-DEMU_FORCE_UCONTEXT=1"]
    return flags


def _key_lock(key: str) -> threading.Lock:
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


def _cache_key(source: str, flags: list[str], link=()) -> str:
    h = hashlib.sha256()
    for part in (source, "\0".join(flags), "\0".join(link), compiler()[1], shim_digest(), sys.platform):
        h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()[:32]


def _syntax_command() -> list[str]:
    cmd = list(compiler()[0])
    # `ziglang c++ -fsyntax-only` fails on zig's rename of its missing output; its clang does not.
    if cmd[-3:] == ["-m", "ziglang", "c++"]:
        cmd[-1] = "clang"
    return cmd + ["-x", "c++"]


def syntax_check(source: str, flags: list[str], judge) -> list[str]:
    """Compile ``source`` for its diagnostics only; ``judge(returncode, diagnostics, output)``
    turns them (and clang's standard output, e.g. an AST dump) into a list of errors. A
    verdict without errors is cached on disk.

    Returns:
        The errors (an empty list when the source passes).
    """
    marker = cache_dir() / f"syntax-{_cache_key(source, flags)}.ok"
    if marker.exists():
        return []
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".check-") as tmp:
        src = Path(tmp) / "kernel.cpp"
        src.write_text(source)
        proc = subprocess.run(_syntax_command() + flags + [str(src)], capture_output=True, text=True, cwd=tmp)
    errors = judge(proc.returncode, proc.stderr.replace(str(src), "kernel.cpp"), proc.stdout)
    if not errors:
        marker.touch()
    return errors


def build(
    source: str, flags: list[str], *, suffix: str, link: list[str] = (), source_name: str = "kernel.cpp"
) -> Path:
    """Compile ``source`` to a cached shared object and return its path.

    Args:
        source: the C++ translation unit.
        flags: compiler flags (part of the cache key).
        suffix: a readable tag for the file name.
        link: extra link arguments (also part of the key).
        source_name: the name clang reports in diagnostics.

    Raises:
        CompileError: with clang's diagnostics.
    """
    cmd, _ = compiler()
    key = _cache_key(source, flags, link)
    safe_suffix = re.sub(r"[^A-Za-z0-9_]+", "_", suffix)[:60]
    out = cache_dir() / f"{safe_suffix}-{key}.so"
    if out.exists():
        return out
    with _key_lock(key):
        if out.exists():
            return out
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".build-") as tmp:
            src = Path(tmp) / source_name
            src.write_text(source)
            tmp_out = Path(tmp) / "out.so"
            env = dict(os.environ)
            proc = subprocess.run(
                list(cmd) + flags + [str(src), "-o", str(tmp_out)] + list(link),
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
            )
            if proc.returncode != 0 or not tmp_out.exists():
                msg = (proc.stderr or proc.stdout).replace(str(src), source_name)
                raise CompileError(msg.strip())
            os.replace(tmp_out, out)
    return out


def build_runtime(sanitize: bool = False) -> Path:
    """The runtime library (scheduler, fibers), built once and cached."""
    src = (SHIM_DIR / "runtime.cpp").read_text()
    return build(
        f'#line 1 "runtime.cpp"\n{src}',
        runtime_flags(sanitize),
        suffix="runtime_asan" if sanitize else "runtime",
        # dladdr (the profiler's load address of a kernel) lives in libdl before glibc 2.34.
        link=["-lpthread"] + (["-ldl"] if sys.platform.startswith("linux") else []),
        source_name="runtime.cpp",
    )


def info() -> dict:
    """What the emulator would use here: compiler, its version, cache directory.

    Example:
        >>> sorted(info())
        ['cache_dir', 'compiler', 'version']
    """
    cmd, version = compiler()
    return {"compiler": " ".join(cmd), "version": version, "cache_dir": str(cache_dir())}
