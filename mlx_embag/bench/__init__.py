"""Benchmark of ``embedding_bag``: time and peak memory per backend, forward and backward.

For each shape ``(V, D)``, bag length ``L`` and mode, it times (median of at
least 20 runs after a warm-up, ``mx.eval`` every run) the forward and the
forward + backward (gradient with respect to the table, through ``mx.vjp``) of:

* ``reference``: ``meb.embedding_bag(..., backend="reference")``, the pure-MLX path;
* ``metal``: ``backend="metal"``, the hand-written kernels (Apple silicon only);
* ``naive``: ``nn.Embedding`` then ``sum``/``mean``/``max`` under MLX autodiff
  (2-D fixed-length bags only: that is all the composition can express);
* ``take``: a bare ``mx.take`` of the same rows, without any reduction: the
  floor for any MLX implementation that gathers rows;
* ``torch``: ``torch.nn.functional.embedding_bag`` on the CPU, when torch is installed;
* ``mps``: the same on PyTorch's MPS device, when available.

Inputs come in two layouts: ``2d``, a ``(B, L)`` index array, and ``1d``, flat
indices with ``offsets`` and bag lengths drawn uniformly from ``[1, 2L-1]``
(mean ``L``). Peak memory is MLX's ``get_peak_memory`` during one run minus
the memory already held before it (the table, the indices), so it counts what
the operation allocates. Effective bandwidth counts the bytes a pass must move
(see :func:`bytes_moved`) over its time; on a Mac it is shown against the
chip's memory bandwidth (:data:`CHIP_BANDWIDTH_GBS`, or ``--bandwidth-gbs``).

After the table, the targets of the project are checked and printed with the
measured ratios (``reference`` against ``take`` and ``naive``; ``metal``
against the bandwidth, ``reference`` and ``mps`` where those ran).

    python -m mlx_embag.bench                       # default sweep (about 4 minutes on 2 cores)
    python -m mlx_embag.bench --quick               # tiny sizes, seconds
    python -m mlx_embag.bench --shapes 1000000x64 --bag-sizes 1,16,64 --modes sum \\
        --json bench.json --plot bench.png

Example:
    >>> from mlx_embag.bench import measure
    >>> m = measure(lambda: None, warmup=1, repeat=3)
    >>> m.runs
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

import mlx_embag as meb
from mlx_embag._spec import MODES

BACKENDS = ("reference", "metal", "naive", "take", "torch", "mps")
PASSES = ("fwd", "fwd+bwd")
LAYOUTS = ("2d", "1d")
MIN_RUNS = 20

# Unified-memory bandwidth of Apple chips in GB/s (Apple's published figures),
# keyed by the ``device_name`` MLX reports. Binned variants with a narrower bus
# (e.g. the 30-core M3 Max at 300 GB/s) share a name: use --bandwidth-gbs there.
CHIP_BANDWIDTH_GBS = {
    "Apple M1": 68.25, "Apple M1 Pro": 200.0, "Apple M1 Max": 400.0, "Apple M1 Ultra": 800.0,
    "Apple M2": 100.0, "Apple M2 Pro": 200.0, "Apple M2 Max": 400.0, "Apple M2 Ultra": 800.0,
    "Apple M3": 100.0, "Apple M3 Pro": 150.0, "Apple M3 Max": 400.0, "Apple M3 Ultra": 819.0,
    "Apple M4": 120.0, "Apple M4 Pro": 273.0, "Apple M4 Max": 546.0,
    "Apple M5": 153.0,
}

# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Measurement:
    """Median and minimum wall time (seconds) over ``runs`` runs, and extra peak bytes."""

    median_s: float
    min_s: float
    runs: int
    peak_bytes: Optional[int] = None


def measure_interleaved(fns, *, warmup: int = 3, repeat: int = MIN_RUNS, track_mlx_memory=()):
    """Time several zero-argument callables in turns: the shared timing helper.

    Every callable must evaluate (``mx.eval``) or synchronise its own result.
    After ``warmup`` untimed calls of each (they build MLX's graphs and cache
    kernels), each of the ``repeat`` rounds times every callable once, so a
    burst of load from other processes hits all of them alike and their ratios
    stay meaningful on a busy machine. The median is the figure reported.
    For the names in ``track_mlx_memory``, one more call measures MLX's peak
    memory above what was allocated before it.

    Args:
        fns (dict): name -> callable doing one full, synchronised run.
        warmup (int): untimed calls of each before timing.
        repeat (int): timed rounds.
        track_mlx_memory (iterable): names whose MLX peak memory to measure.

    Returns:
        dict: name -> :class:`Measurement`.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, fn in fns.items():
        peak = None
        if name in track_mlx_memory:
            mx.clear_cache()
            base = mx.get_active_memory()
            mx.reset_peak_memory()
            fn()
            peak = max(mx.get_peak_memory() - base, 0)
        ts = times[name]
        out[name] = Measurement(statistics.median(ts), min(ts), len(ts), peak)
    return out


