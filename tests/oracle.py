"""Independent NumPy (float64) oracle of mlx_embag's semantics (issue 2).

``oracle_embedding_bag`` and ``oracle_embedding`` return ``(out, dweight, dpsw)``
for a given output cotangent (ones when None).  ``dpsw`` is None without
per_sample_weights.  ``oracle_bags`` and ``oracle_owners`` are the bag layout
the first one reads offsets by, exposed for the layout tests.  Nothing here
imports mlx or torch; tolerances and ``assert_close`` are in tests/support.py.
"""

import math

import numpy as np


def _renorm(weight, input_flat, max_norm, norm_type):
    """Rows referenced by an in-range index, rescaled as PyTorch (in place, no grad)."""
    double = np.asarray(weight).dtype == np.float64
    w = np.array(weight, dtype=np.float64, copy=True)
    if max_norm is None:
        return w
    V = w.shape[0]
    for r in np.unique(input_flat):
        if 0 <= r < V:
            row = w[r]
            if norm_type == math.inf:
                n = np.max(np.abs(row)) if row.size else 0.0
            elif norm_type == -math.inf:
                n = np.min(np.abs(row)) if row.size else 0.0
            else:
                n = np.sum(np.abs(row) ** norm_type) ** (1.0 / norm_type) if row.size else 0.0
            if double:
                if n > max_norm:
                    w[r] = row * (max_norm / (n + 1e-7))
                continue
            # PyTorch's float arithmetic: the norm is a float read as a double, the
            # scale is computed in double and rounded to float, the row stored as float.
            n = float(np.float32(n))
            if n > max_norm:
                scale = np.float32(max_norm / (n + 1e-7))
                w[r] = (row.astype(np.float32) * scale).astype(np.float32)
    return w


def _norm_pad(padding_idx, V):
    if padding_idx is None:
        return None
    return padding_idx + V if padding_idx < 0 else padding_idx


def oracle_bags(offsets, n, include_last_offset=False):
    """[(start, end, structurally_valid)] per bag of 1-D input of length n: the poison
    rule before it looks at the indices (offsets[0] == 0, 0 <= start <= end <= n, and no
    start below an earlier offset). Offsets are Python integers, so uint64 never wraps."""
    off = [int(o) for o in np.asarray(offsets).reshape(-1).tolist()]
    B = len(off) - 1 if include_last_offset else len(off)
    out = []
    for b in range(B):
        s = off[b]
        e = off[b + 1] if b + 1 < len(off) else n
        ok = off[0] == 0 and 0 <= s <= e <= n and all(s >= off[k] for k in range(b))
        out.append((s, e, ok))
    return out


def oracle_owners(bags, n):
    """Per position of ``oracle_bags``' input: the structurally valid bag holding it, else -1
    (valid bags never overlap, so there is at most one)."""
    own = np.full(n, -1)
    for b, (s, e, ok) in enumerate(bags):
        if ok:
            own[s:e] = b
    return own


def oracle_embedding_bag(
    input,
    weight,
    offsets=None,
    mode="mean",
    per_sample_weights=None,
    include_last_offset=False,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    cotangent=None,
):
    inp = np.asarray(input).astype(np.int64)
    W0 = np.asarray(weight, dtype=np.float64)
    V, D = W0.shape
    pad = _norm_pad(padding_idx, V)
    psw = None if per_sample_weights is None else np.asarray(per_sample_weights, np.float64)
    if inp.ndim == 2:
        B, L = inp.shape
        flat = inp.reshape(-1)
        N = flat.size
        bags = [(b * L, (b + 1) * L) for b in range(B)]
        valid = [bool(np.all((inp[b] >= 0) & (inp[b] < V))) for b in range(B)]
        psw_flat = None if psw is None else psw.reshape(-1)
    else:
        flat = inp
        N = flat.size
        psw_flat = psw
        bags, valid = [], []
        for s, e, ok in oracle_bags(offsets, N, include_last_offset):
            if ok:
                seg = flat[s:e]
                ok = bool(np.all((seg >= 0) & (seg < V)))
            bags.append((s, e))
            valid.append(ok)
        B = len(bags)
    W = _renorm(W0, flat, max_norm, norm_type)
    out = np.zeros((B, D))
    g = np.ones((B, D)) if cotangent is None else np.asarray(cotangent, np.float64).reshape(B, D)
    dW = np.zeros((V, D))
    dpsw = None if psw is None else np.zeros(N)
    for b, ((s, e), ok) in enumerate(zip(bags, valid)):
        if not ok:
            out[b] = np.nan
            continue
        pos = [i for i in range(s, e) if flat[i] != pad]
        if mode in ("sum", "mean"):
            scale = 1.0
            if mode == "mean":
                scale = 1.0 / len(pos) if pos else 0.0
            for i in pos:
                c = 1.0 if psw_flat is None else psw_flat[i]
                out[b] += scale * c * W[flat[i]]
                dW[flat[i]] += scale * c * g[b]
                if dpsw is not None:
                    dpsw[i] = scale * np.dot(W[flat[i]], g[b])
        elif mode == "max":
            if not pos:
                continue
            rows = W[[flat[i] for i in pos]]
            arg = np.argmax(rows, axis=0)  # earliest position wins ties
            out[b] = rows[arg, np.arange(D)]
            for d in range(D):
                dW[flat[pos[arg[d]]], d] += g[b, d]
        else:
            raise ValueError(mode)
    if scale_grad_by_freq:
        cnt = np.bincount(flat[(flat >= 0) & (flat < V)], minlength=V).astype(np.float64)
        dW /= np.maximum(cnt, 1.0)[:, None]
    if dpsw is not None:
        dpsw = dpsw.reshape(psw.shape)
    return out, dW, dpsw


def oracle_embedding(
    input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, cotangent=None
):
    inp = np.asarray(input).astype(np.int64)
    W0 = np.asarray(weight, dtype=np.float64)
    V, D = W0.shape
    pad = _norm_pad(padding_idx, V)
    flat = inp.reshape(-1)
    W = _renorm(W0, flat, max_norm, norm_type)
    out = np.full((flat.size, D), np.nan)
    g = (
        np.ones((flat.size, D))
        if cotangent is None
        else np.asarray(cotangent, np.float64).reshape(flat.size, D)
    )
    dW = np.zeros((V, D))
    for i, r in enumerate(flat):
        if 0 <= r < V:
            out[i] = W[r]
            if r != pad:
                dW[r] += g[i]
    if scale_grad_by_freq:
        cnt = np.bincount(flat[(flat >= 0) & (flat < V)], minlength=V).astype(np.float64)
        dW /= np.maximum(cnt, 1.0)[:, None]
    return out.reshape(inp.shape + (D,)), dW, None
