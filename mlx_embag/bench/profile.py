"""``python -m mlx_embag.bench --profile``: the memory traffic of every kernel launch, from the emulator.

For each shape (dtype float32 / float16, D in 16, 64, 128, 256, bags of 1, 16 and 64
positions, B = 64 bags of a V = 1000 table, 1-D indices with offsets) it profiles
(:func:`mlx_embag.emulator.profile`, always the CPU emulator, also on a Mac):

* the forward of ``mode`` sum, mean and max: per launch the device sectors loaded
  and stored, 128-byte lines, SIMD-group instructions, atomics and the worst
  threadgroup bank conflict; then the pass's sectors against the **minimum** the
  job needs (:func:`forward_minimum_sectors`) and their ratio;
* the backward of sum (the table's gradient through ``mx.vjp``) with
  ``deterministic=False`` and ``True``: the same per launch, the atomics per
  (position, column), and the MLX built-ins around the kernels counted
  analytically from their shapes (:func:`builtin_sectors`).

A roofline then predicts each pass's time on Apple chips: bytes moved (32 per
sector; an atomic's sector counts twice, read and written) over the chip's
published memory bandwidth (:data:`CHIPS`). That is a model, not a measurement:
it ignores latency, occupancy, caches and launch overhead.

Example:
    >>> c = ProfileCase("float32", D=64, L=16, B=4)
    >>> forward_minimum_sectors(c, "sum")  # rows 4*16*8 + indices 8 + offsets 1 + prevmax 1 + out 32 + meta 1
    555
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .hardware import CHIP_BANDWIDTH_GBS

# (chip, GB/s, source). Apple's published unified-memory bandwidth per chip (base
# configuration; binned variants with a narrower bus, e.g. the 30-core M3 Max at 300
# GB/s, are slower). The figures are those of hardware.CHIP_BANDWIDTH_GBS.
_SOURCES = {
    "Apple M1": "AnandTech, 'The 2020 Mac Mini Unleashed: Putting Apple Silicon M1 To The Test' (LPDDR4X-4266, 128-bit)",
    "Apple M1 Pro": "Apple Newsroom, 'Introducing M1 Pro and M1 Max', Oct 2021",
    "Apple M1 Max": "Apple Newsroom, 'Introducing M1 Pro and M1 Max', Oct 2021",
    "Apple M1 Ultra": "Apple Newsroom, 'Apple unveils M1 Ultra', Mar 2022",
    "Apple M2": "Apple Newsroom, 'Apple unveils M2', Jun 2022",
    "Apple M2 Pro": "Apple Newsroom, 'Apple unveils M2 Pro and M2 Max', Jan 2023",
    "Apple M2 Max": "Apple Newsroom, 'Apple unveils M2 Pro and M2 Max', Jan 2023",
    "Apple M2 Ultra": "Apple Newsroom, 'Apple introduces M2 Ultra', Jun 2023",
    "Apple M3": "Apple MacBook Pro (M3, Nov 2023) technical specifications",
    "Apple M3 Pro": "Apple Newsroom, 'Apple unveils M3, M3 Pro, and M3 Max', Oct 2023",
    "Apple M3 Max": "Apple Newsroom, 'Apple unveils M3, M3 Pro, and M3 Max', Oct 2023",
    "Apple M3 Ultra": "Apple Newsroom, 'Apple reveals M3 Ultra', Mar 2025",
    "Apple M4": "Apple Newsroom, 'Apple introduces M4 chip', May 2024",
    "Apple M4 Pro": "Apple Newsroom, 'Apple introduces M4 Pro and M4 Max', Oct 2024",
    "Apple M4 Max": "Apple Newsroom, 'Apple introduces M4 Pro and M4 Max', Oct 2024",
    "Apple M5": "Apple Newsroom, 'Apple unleashes M5', Oct 2025",
}
CHIPS = tuple((name, gbs, _SOURCES[name]) for name, gbs in CHIP_BANDWIDTH_GBS.items())

DTYPES = ("float32", "float16")
DIMS = (16, 64, 128, 256)
BAG_LENGTHS = (1, 16, 64)
FORWARD_MODES = ("sum", "mean", "max")
FORWARD_KERNELS = ("bag_fwd", "bag_combine", "row_scale")
SECTOR = 32
MODEL_NOTE = (
    "Predicted times are a MODEL, not a measurement: a roofline of bytes moved (32 per sector; atomics "
    "twice) over each chip's published memory bandwidth, ignoring latency, occupancy, caches and launch "
    "overhead. Sector counts come from the emulator's cost model (32-lane SIMD-groups, reconvergence at "
    "post-dominators, 32 banks x 4 bytes: models of Apple GPUs, not documented facts)."
)


@dataclass(frozen=True)
class ProfileCase:
    """One profiled shape: table dtype, row width D, bag length L, B bags of a V-row table.

    Example:
        >>> ProfileCase("float16", D=128, L=16).N
        1024
    """

    dtype: str
    D: int
    L: int
    B: int = 64
    V: int = 1000

    @property
    def N(self) -> int:
        """Positions (indices) in all bags."""
        return self.B * self.L

    @property
    def itemsize(self) -> int:
        """Bytes per table element."""
        return np.dtype(self.dtype).itemsize


def cases(quick: bool = False, batch: int = 64) -> list:
    """The shapes to profile (``quick``: float32, D=64, L=16 only).

    Example:
        >>> len(cases()), len(cases(quick=True))
        (24, 1)
    """
    if quick:
        return [ProfileCase("float32", 64, 16, batch)]
    return [ProfileCase(t, d, L, batch) for t in DTYPES for d in DIMS for L in BAG_LENGTHS]


def _sectors(nbytes: int) -> int:
    return -(-nbytes // SECTOR)


def forward_minimum_sectors(case: ProfileCase, mode: str) -> int:
    """Device sectors the forward needs at least: every used table row read once
    (its own sectors, rows laid out from the buffer's start), the int32 indices
    once, bag bounds (int64 offsets) and poison metadata (int64 running maximum in,
    int32 count out) once per bag, the outputs written once (max: its int32 arg-max too).

    Example:
        >>> forward_minimum_sectors(ProfileCase("float16", D=16, L=1, B=64), "max")
        304
    """
    row = case.D * case.itemsize
    # Sectors of row r: from r * row // 32 to ((r + 1) * row - 1) // 32; with equal
    # rows every row of the table needs the same number when row is a multiple of 32.
    per_row = [((r + 1) * row - 1) // SECTOR - (r * row) // SECTOR + 1 for r in range(min(case.V, 4))]
    rows = case.N * max(per_row)
    out = _sectors(case.B * row) + (_sectors(case.B * case.D * 4) if mode == "max" else 0)
    bags = 2 * _sectors(case.B * 8) + _sectors(case.B * 4)
    return rows + _sectors(case.N * 4) + bags + out


def builtin_sectors(case: ProfileCase, deterministic: bool) -> dict:
    """The MLX built-ins around the backward kernels, counted from their shapes (lower bounds).

    The atomic variant zero-fills its float32 (V, D) gradient; the deterministic one
    sorts the N int32 keys (argsort: keys read, indices written, at least once) and
    gathers them, and zero-fills too; a float16 table's gradient is cast from float32.

    Example:
        >>> builtin_sectors(ProfileCase("float16", D=64, L=16, B=4, V=100), True)
        {'zero-fill': 800, 'argsort': 16, 'take': 24, 'cast': 1200}
    """
    grad = case.V * case.D
    out = {"zero-fill": _sectors(grad * 4)}
    if deterministic:
        out["argsort"] = 2 * _sectors(case.N * 4)
        out["take"] = 3 * _sectors(case.N * 4)
    if case.itemsize != 4:
        out["cast"] = _sectors(grad * 4) + _sectors(grad * case.itemsize)
    return out


@contextlib.contextmanager
def _emulator_on():
    """The emulator switched on (where no Metal GPU exists the backend needs it), then as before."""
    from mlx_embag import emulator

    was = emulator.settings.current()
    emulator.enable(seed=None)
    try:
        yield
    finally:
        emulator.reset()
        if was.enabled != emulator.is_enabled():
            emulator.enable(seed=was.seed) if was.enabled else emulator.disable()


def _inputs(case: ProfileCase, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = mx.array(rng.integers(0, case.V, case.N).astype(np.int32))
    offs = mx.array(np.arange(case.B, dtype=np.int64) * case.L)
    w = mx.array(rng.standard_normal((case.V, case.D)).astype(case.dtype))
    return idx, offs, w


def profile_pass(case: ProfileCase, pass_: str, mode: str = "sum", deterministic: bool = False) -> list:
    """Profile one forward (``pass_="fwd"``) or backward (``"bwd"``) and return its launches.

    The backward's list omits the forward's launches (:data:`FORWARD_KERNELS`).

    Example:
        >>> [x.name for x in profile_pass(ProfileCase("float32", D=16, L=2, B=2), "bwd")]
        ['mlx_embag_bag_bwd']
    """
    import mlx_embag as meb
    from mlx_embag import emulator

    idx, offs, w = _inputs(case)

    def f(weight):
        return meb.embedding_bag(idx, weight, offs, mode=mode, backend="metal", deterministic=deterministic)

    with _emulator_on(), emulator.profile() as prof:
        if pass_ == "fwd":
            mx.eval(f(w))
        else:
            cot = mx.ones((case.B, case.D), dtype=w.dtype)
            mx.eval(mx.vjp(f, [w], [cot])[1])
    if pass_ == "fwd":
        return list(prof.launches)
    return [x for x in prof.launches if not any(k in x.name for k in FORWARD_KERNELS)]


def launch_sectors(launch) -> tuple:
    """(device sectors loaded, stored, atomic sectors) of a launch.

    Example:
        >>> from mlx_embag.emulator.profile import Launch, Totals
        >>> launch_sectors(Launch({("device", "load"): Totals(1, 32, 128, 4, 1)}))
        (4, 0, 0)
    """
    return (
        launch.totals("device", "load").sectors,
        launch.totals("device", "store").sectors,
        launch.atomics.sectors,
    )


def moved_bytes(launches, extra_sectors: int = 0) -> int:
    """Bytes a roofline charges: 32 per sector, an atomic's sector twice (read and written).

    Example:
        >>> moved_bytes([], extra_sectors=2)
        64
    """
    total = extra_sectors
    for x in launches:
        ld, st, at = launch_sectors(x)
        total += ld + st + 2 * at
    return SECTOR * total


def roofline_us(nbytes: int) -> dict:
    """Predicted microseconds per chip (a model: bytes over bandwidth).

    Example:
        >>> round(roofline_us(400_000)["Apple M3 Max"], 3)
        1.0
    """
    return {name: nbytes / (gbs * 1e9) * 1e6 for name, gbs, _ in CHIPS}


def _short(name: str) -> str:
    return name.replace("mlx_embag_", "")


def _launch_line(x) -> str:
    ld, st, at = launch_sectors(x)
    lines = x.totals("device", "load").lines + x.totals("device", "store").lines
    instr = sum(x.totals(s, k).instructions for s in ("device", "threadgroup") for k in ("load", "store"))
    store = x.totals("device", "store")
    used = f"{100 * store.efficiency:.0f}%" if store.sectors else "-"
    bank = f"{x.bank_conflicts}-way" if x.bank_conflicts else "-"
    return (
        f"    {_short(x.name):<14} {ld:>9} {st:>9} {used:>6} {lines:>8} {instr:>8} {x.atomics.ops:>9} "
        f"{x.atomics.instructions:>8} {bank:>6}"
    )


_LAUNCH_HEAD = (
    f"    {'kernel':<14} {'ld sect':>9} {'st sect':>9} {'st use':>6} {'lines':>8} {'instr':>8} {'atomics':>9} "
    f"{'at instr':>8} {'bank':>6}"
)


def run_profile(quick: bool = False, batch: int = 64, out=print, log=None) -> list:
    """Profile every case and print the tables; returns one dict per pass (the figures printed).

    Example:
        >>> rows = run_profile(quick=True, batch=4, out=lambda s: None)
        >>> sorted({r["pass"] for r in rows}), rows[0]["ratio"] >= 1.0
        (['bwd', 'fwd'], True)
    """
    rows = []
    with _emulator_on():
        out(MODEL_NOTE)
        out(f"B={batch} bags of L positions, V=1000 rows, int32 indices with int64 offsets.\n")
        for case in cases(quick, batch):
            tag = f"{case.dtype} D={case.D} L={case.L}"
            for mode in FORWARD_MODES:
                if log:
                    log(f"profile fwd {mode} {tag}")
                launches = profile_pass(case, "fwd", mode)
                got = sum(sum(launch_sectors(x)) for x in launches)
                need = forward_minimum_sectors(case, mode)
                exempt = case.D * case.itemsize < 64
                out(
                    f"fwd {mode:<4} {tag}: {got} device sectors, minimum {need}, ratio {got / need:.2f}"
                    + (" (row under 64 B: exempt from 1.25x)" if exempt else "")
                )
                out(_LAUNCH_HEAD)
                for x in launches:
                    out(_launch_line(x))
                rows.append(dict(pass_row("fwd", mode, case, launches), minimum=need, ratio=got / need))
            for det in (False, True):
                if log:
                    log(f"profile bwd sum deterministic={det} {tag}")
                launches = profile_pass(case, "bwd", "sum", det)
                builtins = builtin_sectors(case, det)
                row = pass_row("bwd", "sum", case, launches, deterministic=det, builtins=builtins)
                per = row["atomics"] / (case.N * case.D)
                out(
                    f"bwd sum deterministic={det} {tag}: {row['sectors']} kernel sectors, {row['atomics']} "
                    f"atomics in {row['atomic_sectors']} sectors ({per:.2f} per position and column); "
                    "built-ins (analytic, lower bounds): "
                    + ", ".join(f"{k} {v}" for k, v in builtins.items())
                    + " sectors"
                )
                out(_LAUNCH_HEAD)
                for x in launches:
                    out(_launch_line(x))
                rows.append(row)
            out("")
        _print_roofline(rows, out)
    return rows


def pass_row(pass_: str, mode: str, case: ProfileCase, launches, deterministic=None, builtins=None) -> dict:
    """The figures of one profiled pass as a dict (what :func:`run_profile` returns).

    Example:
        >>> pass_row("fwd", "sum", ProfileCase("float32", 64, 16, 4), [])["sectors"]
        0
    """
    sectors = sum(sum(launch_sectors(x)[:2]) for x in launches)
    extra = sum((builtins or {}).values())
    return {
        "pass": pass_,
        "mode": mode,
        "deterministic": deterministic,
        "dtype": case.dtype,
        "D": case.D,
        "L": case.L,
        "B": case.B,
        "kernels": [_short(x.name) for x in launches],
        "sectors": sectors,
        "atomics": sum(x.atomics.ops for x in launches),
        "atomic_sectors": sum(x.atomics.sectors for x in launches),
        "bank_conflicts": max([x.bank_conflicts for x in launches] or [0]),
        "builtin_sectors": extra,
        "bytes": moved_bytes(launches, extra),
    }


def _print_roofline(rows, out) -> None:
    names = [n for n, _, _ in CHIPS]
    out("Predicted time per pass, microseconds (roofline MODEL, not a measurement; backward includes the")
    out("analytic built-ins):")
    head = f"  {'pass':<26}" + "".join(f"{n.replace('Apple ', ''):>9}" for n in names)
    out(head)
    for r in rows:
        label = f"{r['pass']} {r['mode']}{' det' if r['deterministic'] else ''} {r['dtype'][-2:]} {r['D']} {r['L']}"
        times = roofline_us(r["bytes"])
        out(f"  {label:<26}" + "".join(f"{times[n]:>9.2f}" for n in names))
    out("\nChips (published memory bandwidth, GB/s; source):")
    for name, gbs, src in CHIPS:
        out(f"  {name:<16} {gbs:>7.1f}  {src}")
