"""Smoke tests of the benchmark (not timings): it runs at tiny sizes and its
table, JSON and plot are well formed."""

import json
import os
import subprocess
import sys

import pytest

from mlx_embag import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--quick", "--shapes", "64x8", "--bag-sizes", "1,16", "--batch", "4"]


def test_measure_runs_warmup_then_repeat_and_reports_median():
    calls = []
    m = bench.measure(lambda: calls.append(1), warmup=2, repeat=20, track_mlx_memory=True)
    assert len(calls) == 2 + 20 + 1  # warm-up, timed runs, one memory run
    assert m.runs == 20 and 0 <= m.min_s <= m.median_s
    assert m.peak_bytes == 0  # the callable allocates nothing in MLX


def test_interleaved_rounds_rotate_who_goes_first():
    # A callable timed after another that read the same rows finds them in cache: each
    # one must lead a round in turn, and every round time each callable once.
    seen = []
    fns = {name: (lambda name=name: seen.append(name)) for name in "abc"}
    ms = bench.timing.measure_interleaved(fns, warmup=0, repeat=6)
    rounds = [seen[i : i + 3] for i in range(0, 18, 3)]
    assert [r[0] for r in rounds] == list("abcabc")
    assert all(sorted(r) == list("abc") for r in rounds)
    assert all(m.runs == 6 for m in ms.values())
    assert bench.timing.measure_interleaved({}, warmup=1, repeat=3) == {}  # nothing to time


def test_1d_cases_give_ref2d_a_new_grid_each_call():
    from mlx_embag.bench.workloads import VARIANTS, Case, make_inputs

    inp = make_inputs(Case(V=50, D=4, B=3, L=2, layout="1d", mode="max"))
    assert len(inp.grids) == VARIANTS and all(g.shape == (3, 2) for g in inp.grids)
    assert len({tuple(g.reshape(-1).tolist()) for g in inp.grids}) == VARIANTS


