"""Running an AddressSanitizer-built kernel in a subprocess.

An ASan-instrumented shared object needs the ASan runtime loaded first
(``LD_PRELOAD``), and an ASan report ends the process; so sanitized kernels
run in a child Python. The parent side is :func:`run_in_subprocess`; run as a
script (by path, so the child never imports mlx) this file is the child: it
reads a pickled job, runs the kernel and writes every buffer back.

The runtime library (ASan build) copies each buffer into an exact-size heap
block before the launch, so reads or writes one element past a buffer hit a
red zone; threadgroup variables get poisoned red zones too.
"""

from __future__ import annotations

import functools
import glob
import os
import pickle
import re
import subprocess
import sys
import tempfile

if __package__:
    from . import _abi
else:
    # The child, run by path: its folder is not on sys.path under PYTHONSAFEPATH.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _abi

_REPORT_LINES = 40
_TIMEOUT_EXIT = 87  # the runtime's watchdog ends a sanitizer child with this code


@functools.lru_cache(maxsize=1)
def _libasan() -> str:
    env = os.environ.get("MLX_EMBAG_EMULATOR_LIBASAN")
    if env:
        return env
    for cc in ("gcc", "cc", "clang"):
        try:
            out = subprocess.run(
                [cc, "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=60
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out and os.path.isabs(out) and os.path.exists(out):
            return out
    # No compiler driver to ask: look where Debian/Ubuntu put the runtime.
    found = sorted(
        glob.glob("/usr/lib/gcc/*/*/libasan.so")
        + glob.glob("/usr/lib/*-linux-gnu/libasan.so.*")
        + glob.glob("/usr/lib64/libasan.so.*")
    )
    if found:
        return found[-1]
    raise RuntimeError(
        "The emulator's sanitizer mode needs the AddressSanitizer runtime (libasan, e.g. from gcc's "
        "libasan8 package); set MLX_EMBAG_EMULATOR_LIBASAN to its path."
    )


def _summarise(stderr: str) -> str:
    """The useful part of an ASan report: the error, the kernel frames, and
    where the accessed memory lies; temporary build paths removed."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if "ERROR: AddressSanitizer" in line), None)
    if start is None:
        return "\n".join(lines[-_REPORT_LINES:])
    keep = []
    in_stack = False
    skipping = False
    for line in lines[start:]:
        frame = re.match(r"\s+#\d+ ", line)
        if frame:
            if not in_stack:
                in_stack, skipping = True, False
            if skipping or "emu_launch" in line or "runtime.cpp" in line:
                skipping = True
                continue
        else:
            in_stack = False
            if line.startswith("SUMMARY") or line.startswith("Shadow bytes"):
                break
        keep.append(re.sub(r"\S*/\.build-[^/]+/", "", line))
        if len(keep) >= _REPORT_LINES:
            break
    return "\n".join(line for line in keep if line.strip())


def run_in_subprocess(
    *,
    kernel_so: str,
    buffers: list,
    const: list,
    grid,
    threadgroup,
    seed: int,
    use_fibers: bool,
    workers: int,
    stack_bytes: int,
    timeout: float = 0.0,
) -> str | None:
    """Run the kernel under ASan in a child process; copy outputs back.

    Returns:
        None on success, else an error message (the ASan report, or the
        runtime's own error).
    """
    from . import compiler

    runtime_so = str(compiler.build_runtime(sanitize=True))
    job = dict(
        runtime_so=runtime_so,
        kernel_so=kernel_so,
        buffers=buffers,
        grid=tuple(grid),
        threadgroup=tuple(threadgroup),
        seed=seed,
        use_fibers=use_fibers,
        workers=workers,
        stack_bytes=stack_bytes,
        timeout=timeout,
    )
    with tempfile.TemporaryDirectory(prefix="mlx_embag_asan_") as tmp:
        job_path = os.path.join(tmp, "job.pkl")
        out_path = os.path.join(tmp, "out.pkl")
        with open(job_path, "wb") as f:
            pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["LD_PRELOAD"] = _libasan()
        env["ASAN_OPTIONS"] = ":".join(
            [
                "detect_leaks=0",
                "detect_stack_use_after_return=0",
                "abort_on_error=0",
                "exitcode=86",
                "allocator_may_return_null=1",
                "handle_segv=1",
                env.get("ASAN_OPTIONS", ""),
            ]
        ).rstrip(":")
        # The child's own watchdog ends it on time; this is only a backstop.
        try:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), job_path, out_path],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout + 60 if timeout else None,
            )
        except subprocess.TimeoutExpired:
            return (
                f"the kernel was still running after {timeout:g} s and was stopped: an endless loop, or "
                "threads spinning on each other; MLX_EMBAG_EMULATOR_TIMEOUT sets the limit in seconds"
            )
        if proc.returncode == _TIMEOUT_EXIT:
            line = next((x for x in proc.stderr.splitlines() if x.startswith("EMU_TIMEOUT: ")), "")
            return line[len("EMU_TIMEOUT: ") :] or "the kernel ran past its time limit"
        if proc.returncode != 0:
            if "AddressSanitizer" in proc.stderr:
                return "AddressSanitizer found an invalid memory access:\n" + _summarise(proc.stderr)
            return f"the sanitizer subprocess failed (exit code {proc.returncode}):\n" + _summarise(
                proc.stderr
            )
        with open(out_path, "rb") as f:
            result = pickle.load(f)
    if result["error"]:
        return result["error"]
    for dst, src, is_const in zip(buffers, result["buffers"], const):
        if not is_const:
            dst[...] = src
    return None


def _child(job_path: str, out_path: str) -> int:
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    runtime = _abi.load_runtime(job["runtime_so"])
    _kernel, entry = _abi.load_kernel(job["kernel_so"])
    buffers = job["buffers"]
    error = _abi.launch(
        runtime,
        entry,
        buffers,
        job["grid"],
        job["threadgroup"],
        job["seed"],
        job["use_fibers"],
        job["workers"],
        job["stack_bytes"],
        job["timeout"],
    )
    with open(out_path, "wb") as f:
        pickle.dump({"error": error, "buffers": buffers}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
