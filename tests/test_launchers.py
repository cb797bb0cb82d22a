"""Every kernel is launched as its header comment says: ``Grid (...); threadgroup (...)``.

Each launcher runs with ``kernels.call`` stubbed (no kernel runs), and the
captured grid and threadgroup are held to the kernel's declared shape:
a number in the comment must be that number; a name in the threadgroup (TX,
TY, TZ) binds to the launched size and must then mean the same in the grid;
the grid's expressions are evaluated with the call's sizes (the ``params``
slots, read by name) and must give the launched grid.
"""

from __future__ import annotations

import math
import re

import mlx.core as mx
import pytest

from mlx_embag import _embag_common as common
from mlx_embag import _sparse_kernels, kernels, launchers
from mlx_embag._sources import read_metal

I64, F32 = mx.int64, mx.float32


def _tuple_after(text: str, word: str) -> list[str]:
    """The comma-separated entries of the parenthesised tuple after ``word``."""
    i = text.index(word) + len(word)
    assert text[i] == "(", (word, text[i : i + 20])
    depth, j = 0, i
    while True:
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            break
        j += 1
    parts, depth, cur = [], 0, ""
    for ch in text[i + 1 : j]:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def declared(name: str):
    """``(grid, threadgroup)`` as the header comment of ``metal/<name>.metal`` states them."""
    head = "\n".join(line for line in read_metal(name).splitlines() if line.startswith("//"))
    line = next(ln for ln in head.splitlines() if "Grid (" in ln)
    m = re.search(r"Grid \(.*\); threadgroup \(", line)
    assert m, f"{name}: the launch line must read 'Grid (...); threadgroup (...)': {line!r}"
    return _tuple_after(line, "Grid "), _tuple_after(line, "threadgroup ")


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_every_kernel_declares_a_three_dimensional_launch(name):
    grid, tg = declared(name)
    assert len(grid) == 3 and len(tg) == 3, (grid, tg)


# ------------------------------------------------------------------- launching


def _capture(monkeypatch):
    calls = []

    def stub(name, inputs, *, template, grid, threadgroup, output_shapes, output_dtypes, init_value=None):
        calls.append(
            dict(
                name=name,
                inputs=inputs,
                template=dict(template),
                grid=tuple(grid),
                threadgroup=tuple(threadgroup),
            )
        )
        return [mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes)]

    monkeypatch.setattr(kernels, "call", stub)
    return calls