def test_quick_run_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    import matplotlib  # noqa: F401  (the test extra installs it: missing must fail, not skip)

    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert bench.main(TINY + ["--json", str(js), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "median ms (extra peak MB)" in out and "targets:" in out
    if sys.platform != "darwin":
        assert "Metal timing needs Apple silicon" in out

    data = json.loads(js.read_text())
    res = data["results"]
    got = {(r["backend"], r["layout"], r["mode"], r["pass"], r["L"]) for r in res}
    for layout in ("2d", "1d"):
        for mode in ("sum", "mean", "max"):
            for p in ("fwd", "fwd+bwd"):
                for L in (1, 16):
                    assert ("reference", layout, mode, p, L) in got
                    assert ("take", layout, mode, p, L) in got
                    # The naive composition only exists for fixed-length bags.
                    assert (("naive", layout, mode, p, L) in got) == (layout == "2d")
    for r in res:
        assert r["runs"] >= 20 and r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"]
        assert (r["peak_mb"] is None) == (r["backend"] in ("torch", "mps"))
        if r["layout"] == "2d":
            assert r["N"] == r["B"] * r["L"]
    # Every target check refers to a measured case and its verdict matches its numbers.
    assert data["targets"]
    for c in data["targets"]:
        le = "<=" in c["target"]
        assert c["ok"] == (c["value"] <= c["limit"] if le else c["value"] >= c["limit"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_matches_when_installed(tmp_path):
    import torch  # noqa: F401  (pinned in the test extra)

    js = tmp_path / "t.json"
    assert bench.main(TINY + ["--backends", "torch", "--modes", "sum", "--json", str(js)]) == 0
    res = json.loads(js.read_text())["results"]
    assert {r["backend"] for r in res} == {"torch"} and len(res) == 2 * 2 * 2


def test_plot_without_matplotlib_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert bench.main(TINY + ["--plot", "x.png"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_too_few_runs_is_refused(capsys):
    assert bench.main(TINY + ["--repeat", "5"]) == 2
    assert "at least 20" in capsys.readouterr().err


def test_bytes_moved_and_bandwidth_table():
    case = bench.Case(V=10, D=4, B=2, L=3, layout="2d", mode="sum")
    assert bench.bytes_moved(case, 6, "fwd") == (6 + 2) * 4 * 4
    assert bench.bytes_moved(case, 6, "fwd+bwd") == (6 + 2) * 16 + 2 * 16 + 2 * 6 * 16 + 10 * 16
    assert bench.chip_bandwidth_gbs("Apple M2 Max") == 400.0
    assert bench.chip_bandwidth_gbs("Apple M1") == 68.25
    assert bench.chip_bandwidth_gbs("Apple M1 Pro (16-core)") == 200.0
    assert bench.chip_bandwidth_gbs("AMD EPYC") is None


def test_check_targets_flags_a_slow_reference():
    base = dict(
        V=10,
        D=64,
        B=2,
        L=16,
        layout="2d",
        dtype="float32",
        N=32,
        runs=20,
        bytes=1,
        gbs=1.0,
        pct_bandwidth=None,
        min_ms=1.0,
    )
    res = [
        {**base, "mode": "sum", "pass": "fwd", "backend": "reference", "median_ms": 1.4, "peak_mb": 1.0},
        {**base, "mode": "sum", "pass": "fwd", "backend": "take", "median_ms": 1.0, "peak_mb": 1.0},
        {**base, "mode": "max", "pass": "fwd+bwd", "backend": "reference", "median_ms": 1.0, "peak_mb": 1.0},
        {**base, "mode": "max", "pass": "fwd+bwd", "backend": "naive", "median_ms": 1.0, "peak_mb": 0.5},
    ]
    # Results are typed; the flat dicts above are their JSON form.
    checks = {(c.case.mode, c.what): c for c in bench.check_targets(map(bench.Result.from_dict, res))}
    assert not checks[("sum", "time")].ok and checks[("sum", "time")].limit == 1.3
    assert checks[("max", "time")].ok and not checks[("max", "memory")].ok


def test_example_script_help():
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "benchmark.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "--plot" in r.stdout and "--bandwidth-gbs" in r.stdout


def test_a_failing_backend_is_reported_not_fatal(monkeypatch, tmp_path, capsys):
    # Pretend to be on a Mac whose Metal path rejects the call: the rest still runs.
    import mlx.core as mx

    monkeypatch.setattr(mx.metal, "is_available", lambda: True)

    def broken(case, inp, compile=False):
        def fail():
            raise RuntimeError("no kernels")

        return fail, fail

    monkeypatch.setitem(bench.CONTENDERS, "metal", broken)
    js = tmp_path / "m.json"
    args = TINY + ["--backends", "metal,reference,take", "--modes", "sum", "--json", str(js)]
    assert bench.main(args) == 0
    data = json.loads(js.read_text())
    assert {r["backend"] for r in data["results"]} == {"reference", "take"}
    assert any("metal fwd: failed (RuntimeError: no kernels)" in m for m in data["meta"]["skipped"])
    assert "could not run" in capsys.readouterr().out


def test_training_run_times_every_optimizer_and_checks_the_targets(capsys):
    argv = [
        "--training",
        "--shapes",
        "200x8,400x8",
        "--batch",
        "8",
        "--bag-sizes",
        "3",
        "--training-steps",
        "3",
        "--warmup",
        "1",
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    for name in ("SparseSGD", "SparseAdagrad", "SparseAdam", "RowWiseAdagrad", "Adam (dense)"):
        assert out.count(f"{name} ") >= 2, name  # one row per table size
    assert "training targets (reference path):" in out
    assert "SparseAdam V=400 / V=200 step time <= 1.5" in out
    assert "SparseAdam at V=400 >= 30x faster than dense Adam" in out


def test_training_refuses_fewer_than_three_steps(capsys):
    assert bench.main(["--training", "--training-steps", "2"]) == 2
    assert "--training-steps" in capsys.readouterr().err


def test_profile_quick_prints_every_launch_the_minimum_and_a_labelled_prediction(capsys, tmp_path):
    from mlx_embag.bench import profile as bprof

    js = tmp_path / "p.json"
    assert bench.main(["--profile", "--quick", "--batch", "8", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    saved = json.loads(js.read_text())["profile"]
    assert [(r["pass"], r["mode"], r["deterministic"]) for r in saved] == [
        ("fwd", "sum", None),
        ("fwd", "mean", None),
        ("fwd", "max", None),
        ("bwd", "sum", False),
        ("bwd", "sum", True),
    ]
    assert "MODEL, not a measurement" in out and "not documented facts" in out
    for line in ("fwd sum  float32 D=64 L=16", "fwd max  float32 D=64 L=16", "bwd sum deterministic=True"):
        assert line in out
    for kernel in ("bag_fwd", "bag_bwd", "det_write"):
        assert kernel in out
    # The minimum by hand: 8 bags x 16 rows x 8 sectors (256-byte rows), 128 int32 indices
    # (16 sectors), offsets and running maximum (8 x int64: 2 sectors each), meta (1 sector),
    # 8 output rows (64 sectors).
    need = 8 * 16 * 8 + 16 + 2 + 2 + 1 + 64
    assert f"minimum {need}," in out
    case = bprof.ProfileCase("float32", 64, 16, 8)
    assert bprof.forward_minimum_sectors(case, "sum") == need
    # The atomic backward: one float atomic per position and column (sum mode, no duplicates dropped).
    rows = bprof.run_profile(quick=True, batch=8, out=lambda s: None)
    bwd = [r for r in rows if r["pass"] == "bwd" and r["deterministic"] is False][0]
    assert bwd["atomics"] == 8 * 16 * 64
    fwd = [r for r in rows if r["pass"] == "fwd"]
    assert {r["mode"] for r in fwd} == {"sum", "mean", "max"} and all(r["ratio"] >= 1 for r in fwd)
    # Roofline: bytes over bandwidth, for every chip in the table.
    assert "Apple M4 Max" in out and "546.0" in out


def test_host_cost_table_json_and_targets(tmp_path, capsys):
    js = tmp_path / "h.json"
    argv = TINY + [
        "--modes",
        "sum,max",
        "--passes",
        "fwd",
        "--backends",
        "reference,metal,take",
        "--json",
        str(js),
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "host us/call" in out
    header = [line for line in out.splitlines() if line.lstrip().startswith("V ") and "|" in line][-1]
    assert header.split("|")[1].split() == ["reference", "metal", "auto", "take"]
    data = json.loads(js.read_text())
    got = {(h["backend"], h["layout"], h["mode"], h["L"]) for h in data["host"]}
    # The Metal path's host cost runs on stub kernels, so it is measured on any machine;
    # "auto" (the default backend) is measured whenever "metal" is.
    want = {
        (b, lay, m, L)
        for b in ("reference", "metal", "auto", "take")
        for lay in ("2d", "1d")
        for m in ("sum", "max")
        for L in (1, 16)
    }
    assert got == want
    assert all(h["host_us"] > 0 for h in data["host"])
    checks = [c for c in data["targets"] if "host us/call" in c["target"]]
    assert {c["target"] for c in checks} == {
        "metal host us/call <= 20",
        "auto host us/call <= 20",
        "reference host us/call <= 40",
    }
    assert len(checks) == 3 * len(want) // 4
    for c in checks:
        assert c["ok"] == (c["value"] <= c["limit"])


def test_host_auto_column_only_beside_metal():
    assert bench.host_backends(["reference", "take"]) == ["reference", "take"]
    assert bench.host_backends(["metal"]) == ["metal", "auto", "take"]
    assert bench.host_backends(["naive", "torch"]) == []


def _route_spies(monkeypatch):
    """Counts of the routes calls take: entries into backend="auto"'s fallback probing, and
    runs of the reference path (its full path and its per-signature runners)."""
    from mlx_embag import _plans, kernels, reference

    seen = {"auto": 0, "reference": 0}
    auto_fallback = kernels.auto_fallback

    def counting_auto_fallback():
        seen["auto"] += 1
        return auto_fallback()

    def counted(fn):
        def wrapper(*a, **k):
            seen["reference"] += 1
            return fn(*a, **k)

        return wrapper

    bag_runner = reference.bag_runner
    monkeypatch.setattr(kernels, "auto_fallback", counting_auto_fallback)
    monkeypatch.setattr(reference, "embedding_bag", counted(reference.embedding_bag))
    monkeypatch.setattr(reference, "bag_runner", lambda *a: counted(bag_runner(*a)))
    _plans.clear()  # plans of earlier tests hold the unwrapped runners
    return seen


def test_host_auto_takes_the_metal_route_with_its_fallback(monkeypatch):
    from mlx_embag import _plans, metal_ops
    from mlx_embag.bench.workloads import Case, make_inputs

    try:
        for layout in ("2d", "1d"):
            case = Case(V=50, D=8, B=4, L=3, layout=layout, mode="sum")
            inp = make_inputs(case)
            for name, want_auto, want_reference in (("auto", True, False), ("metal", False, False)):
                seen = _route_spies(monkeypatch)
                bench.host_costs(case, inp, [name], calls=3, rounds=2)
                assert (seen["auto"] > 0, seen["reference"] > 0) == (want_auto, want_reference), (name, seen)
        # Forced onto the reference path (the kernels "cannot run" the call), "auto" would
        # time the reference path under its name: host_costs refuses.
        seen = _route_spies(monkeypatch)
        monkeypatch.setattr(metal_ops, "unsupported_bag", lambda *a: "forced")
        with pytest.raises(RuntimeError, match="did not take the 'auto' route"):
            bench.host_costs(case, inp, ["auto"], calls=3, rounds=2)
        assert seen["reference"] > 0 and seen["auto"] == 0
    finally:
        _plans.clear()  # no plan built under the spies or the forced refusal outlives the test


def test_floors_and_their_targets_apply_to_1d_only():
    base = dict(
        V=10,
        D=64,
        B=2,
        L=16,
        dtype="float32",
        N=32,
        runs=20,
        bytes=1,
        gbs=1.0,
        pct_bandwidth=None,
        min_ms=1.0,
        peak_mb=1.0,
        pass_="fwd",
    )
    res = [
        {**base, "layout": "1d", "mode": "sum", "backend": "reference", "median_ms": 1.2},
        {**base, "layout": "1d", "mode": "sum", "backend": "segmm", "median_ms": 1.0},
        {**base, "layout": "1d", "mode": "sum", "backend": "take", "median_ms": 0.5},
        {**base, "layout": "1d", "mode": "max", "backend": "reference", "median_ms": 1.4},
        {**base, "layout": "1d", "mode": "max", "backend": "ref2d", "median_ms": 1.0},
    ]
    res = [{**r, "pass": r.pop("pass_")} for r in res]
    checks = {(c.case.mode, c.target): c for c in bench.check_targets(map(bench.Result.from_dict, res))}
    seg = checks[("sum", "reference/segmm time <= 1.15")]
    assert not seg.ok and abs(seg.value - 1.2) < 1e-9
    assert checks[("max", "reference 1d max/2d max time <= 1.5")].ok
    assert not any("reference/take" in t for _, t in checks)  # 1-D answers to segmm, not take


def test_segmented_floor_matches_the_reference_on_valid_bags():
    import mlx.core as mx
    import numpy as np

    import mlx_embag as meb
    from mlx_embag.bench.contenders import segmented_floor

    rng = np.random.default_rng(0)
    w = mx.array(rng.standard_normal((20, 3)).astype(np.float32))
    flat = mx.array(rng.integers(0, 20, 9).astype(np.int32))
    off = mx.array(np.array([0, 2, 2, 7], np.int32))
    for mode in ("sum", "mean"):
        np.testing.assert_allclose(
            np.array(segmented_floor(w, flat, off, mode)),
            np.array(meb.embedding_bag(flat, w, off, mode=mode, backend="reference")),
            rtol=1e-6,
            atol=1e-6,
        )
