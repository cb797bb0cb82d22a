"""A fastText-style text classifier with ``mlx_embag.EmbeddingBag``.

The model is fastText's: every document becomes a bag of hashed word and
word-bigram ids, ``EmbeddingBag(mode="mean")`` averages their vectors, and one
``nn.Linear`` maps the average to class scores. Training uses
``nn.value_and_grad``, an ``mlx.optimizers`` optimizer and a step compiled with
``mx.compile(..., inputs=state, outputs=state)`` (built by ``training.training_step``,
which the real-data examples share).

Default data needs no download: the docstrings of Python's own standard library
(parsed with ``ast``, never imported), labelled with their top-level module
(``asyncio``, ``email``, ``tkinter``, ...; the dozen modules with the most
docstrings). ``--data FILE.csv`` (columns ``text,label``) trains on your data.
The train/test split is a hash of each text, so it is the same on every run.

    python examples/train_text.py                  # stdlib docstrings, ~25 s on a 2-core CPU
    python examples/train_text.py --data mine.csv --epochs 10

The last line printed is ``test_accuracy=<acc> baseline=<majority-class accuracy>``.

``--dataset clothing-reviews`` trains on real data instead, downloaded once (see
``real_data.py``): the 23,486 Women's Clothing E-Commerce Reviews, title plus
text, labelled with whether the reviewer recommends the item (82 % do; the
star rating is never used: it all but states the label). The split is seeded
and random, 80/20; 10 % of the training part picks the epoch by validation AUC,
and the test split is scored once. It ends with
``test_accuracy=<acc> test_auc=<auc> baseline=<majority-class accuracy>``.

    python examples/train_text.py --dataset clothing-reviews
"""

from __future__ import annotations

import argparse
import ast
import collections
import csv
import os
import re
import sys
import sysconfig
import time
import zlib

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import real_data
from training import add_common_flags, fit, roc_auc, training_step

import mlx_embag as meb

TOKEN = re.compile(r"[a-z0-9_]+")
# Not labels: the test suite covers every module, and private modules mirror public ones.
SKIP_MODULES = {"test", "site-packages", "__pycache__"}


def stdlib_corpus(num_classes: int, min_words: int = 3):
    """(text, label) pairs: docstrings of the stdlib's biggest top-level modules.

    Files are parsed, not imported (no side effects, no optional C extensions
    needed). A text that occurs under more than one label is dropped, and
    repeats under one label are kept once, so the test split cannot contain
    copies of training texts.
    """
    root = sysconfig.get_paths()["stdlib"]
    by_module = collections.defaultdict(list)
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name in SKIP_MODULES or name.startswith(("_", ".")):
            continue
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "__init__.py")):
                continue
            files = [
                os.path.join(d, f)
                for d, _, fs in sorted(os.walk(path))
                for f in sorted(fs)
                if f.endswith(".py")
            ]
            module = name
        elif name.endswith(".py"):
            files, module = [path], name[:-3]
        else:
            continue
        for file in files:
            try:
                with open(file, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # e.g. lib2to3's deliberately broken test data
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc.split()) >= min_words:
                        by_module[module].append(doc)
    labels_of = collections.defaultdict(set)
    for module, docs in by_module.items():
        for doc in docs:
            labels_of[doc].add(module)
    # The biggest modules by distinct docstrings; ties broken by name for determinism.
    sizes = {m: len({d for d in docs if len(labels_of[d]) == 1}) for m, docs in by_module.items()}
    chosen = sorted(sorted(sizes), key=lambda m: -sizes[m])[:num_classes]
    pairs = {}
    for module in sorted(chosen):
        for doc in by_module[module]:
            if len(labels_of[doc]) == 1:
                pairs[doc] = module
    return sorted(pairs.items())


def csv_corpus(path: str):
    """(text, label) pairs from a CSV file with a header naming ``text`` and ``label``."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            sys.exit(f"{path}: the header must name the columns 'text' and 'label', got {reader.fieldnames}")
        return [(row["text"], row["label"]) for row in reader if row["text"].strip()]


def split(pairs, test_fraction: float):
    """Deterministic train/test split: a text's CRC-32 decides its side."""
    cut = int(test_fraction * 1000)
    train, test = [], []
    for text, label in pairs:
        (test if zlib.crc32(text.encode()) % 1000 < cut else train).append((text, label))
    return train, test


