"""What a GPU's memory system would see of each emulated kernel launch.

Inside :func:`profile`, every launch of the emulator runs a "cost" build of
its kernel (``_cost_build.py``) that records each GPU thread's memory accesses
and basic blocks; the runtime regroups the threads' accesses into SIMD-group
instructions (32 lanes, reconverging at each branch's immediate
post-dominator: ``shim/cost_replay.cpp``) and sums, per source line of the
generated kernel, the figures below. Definitions:

- an *instruction* is one memory access executed together by the active lanes
  of a SIMD-group; ``lanes`` counts the active lanes it served;
- ``bytes``: the distinct bytes its lanes touch (a value all lanes read counts
  once), so ``bytes / (32 * sectors)`` is at most 1;
- ``sectors`` / ``lines``: the distinct 32-byte sectors and 128-byte lines it
  touches, counted from each buffer's start (MLX buffers are not 128-byte
  aligned on the host);
- device memory is the bound buffers; threadgroup memory the kernel's
  ``threadgroup`` arrays; private (stack) memory is not counted;
- ``bank_conflicts``: the worst threadgroup access, as the number of passes 32
  banks of 4 bytes need over the fewest its distinct words could need (1 = no
  conflict; lanes reading one word share it);
- atomics count apart from loads and stores: operations (one per lane),
  distinct addresses, most operations on one address.

The bank model and the reconvergence rule are models of Apple GPUs, not
documented facts. A profiled launch runs on one worker thread, several times slower
than a plain emulated one (3-20x measured), and the cost build compiles once per kernel
source.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from . import _abi, _cost_build

SPACES = ("device", "threadgroup")
ACCESS_KINDS = ("load", "store")


@dataclass(frozen=True)
class Totals:
    """Summed figures of memory instructions (see the module's definitions).

    Example:
        >>> t = Totals(instructions=1, lanes=32, bytes=128, sectors=4, lines=1)
        >>> t.efficiency, (t + t).sectors
        (1.0, 8)
    """

    instructions: int = 0
    lanes: int = 0
    bytes: int = 0
    sectors: int = 0
    lines: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple:
        return (self.instructions, self.lanes, self.bytes, self.sectors, self.lines)

    @property
    def efficiency(self) -> float:
        """Bytes used per byte of the sectors moved (1.0 = every sector fully used; 0 without sectors)."""
        return self.bytes / (32 * self.sectors) if self.sectors else 0.0


@dataclass(frozen=True)
class Atomics:
    """Atomic operations: ``ops`` (one per lane), ``addresses`` (distinct), ``max_per_address``,
    ``instructions`` (SIMD-group instructions) and ``sectors`` (per instruction, summed).

    Example:
        >>> Atomics(ops=64, addresses=2, max_per_address=32, instructions=2).ops
        64
    """

    ops: int = 0
    addresses: int = 0
    max_per_address: int = 0
    instructions: int = 0
    sectors: int = 0  # distinct 32-byte sectors per instruction, summed


@dataclass(frozen=True)
class Figures:
    """The figures of a launch or of one source line of it.

    Example:
        >>> f = Figures({("device", "load"): Totals(1, 32, 128, 4, 1)})
        >>> f.totals("device", "load").sectors, f.totals("threadgroup", "store").sectors
        (4, 0)
    """

    by_access: dict = field(default_factory=dict)  # (space, kind) -> Totals
    atomics: Atomics = Atomics()  # device memory
    threadgroup_atomics: Atomics = Atomics()
    bank_conflicts: int = 0  # worst threadgroup degree (0: no threadgroup access)

    def totals(self, space: str = "device", kind: str = "load") -> Totals:
        """Summed figures of the ``kind`` ("load" | "store") instructions on ``space`` ("device" | "threadgroup")."""
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if kind not in ACCESS_KINDS:
            raise ValueError(f"kind must be one of {ACCESS_KINDS}, got {kind!r}")
        return self.by_access.get((space, kind), Totals())


@dataclass(frozen=True)
class Site(Figures):
    """One source line of the generated kernel: ``line`` (1-based; None when the
    line tables were unavailable) and its ``source`` text.

    Example:
        >>> Site(line=3, source="b[i] = a[i];").totals("device", "store").instructions
        0
    """

    line: int | None = None
    source: str = ""


@dataclass(frozen=True)
class Launch(Figures):
    """One profiled kernel launch: its name, grid and threadgroup (threads, as
    passed), and its figures in total and per source line (``sites``).

    Example:
        >>> Launch(name="copy", grid=(64, 1, 1), threadgroup=(32, 1, 1)).bank_conflicts
        0
    """

    name: str = ""
    grid: tuple = ()
    threadgroup: tuple = ()
    sites: tuple = ()


class Profile:
    """The launches recorded by :func:`profile`, in launch order.

    Example:
        >>> Profile().launches
        []
    """

    def __init__(self) -> None:
        self.launches: list[Launch] = []

    def report(self, sites: bool = True) -> str:
        """A readable table per launch (and per source line unless ``sites=False``)."""
        from ._cost_report import report

        return report(self.launches, sites=sites)

    def _record(
        self,
        *,
        display_name,
        kernel_name,
        kernel_source,
        buffers,
        grid,
        threadgroup,
        math_mode,
        stack_bytes,
        timeout,
    ) -> str | None:
        kernel = _cost_build.prepare(display_name, kernel_name, kernel_source, math_mode)
        how = _abi.Launch(tuple(grid), tuple(threadgroup), -1, kernel.needs_fibers, 1, stack_bytes, timeout)
        err, raw, atomics = _cost_build.run(kernel, buffers, how)
        if err:
            return err
        self.launches.append(_launch(display_name, grid, threadgroup, kernel_source, raw, atomics))
        return None


def _figures(raw: list, atomics: dict | None = None) -> dict:
    by_access: dict = {}
    atom = {s: [0, 0, 0, 0, 0] for s in SPACES}  # ops, addresses, max, instructions, sectors
    bank = 0
    for r in raw:
        for space in SPACES:
            st = getattr(r, space)
            if not st["instructions"]:
                continue
            if r.kind == "atomic":
                a = atom[space]
                a[0] += st["lanes"]
                a[1] += st["addresses"]
                a[2] = max(a[2], st["max_per_address"])
                a[3] += st["instructions"]
                a[4] += st["sectors"]
                continue
            t = Totals(st["instructions"], st["lanes"], st["bytes"], st["sectors"], st["lines"])
            by_access[(space, r.kind)] = by_access.get((space, r.kind), Totals()) + t
            if space == "threadgroup":
                bank = max(bank, st["bank_max"])
    if atomics is not None:  # a launch: distinct addresses over all its sites
        for space in SPACES:
            atom[space][1:3] = atomics[space][1:3]
    return {
        "by_access": by_access,
        "atomics": Atomics(*atom["device"]),
        "threadgroup_atomics": Atomics(*atom["threadgroup"]),
        "bank_conflicts": bank,
    }


def _launch(name, grid, threadgroup, source, raw, atomics) -> Launch:
    text = source.split("\n")
    by_line: dict = {}
    for r in raw:
        by_line.setdefault(r.line, []).append(r)
    sites = []
    for line in sorted(by_line, key=lambda x: (x is None, x or 0)):
        src = text[line - 1].strip() if line and line <= len(text) else ""
        # Per line, atomic addresses are summed over the line's instructions.
        sites.append(Site(**_figures(by_line[line]), line=line, source=src))
    return Launch(
        **_figures(raw, atomics),
        name=name,
        grid=tuple(int(g) for g in grid),
        threadgroup=tuple(int(t) for t in threadgroup),
        sites=tuple(sites),
    )


# Process-wide, not per thread: MLX may evaluate a kernel on another thread than the caller's.
_active: list[Profile] = []
_active_lock = threading.Lock()


def recorder() -> Profile | None:
    """The innermost active :func:`profile`, or None.

    Example:
        >>> recorder() is None
        True
    """
    with _active_lock:
        return _active[-1] if _active else None


def recording() -> bool:
    """Whether a :func:`profile` is active (no lock: a cheap check for the kernel factory).

    Example:
        >>> recording()
        False
    """
    return bool(_active)


@contextlib.contextmanager
def profile():
    """Record every emulated kernel launch inside the block (evaluate inside it: MLX is lazy).

    Yields a :class:`Profile`: ``prof.launches`` in launch order, each with
    ``name``, ``grid``, ``threadgroup``, ``totals(space, kind)``, ``atomics``,
    ``bank_conflicts`` and ``sites`` (the same per source line); ``prof.report()``
    prints them. Launches inside run a cost build on one thread (several times slower).

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator
        >>> k = emulator.metal_kernel("copy", ["a"], ["b"], "uint i = thread_position_in_grid.x; b[i] = a[i];")
        >>> with emulator.profile() as prof:
        ...     (b,) = k(inputs=[mx.arange(64, dtype=mx.float32)], output_shapes=[(64,)],
        ...              output_dtypes=[mx.float32], grid=(64, 1, 1), threadgroup=(32, 1, 1))
        ...     mx.eval(b)
        >>> t = prof.launches[0].totals("device", "load")  # 2 SIMD-groups x 32 floats
        >>> t.instructions, t.lanes, t.bytes, t.sectors, t.lines
        (2, 64, 256, 8, 2)
    """
    prof = Profile()
    with _active_lock:
        _active.append(prof)
    try:
        yield prof
    finally:
        with _active_lock:
            _active.remove(prof)
