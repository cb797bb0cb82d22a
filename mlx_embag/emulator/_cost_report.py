"""The profiler's readable report: one table per launch, then one row per source line.

Example:
    >>> from mlx_embag.emulator.profile import Launch, Totals
    >>> launch = Launch({("device", "load"): Totals(1, 32, 128, 4, 1)}, name="copy", grid=(32, 1, 1),
    ...                 threadgroup=(32, 1, 1))
    >>> print(report([launch], sites=False).splitlines()[-1])
      device       load              1      32        128        4        1   100%
"""

from __future__ import annotations

MODELS = (
    "Figures per SIMD-group (32 lanes) instruction; sectors 32 B and lines 128 B from each buffer's start. "
    "MODELS of Apple GPUs, not documented facts: threadgroup memory as 32 banks x 4 bytes (bank conflict = "
    "passes needed over the fewest possible; 1 = none), and divergent lanes reconverging at the branch's "
    "immediate post-dominator."
)

_SHORT = {"device": "device", "threadgroup": "tgroup"}
_HEAD = f"  {'space':<12} {'kind':<8} {'instr':>10} {'lanes':>7} {'bytes':>10} {'sectors':>8} {'lines':>8} {'used':>6}"


def _row(space: str, kind: str, t) -> str:
    used = f"{100 * t.efficiency:.0f}%" if t.sectors else "-"
    return (
        f"  {space:<12} {kind:<8} {t.instructions:>10} {t.lanes:>7} {t.bytes:>10} {t.sectors:>8} {t.lines:>8} "
        f"{used:>6}"
    )


def _launch_table(launch) -> list[str]:
    lines = [f"== {launch.name}  grid {launch.grid}  threadgroup {launch.threadgroup}", _HEAD]
    for space in ("device", "threadgroup"):
        for kind in ("load", "store"):
            t = launch.totals(space, kind)
            if t.instructions:
                lines.append(_row(space, kind, t))
    for label, a in (("device", launch.atomics), ("threadgroup", launch.threadgroup_atomics)):
        if a.ops:
            lines.append(
                f"  {label} atomics: {a.ops} ops in {a.instructions} instructions, {a.addresses} addresses, "
                f"at most {a.max_per_address} on one"
            )
    if launch.bank_conflicts:
        lines.append(f"  threadgroup bank conflicts: worst {launch.bank_conflicts}-way")
    lines.append("")
    return lines


def _site_rows(launch) -> list[str]:
    out = [f"  per source line of {launch.name}:"]
    out.append(
        f"  {'line':>5} {'access':<18} {'instr':>8} {'lanes':>7} {'sectors':>8} {'used':>6} {'bank':>5}  source"
    )
    for s in launch.sites:
        line = str(s.line) if s.line else "?"
        for space in ("device", "threadgroup"):
            for kind in ("load", "store"):
                t = s.totals(space, kind)
                if not t.instructions:
                    continue
                used = f"{100 * t.efficiency:.0f}%" if t.sectors else "-"
                bank = str(s.bank_conflicts) if space == "threadgroup" else ""
                out.append(
                    f"  {line:>5} {_SHORT[space] + ' ' + kind:<18} {t.instructions:>8} {t.lanes:>7} {t.sectors:>8} "
                    f"{used:>6} {bank:>5}  {s.source[:70]}"
                )
        for space, a in (("device", s.atomics), ("threadgroup", s.threadgroup_atomics)):
            if a.ops:
                out.append(
                    f"  {line:>5} {_SHORT[space] + ' atomic':<18} {a.instructions:>8} {a.ops:>7} {'':>8} {'':>6} "
                    f"{'':>5}  {s.source[:70]}"
                )
    out.append("")
    return out


def report(launches, sites: bool = True) -> str:
    """The text of :meth:`Profile.report`."""
    lines = [MODELS, ""]
    if not launches:
        lines.append("(no kernel launches recorded)")
    for launch in launches:
        lines += _launch_table(launch)
        if sites:
            lines += _site_rows(launch)
    return "\n".join(lines)
