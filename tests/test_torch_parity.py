"""Parity with torch.nn.functional.embedding_bag / embedding (PyTorch 2.13 CPU).

Excluded from the random parity sweep, with the reason:
- scale_grad_by_freq in embedding_bag: PyTorch CPU divides by the wrong count
  (pytorch issue 190063); pinned separately below, the NumPy oracle governs.
- trailing indices after the last offset with include_last_offset and mean/max:
  PyTorch CPU counts them into the last bag; pinned separately, the oracle governs.
  (The sweep uses offsets[-1] == N, which PyTorch gets right.)
- out-of-range indices: PyTorch raises, we apply the poison rule (test_reference.py, test_layout.py).
"""

import math

import mlx.core as mx
import numpy as np
import pytest
import torch  # noqa: E402  (pinned in the test extra: missing must fail, not skip)
import torch.nn.functional as F  # noqa: E402
from oracle import oracle_embedding_bag  # noqa: E402
from support import TOL, assert_close, bag_config, random_bag_config, run_meb, to_np  # noqa: E402

import mlx_embag as meb  # noqa: E402


def run_torch(inp, offsets, W, cfg, cot):
    w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    psw = cfg["per_sample_weights"]
    p = None if psw is None else torch.tensor(psw, dtype=torch.float64, requires_grad=True)
    wc = w.clone()  # max_norm renorms in place; clone keeps the leaf intact
    out = F.embedding_bag(
        torch.from_numpy(inp),
        wc,
        None if offsets is None else torch.from_numpy(offsets),
        max_norm=cfg["max_norm"],
        norm_type=cfg["norm_type"],
        scale_grad_by_freq=cfg["scale_grad_by_freq"],
        mode=cfg["mode"],
        per_sample_weights=p,
        include_last_offset=cfg["include_last_offset"],
        padding_idx=cfg["padding_idx"],
    )
    out.backward(torch.tensor(cot, dtype=torch.float64))
    return (out.detach().numpy(), w.grad.numpy(), None if p is None else p.grad.numpy())


def _parity(seed, dtype):
    rng = np.random.default_rng(seed)
    inp, offsets, W, cfg = random_bag_config(rng)
    cfg["scale_grad_by_freq"] = False  # pytorch issue 190063, see module docstring
    if inp.ndim == 2 and inp.shape[1] == 0:
        # PyTorch 2.13 raises "step must be nonzero" on a (B, 0) input; covered by the oracle
        inp = np.zeros((inp.shape[0], 1), inp.dtype)
        if cfg["per_sample_weights"] is not None:
            cfg["per_sample_weights"] = np.ones(inp.shape, np.float32)
    B = inp.shape[0] if inp.ndim == 2 else len(offsets) - int(cfg["include_last_offset"])
    Wq = to_np(mx.array(W).astype(dtype))
    cot = to_np(mx.array(rng.standard_normal((B, W.shape[1])).astype(np.float32)).astype(dtype))
    if cfg["per_sample_weights"] is not None:
        cfg["per_sample_weights"] = to_np(mx.array(cfg["per_sample_weights"]).astype(dtype))
    to, tdW, tdP = run_torch(inp, offsets, Wq, cfg, cot)
    mo, mdW, mdP = run_meb(inp, offsets, Wq, cfg, dtype, cot)
    rtol, atol = TOL[dtype]
    ctx = f"seed={seed} mode={cfg['mode']} inp={inp.tolist()}"
    assert_close(mo, to, rtol, atol, "forward vs torch " + ctx)
    assert_close(mdW, tdW, rtol, atol, "weight grad vs torch " + ctx)
    if tdP is not None:
        assert_close(mdP, tdP, rtol, atol, "psw grad vs torch " + ctx)
    # the oracle agrees with torch too (float64 on both sides: a float64 table)
    oo, odW, odP = oracle_embedding_bag(inp, Wq.astype(np.float64), offsets, cotangent=cot, **cfg)
    assert_close(oo, to, 1e-9, 1e-9, "oracle vs torch " + ctx)
    assert_close(odW, tdW, 1e-9, 1e-9, "oracle grad vs torch " + ctx)


@pytest.mark.parametrize("seed", range(200))
def test_embedding_bag_parity_float32(seed):
    _parity(20000 + seed, mx.float32)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("seed", range(30))
def test_embedding_bag_parity_half(seed, dtype):
    _parity(30000 + seed, dtype)


