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

import mlx.core as mx
import mlx.nn as nn
import numpy as np

import mlx_embag as meb

from .workloads import Case, Inputs

BACKENDS = ("reference", "metal", "naive", "take", "segmm", "ref2d", "torch", "mps")
# The backends run by MLX: their peak memory is tracked and mx.compile applies.
MLX_BACKENDS = ("reference", "metal", "naive", "take", "segmm", "ref2d")


def _mlx_pair(f, inp: Inputs, compile=False, cot=None):
    """``(fwd, fwd_bwd)`` of ``f(w, i)``, where ``i`` counts the calls.

    Eager, 1-D contenders use ``i`` to take the next draw of bag lengths, so N
    changes between calls as in training; compiled, the graph is traced once,
    so ``i`` stays 0. ``cot(i)`` is the cotangent of call ``i`` (default: the case's).
    """
    w = inp.weight
    cot = cot or (lambda i: inp.cot)
    calls = [0]

    def both(w_, cot_, i=0):
        out, (dw,) = mx.vjp(lambda x: f(x, i), [w_], [cot_])
        return out, dw

    # Compiled, the graph is traced once: what remains is the arithmetic, without
    # the per-call Python and graph-building cost that eager calls pay.
    if compile:
        fwd_c, both_c = mx.compile(lambda w_: f(w_, 0)), mx.compile(both)
        return (lambda: mx.eval(fwd_c(w))), (lambda: mx.eval(*both_c(w, cot(0))))

    def fwd():
        calls[0] += 1
        mx.eval(f(w, calls[0]))

    def fwd_bwd():
        calls[0] += 1
        mx.eval(*both(w, cot(calls[0]), calls[0]))

    return fwd, fwd_bwd


def _pick(inp: Inputs, i):
    return inp.variants[i % len(inp.variants)] if inp.variants else (inp.flat, inp.offsets)


def call_of(backend, case: Case, inp: Inputs):
    """``f(w, i)``: the library's forward on call ``i``'s inputs (the i-th draw, for 1-D).

    Example:
        >>> from mlx_embag.bench.workloads import make_inputs
        >>> case = Case(V=10, D=4, B=2, L=3, layout="1d", mode="sum")
        >>> inp = make_inputs(case)
        >>> call_of("reference", case, inp)(inp.weight, 1).shape
        (2, 4)
    """
    if case.layout == "2d":
        return lambda w, i: meb.embedding_bag(inp.idx2d, w, mode=case.mode, backend=backend)

    def f(w, i):
        flat, off = _pick(inp, i)
        return meb.embedding_bag(flat, w, off, mode=case.mode, backend=backend)

    return f


def _library(backend):
    def make(case: Case, inp: Inputs, compile=False):
        return _mlx_pair(call_of(backend, case, inp), inp, compile)

    return make


def _grid_reference(case: Case, inp: Inputs, compile=False):
    """1-D cases: the reference path on a (B, L) input of the same table, B and L (the
    layout whose time 1-D max answers to)."""
    if case.layout != "1d":
        return None
    grids = inp.grids

    def f(w, i):
        return meb.embedding_bag(grids[i % len(grids)], w, mode=case.mode, backend="reference")

    return _mlx_pair(f, inp, compile)


def segmented_floor(w, flat, offsets, mode):
    """MLX's own floor for variable-length bags: a gather, then ``mx.segmented_mm``
    (no poison rule, no padding row); ``mean`` divides by the bag lengths.

    Example:
        >>> import mlx.core as mx
        >>> w = mx.arange(8, dtype=mx.float32).reshape(4, 2)
        >>> segmented_floor(w, mx.array([0, 1, 3]), mx.array([0, 2]), "sum").tolist()
        [[2.0, 4.0], [6.0, 7.0]]
    """
    n = flat.size
    ends = mx.concatenate([offsets[1:], mx.array([n], dtype=offsets.dtype)])
    segs = mx.stack([offsets, ends], axis=1).astype(mx.uint32)
    rows = mx.take(w, flat, axis=0)
    out = mx.segmented_mm(mx.ones((1, n), dtype=w.dtype), rows, segs).reshape(offsets.size, -1)
    if mode == "mean":
        out = out / mx.maximum(ends - offsets, 1)[:, None].astype(w.dtype)
    return out


def _segmented(case: Case, inp: Inputs, compile=False):
    """1-D sum/mean: :func:`segmented_floor`, the floor the reference path answers to."""
    if case.layout != "1d" or case.mode == "max":
        return None
    return _mlx_pair(lambda w, i: segmented_floor(w, *_pick(inp, i), case.mode), inp, compile)


def _naive(case: Case, inp: Inputs, compile=False):
    """``nn.Embedding`` then the reduction, differentiated by MLX's own VJPs."""
    if case.layout != "2d":
        return None  # variable-length bags are beyond a plain reduction over an axis
    emb = nn.Embedding(case.V, case.D)  # its random init is lazy and never evaluated
    reduce = {"sum": mx.sum, "mean": mx.mean, "max": mx.max}[case.mode]

    def f(w, i):
        emb.weight = w
        return reduce(emb(inp.idx2d), axis=1)

    return _mlx_pair(f, inp, compile)


def _take(case: Case, inp: Inputs, compile=False):
    """The same rows gathered, not reduced: ``(N, D)`` out, scatter-add back."""
    pairs = inp.variants or ((inp.flat, inp.offsets),)
    cots = [_position_cot(inp, flat, off) for flat, off in pairs]
    f = lambda w, i: mx.take(w, _pick(inp, i)[0], axis=0)  # noqa: E731
    return _mlx_pair(f, inp, compile, cot=lambda i: cots[i % len(cots)])


def _position_cot(inp: Inputs, flat, offsets):
    # The take's output is (N, D): its cotangent is the bag's cotangent per position.
    if offsets is None:
        B, L = inp.idx2d.shape
        starts = np.arange(B) * L
    else:
        starts = np.array(offsets)
    owner = np.repeat(np.arange(inp.cot.shape[0]), np.diff(np.append(starts, flat.size)))
    cot = mx.take(inp.cot, mx.array(owner.astype(np.int32)), axis=0)
    mx.eval(cot)
    return cot


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
    "segmm": _segmented,
    "ref2d": _grid_reference,
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