def featurize(text: str, buckets: int, max_tokens: int):
    """Hashed word and word-bigram ids, fastText's input; id 0 is kept for padding."""
    words = TOKEN.findall(text.lower())[:max_tokens]
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    return [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in grams] or [0]


def batches(docs, labels, batch_size: int, order, pad_to: int):
    """Fixed-shape batches: 1-D ids + ``(B+1,)`` offsets with ``include_last_offset=True``.

    Shapes must repeat for ``mx.compile`` to reuse its graph, so the flat id
    array is padded with id 0 up to a power of two (at least ``pad_to``): with
    ``include_last_offset=True`` indices after the last offset belong to no
    bag. A short final batch is filled with empty bags whose ``mask`` is 0.
    """
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        lengths = [len(docs[i]) for i in idx] + [0] * (batch_size - len(idx))
        offsets = np.zeros(batch_size + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.zeros(max(pad_to, 1 << (int(offsets[-1]) - 1).bit_length()), dtype=np.int32)
        ids[: offsets[-1]] = np.concatenate([docs[i] for i in idx])
        y = np.zeros(batch_size, dtype=np.int32)
        y[: len(idx)] = labels[idx]
        mask = np.zeros(batch_size, dtype=np.float32)
        mask[: len(idx)] = 1
        yield (mx.array(ids), mx.array(offsets), mx.array(y), mx.array(mask)), len(idx), int(offsets[-1])


class FastText(nn.Module):
    """Mean of hashed word/bigram vectors, then a linear classifier."""

    def __init__(self, buckets: int, dim: int, num_classes: int, backend=None):
        super().__init__()
        # padding_idx=0: id 0 pads empty texts and is left out of every mean.
        self.bag = meb.EmbeddingBag(
            buckets, dim, mode="mean", include_last_offset=True, padding_idx=0, backend=backend
        )
        self.out = nn.Linear(dim, num_classes)

    def __call__(self, ids, offsets):
        return self.out(self.bag(ids, offsets))


def clothing_reviews(data_dir, seed, test_fraction, val_fraction):
    """(train, val, test) lists of (title + text, label) pairs, split at random (seeded)."""
    data = real_data.load_or_exit(real_data.clothing_reviews, data_dir)
    # Some reviews have no title and a few no text: the two are simply joined.
    texts = [f"{title} {text}".strip() for title, text in zip(data["title"], data["text"])]
    labels = ["recommended" if y else "not recommended" for y in data["label"]]
    return [
        [(texts[i], labels[i]) for i in rows]
        for rows in real_data.split(len(texts), seed, test_fraction, val_fraction)
    ]


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--dataset",
        choices=["stdlib", "clothing-reviews"],
        default="stdlib",
        help="stdlib: Python's docstrings (no download); clothing-reviews: real reviews, downloaded once",
    )
    p.add_argument("--data", help="CSV file with columns text,label (instead of --dataset)")
    p.add_argument("--classes", type=int, default=12, help="stdlib modules used as labels")
    p.add_argument(
        "--limit", type=int, default=0, help="use at most this many texts (0: all); for quick tests"
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--buckets", type=int, default=1 << 16, help="hash buckets (rows of the table)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--max-tokens", type=int, default=200, help="words kept per text")
    p.add_argument(
        "--epochs",
        type=int,
        help="most epochs (default: 8; clothing-reviews 5, the validation split picks one)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=2,
        help="clothing-reviews: stop after this many epochs without a better validation AUC",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="default: 64; clothing-reviews 128 (a step updates the whole table: fewer, larger steps)",
    )
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    add_common_flags(p, "clothing-reviews: ", real_data.ENV_DIR)
    args = p.parse_args(argv)

    mx.random.seed(args.seed)
    t0 = time.perf_counter()
    real = args.dataset == "clothing-reviews" and not args.data
    args.epochs = args.epochs or (5 if real else 8)
    args.batch_size = args.batch_size or (128 if real else 64)
    val = []
    if real:
        train, val, test = clothing_reviews(args.data_dir, args.seed, args.test_fraction, args.val_fraction)
        if args.limit:
            # The same share of each split, so all three stay non-empty.
            share = args.limit / (len(train) + len(val) + len(test))
            train, val, test = (rows[: max(1, int(share * len(rows)))] for rows in (train, val, test))
        pairs = train + val + test
        source = "Women's Clothing E-Commerce Reviews (title + text; recommended or not)"
    else:
        pairs = csv_corpus(args.data) if args.data else stdlib_corpus(args.classes)
        if args.limit:
            # Every k-th text keeps the class mix of the full corpus.
            pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
        train, test = split(pairs, args.test_fraction)
        source = args.data or "docstrings of Python's standard library"
    if not train or not test:
        sys.exit("need texts on both sides of the split; add data or change --test-fraction")
    names = sorted({label for _, label in pairs})
    label_id = {name: i for i, name in enumerate(names)}
    feats = lambda rows: [
        np.array(featurize(t, args.buckets, args.max_tokens), dtype=np.int32) for t, _ in rows
    ]
    labels = lambda rows: np.array([label_id[l] for _, l in rows], dtype=np.int32)
    train_x, val_x, test_x = feats(train), feats(val), feats(test)
    train_y, val_y, test_y = labels(train), labels(val), labels(test)
    print(
        f"data: {source}: {len(train)} train / "
        + (f"{len(val)} validation / " if real else "")
        + f"{len(test)} test texts, {len(names)} classes "
        f"({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}); loaded in {time.perf_counter() - t0:.1f} s"
    )

    model = FastText(args.buckets, args.dim, len(names), backend=args.backend)
    optimizer = optim.Adam(learning_rate=args.lr)

    def loss_fn(model, ids, offsets, y, mask):
        losses = nn.losses.cross_entropy(model(ids, offsets), y, reduction="none")
        return (losses * mask).sum() / mask.sum()

    step, state = training_step(model, optimizer, loss_fn, compile=not args.no_compile)

    def probabilities(ids, offsets):
        return mx.softmax(model(ids, offsets), axis=1)

    if not args.no_compile:
        probabilities = mx.compile(probabilities, inputs=state)

    pad_to = 2048

    def predict(docs, labels):
        out = [
            np.array(probabilities(ids, offsets))[:n]
            for (ids, offsets, _, _), n, _ in batches(
                docs, labels, args.batch_size, np.arange(len(docs)), pad_to
            )
        ]
        return np.concatenate(out)

    # Binary labels: the AUC of the second class's probability ("recommended" sorts after "not ...").
    auc_of = lambda docs, labels: roc_auc(predict(docs, labels)[:, 1], labels)
    rng = np.random.default_rng(args.seed)
    epoch, val_auc = fit(
        model,
        state,
        step,
        lambda: batches(train_x, train_y, args.batch_size, rng.permutation(len(train_x)), pad_to),
        epochs=args.epochs,
        total=len(train_x),
        quiet=args.quiet,
        unit="doc",
        rate_unit="tok",
        evaluate=(lambda: auc_of(val_x, val_y)) if real else None,
        metric="val_auc",
        patience=args.patience if real else None,
    )

    test_p = predict(test_x, test_y)
    accuracy = float(np.mean(test_p.argmax(axis=1) == test_y))
    majority = names[int(np.bincount(train_y, minlength=len(names)).argmax())]
    # The majority class of the *training* set, scored on the test set.
    baseline = float(np.mean(test_y == label_id[majority]))
    print(
        (f"chosen on validation: epoch {epoch} (val_auc={val_auc:.4f}); " if real else "")
        + f"test accuracy {accuracy:.1%} vs majority-class baseline {baseline:.1%} (always '{majority}'); "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    if real:
        auc = roc_auc(test_p[:, 1], test_y)
        print(f"test_accuracy={accuracy:.4f} test_auc={auc:.4f} baseline={baseline:.4f}")
        return accuracy, auc, baseline
    print(f"test_accuracy={accuracy:.4f} baseline={baseline:.4f}")
    return accuracy, baseline


if __name__ == "__main__":
    main()
