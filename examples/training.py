"""What the real-data training examples share: their common flags, a compiled
training step, padded batches, ROC AUC and an epoch loop with progress bars
that selects the epoch on a validation split. Not an example on its own.
"""

from __future__ import annotations

import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the `examples` extra; run without a bar if absent.
    tqdm = None


def add_common_flags(p, data_dir_help, env_dir):
    """The flags every real-data example takes, after its own."""
    p.add_argument(
        "--data-dir",
        help=f"{data_dir_help}where the wheel holding the data is cached (default: ${env_dir} or ~/.cache/mlx-embag)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training part held out for model selection",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "metal", "reference"],
        help="mlx_embag backend (metal without a Mac: the emulator, with --no-compile)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the split, the initialisation and the batch order"
    )
    p.add_argument("--no-compile", action="store_true", help="run the training step eagerly")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def training_step(model, optimizer, loss_fn, compile=True):
    """``(step, state)``: ``step(*batch)`` takes one optimizer step on ``loss_fn(model, *batch)``.

    Compiled, the model and the optimizer change inside the step, so both are
    declared as its state; pass ``state`` to ``mx.compile`` for anything else
    that reads the model.
    """
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    def step(*batch):
        loss, grads = loss_and_grad(model, *batch)
        optimizer.update(model, grads)
        return loss

    return (mx.compile(step, inputs=state, outputs=state) if compile else step), state


def padded_batches(rows, batch_size, *columns):
    """``((column[rows] batch, ..., mask), n, n)`` per batch of ``rows``, as ``mx.array``s.

    Every batch has ``batch_size`` rows, so one compiled graph serves all: a
    short last batch repeats its first row, and ``mask`` is 0 there.
    """
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        n = len(idx)
        padded = np.concatenate([idx, np.full(batch_size - n, idx[0])])
        mask = (np.arange(batch_size) < n).astype(np.float32)
        yield tuple(mx.array(c[padded]) for c in columns) + (mx.array(mask),), n, n


def roc_auc(scores, labels):
    """Area under the ROC curve (Mann-Whitney U with averaged ranks for ties)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Ties share the mean of the ranks they span.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit(
    model,
    state,
    step,
    epoch_batches,
    *,
    epochs,
    total,
    quiet,
    unit="ex",
    evaluate=None,
    metric="val",
    higher_is_better=True,
    patience=None,
    rate_unit=None,
):
    """Train for up to ``epochs`` epochs; return ``(best_epoch, best_score)``.

    ``epoch_batches()`` yields ``(args, n, work)`` per batch: ``step(*args)``
    returns the batch's mean loss over its ``n`` real examples, and ``work``
    (tokens, say) feeds the ``rate_unit`` rate on the bar. After each epoch
    ``evaluate()``, if given, scores the validation split; the weights of the
    best epoch are put back at the end, and training stops after ``patience``
    epochs without improvement. Without ``evaluate`` the last epoch is kept.
    """
    best_score, best_epoch, best_weights, sign = None, epochs, None, 1 if higher_is_better else -1
    for epoch in range(1, epochs + 1):
        bar = (
            None if (quiet or tqdm is None) else tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit=unit)
        )
        loss_sum, seen, done, start = 0.0, 0, 0, time.perf_counter()
        for args, n, work in epoch_batches():
            loss = step(*args)
            mx.eval(loss, state)
            loss_sum += loss.item() * n
            seen += n
            done += work
            if bar is not None:
                postfix = dict(loss=f"{loss_sum / seen:.4f}")
                if rate_unit:
                    postfix[f"{rate_unit}_s"] = f"{done / (time.perf_counter() - start):,.0f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(n)
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        line = f"epoch {epoch}: train_loss={loss_sum / seen:.4f}"
        if evaluate is not None:
            score = evaluate()
            line += f" {metric}={score:.4f}"
            if best_score is None or sign * (score - best_score) > 0:
                best_score, best_epoch = score, epoch
                # MLX arrays are immutable: holding the current ones is a snapshot.
                best_weights = tree_flatten(model.parameters())
        print(
            f"{line} {seen / elapsed:,.0f} {unit}/s"
            + (f" {done / elapsed:,.0f} {rate_unit}/s" if rate_unit else ""),
            flush=True,
        )
        if patience is not None and epoch - best_epoch >= patience:
            break
    if best_weights is not None:
        model.update(tree_unflatten(best_weights))
        mx.eval(model.parameters())
    return best_epoch, best_score