def measure(fn: Callable[[], object], *, warmup: int = 3, repeat: int = MIN_RUNS,
            track_mlx_memory: bool = False) -> Measurement:
    """:func:`measure_interleaved` of a single callable."""
    tracked = ("fn",) if track_mlx_memory else ()
    return measure_interleaved({"fn": fn}, warmup=warmup, repeat=repeat,
                               track_mlx_memory=tracked)["fn"]


# ------------------------------------------------------------------------- workload


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload: table ``(V, D)`` of ``dtype``, ``B`` bags of mean length ``L``."""

    V: int
    D: int
    B: int
    L: int
    layout: str
    mode: str
    dtype: str = "float32"


@dataclasses.dataclass
class Inputs:
    weight: mx.array          # (V, D)
    flat: mx.array            # (N,) int32, the indices of every bag in order
    idx2d: Optional[mx.array]  # (B, L) for the 2-D layout, else None
    offsets: Optional[mx.array]  # (B,) for the 1-D layout, else None
    cot: mx.array             # (B, D) output cotangent for the backward
    np_flat: np.ndarray
    np_offsets: Optional[np.ndarray]
    np_weight: np.ndarray
    np_cot: np.ndarray

    @property
    def N(self):
        return self.flat.size


def make_inputs(case: Case, seed: int = 0) -> Inputs:
    """Uniformly random rows; 1-D bags have lengths uniform in ``[1, 2L-1]``."""
    rng = np.random.default_rng(seed)
    dtype = getattr(mx, case.dtype)
    w_np = rng.standard_normal((case.V, case.D), dtype=np.float32)
    if case.layout == "2d":
        lengths = np.full(case.B, case.L)
    else:
        lengths = rng.integers(1, 2 * case.L, size=case.B) if case.L > 1 else np.ones(case.B, int)
    n = int(lengths.sum())
    flat_np = rng.integers(0, case.V, size=n).astype(np.int32)
    off_np = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    cot_np = rng.standard_normal((case.B, case.D), dtype=np.float32)
    weight = mx.array(w_np).astype(dtype)
    flat = mx.array(flat_np)
    idx2d = flat.reshape(case.B, case.L) if case.layout == "2d" else None
    offsets = mx.array(off_np) if case.layout == "1d" else None
    cot = mx.array(cot_np).astype(dtype)
    mx.eval(weight, flat, cot, *(a for a in (idx2d, offsets) if a is not None))
    return Inputs(weight, flat, idx2d, offsets, cot, flat_np,
                  off_np if case.layout == "1d" else None, w_np, cot_np)


def bytes_moved(case: Case, n: int, pass_: str) -> int:
    """Bytes a pass must move at the least.

    Forward: the ``N`` gathered rows plus the ``(B, D)`` output. Forward +
    backward adds reading the ``(B, D)`` cotangent, a read-modify-write of one
    float32 gradient row per index, and zero-filling the dense float32
    ``(V, D)`` gradient.
    """
    item = np.dtype(case.dtype if case.dtype != "bfloat16" else "float16").itemsize
    fwd = (n + case.B) * case.D * item
    if pass_ == "fwd":
        return fwd
    return fwd + case.B * case.D * item + 2 * n * case.D * 4 + case.V * case.D * 4


# ---------------------------------------------------------------------- contenders
# Each returns (forward, forward_backward) zero-argument callables that run one
# synchronised pass, or None when the backend cannot run the case.


def _mlx_pair(f, inp: Inputs, compile=False):
    w, cot = inp.weight, inp.cot

    def both(w_, cot_):
        out, (dw,) = mx.vjp(f, [w_], [cot_])
        return out, dw

    # Compiled, the graph is traced once: what remains is the arithmetic, without
    # the per-call Python and graph-building cost that eager calls pay.
    fwd_fn, both_fn = (mx.compile(f), mx.compile(both)) if compile else (f, both)

    def fwd():
        mx.eval(fwd_fn(w))

    def fwd_bwd():
        mx.eval(*both_fn(w, cot))

    return fwd, fwd_bwd


def _library(backend):
    def make(case: Case, inp: Inputs, compile=False):
        if case.layout == "2d":
            f = lambda w: meb.embedding_bag(inp.idx2d, w, mode=case.mode, backend=backend)  # noqa: E731
        else:
            f = lambda w: meb.embedding_bag(  # noqa: E731
                inp.flat, w, inp.offsets, mode=case.mode, backend=backend)
        return _mlx_pair(f, inp, compile)

    return make


def _naive(case: Case, inp: Inputs, compile=False):
    """``nn.Embedding`` then the reduction, differentiated by MLX's own VJPs."""
    if case.layout != "2d":
        return None  # variable-length bags are beyond a plain reduction over an axis
    emb = nn.Embedding(case.V, case.D)  # its random init is lazy and never evaluated
    reduce = {"sum": mx.sum, "mean": mx.mean, "max": mx.max}[case.mode]

    def f(w):
        emb.weight = w
        return reduce(emb(inp.idx2d), axis=1)

    return _mlx_pair(f, inp, compile)


