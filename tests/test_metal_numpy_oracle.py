"""The Metal backend against the NumPy oracle (tests/oracle.py), forward and weight gradient.

The full option matrix is compared with the reference path in
test_metal_ops.py; this file checks the kernels directly against the written
semantics, so that a shared mistake of both paths would show up too.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from oracle import oracle_embedding_bag
from support import assert_close

from mlx_embag import metal_ops
from mlx_embag._spec import BagSpec

METAL_SEED = 77
pytestmark = pytest.mark.usefixtures("metal")


@pytest.mark.parametrize("seed", range(3))
def test_against_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        V, D = int(rng.integers(2, 12)), int(rng.choice([3, 8]))
        n = int(rng.integers(0, 30))
        ilo = bool(rng.random() < 0.5)
        off = np.sort(rng.integers(0, n + 1, size=int(rng.integers(1, 5)) + int(ilo)))
        off[0] = 0
        if rng.random() < 0.2:
            off[rng.integers(len(off))] = rng.integers(-1, n + 2)
        ind = rng.integers(0, V, size=n)
        if n and rng.random() < 0.2:
            ind[rng.integers(n)] = rng.choice([-3, V])
        mode = ("sum", "mean", "max")[rng.integers(3)]
        pad = int(rng.integers(V)) if rng.random() < 0.4 else None
        max_norm = 1.5 if rng.random() < 0.3 else None
        w = rng.standard_normal((V, D)).astype(np.float32)
        psw = rng.standard_normal(n).astype(np.float32) if mode == "sum" and rng.random() < 0.5 else None
        B = len(off) - int(ilo)
        cot = rng.standard_normal((B, D)).astype(np.float32)
        spec = BagSpec(mode, B, None, ilo, pad, max_norm, 2.0, False, bool(rng.random() < 0.5))
        args = (mx.array(ind), mx.array(off))
        p = None if psw is None else mx.array(psw)

        def f(w_):
            o = metal_ops.embedding_bag(w_, *args, p, spec)
            return (mx.where(mx.isnan(o), 0.0, o) * mx.array(cot)).sum()

        got = np.array(metal_ops.embedding_bag(mx.array(w), *args, p, spec))
        got_g = np.array(mx.grad(f)(mx.array(w)))
        want, want_g, _ = oracle_embedding_bag(
            ind,
            w,
            off,
            mode=mode,
            per_sample_weights=psw,
            include_last_offset=ilo,
            padding_idx=pad,
            max_norm=max_norm,
            cotangent=cot,
        )
        msg = f"{spec} off={off.tolist()} ind={ind.tolist()}"
        assert_close(got, want, 1e-5, 1e-5, "output " + msg)
        assert_close(got_g, want_g, 1e-5, 1e-5, "weight gradient " + msg)
