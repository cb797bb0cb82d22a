"""A small DLRM-style click model with one ``mlx_embag.EmbeddingBag`` per feature.

Each example of a synthetic click log has three multi-hot categorical features
and a few dense ones:

* ``history``: the items a user clicked recently, most recent first; a
  ``mode="sum"`` bag with per-sample weights that decay with age (recency);
* ``tags``: the ad's tags, a ``mode="mean"`` bag;
* ``context``: page/context ids, a ``mode="sum"`` bag;
* ``dense``: standard-normal features.

Every bag is a 1-D id array plus offsets, PyTorch's layout. The bag outputs
and the dense features are concatenated into an MLP that predicts the click.

Ids are Zipf-distributed (a few popular items, a long tail). The log has a
planted signal: clicks get likelier when the recent history holds one of a
few "hot" items, when the ad carries a "hot" tag and with the first dense
feature, so there is something to learn; the printed ``oracle_auc`` is the
AUC of the true click probabilities (the best any model can do on this test
set). Everything is seeded; sizes come from flags.

    python examples/recommender.py                     # ~10 s on a laptop CPU
    python examples/recommender.py --train 200000 --epochs 5
    python examples/recommender.py --items 2000000 --compare-dense   # steps/s, sparse vs dense

The large tables (history, tags) train sparsely by default: ``sparse=True``,
``meb.value_and_grad`` and ``meb.optimizers.SparseAdam``, so a step updates
only the rows its batch touched (``meb.compiled_step`` when compiled).
``--dense`` trains every table with MLX's dense Adam instead.

The last line printed is ``test_auc=<auc> oracle_auc=<auc>`` (with ``--compare-dense``:
``sparse_steps_per_s=<rate> dense_steps_per_s=<rate>``).

Real data, downloaded once (see ``real_data.py``): ``--dataset movielens-100k``
runs ``movielens.py`` (rating prediction, ``test_rmse=...``) and ``--dataset
adult`` runs ``ctr.py`` (a DLRM on UCI Adult, ``test_accuracy=... test_auc=...``);
each takes its own flags (``--dataset adult --help``).
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from training import roc_auc

import mlx_embag as meb

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the `examples` extra; run without a bar if absent.
    tqdm = None

DENSE = 4
RECENCY = 0.8  # weight of the k-th most recent history item: RECENCY**k
SPARSE_TABLES = ("history", "tags")  # the large tables: sparse=True unless --dense


class Bags:
    """Variable-length bags in PyTorch's 1-D layout: ``ids`` and ``offsets`` (``(n+1,)``)."""

    def __init__(self, ids, offsets, weights=None):
        self.ids, self.offsets, self.weights = ids, offsets, weights

    def take(self, rows):
        """The bags ``rows``, packed again (for batching)."""
        lengths = np.diff(self.offsets)[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        pos = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
        weights = None if self.weights is None else self.weights[pos]
        return Bags(self.ids[pos], offsets, weights)


def zipf_bags(rng, n, id_of_rank, max_len, s=1.1):
    """``n`` bags of 1..max_len ids whose popularity ranks follow a Zipf(s) law.

    ``id_of_rank`` (a permutation, fixed per feature) maps ranks to ids, so
    popular ids are not simply the small ones.
    """
    vocab = len(id_of_rank)
    lengths = rng.integers(1, max_len + 1, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    p = 1.0 / np.arange(1, vocab + 1) ** s
    ranks = rng.choice(vocab, size=int(offsets[-1]), p=p / p.sum())
    return Bags(id_of_rank[ranks].astype(np.int32), offsets)


class ClickLog:
    """The seeded synthetic world: id popularity per feature and the planted signal."""

    def __init__(self, rng, args):
        self.args = args
        self.id_of_rank = {
            name: rng.permutation(size)
            for name, size in (("history", args.items), ("tags", args.tags), ("context", args.contexts))
        }
        # Hot ids come from the popular-but-not-top ranks: frequent enough to
        # be learnt from the data, not so frequent that they are everywhere.
        self.hot_items = self.id_of_rank["history"][
            rng.choice(np.arange(5, min(args.items, 200)), size=8, replace=False)
        ]
        self.hot_tags = self.id_of_rank["tags"][
            rng.choice(np.arange(2, min(args.tags, 40)), size=3, replace=False)
        ]

    def sample(self, rng, n):
        """``n`` impressions: features, clicks and the true click probabilities."""
        history = zipf_bags(rng, n, self.id_of_rank["history"], 20)
        # Position inside its bag: 0 for the most recent item.
        age = np.arange(len(history.ids)) - np.repeat(history.offsets[:-1], np.diff(history.offsets))
        history.weights = (RECENCY**age).astype(np.float32)
        tags = zipf_bags(rng, n, self.id_of_rank["tags"], 6)
        context = zipf_bags(rng, n, self.id_of_rank["context"], 4)
        dense = rng.standard_normal((n, DENSE)).astype(np.float32)

        hot_history = np.add.reduceat(
            np.isin(history.ids, self.hot_items) * history.weights, history.offsets[:-1]
        )
        hot_tags = np.add.reduceat(np.isin(tags.ids, self.hot_tags) * 1.0, tags.offsets[:-1]) / np.diff(
            tags.offsets
        )
        logit = -2.0 + 3.0 * hot_history + 3.0 * hot_tags + 1.0 * dense[:, 0]
        prob = 1.0 / (1.0 + np.exp(-logit))
        clicks = (rng.random(n) < prob).astype(np.float32)
        return dict(history=history, tags=tags, context=context, dense=dense), clicks, prob


class DLRM(nn.Module):
    """One EmbeddingBag per categorical feature, concatenated with dense features into an MLP.

    ``large`` builds the two large tables (history, tags): ``meb.EmbeddingBag``, or
    ``sharded_recommender.py``'s ``ShardedEmbeddingBag`` bound to its group.
    """

    def __init__(self, args, sparse=False, large=meb.EmbeddingBag):
        super().__init__()
        d = args.dim
        # include_last_offset=True: offsets are (B+1,) and ids past the last
        # offset (our shape padding) belong to no bag.
        kw = dict(include_last_offset=True, backend=args.backend)
        self.history = large(args.items, d, mode="sum", sparse=sparse, **kw)
        self.tags = large(args.tags, d, mode="mean", sparse=sparse, **kw)
        self.context = meb.EmbeddingBag(args.contexts, d, mode="sum", **kw)
        self.mlp = nn.Sequential(
            nn.Linear(3 * d + DENSE, args.hidden),
            nn.ReLU(),
            nn.Linear(args.hidden, args.hidden // 2),
            nn.ReLU(),
            nn.Linear(args.hidden // 2, 1),
        )

    def __call__(self, b):
        x = mx.concatenate(
            [
                self.history(b["history_ids"], b["history_offsets"], per_sample_weights=b["history_weights"]),
                self.tags(b["tags_ids"], b["tags_offsets"]),
                self.context(b["context_ids"], b["context_offsets"]),
                b["dense"],
            ],
            axis=1,
        )
        return self.mlp(x).squeeze(-1)


def batches(features, clicks, batch_size, order, min_pad=256):
    """Fixed-shape batches so ``mx.compile`` reuses its graph.

    Each bag's flat ids are padded up to a power of two (id 0, weight 0) past
    the last offset; a short final batch is filled with empty bags (which give
    zeros) and masked out of the loss.
    """
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        n = len(rows)
        b = {}
        for name in ("history", "tags", "context"):
            bags = features[name].take(rows)
            size = max(min_pad, 1 << (int(bags.offsets[-1]) - 1).bit_length())
            ids = np.zeros(size, dtype=np.int32)
            ids[: len(bags.ids)] = bags.ids
            offsets = np.full(batch_size + 1, bags.offsets[-1], dtype=np.int32)
            offsets[: n + 1] = bags.offsets
            b[f"{name}_ids"], b[f"{name}_offsets"] = mx.array(ids), mx.array(offsets)
            if bags.weights is not None:
                weights = np.zeros(size, dtype=np.float32)
                weights[: len(bags.weights)] = bags.weights
                b[f"{name}_weights"] = mx.array(weights)
        dense = np.zeros((batch_size, DENSE), dtype=np.float32)
        dense[:n] = features["dense"][rows]
        y = np.zeros(batch_size, dtype=np.float32)
        y[:n] = clicks[rows]
        mask = np.zeros(batch_size, dtype=np.float32)
        mask[:n] = 1
        b["dense"] = mx.array(dense)
        yield b, mx.array(y), mx.array(mask), n


def make_training(args, sparse):
    """``(model, optimizer, step)``: ``step(b, y, mask)`` returns the loss, leaving the model and
    optimizer lazy. Sparse: SparseAdam on the large tables (row-wise, in place), Adam on the rest."""
    model = DLRM(args, sparse=sparse)

    def loss_fn(model, b, y, mask):
        losses = nn.losses.binary_cross_entropy(model(b), y, with_logits=True, reduction="none")
        return (losses * mask).sum() / mask.sum()

    if sparse:
        optimizer = optim.MultiOptimizer(
            [meb.optimizers.SparseAdam(learning_rate=args.lr), optim.Adam(learning_rate=args.lr)],
            [lambda path, g: path.split(".")[0] in SPARSE_TABLES],
        )
        if not args.no_compile:
            return model, optimizer, meb.compiled_step(model, loss_fn, optimizer)
        loss_and_grad = meb.value_and_grad(model, loss_fn)
    else:
        optimizer = optim.Adam(learning_rate=args.lr)
        loss_and_grad = nn.value_and_grad(model, loss_fn)

    def step(b, y, mask):
        loss, grads = loss_and_grad(model, b, y, mask)
        optimizer.update(model, grads)
        return loss

    if not args.no_compile:
        state = [model.state, optimizer.state]
        step = mx.compile(step, inputs=state, outputs=state)
    return model, optimizer, step


def steps_per_second(args, sparse, features, clicks, steps=30):
    """Training steps per second on the first ``steps`` batches (after 3 warm-up steps)."""
    model, optimizer, step = make_training(args, sparse)
    # Rows wrap around a small training set, so the count of steps is always what was asked.
    rows = np.arange(args.batch_size * (steps + 3)) % len(clicks)
    data = list(batches(features, clicks, args.batch_size, rows))
    for i, (b, y, mask, _) in enumerate(data):
        if i == 3:
            start = time.perf_counter()
        mx.eval(step(b, y, mask), model.parameters(), optimizer.state)
    return (len(data) - 3) / (time.perf_counter() - start)


DATASETS = ("synthetic", "movielens-100k", "adult")


def main(argv=None):
    # The real data sets have their own models and flags: hand the command line to their scripts.
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--dataset", choices=DATASETS, default="synthetic")
    dataset = first.parse_known_args(argv)[0].dataset
    if dataset == "movielens-100k":
        import movielens

        return movielens.main(argv)
    if dataset == "adult":
        import ctr

        return ctr.main(argv)

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        default="synthetic",
        help="synthetic: this click model; movielens-100k, adult: real data (their own flags, see --dataset X --help)",
    )
    p.add_argument("--train", type=int, default=100_000, help="training examples")
    p.add_argument("--test", type=int, default=10_000, help="test examples")
    p.add_argument("--items", type=int, default=20_000, help="item vocabulary (history bags)")
    p.add_argument("--tags", type=int, default=2_000, help="tag vocabulary")
    p.add_argument("--contexts", type=int, default=500, help="context vocabulary")
    p.add_argument("--dim", type=int, default=16, help="embedding dimension of each table")
    p.add_argument("--hidden", type=int, default=64, help="width of the MLP's first layer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "metal", "reference"],
        help="mlx_embag backend (metal without a Mac: the emulator, with --no-compile)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="run the training step eagerly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dense", action="store_true", help="train every table densely (MLX's Adam on all rows)")
    p.add_argument(
        "--compare-dense",
        action="store_true",
        help="only print training steps per second, sparse and dense, at this size",
    )
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    mx.random.seed(args.seed)
    world = ClickLog(rng, args)
    train_x, train_y, _ = world.sample(rng, args.train)
    test_x, test_y, test_p = world.sample(rng, args.test)
    oracle = roc_auc(test_p, test_y)
    print(
        f"data: {args.train} train / {args.test} test impressions, click rate {train_y.mean():.1%}; "
        f"ids: {args.items} items, {args.tags} tags, {args.contexts} contexts (Zipf); "
        f"made in {time.perf_counter() - t0:.1f} s"
    )

    if args.compare_dense:
        rates = {
            kind: steps_per_second(args, kind == "sparse", train_x, train_y) for kind in ("sparse", "dense")
        }
        print(
            f"training steps per second at {args.items} items, batch {args.batch_size}: "
            f"sparse tables {rates['sparse']:.1f}, dense {rates['dense']:.1f}"
        )
        print(f"sparse_steps_per_s={rates['sparse']:.2f} dense_steps_per_s={rates['dense']:.2f}")
        return rates

    model, optimizer, step = make_training(args, sparse=not args.dense)

    def scores(b):
        return model(b)

    if not args.no_compile:
        scores = mx.compile(scores, inputs=model.state)

    def evaluate():
        out = []
        for b, _, _, n in batches(test_x, test_y, args.batch_size, np.arange(args.test)):
            out.append(np.array(scores(b))[:n])
        return roc_auc(np.concatenate(out), test_y)

    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(args.train)
        bar = (
            None
            if (args.quiet or tqdm is None)
            else tqdm(total=args.train, desc=f"epoch {epoch}/{args.epochs}", unit="ex")
        )
        total, seen, start = 0.0, 0, time.perf_counter()
        for b, y, mask, n in batches(train_x, train_y, args.batch_size, order):
            loss = step(b, y, mask)
            mx.eval(loss, model.parameters(), optimizer.state)
            total += loss.item() * n
            seen += n
            if bar is not None:
                bar.set_postfix(
                    loss=f"{total / seen:.4f}",
                    ex_s=f"{seen / (time.perf_counter() - start):,.0f}",
                    refresh=False,
                )
                bar.update(n)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        auc = evaluate()
        print(
            f"epoch {epoch}: train_loss={total / seen:.4f} test_auc={auc:.4f} {seen / elapsed:,.0f} examples/s",
            flush=True,
        )

    print(
        f"test AUC {auc:.3f} (random guessing 0.5, true click probabilities {oracle:.3f}); "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    print(f"test_auc={auc:.4f} oracle_auc={oracle:.4f}")
    return auc, oracle


if __name__ == "__main__":
    main()