def _take(case: Case, inp: Inputs, compile=False):
    """The same rows gathered, not reduced: ``(N, D)`` out, scatter-add back."""
    return _mlx_pair(lambda w: mx.take(w, inp.flat, axis=0), _with_cot(inp), compile)


def _with_cot(inp: Inputs):
    # The take's output is (N, D): its cotangent is the bag's cotangent per position.
    owner = np.repeat(np.arange(inp.cot.shape[0]), np.diff(
        np.append(_offsets_of(inp), inp.N)))
    cot = mx.take(inp.cot, mx.array(owner.astype(np.int32)), axis=0)
    mx.eval(cot)
    return dataclasses.replace(inp, cot=cot)


def _offsets_of(inp: Inputs):
    if inp.np_offsets is not None:
        return inp.np_offsets
    B, L = inp.idx2d.shape
    return np.arange(B) * L


def _torch_on(device):
    def make(case: Case, inp: Inputs):
        import torch
        import torch.nn.functional as F

        dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        w = torch.from_numpy(inp.np_weight).to(device=device, dtype=dt[case.dtype])
        flat = torch.from_numpy(inp.np_flat.astype(np.int64)).to(device)
        cot = torch.from_numpy(inp.np_cot).to(device=device, dtype=dt[case.dtype])
        if case.layout == "2d":
            args = (flat.reshape(case.B, case.L), None)
        else:
            args = (flat, torch.from_numpy(inp.np_offsets.astype(np.int64)).to(device))
        sync = torch.mps.synchronize if device == "mps" else (lambda: None)
        wg = w.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                F.embedding_bag(args[0], w, args[1], mode=case.mode)
            sync()

        def fwd_bwd():
            wg.grad = None
            F.embedding_bag(args[0], wg, args[1], mode=case.mode).backward(cot)
            sync()

        return fwd, fwd_bwd

    return make


_MLX = ("reference", "metal", "naive", "take")
CONTENDERS = {
    "reference": _library("reference"),
    "metal": _library("metal"),
    "naive": _naive,
    "take": _take,
    "torch": _torch_on("cpu"),
    "mps": _torch_on("mps"),
}


def available_backends(requested):
    """``(usable, notes)``: the requested backends this machine can run, and why not the rest."""
    usable, notes = [], []
    for name in requested:
        if name == "metal" and not mx.metal.is_available():
            notes.append("metal: Metal timing needs Apple silicon (no Metal GPU here); "
                         "the other backends still run.")
            continue
        if name in ("torch", "mps"):
            try:
                import torch
            except ImportError:
                notes.append(f"{name}: PyTorch is not installed; skipped.")
                continue
            if name == "mps" and not torch.backends.mps.is_available():
                notes.append("mps: PyTorch MPS is not available on this machine; skipped.")
                continue
        usable.append(name)
    return usable, notes