@pytest.mark.parametrize("seed", range(60))
def test_embedding_parity(seed):
    rng = np.random.default_rng(40000 + seed)
    V, D = int(rng.integers(1, 10)), int(rng.choice([1, 3, 8]))
    shape = [(0,), (5,), (2, 3), (2, 1, 3)][seed % 4]
    inp = rng.integers(0, V, size=shape).astype(rng.choice([np.int32, np.int64]))
    pad = int(rng.integers(-V, V)) if rng.random() < 0.4 else None
    mn = float(rng.uniform(0.5, 2)) if rng.random() < 0.4 else None
    nt = float(rng.choice([1.0, 2.0, math.inf]))
    sg = bool(rng.random() < 0.4)
    W = rng.standard_normal((V, D)).astype(np.float32)
    cot = rng.standard_normal(shape + (D,)).astype(np.float32)
    w = torch.tensor(W, dtype=torch.float64, requires_grad=True)
    to = F.embedding(torch.from_numpy(inp), w.clone(), pad, mn, nt, sg)
    to.backward(torch.tensor(cot, dtype=torch.float64))
    wm = mx.array(W)

    def f(w):
        return meb.embedding(mx.array(inp), w, pad, mn, nt, sg, backend="reference")

    mo, (mdW,) = f(wm), mx.vjp(f, [wm], [mx.array(cot)])[1]
    assert_close(np.array(mo), to.detach().numpy(), 1e-5, 1e-5, "embedding forward vs torch")
    assert_close(np.array(mdW), w.grad.numpy(), 1e-5, 1e-5, "embedding grad vs torch")


def test_pytorch_190063_scale_grad_by_freq_divergence():
    """pytorch issue 190063: CPU embedding_bag divides by the wrong count; the oracle governs."""
    W = np.arange(8.0).reshape(4, 2)
    inp, off = np.array([1, 1, 2, 1]), np.array([0, 2])
    w = torch.tensor(W, requires_grad=True)
    F.embedding_bag(
        torch.from_numpy(inp), w, torch.from_numpy(off), mode="sum", scale_grad_by_freq=True
    ).sum().backward()
    # PyTorch 2.13 CPU: row 2 (one occurrence) gets 1/3 instead of 1
    assert_close(w.grad.numpy(), [[0, 0], [1, 1], [1 / 3, 1 / 3], [0, 0]], 1e-6, 1e-6, "torch 2.13")
    cfg = bag_config(mode="sum", scale_grad_by_freq=True)
    _, odW, _ = oracle_embedding_bag(inp, W, off, **cfg)
    assert_close(odW, [[0, 0], [1, 1], [1, 1], [0, 0]], 0, 0, "oracle")
    _, mdW, _ = run_meb(inp, off, W.astype(np.float32), cfg)
    assert_close(mdW, odW, 1e-6, 1e-6, "meb follows the oracle")


# What PyTorch 2.13 CPU returns for W = arange(8).reshape(4, 2), input [0, 1, 1, 2, 3],
# offsets [0, 2, 3], include_last_offset=True.  Bag 1 is input[2:3] = [1] -> row 1 = [2, 3].
# float32 (fast path): sum right, mean divides by 3 (counts the trailing indices), max takes them.
# float64 (generic path): the trailing indices are summed into bag 1 in every mode.
TORCH_TRAILING = {
    ("float32", "sum"): [[2, 4], [2, 3]],
    ("float32", "mean"): [[1, 2], [2 / 3, 1]],
    ("float32", "max"): [[2, 3], [6, 7]],
    ("float64", "sum"): [[2, 4], [12, 15]],
    ("float64", "mean"): [[1, 2], [4, 5]],
    ("float64", "max"): [[2, 3], [6, 7]],
}


@pytest.mark.parametrize("tdtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_pytorch_trailing_indices_divergence(mode, tdtype):
    """include_last_offset with indices after the last offset: they belong to no bag
    (documented), but PyTorch 2.13 CPU puts them into the last bag (mean and max in float32,
    every mode in float64).  The oracle governs; this pins what PyTorch does."""
    W = np.arange(8.0).reshape(4, 2)
    inp, off = np.array([0, 1, 1, 2, 3]), np.array([0, 2, 3])
    t = F.embedding_bag(
        torch.from_numpy(inp),
        torch.tensor(W, dtype=getattr(torch, tdtype)),
        torch.from_numpy(off),
        mode=mode,
        include_last_offset=True,
    ).numpy()
    assert_close(t, TORCH_TRAILING[(tdtype, mode)], 1e-6, 1e-6, f"torch 2.13 {tdtype} {mode}")
    cfg = bag_config(mode=mode, include_last_offset=True)
    o, _, _ = oracle_embedding_bag(inp, W, off, **cfg)
    expected = {"sum": [[2, 4], [2, 3]], "mean": [[1, 2], [2, 3]], "max": [[2, 3], [2, 3]]}[mode]
    assert_close(o, expected, 0, 0, "oracle: bag 1 is only row 1")
    m, _, _ = run_meb(inp, off, W.astype(np.float32), cfg)
    assert_close(m, o, 1e-6, 1e-6, "meb follows the oracle")
