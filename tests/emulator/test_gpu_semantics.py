"""Metal's execution semantics in the emulator, each with a small kernel checked against NumPy.

Dispatch and attributes, threadgroup memory and barriers, SIMD-group and quad
functions, atomics, half/bfloat and vector types, threadgroup order, math mode.
Kernels go through `harness.run_kernel` (the package's generator, then
`runtime.launch` directly), so the front end's call handling stays out of these.
"""

from __future__ import annotations

import numpy as np
import pytest

from emulator.harness import run_kernel
from mlx_embag.emulator import runtime

# ---------------------------------------------------------------- dispatch and attributes
ATTR_SRC = """
  uint3 g = thread_position_in_grid;
  uint lin = g.x + g.y * threads_per_grid.x + g.z * threads_per_grid.x * threads_per_grid.y;
  device uint* o = out + lin * 40;
  uint3 v[11] = {thread_position_in_grid, thread_position_in_threadgroup, threadgroup_position_in_grid,
                 threads_per_threadgroup, dispatch_threads_per_threadgroup, threadgroups_per_grid,
                 threads_per_grid, grid_size, grid_origin, uint3(0), uint3(0)};
  for (int k = 0; k < 9; ++k) { o[3*k] = v[k].x; o[3*k+1] = v[k].y; o[3*k+2] = v[k].z; }
  o[27] = thread_index_in_threadgroup;
  o[28] = thread_index_in_simdgroup;
  o[29] = simdgroup_index_in_threadgroup;
  o[30] = simdgroups_per_threadgroup;
  o[31] = dispatch_simdgroups_per_threadgroup;
  o[32] = thread_index_in_quadgroup;
  o[33] = quadgroup_index_in_threadgroup;
  o[34] = quadgroups_per_threadgroup;
  o[35] = dispatch_quadgroups_per_threadgroup;
  o[36] = threads_per_simdgroup;
  o[37] = thread_execution_width;
  o[38] = 7;
  o[39] = 9;
"""


