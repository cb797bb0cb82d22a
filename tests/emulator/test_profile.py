"""The profiler (``mlx_embag.emulator.profile``) on small kernels with hand-computed figures.

Each kernel runs one or two SIMD-groups; the expected instructions, lanes, distinct
bytes, 32-byte sectors, 128-byte lines, atomics and bank conflicts are worked out in
the comments from the addresses the lanes touch.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import mlx_embag as meb
from mlx_embag import emulator
from mlx_embag.emulator.profile import Totals

F32 = mx.float32


def profiled(source, inputs, out_shapes, grid, tg, *, out_dtypes=None, template=None, header="", **kw):
    """Run one kernel under the profiler; returns (its Launch, its outputs as NumPy)."""
    names = [f"in{i}" for i in range(len(inputs))]
    outs = [f"out{i}" for i in range(len(out_shapes))]
    k = emulator.metal_kernel("probe", names, outs, source, header=header, **kw)
    call = dict(
        inputs=inputs,
        output_shapes=out_shapes,
        output_dtypes=out_dtypes or [F32] * len(out_shapes),
        grid=grid,
        threadgroup=tg,
    )
    if template:
        call["template"] = template
    if kw.get("atomic_outputs"):
        call["init_value"] = 0
    with emulator.profile() as prof:
        results = k(**call)
        mx.eval(results)
    assert len(prof.launches) == 1
    return prof.launches[0], [np.array(r) for r in results]


def line_of(launch, text):
    """The profiled source line whose text contains ``text``."""
    found = [s for s in launch.sites if text in s.source]
    assert len(found) == 1, [(s.line, s.source) for s in launch.sites]
    return found[0]


def test_coalesced_float_load_and_store():
    a = mx.arange(32, dtype=F32)
    launch, (b,) = profiled(
        "uint i = thread_position_in_grid.x;\nout0[i] = in0[i] + 1.0f;", [a], [(32,)], (32, 1, 1), (32, 1, 1)
    )
    np.testing.assert_array_equal(b, np.arange(32) + 1)
    # 32 lanes x 4 consecutive bytes: one instruction, 128 bytes = 4 sectors = 1 line.
    assert launch.totals("device", "load") == Totals(instructions=1, lanes=32, bytes=128, sectors=4, lines=1)
    assert launch.totals("device", "store") == Totals(1, 32, 128, 4, 1)
    assert launch.totals("threadgroup", "load") == Totals()
    assert launch.name == "probe" and launch.grid == (32, 1, 1) and launch.threadgroup == (32, 1, 1)
    # Lines count in the generated source (MLX's signature comes first).
    site = line_of(launch, "out0[i] = in0[i]")
    assert site.line > 2 and site.source == "out0[i] = in0[i] + 1.0f;"
    assert site.totals("device", "load").sectors == 4


@pytest.mark.parametrize(
    "stride, sectors, lines",
    [
        (2, 8, 2),  # lane i at byte 8i: bytes 0..251 span sectors 0..7, lines 0..1
        (8, 32, 8),  # lane i at byte 32i: one sector each, four lanes per line
        (64, 32, 32),  # lane i at byte 256i: a sector and a line each
    ],
)
def test_strided_load(stride, sectors, lines):
    a = mx.arange(32 * stride, dtype=F32)
    launch, (b,) = profiled(
        f"uint i = thread_position_in_grid.x;\nout0[i] = in0[i * {stride}];",
        [a],
        [(32,)],
        (32, 1, 1),
        (32, 1, 1),
    )
    np.testing.assert_array_equal(b, np.arange(32) * stride)
    assert launch.totals("device", "load") == Totals(1, 32, 128, sectors, lines)


def test_vector_loads_and_stores():
    # float4 per lane: one 16-byte access each; 32 lanes read 512 consecutive bytes
    # (16 sectors, 4 lines) in one instruction, and write them back as half4 (8 bytes each:
    # 256 bytes, 8 sectors, 2 lines).
    a = mx.arange(128, dtype=F32)
    src = (
        "uint i = thread_position_in_grid.x;\n"
        "float4 v = ((const device float4*)in0)[i];\n"
        "((device half4*)out0)[i] = half4(v);"
    )
    launch, (b,) = profiled(src, [a], [(128,)], (32, 1, 1), (32, 1, 1), out_dtypes=[mx.float16])
    np.testing.assert_array_equal(b, np.arange(128, dtype=np.float16))
    assert launch.totals("device", "load") == Totals(1, 32, 512, 16, 4)
    assert launch.totals("device", "store") == Totals(1, 32, 256, 8, 2)


def test_a_value_all_lanes_read_counts_once():
    a = mx.array([7.0, 1.0], dtype=F32)
    launch, (b,) = profiled(
        "uint i = thread_position_in_grid.x;\nout0[i] = in0[1];", [a], [(64,)], (64, 1, 1), (64, 1, 1)
    )
    np.testing.assert_array_equal(b, np.ones(64))
    # Two SIMD-groups, each one instruction of 32 lanes reading the same 4 bytes.
    assert launch.totals("device", "load") == Totals(2, 64, 8, 2, 2)
    t = launch.totals("device", "load")
    assert t.bytes <= 32 * t.sectors


@pytest.mark.parametrize("dtype", ["int", "float"])
def test_atomics(dtype):
    # 64 threads add into 4 counters: lane i into counter i % 4.
    src = (
        "uint i = thread_position_in_grid.x;\n"
        f"atomic_fetch_add_explicit(&out0[i % 4], {dtype}(1), memory_order_relaxed);"
    )
    mxd = mx.int32 if dtype == "int" else F32
    launch, (c,) = profiled(
        src, [mx.zeros(8, dtype=F32)], [(4,)], (64, 1, 1), (32, 1, 1), out_dtypes=[mxd], atomic_outputs=True
    )
    np.testing.assert_array_equal(c, [16, 16, 16, 16])
    a = launch.atomics
    assert (a.ops, a.addresses, a.max_per_address, a.instructions) == (64, 4, 16, 2)
    # The compare-and-swap loop of a float atomic is not counted as the kernel's loads.
    assert launch.totals("device", "load") == Totals() and launch.totals("device", "store") == Totals()
    site = line_of(launch, "atomic_fetch_add_explicit")
    assert site.atomics.ops == 64 and site.atomics.instructions == 2


BANK_SRC = (
    "threadgroup float s[1024];\n"
    "uint i = thread_position_in_threadgroup.x;\n"
    "s[i * STRIDE] = float(i);\n"
    "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
    "out0[i] = s[i * STRIDE] + s[0];"
)


@pytest.mark.parametrize("stride, degree", [(1, 1), (2, 2), (4, 4), (32, 32), (33, 1)])
def test_threadgroup_bank_conflicts(stride, degree):
    launch, (b,) = profiled(
        BANK_SRC, [mx.zeros(8, dtype=F32)], [(32,)], (32, 1, 1), (32, 1, 1), template=[("STRIDE", stride)]
    )
    np.testing.assert_array_equal(b, np.arange(32))
    # Word i * stride lies in bank (i * stride) % 32: stride 2 puts two lanes in each even
    # bank, stride 32 all 32 lanes in bank 0, stride 33 one lane per bank.
    assert launch.bank_conflicts == degree
    store = line_of(launch, "s[i * STRIDE] = float(i)")
    assert store.bank_conflicts == degree
    assert store.totals("threadgroup", "store") == Totals(
        1, 32, 128, 4 if stride == 1 else min(32, 4 * stride), 1 if stride == 1 else min(32, stride)
    )
    # s[0], read by all 32 lanes, is a broadcast: one word, no conflict, counted once.
    loads = line_of(launch, "out0[i] = s[i * STRIDE] + s[0]").totals("threadgroup", "load")
    assert loads.instructions == 2 and loads.lanes == 64 and loads.bytes == 128 + 4


def test_divergent_if_else():
    # 64 threads: lanes 0..7 of SIMD-group 0 take the `if`, all other lanes the `else`.
    src = (
        "uint i = thread_position_in_grid.x;\n"
        "if (i < 8) {\n"
        "  out0[i] = in0[i];\n"
        "} else {\n"
        "  out1[i] = ((const device float2*)in1)[i].y;\n"
        "}"
    )
    a, b = mx.arange(64, dtype=F32), mx.arange(128, dtype=F32)
    launch, (o0, o1) = profiled(src, [a, b], [(64,), (64,)], (64, 1, 1), (64, 1, 1))
    np.testing.assert_array_equal(o0[:8], np.arange(8))
    np.testing.assert_array_equal(o1[8:], np.arange(8, 64) * 2 + 1)
    then = line_of(launch, "out0[i] = in0[i]")
    # One instruction of 8 lanes: bytes 0..31, one sector.
    assert then.totals("device", "load") == Totals(1, 8, 32, 1, 1)
    assert then.totals("device", "store") == Totals(1, 8, 32, 1, 1)
    other = line_of(launch, "out1[i] =")
    # Only the used component .y is loaded (4 bytes at 8i + 4), as a GPU compiler does too.
    # SIMD-group 0: lanes 8..31, bytes 68..255 (sectors 2..7, lines 0..1);
    # SIMD-group 1: lanes 32..63, bytes 260..511 (sectors 8..15, lines 2..3).
    assert other.totals("device", "load") == Totals(2, 56, 4 * 56, 6 + 8, 2 + 2)
    # Stores out1[i]: 4 bytes at 4i, SIMD-group 0 bytes 32..127 (sectors 1..3, line 0).
    assert other.totals("device", "store") == Totals(2, 56, 96 + 128, 3 + 4, 1 + 1)


def _loop_model(counts):
    """Instructions and lanes of the guarded load under the reconvergence rule: in
    iteration k the lanes still looping (k < count) run together, and those with
    (k + lane) even load."""
    instructions = lanes = 0
    for k in range(max(counts)):
        active = [i for i, c in enumerate(counts) if k < c and (k + i) % 2 == 0]
        instructions += bool(active)
        lanes += len(active)
    return instructions, lanes


def test_data_dependent_loop_groups_by_reconvergence():
    counts = [i % 5 for i in range(32)]
    src = (
        "uint i = thread_position_in_grid.x;\n"
        "uint n = in1[i];\n"
        "float acc = 0.0f;\n"
        "for (uint k = 0; k < n; ++k) {\n"
        "  if (((k + i) & 1u) == 0u) {\n"
        "    acc += in0[k * 32 + i];\n"
        "  }\n"
        "}\n"
        "out0[i] = acc;"
    )
    a = mx.arange(4 * 32, dtype=F32)
    launch, (b,) = profiled(src, [a, mx.array(counts, dtype=mx.uint32)], [(32,)], (32, 1, 1), (32, 1, 1))
    want = [sum(k * 32 + i for k in range(c) if (k + i) % 2 == 0) for i, c in enumerate(counts)]
    np.testing.assert_array_equal(b, want)
    loads = line_of(launch, "acc += in0[k * 32 + i]").totals("device", "load")
    # Reconvergence: iterations 0..3 each one instruction (4), 30 lane-loads in all. Grouping
    # by "n-th execution of the site" would give 2 instructions (no lane loads more than twice).
    assert (loads.instructions, loads.lanes) == _loop_model(counts) == (4, 30)
    assert loads.bytes == 4 * loads.lanes
    assert line_of(launch, "uint n = in1[i]").totals("device", "load") == Totals(1, 32, 128, 4, 1)


def test_report_names_the_models():
    launch_text = "uint i = thread_position_in_grid.x;\nout0[i] = in0[i];"
    k = emulator.metal_kernel("copy_report", ["in0"], ["out0"], launch_text)
    with emulator.profile() as prof:
        mx.eval(
            k(
                inputs=[mx.ones(32)],
                output_shapes=[(32,)],
                output_dtypes=[F32],
                grid=(32, 1, 1),
                threadgroup=(32, 1, 1),
            )
        )
    text = prof.report()
    assert "not documented facts" in text and "32 banks x 4 bytes" in text and "post-dominator" in text
    assert "copy_report" in text and "out0[i] = in0[i];" in text
    with pytest.raises(ValueError, match="space"):
        prof.launches[0].totals("private", "load")


def test_project_kernel_forward_sum():
    # embedding_bag sum over B bags of L rows of a (V, D) float32 table: whatever the kernel's
    # layout, the table is read once per use (B * L rows of D * 4 bytes, rows 512-byte
    # aligned from the buffer start: 16 sectors each) and the output written once.
    B, L, D, V = 8, 4, 128, 50
    rng = np.random.default_rng(0)
    idx = mx.array(rng.integers(0, V, B * L).astype(np.int32))
    offs = mx.array(np.arange(B, dtype=np.int64) * L)
    W = mx.array(rng.standard_normal((V, D)).astype(np.float32))
    was = emulator.settings.current()
    emulator.enable(seed=None)
    try:
        with emulator.profile() as prof:
            out = meb.embedding_bag(idx, W, offs, mode="sum", backend="metal")
            mx.eval(out)
    finally:
        emulator.reset()
        if was.enabled != emulator.is_enabled():
            emulator.enable(seed=was.seed) if was.enabled else emulator.disable()
    want = np.array(W)[np.array(idx)].reshape(B, L, D).sum(1)
    np.testing.assert_allclose(np.array(out), want, rtol=1e-5, atol=1e-5)
    fwd = [x for x in prof.launches if "bag_fwd" in x.name]
    assert len(fwd) == 1
    loads = [s.totals("device", "load") for s in fwd[0].sites]
    table = max(loads, key=lambda t: t.bytes)
    assert table.bytes == B * L * D * 4 and table.sectors == B * L * D * 4 // 32
    stores = [s.totals("device", "store") for s in fwd[0].sites]
    assert max(t.bytes for t in stores) == B * D * 4


def test_partial_simdgroup_at_the_grid_edge():
    # 40 threads in threadgroups of 32: the second SIMD-group has 8 lanes (bytes 128..159).
    launch, (b,) = profiled(
        "uint i = thread_position_in_grid.x;\nout0[i] = in0[i];",
        [mx.arange(40, dtype=F32)],
        [(40,)],
        (40, 1, 1),
        (32, 1, 1),
    )
    np.testing.assert_array_equal(b, np.arange(40))
    assert launch.totals("device", "load") == Totals(2, 40, 160, 5, 2)


def test_divergence_before_a_barrier_and_a_loop_around_barriers():
    # Lanes split before the barrier (odd lanes load), then run together after it: the
    # trace of each lane resumes in the block where the barrier stopped it. The loop
    # around two barriers runs 4 times with all lanes: 4 instructions per access.
    src = (
        "threadgroup float s[32];\n"
        "uint i = thread_position_in_threadgroup.x;\n"
        "if (i % 2 == 1) {\n"
        "  s[i] = in0[i];\n"
        "} else {\n"
        "  s[i] = 0.0f;\n"
        "}\n"
        "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "float acc = 0.0f;\n"
        "for (uint k = 0; k < 4; ++k) {\n"
        "  acc += s[(i + k) % 32];\n"
        "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "  s[i] = acc;\n"
        "  threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "}\n"
        "out0[i] = acc;"
    )
    launch, (b,) = profiled(src, [mx.arange(32, dtype=F32)], [(32,)], (32, 1, 1), (32, 1, 1))
    s = np.where(np.arange(32) % 2 == 1, np.arange(32), 0).astype(np.float64)
    acc = np.zeros(32)
    for k in range(4):
        acc = acc + s[(np.arange(32) + k) % 32]
        s = acc.copy()
    np.testing.assert_allclose(b, acc)
    assert line_of(launch, "s[i] = in0[i]").totals("device", "load") == Totals(1, 16, 64, 4, 1)
    assert line_of(launch, "s[i] = in0[i]").totals("threadgroup", "store").lanes == 16
    assert line_of(launch, "s[i] = 0.0f").totals("threadgroup", "store").lanes == 16
    assert line_of(launch, "acc += s[(i + k) % 32]").totals("threadgroup", "load") == Totals(
        4, 128, 512, 16, 4
    )
    assert line_of(launch, "s[i] = acc").totals("threadgroup", "store").instructions == 4
    assert line_of(launch, "out0[i] = acc").totals("device", "store") == Totals(1, 32, 128, 4, 1)


def test_threadgroup_atomics_and_launch_order():
    # Every lane increments one threadgroup counter (32 ops on 1 address), then a second
    # kernel runs: launches come back in order.
    src = (
        "threadgroup atomic_uint c[1];\n"
        "uint i = thread_position_in_threadgroup.x;\n"
        "if (i == 0) atomic_store_explicit(&c[0], 0u, memory_order_relaxed);\n"
        "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "atomic_fetch_add_explicit(&c[0], 1u, memory_order_relaxed);\n"
        "threadgroup_barrier(mem_flags::mem_threadgroup);\n"
        "out0[i] = float(atomic_load_explicit(&c[0], memory_order_relaxed));"
    )
    first = emulator.metal_kernel("count", ["in0"], ["out0"], src)
    second = emulator.metal_kernel(
        "copy_after", ["in0"], ["out0"], "uint i = thread_position_in_grid.x;\nout0[i] = in0[i];"
    )
    with emulator.profile() as prof:
        (a,) = first(
            inputs=[mx.zeros(8)],
            output_shapes=[(32,)],
            output_dtypes=[F32],
            grid=(32, 1, 1),
            threadgroup=(32, 1, 1),
        )
        (b,) = second(
            inputs=[a], output_shapes=[(32,)], output_dtypes=[F32], grid=(32, 1, 1), threadgroup=(32, 1, 1)
        )
        mx.eval(b)
    np.testing.assert_array_equal(np.array(b), np.full(32, 32.0))
    assert [x.name for x in prof.launches] == ["count", "copy_after"]
    t = prof.launches[0].threadgroup_atomics
    # 1 store + 32 adds + 32 loads, all on the one counter; 3 instructions.
    assert (t.ops, t.addresses, t.max_per_address, t.instructions) == (65, 1, 65, 3)
    assert prof.launches[0].atomics.ops == 0


def test_loop_with_a_data_dependent_break():
    # Lane i breaks out in iteration i % 4 (in0 is negative there). Iteration k's load of
    # in0 runs on the lanes that have not broken yet (32, 24, 16, 8 lanes); the load of in1
    # after the test only on those that go on (24, 16, 8): lanes that broke wait at the
    # loop's exit, the others keep looping together.
    src = (
        "uint i = thread_position_in_grid.x;\n"
        "float acc = 0.0f;\n"
        "for (uint k = 0; k < 8; ++k) {\n"
        "  float v = in0[k * 32 + i];\n"
        "  if (v < 0.0f) break;\n"
        "  acc += in1[k * 32 + i];\n"
        "}\n"
        "out0[i] = acc;"
    )
    lanes = np.arange(32)
    a = np.ones((8, 32), np.float32)
    a[lanes % 4, lanes] = -1.0
    b = np.arange(256, dtype=np.float32).reshape(8, 32)
    launch, (o,) = profiled(src, [mx.array(a.ravel()), mx.array(b.ravel())], [(32,)], (32, 1, 1), (32, 1, 1))
    np.testing.assert_array_equal(o, [b[: i % 4, i].sum() for i in lanes])
    assert line_of(launch, "float v = in0[k * 32 + i]").totals("device", "load").instructions == 4
    assert line_of(launch, "float v = in0[k * 32 + i]").totals("device", "load").lanes == 32 + 24 + 16 + 8
    assert line_of(launch, "acc += in1[k * 32 + i]").totals("device", "load").instructions == 3
    assert line_of(launch, "acc += in1[k * 32 + i]").totals("device", "load").lanes == 24 + 16 + 8
