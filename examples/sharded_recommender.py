"""The recommender of ``recommender.py`` with its large tables sharded across processes or Macs.

    mlx.launch --backend ring -n 2 examples/sharded_recommender.py
    mlx.launch --backend ring --hostfile hosts.json examples/sharded_recommender.py --items 2000000

The ``history`` and ``tags`` tables are :class:`mlx_embag.ShardedEmbeddingBag`:
rank ``r`` of ``K`` holds a block of ``ceil(V / K)`` rows, and each rank trains
on its own share of every batch (data-parallel) as if the whole table were
local. The small ``context`` table and the MLP are replicated; their gradients
are summed over ranks with ``all_sum``, the usual MLX data-parallel recipe. The
sharded tables train sparsely (``sparse=True``, ``meb.value_and_grad``,
``SparseAdam``): each rank updates only the rows of its block that some rank's
batch touched.

Each rank's loss is the sum over its examples divided by the global batch
size, so the sum of the ranks' losses is the global mean and the gradients
are the single-process ones. The data (the seeded synthetic click log of
``recommender.py``) is generated identically on every rank; rank 0 prints the
same metrics as ``recommender.py``, ending with ``test_auc=<auc>
oracle_auc=<auc> ranks=<K>``. In one process (no launcher) it runs with a
group of size 1.
"""

from __future__ import annotations

import argparse
import functools
import time

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map
from recommender import DLRM, SPARSE_TABLES, ClickLog, batches
from training import roc_auc

import mlx_embag as meb


def replicated_synced(model, group):
    """The replicated parameters made equal on every rank (rank 0's), as data-parallel training starts."""
    if group.size() == 1:
        return
    keep = {k: v for k, v in model.parameters().items() if k not in SPARSE_TABLES}
    first = tree_map(lambda p: mx.distributed.all_sum(p * (group.rank() == 0), group=group), keep)
    model.update(first)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--train", type=int, default=100_000, help="training examples")
    p.add_argument("--test", type=int, default=10_000, help="test examples")
    p.add_argument("--items", type=int, default=20_000, help="item vocabulary (history bags, sharded)")
    p.add_argument("--tags", type=int, default=2_000, help="tag vocabulary (sharded)")
    p.add_argument("--contexts", type=int, default=500, help="context vocabulary (replicated)")
    p.add_argument("--dim", type=int, default=16, help="embedding dimension of each table")
    p.add_argument("--hidden", type=int, default=64, help="width of the MLP's first layer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256, help="global batch (split across ranks)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--backend", default=None, choices=["auto", "metal", "reference"], help="mlx_embag backend"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    group = mx.distributed.init()
    k, rank = group.size(), group.rank()
    say = print if rank == 0 else (lambda *a, **kw: None)
    if args.batch_size % k:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the {k} ranks")
    local = args.batch_size // k

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)  # the same world and order on every rank
    mx.random.seed(args.seed + rank)
    world = ClickLog(rng, args)
    train_x, train_y, _ = world.sample(rng, args.train)
    test_x, test_y, test_p = world.sample(rng, args.test)
    oracle = roc_auc(test_p, test_y)
    say(
        f"data: {args.train} train / {args.test} test impressions, click rate {train_y.mean():.1%}; "
        f"ids: {args.items} items, {args.tags} tags, {args.contexts} contexts (Zipf); "
        f"{k} ranks, {local} examples per rank per step; made in {time.perf_counter() - t0:.1f} s"
    )

    model = DLRM(args, sparse=True, large=functools.partial(meb.ShardedEmbeddingBag, group=group))
    replicated_synced(model, group)
    optimizer = optim.MultiOptimizer(
        [meb.optimizers.SparseAdam(learning_rate=args.lr), optim.Adam(learning_rate=args.lr)],
        [lambda path, g: path.split(".")[0] in SPARSE_TABLES],
    )

    def loss_fn(model, b, y, mask, global_n):
        losses = nn.losses.binary_cross_entropy(model(b), y, with_logits=True, reduction="none")
        return (losses * mask).sum() / global_n

    loss_and_grad = meb.value_and_grad(model, loss_fn)

    def step(b, y, mask):
        global_n = mx.distributed.all_sum(mask.sum(), group=group)
        loss, grads = loss_and_grad(model, b, y, mask, global_n)
        # The sharded tables' gradients already hold every rank's loss; the replicated
        # parameters' are summed here (each rank's loss is its share of the global mean).
        for name in grads:
            if name not in SPARSE_TABLES:
                grads[name] = tree_map(lambda g: mx.distributed.all_sum(g, group=group), grads[name])
        optimizer.update(model, grads)
        return mx.distributed.all_sum(loss, group=group)

    def evaluate():
        # Every rank scores its share of the test set (the lookups are collective); rank 0 gathers.
        per = -(-args.test // k)
        rows = np.arange(rank * per, min((rank + 1) * per, args.test))
        out = []
        for b, _, _, n in batches(test_x, test_y, local, rows):
            out.append(np.array(model(b))[:n])
        scores = np.concatenate(out + [np.zeros(per - len(rows), np.float32)])
        everything = np.array(mx.distributed.all_gather(mx.array(scores), group=group))
        return roc_auc(everything[: args.test], test_y)

    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(args.train)
        total, seen, start = 0.0, 0, time.perf_counter()
        for s in range(0, args.train, args.batch_size):
            rows = order[s : s + args.batch_size][rank::k]  # this rank's share of the global batch
            (b, y, mask, n), *_ = batches(train_x, train_y, local, rows)
            loss = step(b, y, mask)
            mx.eval(loss, model.parameters(), optimizer.state)
            n_global = len(order[s : s + args.batch_size])
            total += loss.item() * n_global
            seen += n_global
        elapsed = time.perf_counter() - start
        auc = evaluate()
        say(
            f"epoch {epoch}: train_loss={total / seen:.4f} test_auc={auc:.4f} {seen / elapsed:,.0f} examples/s",
            flush=True,
        )

    say(
        f"test AUC {auc:.3f} (random guessing 0.5, true click probabilities {oracle:.3f}); "
        f"{k} ranks, total {time.perf_counter() - t0:.0f} s"
    )
    say(f"test_auc={auc:.4f} oracle_auc={oracle:.4f} ranks={k}")
    return auc, oracle


if __name__ == "__main__":
    main()
