"""``--training``: one optimizer step of a sparse-table model, sparse against dense (issue 12).

The model is a ``mode="sum"`` :class:`~mlx_embag.EmbeddingBag` with
``sparse=True`` feeding a linear head, trained on ``B`` bags of ``L`` uniform
ids by the eager loop of the README's "Sparse training" section:
``meb.value_and_grad``, ``opt.update``, ``mx.eval``. One step is forward,
backward and update, evaluated. For each table size it times every sparse
optimizer and, as the baseline, MLX's dense ``Adam`` under
``nn.value_and_grad`` on the same model (which updates every row). Each
figure is the median of ``repeat`` steady-state steps after a warm-up, the
sparse ones taken in turns across optimizers and sizes; the
peak is MLX's peak memory during one step above what was held before it (the
table, the optimizer state, the batch).

Targets (reference path, D=64, B=1024, L=20): ``SparseAdam`` at V=4e6 within
1.5x of V=1e5, at least 30x faster than dense Adam at V=4e6, peak at most
64 MiB above the table and state.

Example:
    >>> from mlx_embag.bench.training import run_training
    >>> rows = run_training([200], dim=4, batch=8, bag=3, repeat=3, warmup=1, log=lambda m: None)
    >>> sorted({r.optimizer for r in rows})[:2], all(r.median_s > 0 for r in rows)
    (['Adam (dense)', 'RowWiseAdagrad'], True)
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, List, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

import mlx_embag as meb

from .timing import Measurement, measure, measure_interleaved

SPARSE = {
    "SparseSGD": lambda: meb.optimizers.SparseSGD(1e-2),
    "SparseAdagrad": lambda: meb.optimizers.SparseAdagrad(1e-2),
    "SparseAdam": lambda: meb.optimizers.SparseAdam(1e-3),
    "RowWiseAdagrad": lambda: meb.optimizers.RowWiseAdagrad(1e-2),
}
DENSE = "Adam (dense)"
TARGET_SCALING, TARGET_SPEEDUP, TARGET_PEAK_MIB = 1.5, 30.0, 64.0


@dataclasses.dataclass
class TrainingResult:
    """One optimizer at one table size: median and min step time (s), extra peak bytes.

    Example:
        >>> TrainingResult("SparseAdam", 1000, 0.01, 0.009, 3, 2**20).peak_mib
        1.0
    """

    optimizer: str
    V: int
    median_s: float
    min_s: float
    runs: int
    peak_bytes: int

    @property
    def peak_mib(self):
        return self.peak_bytes / 2**20


class _Model(nn.Module):
    def __init__(self, V, D, sparse):
        super().__init__()
        self.emb = meb.EmbeddingBag(V, D, mode="sum", sparse=sparse, backend="reference")
        self.head = nn.Linear(D, 1)

    def __call__(self, ids):
        return self.head(self.emb(ids)).squeeze(-1)


def _loss(model, ids, y):
    return ((model(ids) - y) ** 2).mean()


def _stepper(model, loss_and_grad, opt, batches):
    """One evaluated training step per call, cycling through ``batches``."""
    batches = itertools.cycle(batches)

    def step():
        ids, y = next(batches)
        loss, grads = loss_and_grad(model, ids, y)
        opt.update(model, grads)
        mx.eval(loss, model.parameters(), opt.state)

    return step


def _sparse_steps(V, D, batches):
    """A step per sparse optimizer, all on one model (its table is shared: only the time matters)."""
    model = _Model(V, D, sparse=True)
    mx.eval(model.parameters())
    loss_and_grad = meb.value_and_grad(model, _loss)
    steps = {}
    for name, make in SPARSE.items():
        opt = optim.MultiOptimizer(
            [make(), optim.Adam(1e-3, bias_correction=True)], [lambda path, g: path.startswith("emb")]
        )
        steps[f"{name}@{V}"] = _stepper(model, loss_and_grad, opt, batches)
    return steps


def _dense_step(V, D, batches):
    model = _Model(V, D, sparse=False)
    mx.eval(model.parameters())
    return _stepper(model, nn.value_and_grad(model, _loss), optim.Adam(1e-3, bias_correction=True), batches)


def _result(key, m: Measurement):
    name, V = key.rsplit("@", 1)
    return TrainingResult(name, int(V), m.median_s, m.min_s, m.runs, m.peak_bytes)


def run_training(
    sizes,
    dim=64,
    batch=1024,
    bag=20,
    repeat=5,
    warmup=2,
    dense=True,
    seed=0,
    log: Optional[Callable[[str], None]] = None,
) -> List[TrainingResult]:
    """Time one training step per optimizer and table size (rows), sparse and dense.

    The sparse steps of every size and optimizer run in turns (:func:`~.timing.measure_interleaved`),
    so a burst of load from other processes hits all of them alike and the V=4e6 / V=1e5
    ratios stay meaningful on a busy machine. Dense Adam, seconds a step at millions of
    rows and gigabytes of state, is timed on its own afterwards.

    Example:
        >>> [r.V for r in run_training([100], dim=4, batch=4, bag=2, repeat=3, warmup=1,
        ...                            dense=False, log=lambda m: None)]
        [100, 100, 100, 100]
    """
    log = log or (lambda m: None)
    rng = np.random.default_rng(seed)
    data = {
        V: [
            (
                mx.array(rng.integers(0, V, size=(batch, bag)).astype(np.int32)),
                mx.array(rng.standard_normal(batch).astype(np.float32)),
            )
            for _ in range(4)
        ]
        for V in sizes
    }
    steps = {}
    for V in sizes:
        log(f"training V={V} D={dim} B={batch} L={bag}: sparse optimizers")
        steps.update(_sparse_steps(V, dim, data[V]))
    timed = measure_interleaved(steps, warmup=warmup, repeat=repeat, track_mlx_memory=steps)
    out = [_result(key, m) for key, m in timed.items()]
    del steps, timed
    mx.clear_cache()
    for V in sizes if dense else ():
        log(f"training V={V} D={dim} B={batch} L={bag}: {DENSE}")
        m = measure(_dense_step(V, dim, data[V]), warmup=warmup, repeat=repeat, track_mlx_memory=True)
        out.append(_result(f"{DENSE}@{V}", m))
        mx.clear_cache()
    return sorted(out, key=lambda r: (r.V, r.optimizer == DENSE))


def format_training(results: List[TrainingResult]) -> str:
    """The table of step times and peaks, then the targets' verdicts.

    Example:
        >>> rs = [TrainingResult("SparseAdam", 10, 0.010, 0.01, 3, 0),
        ...       TrainingResult("SparseAdam", 100, 0.012, 0.01, 3, 0),
        ...       TrainingResult(DENSE, 100, 0.6, 0.6, 3, 0)]
        >>> print(format_training(rs).splitlines()[-1])
          met SparseAdam peak above table and state <= 64 MiB (measured 0.0 MiB)
    """
    lines = [f"{'optimizer':>16} {'V':>9} | {'median ms':>10} {'min ms':>9} {'peak MiB':>9}", "-" * 60]
    for r in results:
        lines.append(
            f"{r.optimizer:>16} {r.V:>9} | {1e3 * r.median_s:10.1f} {1e3 * r.min_s:9.1f} {r.peak_mib:9.1f}"
        )
    lines.append("training targets (reference path):")
    lines += [f"  {verdict}" for verdict in training_checks(results)]
    return "\n".join(lines)


def training_checks(results: List[TrainingResult]) -> List[str]:
    """Each sparse optimizer against the targets, at the smallest and largest table measured.

    Example:
        >>> rs = [TrainingResult("SparseSGD", 10, 0.01, 0.01, 3, 0), TrainingResult("SparseSGD", 99, 0.02, 0.02, 3, 0)]
        >>> training_checks(rs)[0]
        'MISSED SparseSGD V=99 / V=10 step time <= 1.5 (measured 2.00)'
    """
    by = {(r.optimizer, r.V): r for r in results}
    sizes = sorted({r.V for r in results})
    small, large = sizes[0], sizes[-1]
    out = []

    def verdict(ok, text):
        out.append(f"{'met' if ok else 'MISSED'} {text}")

    for name in SPARSE:
        big = by.get((name, large))
        if big is None:
            continue
        if large != small and (name, small) in by:
            ratio = big.median_s / by[(name, small)].median_s
            verdict(
                ratio <= TARGET_SCALING,
                f"{name} V={large} / V={small} step time <= {TARGET_SCALING} (measured {ratio:.2f})",
            )
        if (DENSE, large) in by:
            speedup = by[(DENSE, large)].median_s / big.median_s
            verdict(
                speedup >= TARGET_SPEEDUP,
                f"{name} at V={large} >= {TARGET_SPEEDUP:g}x faster than dense Adam (measured {speedup:.1f}x)",
            )
        verdict(
            big.peak_mib <= TARGET_PEAK_MIB,
            f"{name} peak above table and state <= {TARGET_PEAK_MIB:g} MiB (measured {big.peak_mib:.1f} MiB)",
        )
    return out
