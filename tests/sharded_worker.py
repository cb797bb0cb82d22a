"""One rank of the sharded tests (tests/test_sharded.py launches it with mlx.launch).

Every rank builds every rank's batch from the same seeds, so each can run the
single-process oracle itself: a full-table ``meb.EmbeddingBag`` called once
per rank's batch, the losses summed. For each configuration it checks, on its
own block and its own bags:

- forward: its bags equal ``embedding_bag`` on the full table (NaN where poisoned);
- gradients: its block's gradient equals the oracle's slice (and the
  ``per_sample_weights`` gradient, the oracle's for its batch);
- training: after ``STEPS`` steps (SGD, or a sparse optimizer with ``sparse=True``)
  the reassembled table equals the oracle's (rtol 1e-4).

It prints ``CHECK <name> ok`` or ``CHECK <name> FAIL <detail>`` per check and
``DONE <rank>`` at the end; the test reads these lines (mlx.launch returns 0
even when a rank dies, so a missing ``DONE`` is the failure it sees).
Usage: ``worker.py reference|metal all|NAME,NAME... [die]`` (``die``: the last rank
exits at once, as a crashed rank would, and the others wait in a collective).
"""

from __future__ import annotations

import os
import sys
import traceback

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlx_embag as meb  # noqa: E402

V, D, STEPS, RTOL = 13, 4, 5, 1e-4
GROUP = mx.distributed.init()
K, RANK = GROUP.size(), GROUP.rank()


def table(seed):
    """A full table with ties across shards (rows 0-2 repeated as rows V-1..V-3) for max mode."""
    w = np.random.default_rng(seed).normal(size=(V, D)).astype(np.float32)
    w[V - 3 :] = w[:3][::-1]
    return mx.array(w)


def batch(cfg, seed, k):
    """Rank ``k``'s batch ``(input, offsets, psw)``: its own length and bag count."""
    rng = np.random.default_rng([seed, k])
    if cfg.get("empty_rank0") and k == 0:  # no bags at all on rank 0
        empty = mx.array(np.zeros((0,), np.int32))
        return empty, empty, None
    b = 2 + (k + seed) % 3
    two_d = cfg.get("two_d")
    if two_d == "odd ranks":
        two_d = k % 2 == 1
    if two_d:
        length = 2 + k % 2
        x = rng.integers(0, V, size=(b, length))
        x[0, 0], x[-1, -1] = V - 1, 0  # a tie on different shards
        off = None
    else:
        lens = rng.integers(0, 5, size=b)
        lens[0] = max(lens[0], 2)
        x = rng.integers(0, V, size=int(lens.sum()))
        x[0], x[1] = V - 2, 1  # a tie across shards: the later rank's row is earlier in the bag
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        off = np.concatenate([starts, [x.size]]) if cfg.get("include_last_offset") else starts
        off = mx.array(off.astype(np.int32))
    pad = cfg.get("padding_idx")
    if pad is not None:
        x.reshape(-1)[-1] = pad % V
    if cfg.get("poison") and k == K - 1:
        x.reshape(-1)[0] = V + 3
        if off is not None:  # and a last bag that starts past the end (broken, so NaN)
            off = mx.concatenate([off[:-1], mx.array([x.size + 5], dtype=off.dtype)])
    psw = None
    if cfg.get("psw"):
        psw = mx.array(rng.uniform(0.5, 2.0, size=x.shape).astype(np.float32))
    return mx.array(x.astype(np.int32)), off, psw


def cotangent(seed, k, shape):
    return mx.array(np.random.default_rng([seed, k, 7]).normal(size=shape).astype(np.float32))


def loss_of(out, c):
    return (out * c).sum() + 0.25 * (out * out).sum()


def options(cfg):
    keys = ("mode", "padding_idx", "max_norm", "scale_grad_by_freq", "include_last_offset", "sparse")
    return {key: cfg[key] for key in keys if key in cfg}


def sharded(w, cfg, backend):
    """The module under test; with ``capacity`` (every batch here fits 16 positions, 5 bags)."""
    extra = {"capacity": (16, 5)} if cfg.get("capacity") else {}
    return meb.ShardedEmbeddingBag.from_pretrained(
        w, freeze=False, group=GROUP, backend=backend, **options(cfg), **extra
    )


def reassemble(block):
    return mx.distributed.all_gather(block, group=GROUP)[:V]


def close(name, got, want, rtol=RTOL, atol=1e-5):
    got, want = np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32))
    if got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        print(f"CHECK {name} ok", flush=True)
        return
    bad = np.argwhere(~np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True))[:3].tolist()
    print(f"CHECK {name} FAIL shapes {got.shape} {want.shape} first bad {bad}", flush=True)


