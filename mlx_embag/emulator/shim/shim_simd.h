// shim_simd.h: barriers and SIMD-group / quad-group functions, synchronised by the runtime.
// Part of metal_shim.h.
#ifndef MLX_EMBAG_SHIM_SIMD_H
#define MLX_EMBAG_SHIM_SIMD_H
#pragma clang system_header

namespace metal {
// ---------------------------------------------------------------- barriers
enum class mem_flags : uint {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16,
};
EMU_INLINE constexpr mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(uint(a) | uint(b)); }
EMU_INLINE constexpr mem_flags operator&(mem_flags a, mem_flags b) { return mem_flags(uint(a) & uint(b)); }
// The call site (line and column in the kernel source, from a default
// argument) identifies a barrier or SIMD call: threads waiting at different
// sites diverged. (A return address would not do: clang merges identical
// calls in the two arms of an if.)
#define EMU_SITE unsigned __emu_site = __builtin_LINE() * 4096u + __builtin_COLUMN()
EMU_INLINE void atomic_thread_fence(mem_flags, memory_order, thread_scope = thread_scope::thread_scope_device) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
EMU_INLINE void threadgroup_barrier(mem_flags, EMU_SITE) { __emu_barrier(0, __emu_site); }
EMU_INLINE void simdgroup_barrier(mem_flags, EMU_SITE) { __emu_barrier(1, __emu_site); }

// ---------------------------------------------------------------- SIMD-group functions
// Every lane publishes its value and waits for all live lanes of its
// SIMD-group at the same call site (the runtime checks this), then computes
// its own result from the exchange area. Lanes that do not exist or have
// returned read as garbage (all bits set: NaN for floats).
template <class T> struct __emu_lanes {
  const uchar* base;
  uint mask;
  uint lane;
  EMU_INLINE bool live(uint l) const { return l < 32 && ((mask >> l) & 1u); }
  EMU_INLINE T get(uint l) const {
    if (!live(l)) {
      uchar junk[sizeof(T)];
      for (uint i = 0; i < sizeof(T); ++i) junk[i] = 0xff;
      return __builtin_bit_cast(T, junk);
    }
    T v;
    __builtin_memcpy(&v, base + l * EMU_SIMD_SLOT_BYTES, sizeof(T));
    return v;
  }
};
template <class T> EMU_INLINE __emu_lanes<T> __emu_exchange(T x, int width, unsigned site) {
  static_assert(sizeof(T) <= EMU_SIMD_SLOT_BYTES, "SIMD value too large");
  __emu_lanes<T> r;
  r.base = (const uchar*)__emu_simd_exchange(&x, sizeof(T), &r.mask, &r.lane, width, site);
  return r;
}
template <class T> EMU_INLINE T __emu_add(T a, T b) { return a + b; }
template <class T> EMU_INLINE T __emu_mul(T a, T b) { return a * b; }
template <class T> EMU_INLINE T __emu_max(T a, T b) { return max(a, b); }
template <class T> EMU_INLINE T __emu_min(T a, T b) { return min(a, b); }
template <class T> EMU_INLINE T __emu_and(T a, T b) { return a & b; }
template <class T> EMU_INLINE T __emu_or(T a, T b) { return a | b; }
template <class T> EMU_INLINE T __emu_xor(T a, T b) { return a ^ b; }
// Reductions combine the live lanes pairwise (a tree, as hardware does), so
// float sums differ from a sequential loop by rounding only.
template <class T, T (*op)(T, T)> EMU_INLINE T __emu_reduce(const __emu_lanes<T>& L, uint lo, uint width) {
  T vals[32];
  bool have[32];
  for (uint i = 0; i < width; ++i) {
    have[i] = L.live(lo + i);
    if (have[i]) vals[i] = L.get(lo + i);
  }
  for (uint step = 1; step < width; step *= 2)
    for (uint i = 0; i + step < width; i += 2 * step) {
      if (have[i] && have[i + step]) vals[i] = op(vals[i], vals[i + step]);
      else if (have[i + step]) { vals[i] = vals[i + step]; have[i] = true; }
    }
  return vals[0];
}
#define EMU_SIMD_REDUCE(name, op)                                              \
  template <class T> EMU_INLINE T simd_##name(T x, EMU_SITE) {                            \
    auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);                                                \
    return __emu_reduce<T, op<T>>(L, 0, EMU_SIMD_WIDTH);                       \
  }                                                                            \
  template <class T> EMU_INLINE T quad_##name(T x, EMU_SITE) {                            \
    auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);                                \
    return __emu_reduce<T, op<T>>(L, L.lane & ~3u, EMU_QUAD_WIDTH);            \
  }
