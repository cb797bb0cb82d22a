"""What is timed against what: one maker per backend, all with the same signature.

``CONTENDERS[name](case, inputs, compile=False)`` returns ``(forward,
forward_backward)``, two zero-argument callables that each run one
synchronised pass, or None when the backend cannot express the case.
``compile`` asks the MLX backends for ``mx.compile``; PyTorch has no such
switch here and ignores it.

Example:
    >>> from mlx_embag.bench.contenders import CONTENDERS
    >>> from mlx_embag.bench.workloads import Case, make_inputs
    >>> case = Case(V=10, D=4, B=2, L=3, layout="1d", mode="sum")
    >>> CONTENDERS["naive"](case, make_inputs(case)) is None  # no variable-length bags
    True
"""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import mlx.nn as nn
import numpy as np

import mlx_embag as meb

from .workloads import Case, Inputs

BACKENDS = ("reference", "metal", "naive", "take", "torch", "mps")
# The backends run by MLX: their peak memory is tracked and mx.compile applies.
MLX_BACKENDS = ("reference", "metal", "naive", "take")


def _mlx_pair(f, inp: Inputs, compile=False):
    w, cot = inp.weight, inp.cot

    def both(w_, cot_):
        out, (dw,) = mx.vjp(f, [w_], [cot_])
        return out, dw

    # Compiled, the graph is traced once: what remains is the arithmetic, without
    # the per-call Python and graph-building cost that eager calls pay.
    fwd_fn, both_fn = (mx.compile(f), mx.compile(both)) if compile else (f, both)

    def fwd():
        mx.eval(fwd_fn(w))

    def fwd_bwd():
        mx.eval(*both_fn(w, cot))

    return fwd, fwd_bwd


def _library(backend):
    def make(case: Case, inp: Inputs, compile=False):
        if case.layout == "2d":
            f = lambda w: meb.embedding_bag(inp.idx2d, w, mode=case.mode, backend=backend)  # noqa: E731
        else:
            f = lambda w: meb.embedding_bag(  # noqa: E731
                inp.flat, w, inp.offsets, mode=case.mode, backend=backend
            )
        return _mlx_pair(f, inp, compile)

    return make


def _naive(case: Case, inp: Inputs, compile=False):
    """``nn.Embedding`` then the reduction, differentiated by MLX's own VJPs."""
    if case.layout != "2d":
        return None  # variable-length bags are beyond a plain reduction over an axis
    emb = nn.Embedding(case.V, case.D)  # its random init is lazy and never evaluated
    reduce = {"sum": mx.sum, "mean": mx.mean, "max": mx.max}[case.mode]

    def f(w):
        emb.weight = w
        return reduce(emb(inp.idx2d), axis=1)

    return _mlx_pair(f, inp, compile)


def _take(case: Case, inp: Inputs, compile=False):
    """The same rows gathered, not reduced: ``(N, D)`` out, scatter-add back."""
    return _mlx_pair(lambda w: mx.take(w, inp.flat, axis=0), _with_cot(inp), compile)


def _with_cot(inp: Inputs):
    # The take's output is (N, D): its cotangent is the bag's cotangent per position.
    owner = np.repeat(np.arange(inp.cot.shape[0]), np.diff(np.append(_offsets_of(inp), inp.N)))
    cot = mx.take(inp.cot, mx.array(owner.astype(np.int32)), axis=0)
    mx.eval(cot)
    return dataclasses.replace(inp, cot=cot)


def _offsets_of(inp: Inputs):
    if inp.np_offsets is not None:
        return inp.np_offsets
    B, L = inp.idx2d.shape
    return np.arange(B) * L


def _torch_on(device):
    def make(case: Case, inp: Inputs, compile=False):
        import torch
        import torch.nn.functional as F

        dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        w = torch.from_numpy(inp.np_weight).to(device=device, dtype=dt[case.dtype])
        flat = torch.from_numpy(inp.np_flat.astype(np.int64)).to(device)
        cot = torch.from_numpy(inp.np_cot).to(device=device, dtype=dt[case.dtype])
        if case.layout == "2d":
            args = (flat.reshape(case.B, case.L), None)
        else:
            args = (flat, torch.from_numpy(inp.np_offsets.astype(np.int64)).to(device))
        # MPS calls return before the GPU is done: without a sync only the launch is timed.
        sync = torch.mps.synchronize if device == "mps" else (lambda: None)
        wg = w.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                F.embedding_bag(args[0], w, args[1], mode=case.mode)
            sync()

        def fwd_bwd():
            wg.grad = None
            F.embedding_bag(args[0], wg, args[1], mode=case.mode).backward(cot)
            sync()

        return fwd, fwd_bwd

    return make


# A dict rather than fixed functions, so a test can stand a failing backend in for one.
CONTENDERS = {
    "reference": _library("reference"),
    "metal": _library("metal"),
    "naive": _naive,
    "take": _take,
    "torch": _torch_on("cpu"),
    "mps": _torch_on("mps"),
}


def available_backends(requested):
    """``(usable, notes)``: the requested backends this machine can run, and why not the rest.

    Example:
        >>> available_backends(["reference", "take"])
        (['reference', 'take'], [])
    """
    usable, notes = [], []
    for name in requested:
        if name == "metal" and not mx.metal.is_available():
            notes.append(
                "metal: Metal timing needs Apple silicon (no Metal GPU here); the other backends still run."
            )
            continue
        if name in ("torch", "mps"):
            try:
                import torch
            except ImportError:
                notes.append(f"{name}: PyTorch is not installed; skipped.")
                continue
            if name == "mps" and not torch.backends.mps.is_available():
                notes.append("mps: PyTorch MPS is not available on this machine; skipped.")
                continue
        usable.append(name)
    return usable, notes