def expected_attributes(grid, tg):
    tg = tuple(min(t, g) for t, g in zip(tg, grid))
    ntg = tuple(-(-g // t) for g, t in zip(grid, tg))
    out = np.zeros((grid[2], grid[1], grid[0], 40), np.uint32)
    for z in range(grid[2]):
        for y in range(grid[1]):
            for x in range(grid[0]):
                pos = (x, y, z)
                tgid = tuple(p // t for p, t in zip(pos, tg))
                tid = tuple(p % t for p, t in zip(pos, tg))
                act = tuple(min(t, g - i * t) for t, g, i in zip(tg, grid, tgid))
                n = act[0] * act[1] * act[2]
                lin = tid[0] + tid[1] * act[0] + tid[2] * act[0] * act[1]
                disp = tg[0] * tg[1] * tg[2]
                o = (
                    list(pos)
                    + list(tid)
                    + list(tgid)
                    + list(act)
                    + list(tg)
                    + list(ntg)
                    + list(grid)
                    + list(grid)
                    + [0, 0, 0]
                )
                o += [
                    lin,
                    lin % 32,
                    lin // 32,
                    -(-n // 32),
                    -(-disp // 32),
                    lin % 4,
                    lin // 4,
                    -(-n // 4),
                    -(-disp // 4),
                    32,
                    32,
                    7,
                    9,
                ]
                out[z, y, x] = o
    return out.reshape(-1)


@pytest.mark.parametrize(
    "grid,tg",
    [((10, 7, 3), (4, 4, 2)), ((70, 1, 1), (64, 1, 1)), ((2, 1, 1), (2, 1, 1)), ((5, 3, 1), (8, 8, 1))],
)
def test_every_attribute_with_partial_edge_threadgroups(grid, tg):
    n = grid[0] * grid[1] * grid[2]
    (out,) = run_kernel(
        "attrs",
        [("dummy", np.zeros(8, np.float32))],
        [("out", (n * 40,), "uint32_t")],
        ATTR_SRC,
        grid=grid,
        threadgroup=tg,
        seed=5,
    )
    np.testing.assert_array_equal(out, expected_attributes(grid, tg))


def test_threadgroup_over_1024_threads_is_refused():
    with pytest.raises(ValueError, match=r"Thread group size \(2048\) is greater than  the maximum"):
        run_kernel(
            "attrs",
            [("dummy", np.zeros(8, np.float32))],
            [("out", (40,), "uint32_t")],
            ATTR_SRC,
            grid=(1, 1, 1),
            threadgroup=(1024, 2, 1),
        )


def test_empty_grid_runs_nothing():
    (out,) = run_kernel(
        "attrs",
        [("dummy", np.zeros(8, np.float32))],
        [("out", (40,), "uint32_t")],
        ATTR_SRC,
        grid=(0, 1, 1),
        threadgroup=(32, 1, 1),
        init=3,
    )
    assert (out == 3).all()


ELEMENTWISE = """
  uint elem = thread_position_in_grid.x;
  T tmp = inp[elem];
  out[elem] = static_cast<O>(metal::exp(tmp) * s);
"""


@pytest.mark.parametrize("in_t,out_t", [("float", "float"), ("float16_t", "float16_t")])
def test_template_elementwise_with_scalar_and_constant_inputs(in_t, out_t):
    x = np.linspace(-3, 3, 1001).astype(np.float32 if in_t == "float" else np.float16)
    (out,) = run_kernel(
        "myexp",
        [("inp", x), ("s", np.float32(0.5))],
        [("out", x.shape, out_t)],
        ELEMENTWISE,
        grid=(x.size, 1, 1),
        threadgroup=(256, 1, 1),
        template=[("T", "float"), ("O", out_t)],
    )
    ref = np.exp(x.astype(np.float32)) * np.float32(0.5)
    np.testing.assert_allclose(
        out.astype(np.float32), ref.astype(out.dtype), rtol=1e-6 if in_t == "float" else 1e-3
    )


def test_small_input_in_constant_address_space():
    idx = np.array([3, 1, 2], np.int64)  # < 8 elements: `const constant int64_t*`
    w = np.arange(40, dtype=np.float32)
    src = """
  uint i = thread_position_in_grid.x;
  out[i] = w[idx[i] * 10 + 1];
"""
    (out,) = run_kernel(
        "gather",
        [("w", w), ("idx", idx)],
        [("out", (3,), "float")],
        src,
        grid=(3, 1, 1),
        threadgroup=(32, 1, 1),
    )
    np.testing.assert_array_equal(out, w[idx * 10 + 1])


def test_outputs_are_written_in_place_and_garbage_stays_visible():
    src = """
  uint i = thread_position_in_grid.x;
  if (i % 2 == 0) out[i] = float(i);
"""
    (out,) = run_kernel(
        "half_write",
        [("w", np.zeros(8, np.float32))],
        [("out", (10,), "float")],
        src,
        grid=(10, 1, 1),
        threadgroup=(4, 1, 1),
    )
    np.testing.assert_array_equal(out[::2], np.arange(0, 10, 2))
    assert np.isnan(out[1::2]).all()


# ---------------------------------------------------------------- threadgroup memory and barriers
TG_SRC = """
  threadgroup float buf[64];
  threadgroup int count;
  uint t = thread_index_in_threadgroup;
  uint n = threads_per_threadgroup.x;
  float before = buf[t];             // garbage: never written in this threadgroup yet
  if (t == 0) count = 0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  buf[t] = x[thread_position_in_grid.x];
  threadgroup float* p = &buf[0];   // a pointer into threadgroup memory
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[thread_position_in_grid.x] = p[n - 1 - t];
  stale[thread_position_in_grid.x] = before;
"""


def test_threadgroup_array_is_shared_private_and_repoisoned():
    x = np.arange(150, dtype=np.float32)
    out, stale = run_kernel(
        "tgrev",
        [("x", x)],
        [("out", (150,), "float"), ("stale", (150,), "float")],
        TG_SRC,
        grid=(150, 1, 1),
        threadgroup=(64, 1, 1),
        seed=1,
        workers=1,
    )
    ref = np.concatenate([x[0:64][::-1], x[64:128][::-1], x[128:150][::-1]])
    np.testing.assert_array_equal(out, ref)
    # Each threadgroup starts from garbage, never the previous group's data.
    assert np.isnan(stale).all()


def test_barrier_skipped_by_returned_threads_is_an_error():
    src = """
  uint t = thread_index_in_threadgroup;
  if (t >= 16) return;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[t] = 1.0f;
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `early_return`.*returned without reaching it"):
        run_kernel(
            "early_return",
            [("x", np.zeros(8, np.float32))],
            [("out", (64,), "float")],
            src,
            grid=(64, 1, 1),
            threadgroup=(64, 1, 1),
        )


def test_threads_at_different_barriers_is_an_error():
    src = """
  uint t = thread_index_in_threadgroup;
  if (t % 2) { threadgroup_barrier(mem_flags::mem_threadgroup); }
  else { threadgroup_barrier(mem_flags::mem_device); }
  out[t] = 1.0f;
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `two_barriers`.*different threadgroup_barrier"):
        run_kernel(
            "two_barriers",
            [("x", np.zeros(8, np.float32))],
            [("out", (64,), "float")],
            src,
            grid=(64, 1, 1),
            threadgroup=(64, 1, 1),
        )


def test_simd_function_not_reached_by_all_live_lanes_is_an_error():
    src = """
  uint l = thread_index_in_simdgroup;
  float v = 1.0f;
  if (l < 16) v = simd_sum(v);
  out[thread_position_in_grid.x] = v;
"""
    with pytest.raises(RuntimeError, match=r"(?s)kernel `divergent_simd`"):
        run_kernel(
            "divergent_simd",
            [("x", np.zeros(8, np.float32))],
            [("out", (64,), "float")],
            src,
            grid=(64, 1, 1),
            threadgroup=(64, 1, 1),
        )


def test_simdgroup_barrier_and_loop_of_barriers():
    src = """
  threadgroup float acc[128];
  uint t = thread_index_in_threadgroup;
  acc[t] = x[thread_position_in_grid.x];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint s = threads_per_threadgroup.x / 2; s > 0; s >>= 1) {
    if (t < s) acc[t] += acc[t + s];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  simdgroup_barrier(mem_flags::mem_none);
  if (t == 0) out[threadgroup_position_in_grid.x] = acc[0];
"""
    x = np.random.default_rng(0).integers(0, 100, 512).astype(np.float32)
    (out,) = run_kernel(
        "tree", [("x", x)], [("out", (4,), "float")], src, grid=(512, 1, 1), threadgroup=(128, 1, 1), seed=2
    )
    np.testing.assert_array_equal(out, x.reshape(4, 128).sum(1))


# ---------------------------------------------------------------- SIMD-group functions
SIMD_SRC = """
  uint l = thread_index_in_simdgroup;
  uint i = thread_position_in_grid.x;
  T v = x[i];
  T p = (i % 8 == 0) ? T(2) : T(1);
  device T* o = out + i * 14;
  o[0] = simd_sum(v);
  o[1] = simd_max(v);
  o[2] = simd_min(v);
  o[3] = simd_product(p);
  o[4] = simd_prefix_inclusive_sum(v);
  o[5] = simd_prefix_exclusive_sum(v);
  o[6] = simd_shuffle(v, (l * 7 + 3) % 16);
  o[7] = simd_shuffle_down(v, 3);
  o[8] = simd_shuffle_up(v, 5);
  o[9] = simd_shuffle_xor(v, 1);
  o[10] = simd_broadcast(v, 2);
  o[11] = T(uint(uint64_t(simd_ballot(v > T(0)))) & 0xffu);
  o[12] = T(simd_any(v > T(3)) ? 1 : 0);
  o[13] = T(simd_all(v < T(5)) ? 1 : 0) + T(simd_all(v < T(4)) ? 2 : 0);
"""


def simd_reference(x, live):
    """NumPy model of one SIMD-group with `live` lanes (x has `live` entries)."""
    n = live
    o = np.zeros((n, 14), np.float64)
    xv = x.astype(np.float64)
    p = np.array([2.0 if i % 8 == 0 else 1.0 for i in range(n)])
    for l in range(n):
        o[l, 0] = xv.sum()
        o[l, 1] = xv.max()
        o[l, 2] = xv.min()
        o[l, 3] = p.prod()
        o[l, 4] = xv[: l + 1].sum()
        o[l, 5] = xv[:l].sum()
        o[l, 6] = xv[(l * 7 + 3) % 16]
        o[l, 7] = xv[l + 3] if l + 3 < 32 else xv[l]
        o[l, 8] = xv[l - 5] if l >= 5 else xv[l]
        o[l, 9] = xv[l ^ 1]
        o[l, 10] = xv[2]
        o[l, 11] = sum(1 << k for k in range(min(n, 8)) if xv[k] > 0)
        o[l, 12] = float((xv > 3).any())
        o[l, 13] = float((xv < 5).all()) + 2 * float((xv < 4).all())
    return o


@pytest.mark.parametrize(
    "T,dtype",
    [("float", np.float32), ("float16_t", np.float16), ("int32_t", np.int32), ("uint32_t", np.uint32)],
)
def test_simd_functions_match_lockstep_model(T, dtype):
    rng = np.random.default_rng(1)
    lo = 0 if T == "uint32_t" else -2
    x = rng.integers(lo, 5, 64).astype(dtype)
    # 64 threads, threadgroups of 64: two full SIMD-groups.
    (out,) = run_kernel(
        "simd_ops",
        [("x", x)],
        [("out", (64 * 14,), T)],
        SIMD_SRC.replace("T(uint(", "T(uint("),
        grid=(64, 1, 1),
        threadgroup=(64, 1, 1),
        template=[("T", T)],
    )
    out = out.reshape(64, 14).astype(np.float64)
    for g in range(2):
        ref = simd_reference(x[g * 32 : (g + 1) * 32], 32)
        if T == "uint32_t":
            ref = np.where(ref < 0, ref + 2.0**32, ref)
        np.testing.assert_array_equal(out[g * 32 : (g + 1) * 32], ref, err_msg=f"SIMD-group {g}")


def test_simd_functions_in_a_partial_simdgroup_use_live_lanes_only():
    src = """
  uint i = thread_position_in_grid.x;
  if (i >= n) return;                      // lanes that return are no longer live
  float v = x[i];
  out[i * 4 + 0] = simd_sum(v);
  out[i * 4 + 1] = simd_max(v);
  out[i * 4 + 2] = simd_prefix_exclusive_sum(v);
  out[i * 4 + 3] = simd_shuffle(v, 20);    // lane 20 does not exist in this group: garbage
"""
    x = np.arange(1, 41, dtype=np.float32)
    (out,) = run_kernel(
        "simd_partial",
        [("x", x), ("n", np.int32(37))],
        [("out", (40 * 4,), "float")],
        src,
        grid=(40, 1, 1),
        threadgroup=(64, 1, 1),
    )
    out = out.reshape(40, 4)
    np.testing.assert_array_equal(out[:32, 0], np.full(32, x[:32].sum()))
    np.testing.assert_array_equal(out[32:37, 0], np.full(5, x[32:37].sum()))
    np.testing.assert_array_equal(out[32:37, 1], np.full(5, x[36]))
    np.testing.assert_array_equal(out[32:37, 2], np.cumsum(np.r_[0, x[32:36]]))
    np.testing.assert_array_equal(out[:32, 3], np.full(32, x[20]))
    assert np.isnan(out[32:37, 3]).all()
    assert np.isnan(out[37:]).all()  # returned threads wrote nothing


SUM_ALL_SRC = """
  threadgroup float partial[32];
  uint gid = thread_position_in_grid.x;
  float v = gid < n ? x[gid] : 0.0f;
  float s = simd_sum(v);
  if (thread_index_in_simdgroup == 0) partial[simdgroup_index_in_threadgroup] = s;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simdgroup_index_in_threadgroup == 0) {
    float q = thread_index_in_simdgroup < simdgroups_per_threadgroup ? partial[thread_index_in_simdgroup] : 0.0f;
    q = simd_sum(q);
    if (thread_index_in_threadgroup == 0) atomic_fetch_add_explicit(&total[0], q, memory_order_relaxed);
  }
"""


def test_simd_reduction_over_many_threadgroups_is_fast_and_exact():
    x = np.random.default_rng(2).integers(0, 8, 300_000).astype(np.float32)
    (total,) = run_kernel(
        "sum_all",
        [("x", x), ("n", np.int32(x.size))],
        [("total", (1,), "float")],
        SUM_ALL_SRC,
        grid=(x.size, 1, 1),
        threadgroup=(1024, 1, 1),
        atomic_outputs=True,
        init=0.0,
        seed=3,
    )
    assert total[0] == x.sum(dtype=np.float64)


# ---------------------------------------------------------------- atomics
def test_atomic_outputs_histogram_is_exact_under_concurrency():
    src = """
  uint i = thread_position_in_grid.x;
  atomic_fetch_add_explicit(&counts[idx[i]], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&sums[idx[i]], 0.5f, memory_order_relaxed);
"""
    idx = np.random.default_rng(3).integers(0, 5, 100_000).astype(np.int32)
    counts, sums = run_kernel(
        "hist",
        [("idx", idx)],
        [("counts", (5,), "int32_t"), ("sums", (5,), "float")],
        src,
        grid=(idx.size, 1, 1),
        threadgroup=(64, 1, 1),
        atomic_outputs=True,
        init=0,
        workers=2,
        seed=4,
    )
    ref = np.bincount(idx, minlength=5)
    np.testing.assert_array_equal(counts, ref)
    np.testing.assert_array_equal(sums, ref * 0.5)


def test_atomics_through_casts_of_device_pointers():
    src = """
  uint i = thread_position_in_grid.x;
  uint v = vals[i];
  device atomic_uint* u = (device atomic_uint*)uout;
  atomic_fetch_or_explicit(&u[0], v, memory_order_relaxed);
  atomic_fetch_and_explicit(&u[1], ~(1u << (v % 32)), memory_order_relaxed);
  atomic_fetch_xor_explicit(&u[2], v, memory_order_relaxed);
  atomic_fetch_max_explicit(&u[3], v, memory_order_relaxed);
  atomic_fetch_min_explicit(&u[4], v, memory_order_relaxed);
  atomic_fetch_sub_explicit(&u[5], 1u, memory_order_relaxed);
  device atomic<int>* s = reinterpret_cast<device atomic<int>*>(iout);
  atomic_fetch_add_explicit(&s[0], int(v) - 50, memory_order_relaxed);
  if (i == 7) atomic_store_explicit(&s[1], 1234, memory_order_relaxed);
  device atomic_float* f = (device atomic_float*)fout;
  // float maximum with a compare-and-swap loop
  float mine = float(v) * 0.25f;
  float cur = atomic_load_explicit(&f[0], memory_order_relaxed);
  while (cur < mine && !atomic_compare_exchange_weak_explicit(&f[0], &cur, mine, memory_order_relaxed,
                                                              memory_order_relaxed)) {}
  float old = atomic_exchange_explicit(&f[1], mine, memory_order_relaxed);
  (void)old;
"""
    vals = np.random.default_rng(4).integers(0, 100, 5000).astype(np.uint32)
    uinit = np.array([0, 0xFFFFFFFF, 0, 0, 0xFFFFFFFF, 5000], np.uint32)
    iinit = np.array([0, 0], np.int32)
    finit = np.array([-1.0, -1.0], np.float32)
    from emulator.harness import generate
    from mlx_embag.emulator import runtime as rt

    kname, text = generate(
        "atom_cast",
        [("vals", vals, "uint32_t")],
        [("uout", "uint32_t"), ("iout", "int32_t"), ("fout", "float")],
        src,
    )
    u, i32, f = uinit.copy(), iinit.copy(), finit.copy()
    rt.launch(
        display_name="atom_cast",
        kernel_name=kname,
        kernel_source=text,
        buffers=[vals, u, i32, f],
        grid=(vals.size, 1, 1),
        threadgroup=(32, 1, 1),
        workers=2,
    )
    bits = 0
    for v in vals:
        bits |= 1 << (int(v) % 32)
    xor = 0
    for v in vals:
        xor ^= int(v)
    orv = 0
    for v in vals:
        orv |= int(v)
    assert u[0] == orv and u[1] == (0xFFFFFFFF & ~bits) and u[2] == xor
    assert u[3] == vals.max() and u[4] == vals.min() and u[5] == 0
    assert i32[0] == int(vals.astype(np.int64).sum() - 50 * vals.size) and i32[1] == 1234
    assert f[0] == vals.max() * 0.25 and f[1] in set(vals.astype(np.float32) * 0.25)


# ---------------------------------------------------------------- types and vectors
def bf16_rne(x32):
    b = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def test_half_and_bfloat_conversions_round_to_nearest_even():
    src = """
  uint i = thread_position_in_grid.x;
  h[i] = half(x[i]);
  b[i] = bfloat16_t(x[i]);
  back[i] = float(bfloat16_t(x[i])) + float(as_type<bfloat>(bits[i]));
"""
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.standard_normal(500).astype(np.float32),
            # exact ties for bfloat: low 16 bits 0x8000, even and odd mantissa
            np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0xBF818000], np.uint32).view(np.float32),
            np.array([1 + 2**-11, 1 + 3 * 2**-11, 65519.0, 65520.0, 1e-8], np.float32),
        ]
    )
    bits = bf16_rne(x)
    h, b, back = run_kernel(
        "conv",
        [("x", x), ("bits", bits, "uint16_t")],
        [("h", x.shape, "float16_t"), ("b", x.shape, "bfloat16_t"), ("back", x.shape, "float")],
        src,
        grid=(x.size, 1, 1),
        threadgroup=(128, 1, 1),
    )
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, x.astype(np.float16))
    np.testing.assert_array_equal(b, bits)
    as_f = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(back, as_f + as_f)


def test_vectors_loads_swizzles_and_conversions():
    src = """
  uint i = thread_position_in_grid.x;
  float4 a = *(const device float4*)(x + 4 * i);
  half4 hv = ((const device half4*)hx)[i];
  float4 b = float4(hv);
  float2 lo = a.xy, hi = a.zw;
  float4 r = a.wzyx + b;
  r.xy += lo * hi;
  int2 k = int2(int(i), 3);
  uint3 u = uint3(k.x, k.y, 7u);
  float3 c = float3(a.xyz) * float3(2.0f);
  ((device float4*)out)[i] = r;
  *(device float4*)(misc + 4 * i) = float4(float(k.x + k.y), float(u.z), dot(c, float3(1.0f)), length(float2(3.0f, 4.0f)));
"""
    x = np.arange(32, dtype=np.float32)
    hx = (np.arange(32) * 0.5).astype(np.float16)
    out, misc = run_kernel(
        "vec",
        [("x", x), ("hx", hx)],
        [("out", (8, 4), "float"), ("misc", (8, 4), "float")],
        src,
        grid=(8, 1, 1),
        threadgroup=(8, 1, 1),
    )
    a = x.reshape(8, 4)
    b = hx.reshape(8, 4).astype(np.float32)
    r = a[:, ::-1] + b
    r[:, :2] += a[:, :2] * a[:, 2:]
    np.testing.assert_array_equal(out, r)
    i = np.arange(8)
    np.testing.assert_array_equal(misc[:, 0], i + 3)
    np.testing.assert_array_equal(misc[:, 1], 7)
    np.testing.assert_allclose(misc[:, 2], 2 * a[:, :3].sum(1))
    np.testing.assert_array_equal(misc[:, 3], 5)


MATH_SRC = """
  uint i = thread_position_in_grid.x;
  float v = x[i];
  device float* o = out + i * 16;
  o[0] = metal::exp(v);
  o[1] = metal::precise::log(metal::abs(v) + 1.0f);
  o[2] = metal::fast::sqrt(metal::abs(v));
  o[3] = metal::rsqrt(metal::abs(v) + 1.0f);
  o[4] = metal::pow(metal::abs(v), 1.5f);
  o[5] = metal::tanh(v);
  o[6] = metal::max(v, 0.25f);
  o[7] = metal::min(v, 0.25f);
  o[8] = metal::clamp(v, -0.5f, 0.5f);
  o[9] = metal::fma(v, 2.0f, 1.0f);
  o[10] = metal::isnan(v) ? 1.0f : 0.0f;
  o[11] = metal::isinf(v) ? 1.0f : 0.0f;
  o[12] = Limits<float>::min;
  o[13] = Limits<float>::finite_max;
  o[14] = float(Limits<int>::max - metal::numeric_limits<int>::max());
  o[15] = float(metal::abs(int(v * 4.0f)));
"""


def test_math_functions_and_limits():
    x = np.array([-2.0, -0.5, 0.0, 0.3, 1.0, 3.5, np.inf, np.nan], np.float32)
    (out,) = run_kernel(
        "math",
        [("x", x)],
        [("out", (x.size * 16,), "float")],
        MATH_SRC,
        grid=(x.size, 1, 1),
        threadgroup=(8, 1, 1),
    )
    o = out.reshape(-1, 16)
    with np.errstate(all="ignore"):
        ref = np.stack(
            [
                np.exp(x),
                np.log(np.abs(x) + 1),
                np.sqrt(np.abs(x)),
                1 / np.sqrt(np.abs(x) + 1),
                np.abs(x) ** 1.5,
                np.tanh(x),
                np.fmax(x, 0.25),
                np.fmin(x, 0.25),
                np.clip(x, -0.5, 0.5),
                x * 2 + 1,
                np.isnan(x),
                np.isinf(x),
                np.full(x.shape, -np.inf),
                np.full(x.shape, np.finfo(np.float32).max),
                np.zeros(x.shape),
                np.abs(np.where(np.isfinite(x), (x * 4), 0).astype(np.int64)),
            ],
            1,
        ).astype(np.float32)
    finite = np.isfinite(x)
    np.testing.assert_allclose(o[finite], ref[finite], rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(o[~finite][:, 10:14], ref[~finite][:, 10:14])


def test_mlx_helpers_elem_to_loc_ceildiv_workperthread():
    src = """
  uint i = thread_position_in_grid.x;
  int64_t loc = elem_to_loc(int64_t(i), x_shape, x_strides, x_ndim);
  out[i] = x[loc] + float(ceildiv(int(i), 4)) * 1000.0f + float(WorkPerThread<half>::n) * 100000.0f;
"""
    base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    from emulator.harness import generate

    kname, text = generate("e2l", [("x", base, "float")], [("out", "float")], src)
    view = base.transpose(2, 0, 1)  # logical (5, 3, 4), strided
    shape = np.array(view.shape, np.int32)
    strides = np.array([s // 4 for s in view.strides], np.int64)
    out = np.full(60, np.nan, np.float32)
    runtime.launch(
        display_name="e2l",
        kernel_name=kname,
        kernel_source=text,
        buffers=[base.reshape(-1), shape, strides, np.array([3], np.int32), out],
        grid=(60, 1, 1),
        threadgroup=(32, 1, 1),
    )
    i = np.arange(60)
    np.testing.assert_array_equal(out, view.reshape(-1) + (-(-i // 4)) * 1000 + 4 * 100000)


# ---------------------------------------------------------------- threadgroup order and math mode
RACE_SRC = """
  // Each threadgroup extends a running total left by the previous one: correct only if
  // threadgroups run in grid order, which Metal never promises.
  uint g = threadgroup_position_in_grid.x;
  if (thread_index_in_threadgroup == 0) out[g] = (g == 0 ? 0.0f : out[g - 1]) + x[g];
"""


def test_seeded_threadgroup_order_exposes_an_order_dependent_kernel():
    x = np.ones(64, np.float32)

    def run(seed):
        (out,) = run_kernel(
            "order_race",
            [("x", x)],
            [("out", (64,), "float")],
            RACE_SRC,
            grid=(64 * 4, 1, 1),
            threadgroup=(4, 1, 1),
            seed=seed,
            workers=1,
            init=0.0,
        )
        return out

    np.testing.assert_array_equal(run(None), np.arange(1, 65))  # grid order hides the bug
    shuffled = run(7)
    assert not np.array_equal(shuffled, np.arange(1, 65))  # a random order exposes it
    np.testing.assert_array_equal(run(7), shuffled)  # and the seed reproduces it


@pytest.mark.parametrize("mode,expected", [("safe", 0), ("relaxed", 0), ("fast", 1)])
def test_fast_math_macro_only_in_fast_mode(mode, expected):
    src = """
#ifdef __FAST_MATH__
  out[0] = 1;
#else
  out[0] = 0;
#endif
"""
    (out,) = run_kernel(
        "mathmode",
        [("x", np.zeros(8, np.float32))],
        [("out", (1,), "int32_t")],
        src,
        grid=(1, 1, 1),
        threadgroup=(1, 1, 1),
        math_mode=mode,
    )
    assert out[0] == expected


def test_half_and_bfloat_arithmetic_rounds_each_operation():
    src = """
  half a = 2048.0h;
  half one = 1h;
  bfloat16_t b = bfloat16_t(256.0f);
  out[0] = float((a + one) - a);          // 2049 is not a half: 0 on a GPU, 1 with excess precision
  out[1] = float((b + bfloat16_t(1.0f)) - b);
  out[2] = float(half(0.1f) * half(3.0f));
  out[3] = float(x[0] + x[1]);            // half + half stays half
"""
    x = np.array([0.1, 0.2] + [0] * 6, np.float16)
    (out,) = run_kernel(
        "half_ops",
        [("x", x)],
        [("out", (4,), "float")],
        src + "  (void)thread_position_in_grid;",
        header="#include <metal_stdlib>\nusing namespace metal;\n",
        grid=(1, 1, 1),
        threadgroup=(1, 1, 1),
    )
    h = np.float16
    np.testing.assert_array_equal(out, [0.0, 0.0, float(h(0.1) * h(3.0)), float(x[0] + x[1])])


def test_quad_functions():
    src = """
  uint i = thread_position_in_grid.x;
  float v = x[i];
  out[i * 3 + 0] = quad_sum(v);
  out[i * 3 + 1] = quad_shuffle_xor(v, 2);
  out[i * 3 + 2] = float(thread_index_in_quadgroup + 10 * quadgroup_index_in_threadgroup);
"""
    x = np.arange(16, dtype=np.float32) ** 2
    (out,) = run_kernel(
        "quads", [("x", x)], [("out", (48,), "float")], src, grid=(16, 1, 1), threadgroup=(16, 1, 1)
    )
    out = out.reshape(16, 3)
    i = np.arange(16)
    np.testing.assert_array_equal(out[:, 0], x.reshape(4, 4).sum(1).repeat(4))
    np.testing.assert_array_equal(out[:, 1], x[(i & ~3) | ((i ^ 2) & 3)])
    np.testing.assert_array_equal(out[:, 2], i % 4 + 10 * (i // 4))


# Every shim function family, instantiated for the types Metal allows, in one kernel: the
# templates only fail when instantiated, so this guards the API surface.
SURFACE_SRC = r"""
  uint i = thread_position_in_grid.x;
  float f = x[i];
  half h = half(f);
  bfloat16_t b = bfloat16_t(f);
  float4 f4 = float4(f, f + 1, f + 2, f + 3);
  half4 h4 = half4(f4);
  bfloat4 b4 = bfloat4(f4);
  float acc = 0;
#define ALL1(fn) acc += float(metal::fn(f)) + float(metal::fn(h)) + float(metal::fn(b)) + metal::fn(f4).x + float(metal::fn(h4).y) + float(metal::fn(b4).z) + float(metal::precise::fn(f)) + float(metal::fast::fn(h));
  ALL1(fabs) ALL1(exp) ALL1(exp2) ALL1(exp10) ALL1(sin) ALL1(cos) ALL1(tanh) ALL1(atan) ALL1(ceil) ALL1(floor)
  ALL1(round) ALL1(rint) ALL1(trunc) ALL1(fract) ALL1(sign) ALL1(saturate) ALL1(sinpi)
  acc += metal::pow(f, 2.0f) + float(metal::pow(h, h)) + float(metal::fmax(b, b)) + metal::fmin(f4, f4).w;
  acc += metal::fma(f, f, f) + float(metal::fma(h, h, h)) + metal::mix(f4, f4, f4).x + metal::clamp(f4, 0.0f, 1.0f).y;
  acc += float(metal::max(h, h)) + float(metal::min(b, b)) + metal::max(f4, 1.0f).x + metal::min(int(i), 3) + metal::max(uint(i), 2u);
  acc += float(metal::abs(int64_t(-5))) + float(metal::max(int64_t(i), int64_t(1))) + float(metal::clamp(int(i), 0, 2));
  acc += metal::select(1.0f, 2.0f, f > 0) + metal::select(f4, f4 + 1, f4 > 1.5f).x + (metal::all(f4 > -1.0f) ? 1 : 0) + (metal::any(h4 > half(2)) ? 1 : 0);
  acc += metal::dot(f4, f4) + metal::length(f4) + metal::normalize(f4).x + metal::distance(f4, f4) + metal::cross(f4.xyz, f4.zyx).x;
  acc += float(metal::popcount(i)) + float(metal::clz(i + 1)) + float(metal::ctz(i + 1)) + float(metal::isnan(h)) + float(metal::isinf(b)) + float(metal::signbit(f));
  acc += float(metal::any(metal::isnan(f4))) + metal::numeric_limits<half>::max() + float(metal::numeric_limits<bfloat>::epsilon()) + float(Limits<bfloat16_t>::finite_max > 0);
  acc += float(simd_sum(b)) + simd_sum(f4).y + float(simd_max(h4).x) + float(simd_shuffle_down(int64_t(i), 1)) + float(simd_shuffle(uint64_t(i), 0));
  acc += float(simd_prefix_inclusive_product(h)) + float(simd_broadcast_first(i)) + float(simd_is_first()) + float(simd_and(i)) + float(simd_or(i)) + float(simd_xor(i));
  acc += float(simd_shuffle_rotate_down(f, 1)) + float(simd_shuffle_and_fill_up(f, 0.0f, 1)) + float(simd_shuffle_and_fill_down(f, 0.0f, 1)) + float(uint64_t(simd_active_threads_mask()));
  acc += float(quad_prefix_exclusive_sum(f)) + float(quad_any(f > 1)) + float(quad_all(f > 1)) + float(quad_max(h)) + float(quad_broadcast(f, 1));
  acc += log1p(f) + float(log1p(b)) + hypot(f, 1.0f) + float(ceildiv(i, 4u)) + float(bfloat16_to_uint16(b)) + float(uint16_to_bfloat16(3));
  complex64_t c = complex64_t(f, 1.0f) * complex64_t(2.0f, 0.0f) + complex64_t(1.0f, 0.0f);
  acc += c.real + c.imag + float(cast_to<bool>(f)) + float(ConditionalType<true, int, float>::type(3));
  acc += float(as_type<uint>(f) & 1u) + float(as_type<ushort>(h) & 1) + float(as_type<half2>(as_type<uint>(f)).x);
  uint2 u2 = uint2(i, 2); int4 k4 = int4(u2.x, u2.y, 1, 0); ushort2 s2 = ushort2(k4.zw); char4 c4 = char4(0); uchar3 uc3 = uchar3(1); long2 l2 = long2(int64_t(i)); ulong3 ul3 = ulong3(1);
  acc += float(k4.x + s2.y + c4.w + uc3.z + l2.y + ul3.x) + float(short3(1, 2, 3).z);
  threadgroup atomic<uint> tcount;
  if (thread_index_in_threadgroup == 0) atomic_store_explicit(&tcount, 0u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup | mem_flags::mem_device);
  atomic_fetch_add_explicit(&tcount, 1u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  tc[i] = atomic_load_explicit(&tcount, memory_order_relaxed);
  device atomic<int>* al = (device atomic<int>*)lout;     // low half of lout[0] (no 64-bit atomic add in Metal)
  atomic_fetch_add_explicit(al, 1, memory_order_relaxed);
  device atomic_bool* ab = (device atomic_bool*)(lout + 1);
  atomic_store_explicit(ab, true, memory_order_relaxed);
  atomic_thread_fence(mem_flags::mem_device, memory_order_seq_cst);
  out[i] = isfinite(acc) ? 1.0f : acc;
  MLX_MTL_PRAGMA_UNROLL
  for (int k = 0; k < REDUCE_N_READS; ++k) out[i] += 0.0f;
"""


def test_shim_api_surface_compiles_and_runs():
    x = np.linspace(0.1, 2, 64).astype(np.float32)
    out, lout, tc = run_kernel(
        "surface",
        [("x", x)],
        [("out", (64,), "float"), ("lout", (2,), "int64_t"), ("tc", (64,), "uint32_t")],
        SURFACE_SRC,
        grid=(64, 1, 1),
        threadgroup=(64, 1, 1),
        init=0,
    )
    np.testing.assert_array_equal(lout, [64, 1])  # 32-bit atomic add into an int64 buffer, atomic_bool store
    np.testing.assert_array_equal(tc, 64)  # threadgroup atomic counted every thread
    assert (out != 0).all()  # every thread got to its last store


@pytest.mark.parametrize("n", [1, 3, 1000, 4097])
def test_seeded_order_runs_every_threadgroup_exactly_once(n):
    src = """
  device atomic_uint* c = (device atomic_uint*)counter;
  order[threadgroup_position_in_grid.x] = atomic_fetch_add_explicit(c, 1u, memory_order_relaxed);
"""

    def run(seed):
        order, _ = run_kernel(
            "order_rec",
            [("x", np.zeros(8, np.float32))],
            [("order", (n,), "uint32_t"), ("counter", (1,), "uint32_t")],
            src,
            grid=(n, 1, 1),
            threadgroup=(1, 1, 1),
            seed=seed,
            workers=1,
            init=0,
        )
        return order

    natural, shuffled = run(None), run(11)
    np.testing.assert_array_equal(natural, np.arange(n))
    np.testing.assert_array_equal(np.sort(shuffled), np.arange(n))
    if n > 3:
        assert not np.array_equal(shuffled, natural)
        np.testing.assert_array_equal(run(11), shuffled)
