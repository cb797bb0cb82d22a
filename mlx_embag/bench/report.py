"""What the benchmark prints and draws: the results table, the targets' verdicts, the plot.

Example:
    >>> from mlx_embag.bench.report import format_checks
    >>> format_checks([])
    'targets: nothing to check (needs reference with take/naive, or metal).'
"""

from __future__ import annotations

import json
from typing import Iterable, List, Optional

from mlx_embag._spec import MODES

from .contenders import BACKENDS
from .results import Check, HostCost, Result
from .workloads import LAYOUTS, PASSES

# Time ratios printed beside the table (numerator, denominator, column title).
RATIOS = (
    ("reference", "take", "ref/take"),
    ("reference", "segmm", "ref/segmm"),
    ("reference", "ref2d", "ref/ref2d"),
    ("reference", "naive", "ref/naive"),
    ("reference", "torch", "ref/torch"),
    ("reference", "metal", "ref/metal"),
    ("mps", "metal", "mps/metal"),
)


def _table_of(r: Result):
    return r.case.V, r.case.D, r.case.B, r.case.dtype


def _row_of(r: Result):
    # Layouts, modes and passes in the order they are declared (2d before 1d), not alphabetical.
    return (r.case.L, LAYOUTS.index(r.case.layout), MODES.index(r.case.mode), PASSES.index(r.pass_))


def _header(shown, ratios, bandwidth):
    head = f"{'L':>3} {'layout':>6} {'mode':>4} {'pass':>7} |" + "".join(f"{b:>17}" for b in shown)
    if ratios:
        head += " |" + "".join(f"{t:>10}" for _, _, t in ratios)
    if bandwidth is not None:
        head += " | " + "".join(f"{b + ' GB/s':>16}" for b in shown)
    return head


def _row(key, by_backend, shown, ratios, bandwidth):
    L, lay, m, p = key
    line = f"{L:>3} {LAYOUTS[lay]:>6} {MODES[m]:>4} {PASSES[p]:>7} |"
    cells, bw = [], []
    for b in shown:
        r = by_backend.get(b)
        if r is None:
            cells.append(f"{'-':>17}")
            bw.append(f"{'-':>16}")
            continue
        # Only the MLX backends have a peak: PyTorch's allocations are not MLX's to see.
        peak = f"({r.peak_mb:.1f})" if r.peak_mb is not None else ""
        cells.append(f"{r.median_ms:>9.3f}{peak:>8}")
        pct = f" ({r.pct_bandwidth:.0f}%)" if r.pct_bandwidth is not None else ""
        bw.append(f"{r.gbs:>9.1f}{pct:>7}")
    line += "".join(cells)
    if ratios:
        line += " |"
        for a, b, _ in ratios:
            ra, rb = by_backend.get(a), by_backend.get(b)
            line += f"{ra.median_ms / rb.median_ms:>10.2f}" if ra and rb else f"{'-':>10}"
    if bandwidth is not None:
        line += " | " + "".join(bw)
    return line


def format_table(results: List[Result], backends, bandwidth: Optional[float] = None) -> str:
    """Fixed-width text: per case and pass, median ms and MLX extra peak MB per backend,
    then time ratios between backends (and GB/s when a bandwidth is known).

    Example:
        >>> from mlx_embag.bench.workloads import Case
        >>> r = Result(Case(10, 4, 2, 3, "2d", "sum"), 6, "take", "fwd", 0.25, 0.2, 20,
        ...            1.5, 128, 0.5, None)
        >>> print(format_table([r], ["reference", "take"]))
        V=10 D=4 B=2 float32: median ms (extra peak MB)
          L layout mode    pass |             take
        ------------------------------------------
          3     2d  sum     fwd |    0.250   (1.5)
        <BLANKLINE>
    """
    tables = {}
    for r in results:
        tables.setdefault(_table_of(r), {}).setdefault(_row_of(r), {})[r.backend] = r
    shown = [b for b in backends if any(r.backend == b for r in results)]
    ratios = [(a, b, t) for a, b, t in RATIOS if a in shown and b in shown]
    lines = []
    for (V, D, B, dtype), rows in tables.items():
        lines.append(f"V={V} D={D} B={B} {dtype}: median ms (extra peak MB)")
        head = _header(shown, ratios, bandwidth)
        lines += [head, "-" * len(head)]
        lines += [_row(key, rows[key], shown, ratios, bandwidth) for key in sorted(rows)]
        lines.append("")
    return "\n".join(lines)


def _where(c: Check) -> str:
    return f"V={c.case.V} D={c.case.D} L={c.case.L} {c.case.layout} {c.case.mode} {c.pass_}"