# ----------------------------------------------------------------------- bandwidth


def device_name() -> str:
    info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
    return str(info.get("device_name", platform.processor() or "unknown"))


def chip_bandwidth_gbs(name: str) -> Optional[float]:
    """Memory bandwidth of an Apple chip from its MLX device name, or None if unknown."""
    name = name.strip()
    if name in CHIP_BANDWIDTH_GBS:
        return CHIP_BANDWIDTH_GBS[name]
    # Longest known prefix, so "Apple M2 Max (38-core)" still resolves.
    hits = [k for k in CHIP_BANDWIDTH_GBS if name.startswith(k)]
    return CHIP_BANDWIDTH_GBS[max(hits, key=len)] if hits else None


# ------------------------------------------------------------------------- running


def run_case(case: Case, backends, passes, *, warmup, repeat, seed, bandwidth, compile=False,
             log=print, skipped=None):
    """Measure ``case`` on every backend, interleaved; returns a list of result dicts.

    A backend that raises on this case is logged (and appended to ``skipped``)
    and left out; the others still run.
    """
    skipped = [] if skipped is None else skipped

    def skip(msg):
        skipped.append(f"V={case.V} D={case.D} L={case.L} {case.layout} {case.mode}: {msg}")
        log("  " + msg)

    inp = make_inputs(case, seed)
    pairs = {}
    for name in backends:
        try:
            pair = CONTENDERS[name](case, inp, compile) if name in _MLX else \
                CONTENDERS[name](case, inp)
        except Exception as e:  # noqa: BLE001 - reported, never fatal
            # e.g. a backend that does not support this call: report, do not abort.
            skip(f"{name}: skipped ({type(e).__name__}: {e})")
            continue
        if pair is not None:
            pairs[name] = pair
    results = []
    for i, pass_ in enumerate(PASSES):
        if pass_ not in passes:
            continue
        fns = {}
        for name, pair in pairs.items():
            try:
                pair[i]()  # fail here, alone, rather than inside the timed rounds
                fns[name] = pair[i]
            except Exception as e:  # noqa: BLE001 - reported, never fatal
                skip(f"{name} {pass_}: failed ({type(e).__name__}: {e})")
        ms = measure_interleaved(fns, warmup=warmup, repeat=repeat,
                                 track_mlx_memory=[n for n in fns if n in _MLX])
        nbytes = bytes_moved(case, inp.N, pass_)
        for name, m in ms.items():
            gbs = nbytes / m.median_s / 1e9
            results.append({
                **dataclasses.asdict(case), "N": inp.N, "backend": name, "pass": pass_,
                "median_ms": m.median_s * 1e3, "min_ms": m.min_s * 1e3, "runs": m.runs,
                "peak_mb": None if m.peak_bytes is None else m.peak_bytes / 2**20,
                "bytes": nbytes, "gbs": gbs,
                "pct_bandwidth": None if bandwidth is None else 100 * gbs / bandwidth,
                "compiled": bool(compile) and name in _MLX,
            })
    del inp, pairs
    mx.clear_cache()
    return results


# ------------------------------------------------------------------------- targets


def _index(results):
    return {(r["V"], r["D"], r["B"], r["L"], r["layout"], r["mode"], r["dtype"], r["pass"],
             r["backend"]): r for r in results}


