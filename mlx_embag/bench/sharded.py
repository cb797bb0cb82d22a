"""``--sharded``: one training step of a :class:`~mlx_embag.ShardedEmbeddingBag` model (issue 14).

Run under ``mlx.launch`` (``mlx.launch --backend ring -n 4 -m mlx_embag.bench --sharded``);
in one process it measures a group of size 1. Each rank trains a ``mode="sum"``,
``sparse=True`` sharded table feeding a linear head on its own ``B / K`` bags
of ``L`` uniform ids (global batch ``B``): ``meb.value_and_grad``, the head's
gradient averaged with ``all_sum``, ``SparseSGD``, ``mx.eval``. Reported per rank:

- the median step time (forward, backward, update, evaluated; the collectives
  included) beside the single-process step on the whole table at the same
  global batch, timed on rank 0 after the other ranks have left;
- the bytes each rank sends per step, by the ring algorithms' count
  (:data:`mlx_embag._sharded_ops.traffic`), beside the lower bound of the same
  scheme (no padding, a reduce-scatter where the ring backend has only
  ``all_sum``) and that of a routing scheme with ``all_to_all`` (which MLX lacks);
- the peak memory during a step, including the held block, beside the target
  ``table / K + 64 MiB``.

Example:
    >>> from mlx_embag.bench.sharded import run_sharded
    >>> r = run_sharded(V=100, D=4, batch=8, bag=3, repeat=3, warmup=1, log=lambda m: None)
    >>> r.ranks, r.bytes_sent, r.bytes_lower_bound
    (1, 0, 0)
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

import mlx_embag as meb
from mlx_embag import _sharded_ops

from .timing import measure

TARGET_EXTRA_MIB = 64.0


@dataclasses.dataclass
class ShardedResult:
    """One ``--sharded`` run, as rank 0 saw it (bytes per rank per step, seconds, bytes of memory).

    Example:
        >>> ShardedResult(4, 4000, 64, 1024, 20, 0.1, 0.05, 10, 8, 2**20, 2**30).target_peak_bytes // 2**20
        320
    """

    ranks: int
    V: int
    D: int
    batch: int
    bag: int
    step_s: float
    single_step_s: Optional[float]
    bytes_sent: int
    bytes_lower_bound: int
    peak_bytes: int
    table_bytes: int
    bytes_all_to_all: int = 0

    @property
    def target_peak_bytes(self):
        return self.table_bytes // self.ranks + int(TARGET_EXTRA_MIB * 2**20)


class _Model(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.emb = table
        self.head = nn.Linear(table.embedding_dim, 1)

    def __call__(self, ids):
        return self.head(self.emb(ids)).squeeze(-1)


def _loss(model, ids, y):
    return ((model(ids) - y) ** 2).mean()


def _stepper(model, group, batches):
    loss_and_grad = meb.value_and_grad(model, _loss)
    opt = meb.optimizers.SparseSGD(1e-2)
    batches = itertools.cycle(batches)
    k = group.size()

    def step():
        ids, y = next(batches)
        loss, grads = loss_and_grad(model, ids, y)
        if k > 1:  # data-parallel head: average its gradient
            grads["head"] = tree_map(lambda g: mx.distributed.all_sum(g, group=group) / k, grads["head"])
        opt.update(model, grads)
        mx.eval(loss, model.parameters(), opt.state)

    return step


def _lower_bounds(k, n, b, d):
    """Bytes per rank per step: this scheme with ideal collectives, and a routing scheme (all_to_all)."""
    scheme = (k - 1) * 4 * (n + b + 1 + 2 * b * d)  # gather the call; reduce-scatter; gather the cotangent
    routing = 4 * ((k - 1) * n // k + 2 * (k - 1) * b * d)  # each index to its owner; partial bags both ways
    return scheme, routing


def run_sharded(V=4_000_000, D=64, batch=1024, bag=20, repeat=5, warmup=2, seed=0, single=True, log=None):
    """Measure the sharded step on this rank's group; returns a :class:`ShardedResult` (rank 0's view).

    Example:
        >>> r = run_sharded(V=50, D=2, batch=4, bag=2, repeat=3, warmup=1, single=False, log=lambda m: None)
        >>> r.single_step_s is None, r.peak_bytes <= r.target_peak_bytes
        (True, True)
    """
    log = log or (lambda m: None)
    group = mx.distributed.init()
    k, rank = group.size(), group.rank()
    local = batch // k
    rng = np.random.default_rng([seed, rank])
    batches = [
        (
            mx.array(rng.integers(0, V, size=(local, bag)).astype(np.int32)),
            mx.array(rng.standard_normal(local).astype(np.float32)),
        )
        for _ in range(4)
    ]
    log(f"rank {rank}/{k}: V={V} D={D} local batch {local}x{bag}")
    table = meb.ShardedEmbeddingBag(V, D, mode="sum", sparse=True, group=group, backend="reference")
    model = _Model(table)
    mx.eval(model.parameters())
    step = _stepper(model, group, batches)
    step()
    _sharded_ops.reset_traffic()
    step()
    sent = sum(_sharded_ops.traffic.values())
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    step()
    peak = mx.get_peak_memory()
    m = measure(step, warmup=warmup, repeat=repeat)
    scheme, routing = _lower_bounds(k, local * bag, local, D)
    if k == 1:
        scheme = routing = 0
    single_s = None
    del model, table, step
    mx.clear_cache()
    if single and rank == 0:
        log("single process: the whole table, the global batch")
        single_s = _single_step(V, D, batch, bag, seed, warmup, repeat)
    return ShardedResult(k, V, D, batch, bag, m.median_s, single_s, sent, scheme, peak, V * D * 4, routing)


def _single_step(V, D, batch, bag, seed, warmup, repeat):
    """The same model, one process, the whole table and the global batch (median seconds)."""
    rng = np.random.default_rng([seed, 99])
    batches = [
        (
            mx.array(rng.integers(0, V, size=(batch, bag)).astype(np.int32)),
            mx.array(rng.standard_normal(batch).astype(np.float32)),
        )
        for _ in range(4)
    ]
    model = _Model(meb.EmbeddingBag(V, D, mode="sum", sparse=True, backend="reference"))
    mx.eval(model.parameters())
    step = _stepper(model, _Solo(), batches)
    return measure(step, warmup=warmup, repeat=repeat).median_s


class _Solo:
    """A stand-in group of one for the single-process step (no collective)."""

    def size(self):
        return 1

    def rank(self):
        return 0


def format_sharded(r: ShardedResult) -> str:
    """The report: step times, bytes per rank per step, peak memory per rank, the target's verdict.

    Example:
        >>> print(format_sharded(ShardedResult(2, 100, 4, 8, 2, 0.02, 0.01, 1000, 800, 2**20, 1600, 500)))
        ... # doctest: +ELLIPSIS
        sharded step, 2 ranks: 20.0 ms (single process, same global batch: 10.0 ms, 2.00x)
        ...
    """
    mib = lambda b: b / 2**20  # noqa: E731
    single = "not measured" if r.single_step_s is None else f"{1e3 * r.single_step_s:.1f} ms"
    ratio = "" if r.single_step_s is None else f", {r.step_s / r.single_step_s:.2f}x"
    ok = r.peak_bytes <= r.target_peak_bytes
    return "\n".join(
        [
            f"sharded step, {r.ranks} ranks: {1e3 * r.step_s:.1f} ms (single process, same global batch: {single}{ratio})",
            f"bytes sent per rank per step: {r.bytes_sent} (lower bound of this scheme {r.bytes_lower_bound}, "
            f"with all_to_all routing {r.bytes_all_to_all})",
            f"peak memory per rank: {mib(r.peak_bytes):.1f} MiB (table {mib(r.table_bytes):.1f} MiB; "
            f"target table/{r.ranks} + {TARGET_EXTRA_MIB:g} MiB = {mib(r.target_peak_bytes):.1f} MiB: "
            f"{'met' if ok else 'MISSED'})",
        ]
    )


def main_sharded(args, log: Callable[[str], None]) -> int:
    """``--sharded`` from the command line (``--shapes`` VxD, ``--batch`` B, ``--bag-sizes`` L).

    Rank 0 prints the report; the other ranks print nothing.

    Example:
        >>> from mlx_embag.bench.cli import build_parser
        >>> args = build_parser().parse_args(["--sharded", "--shapes", "60x2", "--batch", "4",
        ...                                   "--training-steps", "3", "--warmup", "1"])
        >>> main_sharded(args, log=lambda m: None)  # doctest: +ELLIPSIS
        mlx-embag bench --sharded: ... V=60 D=2 global B=4 L=20 sum
        sharded step, 1 ranks: ...
        0
    """
    V, D = (args.shapes or [(4000, 16) if args.quick else (4_000_000, 64)])[0]
    batch = args.batch or (64 if args.quick else 1024)
    bag = (args.bag_sizes or [4 if args.quick else 20])[0]
    r = run_sharded(V, D, batch, bag, repeat=args.training_steps, warmup=args.warmup, seed=args.seed, log=log)
    if mx.distributed.init().rank() == 0:
        print(f"mlx-embag bench --sharded: mlx {mx.__version__}, V={V} D={D} global B={batch} L={bag} sum")
        print(format_sharded(r))
    return 0
