"""The project's performance targets, as a table, and their check against measured results.

* reference forward, 2-D sum/mean: time <= 1.3x bare ``take`` for L >= 16, <= 2x below;
* reference forward, 1-D sum/mean: time <= 1.15x MLX's floor (``segmm``: a gather, then
  ``mx.segmented_mm``) for L >= 16, <= 1.5x below; 1-D max <= 1.5x 2-D max (``ref2d``);
* host time per forward call (:mod:`~.host`): <= 20 us on the Metal path, with
  ``backend="metal"`` and with the default ``"auto"`` (Metal with its fallback), <= 40 us
  on the reference path (:data:`HOST_TARGETS`, :func:`check_host`);
* reference forward max and every forward+backward: time and peak memory
  <= 1.1x the naive composition;
* metal forward >= 80 % of the bandwidth for float32 D >= 64, forward+backward
  >= 50 %; metal forward >= 2x faster than reference for L >= 16; metal faster
  than PyTorch MPS.

Example:
    >>> from mlx_embag.bench.targets import TARGETS
    >>> sorted({t.backend for t in TARGETS})
    ['metal', 'reference']
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, List, Optional

from .results import Check, HostCost, Result, index

# (result, the other backend's result on the same case and pass, or None) -> value
Ratio = Callable[[Result, Optional[Result]], float]


@dataclasses.dataclass(frozen=True)
class Target:
    """A limit on one of ``backend``'s figures, or on its ratio to ``against``'s.

    ``label`` is formatted with the limit (``{limit}``); ``applies`` and
    ``value`` take the result and the ``against`` result of the same case and
    pass; a target whose ``against`` did not run is not checked.

    Example:
        >>> t = Target("reference", "take", "ref/take <= {limit}", "time", at_most=True,
        ...            applies=lambda r, o: True,
        ...            value=lambda r, o: r.median_ms / o.median_ms, limit=lambda r: 1.5)
        >>> t.label.format(limit=t.limit(None))
        'ref/take <= 1.5'
    """

    backend: str
    against: Optional[str]
    label: str
    what: str
    at_most: bool
    applies: Callable[[Result, Optional[Result]], bool]
    value: Ratio
    limit: Callable[[Result], float]

    def check(self, r: Result, other: Optional[Result]) -> Optional[Check]:
        """The :class:`~.results.Check` of ``r`` (with ``other``), or None if it does not apply.

        Example:
            >>> from mlx_embag.bench.results import Result
            >>> from mlx_embag.bench.workloads import Case
            >>> r = Result(Case(10, 4, 2, 3, "2d", "sum"), 6, "metal", "fwd", 1.0, 1.0, 20,
            ...            None, 128, 0.1, None)
            >>> TARGETS[-1].check(r, None) is None  # no mps result to compare with
            True
        """
        if r.backend != self.backend or (self.against and other is None):
            return None
        if not self.applies(r, other):
            return None
        value, limit = self.value(r, other), self.limit(r)
        ok = value <= limit if self.at_most else value >= limit
        return Check(
            r.case, r.pass_, self.label.format(limit=limit), self.what, value, limit, bool(ok), self.at_most
        )


def _time_ratio(r, o):
    return r.median_ms / o.median_ms


def _speedup(r, o):
    return o.median_ms / r.median_ms


def _against_naive(r, o):
    # Forward sum/mean answer to the bare take instead, whose floor is tighter.
    return r.pass_ == "fwd+bwd" or r.case.mode == "max"


# Order matters: checks are listed (and printed) per result in this order.
TARGETS = (
    Target(
        "reference",
        "take",
        "reference/take time <= {limit}",
        "time",
        True,
        applies=lambda r, o: r.pass_ == "fwd" and r.case.mode in ("sum", "mean") and r.case.layout == "2d",
        value=_time_ratio,
        limit=lambda r: 1.3 if r.case.L >= 16 else 2.0,
    ),
    Target(
        "reference",
        "segmm",
        "reference/segmm time <= {limit}",
        "time",
        True,
        applies=lambda r, o: r.pass_ == "fwd",
        value=_time_ratio,
        limit=lambda r: 1.15 if r.case.L >= 16 else 1.5,
    ),
    Target(
        "reference",
        "ref2d",
        "reference 1d max/2d max time <= {limit}",
        "time",
        True,
        applies=lambda r, o: r.pass_ == "fwd" and r.case.mode == "max",
        value=_time_ratio,
        limit=lambda r: 1.5,
    ),
    Target(
        "reference",
        "naive",
        "reference/naive time <= {limit}",
        "time",
        True,
        applies=_against_naive,
        value=_time_ratio,
        limit=lambda r: 1.1,
    ),
    Target(
        "reference",
        "naive",
        "reference/naive peak <= {limit}",
        "memory",
        True,
        applies=lambda r, o: _against_naive(r, o) and r.peak_mb is not None and bool(o.peak_mb),
        value=lambda r, o: r.peak_mb / o.peak_mb,
        limit=lambda r: 1.1,
    ),
    Target(
        "metal",
        None,
        "metal % of bandwidth >= {limit:g}",
        "bandwidth",
        False,
        applies=lambda r, o: r.pct_bandwidth is not None and r.case.dtype == "float32" and r.case.D >= 64,
        value=lambda r, o: r.pct_bandwidth,
        limit=lambda r: 80.0 if r.pass_ == "fwd" else 50.0,
    ),
    Target(
        "metal",
        "reference",
        "reference/metal time >= {limit:g}",
        "time",
        False,
        applies=lambda r, o: r.pass_ == "fwd" and r.case.L >= 16,
        value=_speedup,
        limit=lambda r: 2.0,
    ),
    Target(
        "metal",
        "mps",
        "mps/metal time >= {limit:g}",
        "time",
        False,
        applies=lambda r, o: True,
        value=_speedup,
        limit=lambda r: 1.0,
    ),
)


# Host microseconds per forward call (graph building only, see .host), at most.
# "auto" (the default) is the Metal path too: its fallback's checks count against the same limit.
HOST_TARGETS = {"metal": 20.0, "auto": 20.0, "reference": 40.0}


def check_host(costs: Iterable[HostCost]) -> List[Check]:
    """The :data:`HOST_TARGETS` checks of measured host costs.

    Example:
        >>> from mlx_embag.bench.workloads import Case
        >>> case = Case(10, 4, 2, 3, "2d", "sum")
        >>> [(c.target, c.ok) for c in check_host([HostCost(case, "metal", 25.0), HostCost(case, "auto", 19.0)])]
        [('metal host us/call <= 20', False), ('auto host us/call <= 20', True)]
    """
    checks = []
    for h in costs:
        limit = HOST_TARGETS.get(h.backend)
        if limit is not None:
            label = f"{h.backend} host us/call <= {limit:g}"
            checks.append(Check(h.case, "fwd", label, "host", h.host_us, limit, h.host_us <= limit))
    return checks


def check_targets(results: Iterable[Result]) -> List[Check]:
    """Every :data:`TARGETS` entry that applies to a result, checked with its measured ratio.

    Example:
        >>> from mlx_embag.bench.results import Result
        >>> from mlx_embag.bench.workloads import Case
        >>> case = Case(10, 64, 2, 16, "2d", "sum")
        >>> rs = [Result(case, 32, b, "fwd", ms, ms, 20, 1.0, 1, 1.0, None)
        ...       for b, ms in (("reference", 1.2), ("take", 1.0))]
        >>> [(c.target, round(c.value, 2), c.ok) for c in check_targets(rs)]
        [('reference/take time <= 1.3', 1.2, True)]
    """
    idx = index(results)
    checks = []
    for (case, pass_, _), r in idx.items():
        for target in TARGETS:
            other = idx.get((case, pass_, target.against)) if target.against else None
            check = target.check(r, other)
            if check is not None:
                checks.append(check)
    return checks