def check_config(name, cfg, seed, backend):
    w = table(seed).astype(cfg.get("dtype", mx.float32))
    opts = options(cfg)
    batches = [batch(cfg, seed, k) for k in range(K)]
    x, off, psw = batches[RANK]
    bag = sharded(w, cfg, backend)
    rows, lo = bag.weight.shape[0], bag.row_offset

    # forward against the functional on the full table
    fn_opts = {key: v for key, v in opts.items() if key != "sparse"}
    want = meb.embedding_bag(x, w, off, per_sample_weights=psw, **fn_opts)
    close(f"{name}/forward", bag(x, off, psw), want, *cfg.get("tol", (RTOL, 1e-5)))
    if cfg.get("poison") or "dtype" in cfg:
        return

    # one gradient of the sum of all ranks' losses
    bag = sharded(w, cfg, backend)
    oracle = meb.EmbeddingBag.from_pretrained(w, freeze=False, **opts)
    c = [
        cotangent(
            seed, k, (x_.shape[0] if off_ is None else off_.size - bool(cfg.get("include_last_offset")), D)
        )
        for k, (x_, off_, _) in enumerate(batches)
    ]
    _, g = nn.value_and_grad(bag, lambda: loss_of(bag(x, off, psw), c[RANK]))()
    _, go = nn.value_and_grad(oracle, lambda: sum(loss_of(oracle(*bt), ck) for bt, ck in zip(batches, c)))()
    gw = g["weight"].to_dense() if isinstance(g["weight"], meb.RowSparseGrad) else g["weight"]
    full = mx.concatenate([go["weight"], mx.zeros((rows * K - V, D))])
    close(f"{name}/grad", gw, full[lo : lo + rows])
    if psw is not None:
        gp = mx.grad(lambda p: loss_of(bag(x, off, p), c[RANK]))(psw)
        gpo = mx.grad(
            lambda p: loss_of(meb.embedding_bag(x, w, off, per_sample_weights=p, **fn_opts), c[RANK])
        )(psw)
        close(f"{name}/psw_grad", gp, gpo)

    # training: STEPS steps on both, the tables compared
    bag = sharded(w, cfg, backend)
    oracle = meb.EmbeddingBag.from_pretrained(w, freeze=False, **opts)
    make = cfg.get("optimizer", lambda: optim.SGD(learning_rate=0.05))
    opt, opt_o = make(), make()
    grad_fn = meb.value_and_grad if cfg.get("sparse") else nn.value_and_grad
    step = grad_fn(bag, lambda: loss_of(bag(x, off, psw), c[RANK]))
    step_o = grad_fn(oracle, lambda: sum(loss_of(oracle(*bt), ck) for bt, ck in zip(batches, c)))

    def train_step():
        _, g = step()
        opt.update(bag, g)

    if cfg.get("compile"):  # the whole step in one mx.compile (needs capacity: no host sync)
        state = [bag.state, opt.state]
        train_step = mx.compile(train_step, inputs=state, outputs=state)
    for _ in range(STEPS):
        train_step()
        mx.eval(bag.parameters(), opt.state)
        _, go = step_o()
        opt_o.update(oracle, go)
        mx.eval(oracle.parameters(), opt_o.state)
    close(f"{name}/train", reassemble(bag.weight), oracle.weight)


CONFIGS = {
    "sum": {"mode": "sum"},
    "mean": {"mode": "mean", "capacity": True},
    "max": {"mode": "max"},
    "sum_2d_pad": {"mode": "sum", "two_d": True, "padding_idx": 5},
    "mean_2d": {"mode": "mean", "two_d": True},
    "max_2d_pad": {"mode": "max", "two_d": True, "padding_idx": -1, "capacity": True},
    "sum_psw_last": {"mode": "sum", "psw": True, "include_last_offset": True, "capacity": True},
    "mean_pad_last": {"mode": "mean", "padding_idx": 3, "include_last_offset": True},
    "max_last": {"mode": "max", "include_last_offset": True},
    "sum_freq": {"mode": "sum", "scale_grad_by_freq": True},
    "mean_freq_2d": {"mode": "mean", "scale_grad_by_freq": True, "two_d": True},
    "sum_maxnorm": {"mode": "sum", "max_norm": 1.0},
    "max_maxnorm": {"mode": "max", "max_norm": 1.2},
    "max_mixed_layouts": {"mode": "max", "two_d": "odd ranks"},
    "mean_float16": {"mode": "mean", "dtype": mx.float16, "tol": (1e-2, 1e-2)},
    "max_bfloat16": {"mode": "max", "dtype": mx.bfloat16, "tol": (0, 0)},
    "sum_compiled": {"mode": "sum", "psw": True, "capacity": True, "compile": True},
    "max_compiled_2d": {"mode": "max", "two_d": True, "capacity": True, "compile": True},
    "mean_empty_rank0": {"mode": "mean", "empty_rank0": True},
    "sum_poison": {"mode": "sum", "poison": True},
    "max_poison": {"mode": "max", "poison": True, "two_d": True},
    "mean_poison_broken_offsets": {"mode": "mean", "poison": True},
    "sparse_sgd_mean": {"mode": "mean", "sparse": True, "optimizer": lambda: meb.optimizers.SparseSGD(0.05)},
    "sparse_adam_sum": {
        "mode": "sum", "sparse": True, "psw": True, "padding_idx": 4, "capacity": True,
        "optimizer": lambda: meb.optimizers.SparseAdam(learning_rate=0.01),
    },
    "sparse_adagrad_freq": {
        "mode": "sum", "sparse": True, "scale_grad_by_freq": True,
        "optimizer": lambda: meb.optimizers.RowWiseAdagrad(learning_rate=0.1),
    },
}  # fmt: skip
# A subset for launches with more ranks than this machine has cores (each collective then
# waits for a time slice: ~20 ms instead of ~0.5 ms on two cores).
QUICK = ("mean", "max_2d_pad", "sum_psw_last", "sparse_adam_sum")


def main():
    backend, which = sys.argv[1], sys.argv[2]
    names = tuple(CONFIGS) if which == "all" else which.split(",")
    if "die" in sys.argv[3:] and RANK == K - 1:
        os._exit(3)
    ctx = None
    if backend == "metal":
        from support import emulated

        ctx = emulated(seed=RANK)
        ctx.__enter__()
    for i, name in enumerate(names):
        try:
            check_config(f"{backend}/{name}", CONFIGS[name], i, backend)
        except Exception:
            print(f"CHECK {backend}/{name} FAIL {traceback.format_exc()!r}", flush=True)
            raise
    if ctx is not None:
        ctx.__exit__(None, None, None)
    print(f"DONE {RANK}", flush=True)


if __name__ == "__main__":
    main()