def check_targets(results):
    """The project's performance targets, as a list of checks with measured ratios.

    * reference forward, sum/mean: time <= 1.3x bare ``take`` for L >= 16, <= 2x below;
    * reference forward max and every forward+backward: time and peak memory
      <= 1.1x the naive composition;
    * metal forward >= 80 % of the bandwidth for float32 D >= 64, forward+backward
      >= 50 %; metal forward >= 2x faster than reference for L >= 16; metal faster
      than PyTorch MPS.
    """
    idx = _index(results)
    checks = []

    def add(r, target, value, limit, ok, what):
        checks.append({"V": r["V"], "D": r["D"], "B": r["B"], "L": r["L"], "layout": r["layout"],
                       "mode": r["mode"], "dtype": r["dtype"], "pass": r["pass"], "target": target,
                       "what": what, "value": value, "limit": limit, "ok": bool(ok)})

    for key, r in idx.items():
        *case, pass_, backend = key
        other = lambda b: idx.get((*case, pass_, b))  # noqa: E731
        if backend == "reference":
            take, naive = other("take"), other("naive")
            if pass_ == "fwd" and r["mode"] in ("sum", "mean") and take:
                limit = 1.3 if r["L"] >= 16 else 2.0
                ratio = r["median_ms"] / take["median_ms"]
                add(r, f"reference/take time <= {limit}", ratio, limit, ratio <= limit, "time")
            if (pass_ == "fwd+bwd" or r["mode"] == "max") and naive:
                ratio = r["median_ms"] / naive["median_ms"]
                add(r, "reference/naive time <= 1.1", ratio, 1.1, ratio <= 1.1, "time")
                if r["peak_mb"] is not None and naive["peak_mb"]:
                    ratio = r["peak_mb"] / naive["peak_mb"]
                    add(r, "reference/naive peak <= 1.1", ratio, 1.1, ratio <= 1.1, "memory")
        elif backend == "metal":
            pct = r["pct_bandwidth"]
            if pct is not None and r["dtype"] == "float32" and r["D"] >= 64:
                limit = 80.0 if pass_ == "fwd" else 50.0
                add(r, f"metal % of bandwidth >= {limit:g}", pct, limit, pct >= limit, "bandwidth")
            ref, mps = other("reference"), other("mps")
            if pass_ == "fwd" and ref and r["L"] >= 16:
                speedup = ref["median_ms"] / r["median_ms"]
                add(r, "reference/metal time >= 2", speedup, 2.0, speedup >= 2.0, "time")
            if mps:
                speedup = mps["median_ms"] / r["median_ms"]
                add(r, "mps/metal time >= 1", speedup, 1.0, speedup >= 1.0, "time")
    return checks


# -------------------------------------------------------------------------- output


# Time ratios printed beside the table (numerator, denominator, column title).
RATIOS = (("reference", "take", "ref/take"), ("reference", "naive", "ref/naive"),
          ("reference", "torch", "ref/torch"), ("reference", "metal", "ref/metal"),
          ("mps", "metal", "mps/metal"))


