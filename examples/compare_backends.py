"""Run the same EmbeddingBag forward and backward on the Metal and reference paths.

For a few configurations (``sum`` with per-sample weights, ``mean`` with a
padding row, ``max``) it computes the output and the gradients (table and
per-sample weights) of ``sum(out * g)`` on each backend, and prints the largest
absolute difference and the time per forward+backward, so you can see that the
paths agree and how much faster the Metal kernels are.

On a Mac with Metal the comparison is Metal GPU vs reference at a realistic
size. Without Metal (Linux, CI) it says so and, when the emulator can be
switched on (``mlx_embag.emulator.enable()``), runs the *emulated* Metal
kernels at a tiny size: their times are the emulator's, not a GPU's. The
reference path is always checked against an independent NumPy computation.

    python examples/compare_backends.py
    python examples/compare_backends.py --size large --reps 20

The last line printed is ``reference_vs_numpy=<diff> metal_vs_reference=<diff or n/a>
tolerance=<tol> agree=<True|False> metal=<gpu|emulated|unavailable>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

import mlx_embag as meb

# (num_embeddings, embedding_dim, bags, max bag length) per preset.
SIZES = {"tiny": (64, 8, 6, 5), "small": (5_000, 64, 256, 20), "large": (100_000, 128, 4096, 40)}
CASES = (
    dict(mode="sum", per_sample_weights=True, padding_idx=None),
    dict(mode="mean", per_sample_weights=False, padding_idx=0),
    dict(mode="max", per_sample_weights=False, padding_idx=None),
)


def metal_side():
    """Which Metal path runs here: ``("gpu"|"emulated", note)`` or ``(None, reason)``."""
    if mx.metal.is_available():
        name = mx.metal.device_info().get("device_name", "Metal GPU")
        return "gpu", f"Metal GPU: {name}"
    print("No Metal GPU on this machine (mx.metal.is_available() is False).")
    try:
        from mlx_embag import emulator

        emulator.enable()
        # A one-row call proves the kernels exist and run, not just the switch.
        mx.eval(meb.embedding_bag(mx.array([[0]]), mx.ones((1, 1)), backend="metal"))
    except Exception as exc:  # any failure here only means there is nothing to compare with
        return None, f"emulated Metal kernels unavailable ({type(exc).__name__}: {exc})"
    return "emulated", "Metal kernels on the CPU emulator (times are the emulator's, not a GPU's)"


def make_inputs(rng, size, case):
    """Random 1-D ids + offsets (some empty bags, repeats), table, cotangent, weights."""
    V, D, B, L = size
    lengths = rng.integers(0, L + 1, size=B)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    ids = rng.integers(0, V, size=int(lengths.sum())).astype(np.int32)
    weight = rng.standard_normal((V, D)).astype(np.float32)
    cotangent = rng.standard_normal((B, D)).astype(np.float32)
    psw = rng.standard_normal(len(ids)).astype(np.float32) if case["per_sample_weights"] else None
    return ids, offsets, weight, cotangent, psw


def numpy_oracle(ids, offsets, weight, g, psw, mode, padding_idx):
    """Forward, d/dweight and d/dpsw of ``sum(out * g)``, written from the documented semantics."""
    B, (V, D) = len(offsets), weight.shape
    ends = np.append(offsets[1:], len(ids))
    out, dw = np.zeros((B, D), np.float64), np.zeros((V, D), np.float64)
    dpsw = None if psw is None else np.zeros(len(ids), np.float64)
    for b in range(B):
        pos = [p for p in range(offsets[b], ends[b]) if ids[p] != padding_idx]
        if not pos:
            continue  # empty (or all-padding) bag: zeros, no gradient
        rows = weight[ids[pos]].astype(np.float64)
        if mode == "max":
            arg = rows.argmax(axis=0)  # first maximum wins ties, as PyTorch
            out[b] = rows[arg, np.arange(D)]
            np.add.at(dw, (ids[np.array(pos)[arg]], np.arange(D)), g[b])
            continue
        scale = psw[pos].astype(np.float64) if psw is not None else np.ones(len(pos))
        if mode == "mean":
            scale = scale / len(pos)
        out[b] = scale @ rows
        np.add.at(dw, ids[pos], scale[:, None] * g[b])
        if dpsw is not None:
            dpsw[pos] = rows @ g[b]
    return out, dw, dpsw


def run_backend(backend, ids, offsets, weight, g, psw, case, reps):
    """Output, gradients and median seconds of one forward+backward on ``backend``."""
    ids, offsets, weight, g = map(mx.array, (ids, offsets, weight, g))
    psw = None if psw is None else mx.array(psw)

    def loss(weight, psw):
        out = meb.embedding_bag(
            ids,
            weight,
            offsets,
            mode=case["mode"],
            per_sample_weights=psw,
            padding_idx=case["padding_idx"],
            backend=backend,
        )
        return (out * g).sum(), out

    # MLX returns a bare array, not a 1-tuple, for a single argnum.
    fn = mx.value_and_grad(loss, argnums=(0, 1) if psw is not None else 0)
    (_, out), grads = fn(weight, psw)
    mx.eval(out, grads)  # warm-up: kernel builds and caches happen here
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        (_, out), grads = fn(weight, psw)
        mx.eval(out, grads)
        times.append(time.perf_counter() - start)
    dweight, dpsw = (grads[0], np.array(grads[1])) if psw is not None else (grads, None)
    return np.array(out), np.array(dweight), dpsw, statistics.median(times)


def max_diff(a, b):
    """Largest absolute difference over matching (output, dweight, dpsw) triples."""
    return max(
        float(np.abs(np.asarray(x, np.float64) - y).max(initial=0.0)) for x, y in zip(a, b) if x is not None
    )


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--size", choices=sorted(SIZES), help="problem size (default: large with a Metal GPU, tiny otherwise)"
    )
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per backend (median reported)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max abs difference allowed (float32), scaled by the output's magnitude",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-metal", action="store_true", help="check only the reference path (skip Metal and the emulator)"
    )
    args = p.parse_args(argv)

    kind, note = (None, "skipped (--no-metal)") if args.no_metal else metal_side()
    print(f"metal: {note}")
    size = SIZES[args.size or ("large" if kind == "gpu" else "tiny")]
    V, D, B, L = size
    print(
        f"size: {V} x {D} table, {B} bags of 0..{L} ids; MLX {mx.__version__}, default device {mx.default_device()}"
    )
    rng = np.random.default_rng(args.seed)

    worst_ref, worst_metal, worst_tol, agree = 0.0, None, 0.0, True
    header = f"{'case':<24}{'reference ms':>13}{'ref vs numpy':>14}"
    if kind:
        header += f"{'metal ms':>11}{'metal vs ref':>14}{'speed-up':>10}"
    print(header)
    for case in CASES:
        inputs = make_inputs(rng, size, case)
        oracle = numpy_oracle(*inputs, case["mode"], case["padding_idx"])
        ref = run_backend("reference", *inputs, case, args.reps)
        tol = args.tolerance * max(1.0, float(np.abs(oracle[0]).max(initial=0.0)))
        d_ref = max_diff(ref[:3], oracle)
        row = f"{case['mode'] + (' +psw' if case['per_sample_weights'] else '') + (' +padding' if case['padding_idx'] is not None else ''):<24}"
        row += f"{ref[3] * 1e3:>13.3f}{d_ref:>14.2e}"
        worst_ref, worst_tol = max(worst_ref, d_ref), max(worst_tol, tol)
        agree &= d_ref <= tol
        if kind:
            met = run_backend("metal", *inputs, case, args.reps)
            d_met = max_diff(met[:3], ref[:3])
            worst_metal = max(worst_metal or 0.0, d_met)
            agree &= d_met <= tol
            row += f"{met[3] * 1e3:>11.3f}{d_met:>14.2e}{ref[3] / met[3]:>9.1f}x"
        print(row, flush=True)

    metal_diff = "n/a" if worst_metal is None else f"{worst_metal:.2e}"
    verdict = "agree" if agree else "DISAGREE"
    print(
        f"{verdict}: reference vs NumPy {worst_ref:.2e}, Metal vs reference {metal_diff} (tolerance {worst_tol:.0e})"
    )
    print(
        f"reference_vs_numpy={worst_ref:.3e} metal_vs_reference={metal_diff} tolerance={worst_tol:.3e} "
        f"agree={agree} metal={kind or 'unavailable'}"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