def format_checks(checks: List[Check]) -> str:
    """How many targets were met, each one missed, and the worst measurement per target.

    Example:
        >>> from mlx_embag.bench.workloads import Case
        >>> c = Check(Case(10, 64, 2, 16, "2d", "sum"), "fwd", "reference/take time <= 1.3",
        ...           "time", value=1.4, limit=1.3, ok=False)
        >>> print(format_checks([c]))
        targets: 0/1 met
          MISSED V=10 D=64 L=16 2d sum fwd: reference/take time <= 1.3 (measured 1.40)
          worst reference/take time <= 1.3: 1.40 (V=10 D=64 L=16 2d sum fwd)
    """
    if not checks:
        return "targets: nothing to check (needs reference with take/naive, or metal)."
    lines = [f"targets: {sum(c.ok for c in checks)}/{len(checks)} met"]
    for c in checks:
        if not c.ok:
            lines.append(f"  MISSED {_where(c)}: {c.target} (measured {c.value:.2f})")
    worst = {}
    for c in checks:
        # Worst ratio per target (the closest to or furthest past its limit).
        bad = c.value / c.limit if c.at_most else c.limit / max(c.value, 1e-12)
        if c.target not in worst or bad > worst[c.target][0]:
            worst[c.target] = (bad, c)
    for t, (_, c) in sorted(worst.items()):
        lines.append(f"  worst {t}: {c.value:.2f} ({_where(c)})")
    return "\n".join(lines)


def format_host(costs: List[HostCost]) -> str:
    """The ``host us/call`` table: per case, microseconds of graph building per forward call
    (``auto``: ``backend="auto"``, the default).

    Example:
        >>> from mlx_embag.bench.workloads import Case
        >>> case = Case(10, 4, 2, 3, "1d", "sum")
        >>> costs = [HostCost(case, b, us) for b, us in (("reference", 30.0), ("metal", 12.0), ("auto", 16.0), ("take", 2.0))]
        >>> print(format_host(costs))
        host us/call (graph building of one forward, nothing evaluated; Metal on stub kernels; best of 40 x 50)
          V      D     B   L layout mode |   reference       metal        auto        take
          10     4     2   3     1d  sum |        30.0        12.0        16.0         2.0
    """
    if not costs:
        return "host us/call: not measured."
    shown = [b for b in ("reference", "metal", "auto", "take") if any(h.backend == b for h in costs)]
    rows = {}
    for h in costs:
        rows.setdefault(h.case, {})[h.backend] = h.host_us
    lines = [
        "host us/call (graph building of one forward, nothing evaluated; Metal on stub kernels; best of 40 x 50)",
        f"{'V':>3} {'D':>6} {'B':>5} {'L':>3} {'layout':>6} {'mode':>4} |"
        + "".join(f"{b:>12}" for b in shown),
    ]
    for case, by in rows.items():
        line = f"{case.V:>4} {case.D:>5} {case.B:>5} {case.L:>3} {case.layout:>6} {case.mode:>4} |"
        line += "".join(f"{by[b]:>12.1f}" if b in by else f"{'-':>12}" for b in shown)
        lines.append(line)
    return "\n".join(lines)


def write_json(
    path: str, meta: dict, results: Iterable[Result], checks: Iterable[Check], host: Iterable[HostCost] = ()
):
    """Write ``meta``, every result and every check to ``path`` as JSON.

    Example:
        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "b.json")
        >>> write_json(path, {"repeat": 20}, [], [])
        >>> json.load(open(path))
        {'meta': {'repeat': 20}, 'results': [], 'host': [], 'targets': []}
    """
    with open(path, "w") as fh:
        json.dump(
            {
                "meta": meta,
                "results": [r.to_dict() for r in results],
                "host": [h.to_dict() for h in host],
                "targets": [c.to_dict() for c in checks],
            },
            fh,
            indent=1,
        )


def pyplot():
    """``matplotlib.pyplot`` on a file-only backend, or None when matplotlib is missing.

    Example:
        >>> plt = pyplot()
        >>> plt is None or hasattr(plt, "subplots")
        True
    """
    try:
        import matplotlib
    except ImportError:
        return None
    # No display is needed to write a file, and none may exist (CI, ssh).
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results: List[Result], path: str):
    """Median time vs bag length per backend: one panel per (shape, pass) row and mode column.

    Example:
        >>> import os, tempfile
        >>> from mlx_embag.bench.workloads import Case
        >>> rs = [Result(Case(10, 4, 2, L, "2d", "sum"), 2 * L, "take", "fwd", L / 10, 0.1, 20,
        ...              0.0, 128, 0.5, None) for L in (1, 4)]
        >>> path = os.path.join(tempfile.mkdtemp(), "b.png")
        >>> plot(rs, path)
        >>> open(path, "rb").read(4)
        b'\\x89PNG'
    """
    plt = pyplot()
    shapes = sorted({_table_of(r) for r in results})
    modes = [m for m in MODES if any(r.case.mode == m for r in results)]
    passes = [p for p in PASSES if any(r.pass_ == p for r in results)]
    rows = [(s, p) for s in shapes for p in passes]
    height = 3.2 * len(rows) + 0.7  # 0.7 inch on top for the legend
    fig, axes = plt.subplots(len(rows), len(modes), squeeze=False, figsize=(4.2 * len(modes), height))
    palette = (
        "tab:blue",
        "tab:red",
        "tab:orange",
        "tab:gray",
        "tab:brown",
        "tab:olive",
        "tab:green",
        "tab:purple",
    )
    colors = dict(zip(BACKENDS, palette))
    series = {}
    for r in results:
        key = (_table_of(r), r.pass_, r.case.mode, r.backend, r.case.layout)
        series.setdefault(key, []).append((r.case.L, r.median_ms))
    for i, ((V, D, B, dtype), p) in enumerate(rows):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for b in BACKENDS:
                for layout, style in (("2d", "-o"), ("1d", "--s")):
                    pts = sorted(series.get(((V, D, B, dtype), p, mode, b, layout), []))
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
    fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=min(len(legend), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)
