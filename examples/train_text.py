"""A fastText-style text classifier with ``mlx_embag.EmbeddingBag``.

The model is fastText's: every document becomes a bag of hashed word and
word-bigram ids, ``EmbeddingBag(mode="mean")`` averages their vectors, and one
``nn.Linear`` maps the average to class scores. Training uses
``nn.value_and_grad``, an ``mlx.optimizers`` optimizer and a step compiled with
``mx.compile(..., inputs=state, outputs=state)``.

Default data needs no download: the docstrings of Python's own standard library
(parsed with ``ast``, never imported), labelled with their top-level module
(``asyncio``, ``email``, ``tkinter``, ...; the dozen modules with the most
docstrings). ``--data FILE.csv`` (columns ``text,label``) trains on your data.
The train/test split is a hash of each text, so it is the same on every run.

    python examples/train_text.py                  # stdlib docstrings, ~25 s on a 2-core CPU
    python examples/train_text.py --data mine.csv --epochs 10

The last line printed is ``test_accuracy=<acc> baseline=<majority-class accuracy>``.
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

import mlx_embag as meb

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the `examples` extra; run without a bar if absent.
    tqdm = None

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
        yield mx.array(ids), mx.array(offsets), mx.array(y), mx.array(mask), len(idx), int(offsets[-1])


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


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", help="CSV file with columns text,label; without it: Python stdlib docstrings")
    p.add_argument("--classes", type=int, default=12, help="stdlib modules used as labels")
    p.add_argument(
        "--limit", type=int, default=0, help="use at most this many texts (0: all); for quick tests"
    )
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--buckets", type=int, default=1 << 16, help="hash buckets (rows of the table)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--max-tokens", type=int, default=200, help="words kept per text")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "metal", "reference"],
        help="mlx_embag backend (metal without a Mac: the emulator, with --no-compile)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="run the training step eagerly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    mx.random.seed(args.seed)
    t0 = time.perf_counter()
    pairs = csv_corpus(args.data) if args.data else stdlib_corpus(args.classes)
    if args.limit:
        # Every k-th text keeps the class mix of the full corpus.
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    train, test = split(pairs, args.test_fraction)
    if not train or not test:
        sys.exit("need texts on both sides of the split; add data or change --test-fraction")
    names = sorted({label for _, label in pairs})
    label_id = {name: i for i, name in enumerate(names)}
    feats = lambda rows: [
        np.array(featurize(t, args.buckets, args.max_tokens), dtype=np.int32) for t, _ in rows
    ]
    train_x, test_x = feats(train), feats(test)
    train_y = np.array([label_id[l] for _, l in train], dtype=np.int32)
    test_y = np.array([label_id[l] for _, l in test], dtype=np.int32)
    source = args.data or "docstrings of Python's standard library"
    print(
        f"data: {source}: {len(train)} train / {len(test)} test texts, {len(names)} classes "
        f"({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}); loaded in {time.perf_counter() - t0:.1f} s"
    )

    model = FastText(args.buckets, args.dim, len(names), backend=args.backend)
    optimizer = optim.Adam(learning_rate=args.lr)

    def loss_fn(model, ids, offsets, y, mask):
        losses = nn.losses.cross_entropy(model(ids, offsets), y, reduction="none")
        return (losses * mask).sum() / mask.sum()

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    # The optimizer and the model change inside the step: declare both as state.
    state = [model.state, optimizer.state]

    def step(ids, offsets, y, mask):
        loss, grads = loss_and_grad(model, ids, offsets, y, mask)
        optimizer.update(model, grads)
        return loss

    def predict(ids, offsets):
        return mx.argmax(model(ids, offsets), axis=1)

    if not args.no_compile:
        step = mx.compile(step, inputs=state, outputs=state)
        predict = mx.compile(predict, inputs=state)

    rng = np.random.default_rng(args.seed)
    pad_to = 2048
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train_x))
        bar = (
            None
            if (args.quiet or tqdm is None)
            else tqdm(total=len(order), desc=f"epoch {epoch}/{args.epochs}", unit="doc", leave=True)
        )
        total_loss, seen, tokens, start = 0.0, 0, 0, time.perf_counter()
        for ids, offsets, y, mask, n, ntok in batches(train_x, train_y, args.batch_size, order, pad_to):
            loss = step(ids, offsets, y, mask)
            mx.eval(loss, model.state, optimizer.state)
            total_loss += loss.item() * n
            seen += n
            tokens += ntok
            if bar is not None:
                rate = tokens / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                bar.update(n)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch}: train_loss={total_loss / seen:.4f} {seen / elapsed:,.0f} texts/s {tokens / elapsed:,.0f} ids/s",
            flush=True,
        )

    correct = 0
    for ids, offsets, y, mask, n, _ in batches(
        test_x, test_y, args.batch_size, np.arange(len(test_x)), pad_to
    ):
        correct += int(((predict(ids, offsets) == y) * mask).sum().item())
    accuracy = correct / len(test_x)
    majority = names[int(np.bincount(train_y, minlength=len(names)).argmax())]
    # The majority class of the *training* set, scored on the test set.
    baseline = float(np.mean(test_y == label_id[majority]))
    print(
        f"test accuracy {accuracy:.1%} vs majority-class baseline {baseline:.1%} (always '{majority}'); "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    print(f"test_accuracy={accuracy:.4f} baseline={baseline:.4f}")
    return accuracy, baseline


if __name__ == "__main__":
    main()
