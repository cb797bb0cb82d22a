"""Building and loading kernels: the disk cache, concurrent processes, the portable fiber switch."""

from __future__ import annotations

import numpy as np

from mlx_embag.emulator import compiler, runtime


def test_compiled_kernels_are_cached_on_disk(tmp_path, monkeypatch):
    from emulator.harness import generate

    kname, text = generate(
        "cached",
        [("x", np.zeros(8, np.float32), "float")],
        [("out", "float")],
        "  out[thread_position_in_grid.x] = 1.0f;",
    )
    p1, _, _ = runtime.prepare(display_name="cached", kernel_name=kname, kernel_source=text)
    mtime = p1.stat().st_mtime_ns
    p2, _, _ = runtime.prepare(display_name="cached", kernel_name=kname, kernel_source=text)
    assert p1 == p2 and p2.stat().st_mtime_ns == mtime
    assert p1.parent == compiler.cache_dir()
    p3, _, _ = runtime.prepare(display_name="cached", kernel_name=kname, kernel_source=text, math_mode="fast")
    assert p3 != p1


def test_portable_ucontext_fibers_give_the_same_results():
    """The runtime's non-x86 context switch (ucontext), forced on this machine in a child process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from emulator.harness import run_kernel
import emulator.test_gpu_semantics as t
x = np.arange(150, dtype=np.float32)
out, stale = run_kernel("tgrev", [("x", x)], [("out", (150,), "float"), ("stale", (150,), "float")], t.TG_SRC,
                        grid=(150, 1, 1), threadgroup=(64, 1, 1), seed=1)
ref = np.concatenate([x[0:64][::-1], x[64:128][::-1], x[128:150][::-1]])
assert (out == ref).all() and np.isnan(stale).all()
(tot,) = run_kernel("sum_all", [("x", x), ("n", np.int32(150))], [("total", (1,), "float")],
                    t.SUM_ALL_SRC,
                    grid=(150, 1, 1), threadgroup=(64, 1, 1), atomic_outputs=True, init=0.0)
assert tot[0] == x.sum(), tot
print("ok")
""".format(tests=str(Path(__file__).parent.parent))
    env = dict(os.environ, MLX_EMBAG_EMULATOR_UCONTEXT="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_concurrent_processes_share_the_cache_safely(tmp_path):
    """Two processes compiling the same kernel into an empty cache both succeed (temp file + rename)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from emulator.harness import run_kernel
(out,) = run_kernel("shared_cache", [("x", np.arange(8, dtype=np.float32))], [("out", (8,), "float")],
                    "  out[thread_position_in_grid.x] = x[thread_position_in_grid.x] + 1.0f;",
                    grid=(8, 1, 1), threadgroup=(8, 1, 1))
assert (out == np.arange(1, 9)).all()
print("ok")
""".format(tests=str(Path(__file__).parent.parent))
    env = dict(os.environ, MLX_EMBAG_EMULATOR_CACHE=str(tmp_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
    built = [p.name for p in tmp_path.iterdir() if p.suffix == ".so"]
    assert any(name.startswith("custom_kernel_shared_cache") for name in built)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]  # no leftovers


def test_compiler_docstring_examples_run():
    import doctest

    result = doctest.testmod(compiler)
    assert result.attempted > 0 and result.failed == 0
