"""Wall-clock timing and MLX peak memory of zero-argument callables.

Example:
    >>> from mlx_embag.bench.timing import measure
    >>> measure(lambda: None, warmup=1, repeat=3).runs
    3
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Dict, Iterable, Optional

import mlx.core as mx

# A median over fewer runs is too easily moved by one burst of load from other processes.
MIN_RUNS = 20


@dataclasses.dataclass
class Measurement:
    """Median and minimum wall time (seconds) over ``runs`` runs, and extra peak bytes.

    ``peak_bytes`` is None where MLX memory was not tracked (e.g. for PyTorch).

    Example:
        >>> Measurement(median_s=0.002, min_s=0.001, runs=20).peak_bytes is None
        True
    """

    median_s: float
    min_s: float
    runs: int
    peak_bytes: Optional[int] = None


def measure_interleaved(
    fns: Dict[str, Callable[[], object]],
    *,
    warmup: int = 3,
    repeat: int = MIN_RUNS,
    track_mlx_memory: Iterable[str] = (),
) -> Dict[str, Measurement]:
    """Time several zero-argument callables in turns: the shared timing helper.

    Every callable must evaluate (``mx.eval``) or synchronise its own result.
    After ``warmup`` untimed calls of each (they build MLX's graphs and cache
    kernels), each of the ``repeat`` rounds times every callable once, so a
    burst of load from other processes hits all of them alike and their ratios
    stay meaningful on a busy machine. The order rotates from round to round:
    a callable timed right after another one that read the same rows finds them
    in the CPU's caches, and at small sizes that alone is worth a fifth of a
    run (0.66 ms first against 0.54 ms second, the same call at B=1024 bags of
    one), so a fixed order would favour whoever comes later. The median is the
    figure reported.
    For the names in ``track_mlx_memory``, one more call measures MLX's peak
    memory above what was allocated before it.

    Args:
        fns (dict): name -> callable doing one full, synchronised run.
        warmup (int): untimed calls of each before timing.
        repeat (int): timed rounds.
        track_mlx_memory (iterable): names whose MLX peak memory to measure.

    Returns:
        dict: name -> :class:`Measurement`.

    Example:
        >>> import mlx.core as mx
        >>> a = mx.ones((4,))
        >>> ms = measure_interleaved({"sum": lambda: mx.eval(a.sum()), "noop": lambda: None},
        ...                          warmup=1, repeat=3, track_mlx_memory=["sum"])
        >>> sorted(ms), ms["sum"].runs, ms["noop"].peak_bytes
        (['noop', 'sum'], 3, None)
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    order = list(fns.items())
    for r in range(repeat):
        k = r % max(len(order), 1)  # nothing to time: every round is empty
        for name, fn in order[k:] + order[:k]:
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


def measure(
    fn: Callable[[], object], *, warmup: int = 3, repeat: int = MIN_RUNS, track_mlx_memory: bool = False
) -> Measurement:
    """:func:`measure_interleaved` of a single callable.

    Example:
        >>> m = measure(lambda: None, warmup=1, repeat=3, track_mlx_memory=True)
        >>> m.runs, m.peak_bytes, 0 <= m.min_s <= m.median_s
        (3, 0, True)
    """
    tracked = ("fn",) if track_mlx_memory else ()
    return measure_interleaved({"fn": fn}, warmup=warmup, repeat=repeat, track_mlx_memory=tracked)["fn"]
