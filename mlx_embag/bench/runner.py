"""One case measured on every backend: contenders built, timed together, results typed.

Example:
    >>> from mlx_embag.bench.runner import run_case
    >>> from mlx_embag.bench.workloads import Case
    >>> rs = run_case(Case(16, 4, 2, 2, "2d", "sum"), ["take"], ["fwd"], warmup=1, repeat=3,
    ...               seed=0, bandwidth=None)
    >>> [(r.backend, r.pass_, r.runs) for r in rs]
    [('take', 'fwd', 3)]
"""

from __future__ import annotations

from typing import Callable, List, Optional

import mlx.core as mx

from .contenders import CONTENDERS, MLX_BACKENDS
from .results import Result
from .timing import measure_interleaved
from .workloads import PASSES, Case, bytes_moved, make_inputs


def run_case(
    case: Case,
    backends,
    passes,
    *,
    warmup: int,
    repeat: int,
    seed: int,
    bandwidth: Optional[float],
    compile: bool = False,
    log: Callable[[str], object] = print,
    skipped: Optional[List[str]] = None,
) -> List[Result]:
    """Measure ``case`` on every backend, interleaved; returns one :class:`~.results.Result`
    per backend and pass.

    A backend that raises on this case is logged (and appended to ``skipped``)
    and left out; the others still run.

    Example:
        >>> def broken(case, inp, compile=False):
        ...     raise ValueError("not here")
        >>> CONTENDERS["broken"] = broken
        >>> skipped = []
        >>> run_case(Case(16, 4, 2, 2, "2d", "sum"), ["broken"], ["fwd"], warmup=1, repeat=3,
        ...          seed=0, bandwidth=None, skipped=skipped)
          broken: skipped (ValueError: not here)
        []
        >>> del CONTENDERS["broken"]
    """
    skipped = [] if skipped is None else skipped

    def skip(msg):
        skipped.append(f"V={case.V} D={case.D} L={case.L} {case.layout} {case.mode}: {msg}")
        log("  " + msg)

    inp = make_inputs(case, seed)
    pairs = {}
    for name in backends:
        try:
            pair = CONTENDERS[name](case, inp, compile)
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
        ms = measure_interleaved(
            fns, warmup=warmup, repeat=repeat, track_mlx_memory=[n for n in fns if n in MLX_BACKENDS]
        )
        nbytes = bytes_moved(case, inp.N, pass_)
        for name, m in ms.items():
            results.append(
                Result.from_measurement(
                    case,
                    inp.N,
                    name,
                    pass_,
                    m,
                    nbytes,
                    bandwidth,
                    compiled=bool(compile) and name in MLX_BACKENDS,
                )
            )
    # Free this case's arrays before the next is built, so its peak memory is its own.
    del inp, pairs
    mx.clear_cache()
    return results