EMU_SIMD_REDUCE(sum, __emu_add)
EMU_SIMD_REDUCE(product, __emu_mul)
EMU_SIMD_REDUCE(max, __emu_max)
EMU_SIMD_REDUCE(min, __emu_min)
EMU_SIMD_REDUCE(and, __emu_and)
EMU_SIMD_REDUCE(or, __emu_or)
EMU_SIMD_REDUCE(xor, __emu_xor)
#undef EMU_SIMD_REDUCE
#define EMU_SIMD_PREFIX(name, op, inclusive, one)                              \
  template <class T> EMU_INLINE T simd_prefix_##name(T x, EMU_SITE) {                     \
    auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);                                                \
    T acc = T(one);                                                            \
    for (uint l = 0; l < L.lane + (inclusive ? 1u : 0u); ++l)                  \
      if (L.live(l)) acc = op(acc, L.get(l));                                  \
    return acc;                                                                \
  }                                                                            \
  template <class T> EMU_INLINE T quad_prefix_##name(T x, EMU_SITE) {                     \
    auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);                                \
    T acc = T(one);                                                            \
    for (uint l = L.lane & ~3u; l < L.lane + (inclusive ? 1u : 0u); ++l)       \
      if (L.live(l)) acc = op(acc, L.get(l));                                  \
    return acc;                                                                \
  }
EMU_SIMD_PREFIX(inclusive_sum, __emu_add<T>, true, 0)
EMU_SIMD_PREFIX(exclusive_sum, __emu_add<T>, false, 0)
EMU_SIMD_PREFIX(inclusive_product, __emu_mul<T>, true, 1)
EMU_SIMD_PREFIX(exclusive_product, __emu_mul<T>, false, 1)
#undef EMU_SIMD_PREFIX