def format_table(results, backends, bandwidth=None):
    """Fixed-width text: per case and pass, median ms and MLX extra peak MB per backend,
    then time ratios between backends (and GB/s when a bandwidth is known)."""
    groups = {}
    for r in results:
        groups.setdefault((r["V"], r["D"], r["B"], r["dtype"]), []).append(r)
    shown = [b for b in backends if any(r["backend"] == b for r in results)]
    mem = [b for b in shown if b not in ("torch", "mps")]
    lines = []
    for (V, D, B, dtype), rs in groups.items():
        lines.append(f"V={V} D={D} B={B} {dtype}: median ms (extra peak MB)")
        ratios = [(a, b, t) for a, b, t in RATIOS if a in shown and b in shown]
        head = f"{'L':>3} {'layout':>6} {'mode':>4} {'pass':>7} |" + "".join(
            f"{b:>17}" for b in shown)
        if ratios:
            head += " |" + "".join(f"{t:>10}" for _, _, t in ratios)
        if bandwidth is not None:
            head += " | " + "".join(f"{b + ' GB/s':>16}" for b in shown)
        lines += [head, "-" * len(head)]
        idx = _index(rs)
        rows = sorted({(r["L"], LAYOUTS.index(r["layout"]), MODES.index(r["mode"]),
                        PASSES.index(r["pass"])) for r in rs})
        for L, lay, m, p in rows:
            mode = MODES[m]
            line = f"{L:>3} {LAYOUTS[lay]:>6} {mode:>4} {PASSES[p]:>7} |"
            cells, bw = [], []
            for b in shown:
                r = idx.get((V, D, B, L, LAYOUTS[lay], mode, dtype, PASSES[p], b))
                if r is None:
                    cells.append(f"{'-':>17}")
                    bw.append(f"{'-':>16}")
                    continue
                peak = f"({r['peak_mb']:.1f})" if b in mem and r["peak_mb"] is not None else ""
                cells.append(f"{r['median_ms']:>9.3f}{peak:>8}")
                pct = f" ({r['pct_bandwidth']:.0f}%)" if r["pct_bandwidth"] is not None else ""
                bw.append(f"{r['gbs']:>9.1f}{pct:>7}")
            line += "".join(cells)
            if ratios:
                line += " |"
                for a, b, _ in ratios:
                    ra = idx.get((V, D, B, L, LAYOUTS[lay], mode, dtype, PASSES[p], a))
                    rb = idx.get((V, D, B, L, LAYOUTS[lay], mode, dtype, PASSES[p], b))
                    line += f"{ra['median_ms'] / rb['median_ms']:>10.2f}" if ra and rb else f"{'-':>10}"
            if bandwidth is not None:
                line += " | " + "".join(bw)
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def format_checks(checks):
    if not checks:
        return "targets: nothing to check (needs reference with take/naive, or metal)."
    lines = [f"targets: {sum(c['ok'] for c in checks)}/{len(checks)} met"]
    for c in checks:
        if not c["ok"]:
            lines.append(
                f"  MISSED V={c['V']} D={c['D']} L={c['L']} {c['layout']} {c['mode']} "
                f"{c['pass']}: {c['target']} (measured {c['value']:.2f})")
    worst = {}
    for c in checks:
        # Worst ratio per target (the closest to or furthest past its limit).
        bad = c["value"] / c["limit"] if "<=" in c["target"] else c["limit"] / max(c["value"], 1e-12)
        if c["target"] not in worst or bad > worst[c["target"]][0]:
            worst[c["target"]] = (bad, c)
    for t, (_, c) in sorted(worst.items()):
        lines.append(f"  worst {t}: {c['value']:.2f} (V={c['V']} D={c['D']} L={c['L']} "
                     f"{c['layout']} {c['mode']} {c['pass']})")
    return "\n".join(lines)


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results, path):
    """Median time vs bag length per backend: one panel per (shape, pass) row and mode column."""
    plt = _import_pyplot()
    shapes = sorted({(r["V"], r["D"], r["B"], r["dtype"]) for r in results})
    modes = [m for m in MODES if any(r["mode"] == m for r in results)]
    passes = [p for p in PASSES if any(r["pass"] == p for r in results)]
    rows = [(s, p) for s in shapes for p in passes]
    height = 3.2 * len(rows) + 0.7  # 0.7 inch on top for the legend
    fig, axes = plt.subplots(len(rows), len(modes), squeeze=False,
                             figsize=(4.2 * len(modes), height))
    colors = dict(zip(BACKENDS, ("tab:blue", "tab:red", "tab:orange", "tab:gray",
                                 "tab:green", "tab:purple")))
    for i, ((V, D, B, dtype), p) in enumerate(rows):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for b in BACKENDS:
                for layout, style in (("2d", "-o"), ("1d", "--s")):
                    pts = sorted((r["L"], r["median_ms"]) for r in results
                                 if (r["V"], r["D"], r["B"], r["dtype"], r["pass"], r["mode"],
                                     r["backend"], r["layout"]) ==
                                 (V, D, B, dtype, p, mode, b, layout))
                    if pts:
                        x, y = zip(*pts)
                        ax.plot(x, y, style, color=colors[b], label=f"{b} {layout}", ms=4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{mode} {p}  V={V} D={D} B={B}", fontsize=9)
            ax.set_xlabel("bag length L")
            ax.set_ylabel("median ms")
            ax.grid(True, which="both", alpha=0.3)
    legend = {}
    for ax in axes.flat:  # every backend and layout drawn anywhere, once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="upper center",
               ncol=min(len(legend), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI


def _int_list(text):
    return [int(float(x)) for x in text.split(",") if x]


def _shape_list(text):
    out = []
    for item in text.split(","):
        try:
            v, d = item.lower().split("x")
            out.append((int(float(v)), int(d)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shapes must look like 1000000x64, got {item!r}")
    return out


def _choice_list(choices):
    def parse(text):
        items = [x for x in text.split(",") if x]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; valid: {', '.join(choices)}")
        return items

    return parse


def build_parser():
    p = argparse.ArgumentParser(
        prog="mlx-embag-bench",
        description="Time and peak memory of embedding_bag: the reference path, the Metal "
                    "kernels (Apple silicon), the naive MLX composition, a bare mx.take of the "
                    "same rows, and PyTorch CPU/MPS.")
    p.add_argument("--shapes", type=_shape_list, default=None,
                   help="tables VxD, comma-separated (default 1000000x16,100000x64,20000x256)")
    p.add_argument("--bag-sizes", type=_int_list, default=None,
                   help="mean bag lengths L (default 1,4,16,64)")
    p.add_argument("--batch", type=int, default=None, help="bags per call B (default 1024)")
    p.add_argument("--modes", type=_choice_list(MODES), default=list(MODES), help="default sum,mean,max")
    p.add_argument("--layouts", type=_choice_list(LAYOUTS), default=list(LAYOUTS),
                   help="2d: (B, L) indices; 1d: flat indices + offsets (default both)")
    p.add_argument("--passes", type=_choice_list(PASSES), default=list(PASSES),
                   help="fwd and/or fwd+bwd (default both)")
    p.add_argument("--backends", type=_choice_list(BACKENDS), default=list(BACKENDS),
                   help="default: every one this machine can run")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--repeat", type=int, default=MIN_RUNS,
                   help=f"timed runs per figure, median reported (default and minimum {MIN_RUNS})")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true",
                   help="time the MLX backends under mx.compile (no per-call graph building)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads for the PyTorch CPU baseline (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bandwidth-gbs", type=float, default=None,
                   help="memory bandwidth to compare against (default: the Apple chip's, if known)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (V=1000, D=16, B=16, L=1,4,16), for a smoke test")
    p.add_argument("--json", metavar="PATH", help="write every measurement and check as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw time vs bag length per backend (matplotlib)")
    return p


def main(argv=None):
    """Entry point of ``python -m mlx_embag.bench`` and ``mlx-embag-bench``; returns 0."""
    args = build_parser().parse_args(argv)
    if args.repeat < MIN_RUNS:
        print(f"error: --repeat must be at least {MIN_RUNS} (each figure is a median)",
              file=sys.stderr)
        return 2
    if args.plot and _import_pyplot() is None:
        print("error: --plot needs matplotlib, which is not installed: "
              "pip install matplotlib (or pip install 'mlx-embag[examples]')", file=sys.stderr)
        return 2
    shapes = args.shapes or ([(1000, 16)] if args.quick else
                             [(1_000_000, 16), (100_000, 64), (20_000, 256)])
    bag_sizes = args.bag_sizes or ([1, 4, 16] if args.quick else [1, 4, 16, 64])
    batch = args.batch or (16 if args.quick else 1024)

    name = device_name()
    bandwidth = args.bandwidth_gbs
    if bandwidth is None and mx.metal.is_available():
        bandwidth = chip_bandwidth_gbs(name)
    backends, notes = available_backends(args.backends)
    print(f"mlx-embag bench: device {name} ({platform.machine()}), mlx {mx.__version__}, "
          f"default device {mx.default_device()}, median of {args.repeat} runs")
    if bandwidth is not None:
        print(f"memory bandwidth: {bandwidth:g} GB/s")
    for note in notes:
        print(note)
    if args.torch_threads and "torch" in backends:
        import torch

        torch.set_num_threads(args.torch_threads)
    if "torch" in backends:
        import torch

        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.compile:
        print("MLX backends timed under mx.compile")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    results, skipped = [], []
    for V, D in shapes:
        for L in bag_sizes:
            for layout in args.layouts:
                for mode in args.modes:
                    case = Case(V, D, batch, L, layout, mode, args.dtype)
                    log(f"V={V} D={D} B={batch} L={L} {layout} {mode}")
                    results += run_case(case, backends, args.passes, warmup=args.warmup,
                                        repeat=args.repeat, seed=args.seed,
                                        bandwidth=bandwidth, compile=args.compile, log=log,
                                        skipped=skipped)
    checks = check_targets(results)
    print()
    print(format_table(results, backends, bandwidth))
    print(format_checks(checks))
    if skipped:
        print(f"{len(skipped)} measurements could not run (details in stderr and --json):")
        for msg in skipped[:5]:
            print("  " + msg)
    if args.quick:
        print("(--quick: at tiny sizes the times are mostly Python and graph-building "
              "overhead; the targets are meant for the default sizes)")
    if args.json:
        meta = {"device": name, "machine": platform.machine(), "mlx": mx.__version__,
                "bandwidth_gbs": bandwidth, "repeat": args.repeat, "notes": notes,
                "compiled": args.compile, "skipped": skipped}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results, "targets": checks}, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