def _bags(N, B, D, V=11, flags=0):
    idx = mx.arange(N, dtype=mx.int32) % V
    off = mx.arange(B, dtype=I64) * (N // B)
    return launchers.Bags(idx, off, kernels.absent(F32), V, D, B, -1, flags)


def _bag_kernels(N, B, D):
    b = _bags(N, B, D)
    w = mx.zeros((b.V, D))
    out, argmax, meta, S = launchers.bag_fwd(b, w, b.off, kernels.absent(F32), True)
    if S > 1:
        launchers.bag_combine(b, out, argmax, meta, w.dtype, True)
    meta = mx.zeros((B,), mx.int32)
    g = mx.zeros((B, D))
    launchers.bag_bwd(b, g, meta, kernels.absent(F32))
    launchers.bag_owner(b, meta, kernels.absent(F32))
    launchers.psw_grad(b, g, w, meta, kernels.absent(F32))
    launchers.max_bwd(g, mx.zeros((B, D), mx.int32), b.V)
    launchers.row_scale(w, b.idx, 1.0, 2.0)


def _sorted(M, DV):
    launchers.sorted_scatter(
        mx.arange(M) % 5, mx.arange(M, dtype=mx.int32), mx.ones((M,)), mx.zeros((M, DV)), 5
    )


def _sparse_update(M, D, rule):
    skey, order = mx.arange(M) % 5, mx.arange(M, dtype=mx.int32)
    values = mx.zeros((M, D))
    p = common.params(M=M, R=5, DV=D, WINDOW=launchers.WINDOW)
    part = _sparse_kernels.partials(skey, order, values, p)
    states = {"sgd": [], "adagrad": [mx.zeros((5, D))], "adam": [mx.zeros((5, D))] * 2}
    states["rowwise"] = [mx.zeros((5,))]
    hyper = _sparse_kernels.hyper(LR=0.1)
    _sparse_kernels.sparse_update(rule, skey, order, values, part, states[rule], hyper, mx.float32, 5)


# (N, B, D): short bags and small D (TZ > 1), D a multiple of 4 (VEC), long bags (TY > 1)
# split over threadgroups (S > 1, bag_combine), and wide rows.
BAG_CASES = [(12, 6, 3), (40, 4, 8), (4000, 2, 5), (64, 8, 300)]
SORTED_CASES = [(7, 1), (100, 3), (70, 129)]
# (M, D, rule): one window, several (TY > 1), the row-wise rule (TY = 1), two columns per thread.
SPARSE_CASES = [(7, 1, "sgd"), (100, 3, "adam"), (100, 64, "rowwise"), (70, 300, "adagrad")]


def _check(call):
    name = call["name"]
    grid_decl, tg_decl = declared(name)
    params = call["inputs"][kernels.KERNELS[name][0].index("params")]
    values = dict(zip(common.PARAM_SLOTS, [0] * 8))
    values.update({k: int(params[v].item()) for k, v in common.PARAM_SLOTS.items() if v < params.size})
    cpt = call["template"].get("CPT", 4 if call["template"].get("VEC") else 1)
    env = dict(values, CPT=cpt, ceil=math.ceil)
    env["S"] = max(env["S"], 1)
    if env["WINDOW"]:
        env["W"] = math.ceil(env["M"] / env["WINDOW"])
    if name == "max_bwd":  # the kernel reads only D from params; B is cot's (B, D)
        env["B"] = call["inputs"][0].shape[0]
    tg = call["threadgroup"]
    assert math.prod(tg) <= common.TG_MAX, (name, tg)
    for decl, got in zip(tg_decl, tg):
        if decl.isdigit():
            assert got == int(decl), (name, "threadgroup", tg_decl, tg)
        else:
            assert decl not in values, f"{name}: threadgroup entry {decl} names a call size"
            env[decl] = got
    launched = tuple(eval(e, {"__builtins__": {}}, env) for e in grid_decl)  # noqa: S307
    assert launched == call["grid"], (name, grid_decl, call["grid"], tg)


@pytest.mark.parametrize("split", [False, True], ids=["one-threadgroup", "split"])
@pytest.mark.parametrize("case", BAG_CASES, ids=str)
def test_bag_launches_match_their_headers(case, split, monkeypatch):
    if split:
        monkeypatch.setattr(launchers, "SPLIT_POSITIONS", 1)
    calls = _capture(monkeypatch)
    _bag_kernels(*case)
    names = {c["name"] for c in calls}
    assert names >= {"bag_fwd", "bag_bwd", "bag_owner", "psw_grad", "max_bwd", "row_scale"}
    for call in calls:
        _check(call)


@pytest.mark.parametrize("case", SORTED_CASES, ids=str)
def test_sorted_scatter_launches_match_their_headers(case, monkeypatch):
    calls = _capture(monkeypatch)
    _sorted(*case)
    assert [c["name"] for c in calls] == ["det_partial", "det_write"]
    for call in calls:
        _check(call)


@pytest.mark.parametrize("case", SPARSE_CASES, ids=str)
def test_sparse_update_launches_match_their_headers(case, monkeypatch):
    calls = _capture(monkeypatch)
    _sparse_update(*case)
    assert [c["name"] for c in calls] == ["det_partial", "sparse_update"]
    for call in calls:
        _check(call)


def test_every_kernel_is_checked(monkeypatch):
    calls = _capture(monkeypatch)
    monkeypatch.setattr(launchers, "SPLIT_POSITIONS", 1)
    _bag_kernels(*BAG_CASES[0])
    _sorted(*SORTED_CASES[0])
    _sparse_update(*SPARSE_CASES[0])
    assert {c["name"] for c in calls} == set(kernels.KERNELS)