template <class T> EMU_INLINE T simd_shuffle(T x, ushort lane, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  return L.get(lane);
}
template <class T> EMU_INLINE T simd_broadcast(T x, ushort lane, EMU_SITE) { return simd_shuffle(x, lane, __emu_site); }
template <class T> EMU_INLINE T simd_broadcast_first(T x, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  return L.get(L.mask ? (uint)__builtin_ctz(L.mask) : 0u);
}
// Lanes whose source lies outside the SIMD-group keep their own value (Metal:
// "does not modify the upper delta lanes").
template <class T> EMU_INLINE T simd_shuffle_down(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  uint src = L.lane + delta;
  return src >= EMU_SIMD_WIDTH ? x : L.get(src);
}
template <class T> EMU_INLINE T simd_shuffle_up(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  return delta > L.lane ? x : L.get(L.lane - delta);
}
template <class T> EMU_INLINE T simd_shuffle_xor(T x, ushort mask, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  uint src = (L.lane ^ mask) & (EMU_SIMD_WIDTH - 1);
  return L.get(src);
}
template <class T> EMU_INLINE T simd_shuffle_rotate_down(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  return L.get((L.lane + delta) % EMU_SIMD_WIDTH);
}
template <class T> EMU_INLINE T simd_shuffle_rotate_up(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_SIMD_WIDTH, __emu_site);
  return L.get((L.lane + EMU_SIMD_WIDTH - delta % EMU_SIMD_WIDTH) % EMU_SIMD_WIDTH);
}
template <class T> EMU_INLINE T simd_shuffle_and_fill_down(T x, T fill, ushort delta, EMU_SITE) {
  struct P { T a, b; };
  auto L = __emu_exchange(P{x, fill}, EMU_SIMD_WIDTH, __emu_site);
  uint src = L.lane + delta;
  return src < EMU_SIMD_WIDTH ? L.get(src).a : L.get(src - EMU_SIMD_WIDTH).b;
}
template <class T> EMU_INLINE T simd_shuffle_and_fill_up(T x, T fill, ushort delta, EMU_SITE) {
  struct P { T a, b; };
  auto L = __emu_exchange(P{x, fill}, EMU_SIMD_WIDTH, __emu_site);
  return delta <= L.lane ? L.get(L.lane - delta).a : L.get(L.lane + EMU_SIMD_WIDTH - delta).b;
}
template <class T> EMU_INLINE T quad_shuffle(T x, ushort lane, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);
  return L.get((L.lane & ~3u) + (lane & 3u));
}
template <class T> EMU_INLINE T quad_broadcast(T x, ushort lane, EMU_SITE) { return quad_shuffle(x, lane, __emu_site); }
template <class T> EMU_INLINE T quad_shuffle_down(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);
  uint q = L.lane & 3u;
  return q + delta >= 4 ? x : L.get(L.lane + delta);
}
template <class T> EMU_INLINE T quad_shuffle_up(T x, ushort delta, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);
  uint q = L.lane & 3u;
  return delta > q ? x : L.get(L.lane - delta);
}
template <class T> EMU_INLINE T quad_shuffle_xor(T x, ushort mask, EMU_SITE) {
  auto L = __emu_exchange(x, EMU_QUAD_WIDTH, __emu_site);
  return L.get((L.lane & ~3u) | ((L.lane ^ mask) & 3u));
}

struct simd_vote {
  typedef ulong vote_t;
  vote_t __v;
  uint __live;
  EMU_INLINE explicit constexpr operator vote_t() const { return __v; }
  EMU_INLINE bool all() const { return (uint)__v == __live; }
  EMU_INLINE bool any() const { return __v != 0; }
};
EMU_INLINE simd_vote simd_ballot(bool x, EMU_SITE) {
  auto L = __emu_exchange((uint)x, EMU_SIMD_WIDTH, __emu_site);
  uint bits = 0;
  for (uint l = 0; l < EMU_SIMD_WIDTH; ++l)
    if (L.live(l) && L.get(l)) bits |= 1u << l;
  return simd_vote{bits, L.mask};
}
EMU_INLINE simd_vote simd_active_threads_mask(EMU_SITE) {
  auto L = __emu_exchange(0u, EMU_SIMD_WIDTH, __emu_site);
  return simd_vote{L.mask, L.mask};
}
EMU_INLINE bool simd_any(bool x, EMU_SITE) { return simd_ballot(x, __emu_site).any(); }
EMU_INLINE bool simd_all(bool x, EMU_SITE) { return simd_ballot(x, __emu_site).all(); }
EMU_INLINE bool simd_is_first(EMU_SITE) {
  auto L = __emu_exchange(0u, EMU_SIMD_WIDTH, __emu_site);
  return L.mask && L.lane == (uint)__builtin_ctz(L.mask);
}
EMU_INLINE bool quad_any(bool x, EMU_SITE) {
  auto L = __emu_exchange((uint)x, EMU_QUAD_WIDTH, __emu_site);
  for (uint l = L.lane & ~3u; l < (L.lane & ~3u) + 4; ++l) if (L.live(l) && L.get(l)) return true;
  return false;
}
EMU_INLINE bool quad_all(bool x, EMU_SITE) {
  auto L = __emu_exchange((uint)x, EMU_QUAD_WIDTH, __emu_site);
  for (uint l = L.lane & ~3u; l < (L.lane & ~3u) + 4; ++l) if (L.live(l) && !L.get(l)) return false;
  return true;
}
} // namespace metal

#endif
