"""What a run produces: one :class:`Result` per case, pass and backend, one
:class:`Check` per target tested, and their flat JSON form.

Example:
    >>> from mlx_embag.bench.results import Result
    >>> from mlx_embag.bench.workloads import Case
    >>> r = Result(Case(10, 4, 2, 3, "2d", "sum"), N=6, backend="take", pass_="fwd",
    ...            median_ms=1.0, min_ms=0.9, runs=20, peak_mb=0.0, bytes=128, gbs=0.1,
    ...            pct_bandwidth=None)
    >>> r.to_dict()["pass"], Result.from_dict(r.to_dict()) == r
    ('fwd', True)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Optional, Tuple

from .timing import Measurement
from .workloads import Case

# Field names that are Python keywords get a trailing underscore; JSON keeps the plain word.
_JSON_NAME = {"pass_": "pass"}
_CASE_FIELDS = [f.name for f in dataclasses.fields(Case)]


def _to_flat_dict(obj) -> dict:
    # The case's fields first, then the record's own: the JSON layout the benchmark
    # has always written, which scripts reading its output rely on.
    out = dataclasses.asdict(obj.case)
    for f in dataclasses.fields(obj):
        if f.name != "case" and f.metadata.get("json", True):
            out[_JSON_NAME.get(f.name, f.name)] = getattr(obj, f.name)
    return out


def _from_flat_dict(cls, d: dict):
    kwargs = {"case": Case(**{k: d[k] for k in _CASE_FIELDS})}
    for f in dataclasses.fields(cls):
        key = _JSON_NAME.get(f.name, f.name)
        if f.name != "case" and (key in d or f.default is dataclasses.MISSING):
            kwargs[f.name] = d[key]
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Result:
    """One backend's measurement of one pass (``"fwd"`` or ``"fwd+bwd"``) of one case.

    Times are in ms, ``peak_mb`` is MLX's extra peak memory in MiB (None for
    PyTorch), ``gbs`` the effective bandwidth of :func:`~.workloads.bytes_moved`
    and ``pct_bandwidth`` its percentage of the machine's (None if unknown).

    Example:
        >>> r = Result.from_dict({"V": 10, "D": 4, "B": 2, "L": 3, "layout": "2d",
        ...     "mode": "sum", "dtype": "float32", "N": 6, "backend": "torch", "pass": "fwd",
        ...     "median_ms": 1.0, "min_ms": 1.0, "runs": 20, "peak_mb": None, "bytes": 128,
        ...     "gbs": 0.1, "pct_bandwidth": None})
        >>> r.case.L, r.key[1:], r.compiled
        (3, ('fwd', 'torch'), False)
    """

    case: Case
    N: int
    backend: str
    pass_: str
    median_ms: float
    min_ms: float
    runs: int
    peak_mb: Optional[float]
    bytes: int
    gbs: float
    pct_bandwidth: Optional[float]
    compiled: bool = False

    @property
    def key(self) -> Tuple[Case, str, str]:
        """``(case, pass_, backend)``: what a result is looked up by."""
        return self.case, self.pass_, self.backend

    @classmethod
    def from_measurement(
        cls,
        case: Case,
        n: int,
        backend: str,
        pass_: str,
        m: Measurement,
        nbytes: int,
        bandwidth: Optional[float],
        compiled: bool = False,
    ):
        """The result of :class:`~.timing.Measurement` ``m``, which moved ``nbytes``.

        Example:
            >>> m = Measurement(median_s=0.002, min_s=0.001, runs=20, peak_bytes=2**20)
            >>> r = Result.from_measurement(Case(10, 4, 2, 3, "2d", "sum"), 6, "take", "fwd",
            ...                             m, nbytes=4_000_000, bandwidth=4.0)
            >>> r.median_ms, r.peak_mb, r.gbs, r.pct_bandwidth
            (2.0, 1.0, 2.0, 50.0)
        """
        gbs = nbytes / m.median_s / 1e9
        return cls(
            case,
            n,
            backend,
            pass_,
            median_ms=m.median_s * 1e3,
            min_ms=m.min_s * 1e3,
            runs=m.runs,
            peak_mb=None if m.peak_bytes is None else m.peak_bytes / 2**20,
            bytes=nbytes,
            gbs=gbs,
            pct_bandwidth=None if bandwidth is None else 100 * gbs / bandwidth,
            compiled=compiled,
        )

    def to_dict(self) -> dict:
        """Flat JSON form: the case's fields, then the others (``pass_`` as ``"pass"``)."""
        return _to_flat_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        """Inverse of :meth:`to_dict`, e.g. for results read back from ``--json``."""
        return _from_flat_dict(cls, d)


@dataclasses.dataclass(frozen=True)
class Check:
    """One target tested on one case and pass: the measured ``value`` against ``limit``.

    ``at_most`` says which side of the limit is good; it is implied by
    ``target`` (``<=`` or ``>=``), so it is not written to JSON.

    Example:
        >>> c = Check(Case(10, 64, 2, 16, "2d", "sum"), "fwd", "reference/take time <= 1.3",
        ...           "time", value=1.4, limit=1.3, ok=False, at_most=True)
        >>> sorted(c.to_dict())[:4], c.to_dict()["ok"]
        (['B', 'D', 'L', 'V'], False)
    """

    case: Case
    pass_: str
    target: str
    what: str
    value: float
    limit: float
    ok: bool
    at_most: bool = dataclasses.field(default=True, metadata={"json": False})

    def to_dict(self) -> dict:
        """Flat JSON form, laid out like :meth:`Result.to_dict`."""
        return _to_flat_dict(self)


def index(results: Iterable[Result]) -> Dict[Tuple[Case, str, str], Result]:
    """Results by :attr:`Result.key`; a later result of the same key wins.

    Example:
        >>> r = Result(Case(10, 4, 2, 3, "2d", "sum"), 6, "take", "fwd", 1.0, 1.0, 20,
        ...            None, 128, 0.1, None)
        >>> index([r])[(r.case, "fwd", "take")] is r
        True
    """
    return {r.key: r for r in results}


@dataclasses.dataclass(frozen=True)
class HostCost:
    """Microseconds of host time per forward call of ``backend`` on ``case`` (see :mod:`~.host`).

    Example:
        >>> h = HostCost(Case(10, 4, 2, 3, "1d", "sum"), "reference", 31.5)
        >>> h.to_dict()["host_us"], h.to_dict()["layout"]
        (31.5, '1d')
    """

    case: Case
    backend: str
    host_us: float

    def to_dict(self) -> dict:
        """Flat JSON form, laid out like :meth:`Result.to_dict`."""
        return _to_flat_dict(self)
