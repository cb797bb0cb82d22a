// shim_simdgroup_matrix.h: <metal_simdgroup_matrix>, 8x8 matrices spread over
// a SIMD-group. Part of metal_shim.h.
//
// Each lane holds two consecutive elements of a row: which ones is the
// hardware's, undocumented by Apple; MLX's kernels depend on it through
// thread_elements(), and this is their layout (mlx/backend/metal/kernels/
// steel/gemm/mma.h, BaseMMAFrag::get_coord). Loads, stores and products are
// SIMD-group operations (every lane at the same call site), as on a GPU.
#ifndef MLX_EMBAG_SHIM_SIMDGROUP_MATRIX_H
#define MLX_EMBAG_SHIM_SIMDGROUP_MATRIX_H
#pragma clang system_header

namespace metal {
EMU_INLINE uint __emu_sgm_row(uint lane) { return ((lane / 4) & 4) + (lane / 2) % 4; }
EMU_INLINE uint __emu_sgm_col(uint lane) { return ((lane / 4) & 2) * 2 + (lane % 2) * 2; }
EMU_INLINE uint __emu_lane(unsigned site) { return __emu_exchange(0u, EMU_SIMD_WIDTH, site).lane; }

template <class T, int Cols, int Rows> struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "the emulator has 8x8 simdgroup matrices only");
  static_assert(is_same_v<T, float> || is_same_v<T, half> || is_same_v<T, bfloat>,
                "simdgroup_matrix elements are float, half or bfloat");
  vec<T, 2> __e;
  simdgroup_matrix() = default;
  // Metal: the diagonal matrix with `d` on its diagonal.
  EMU_INLINE explicit simdgroup_matrix(T d, EMU_SITE) {
    uint lane = __emu_lane(__emu_site), r = __emu_sgm_row(lane), c = __emu_sgm_col(lane);
    __e = vec<T, 2>{r == c ? d : T(0), r == c + 1 ? d : T(0)};
  }
  EMU_INLINE thread vec<T, 2>& thread_elements() { return __e; }
  EMU_INLINE const thread vec<T, 2>& thread_elements() const { return __e; }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <class T, int Cols, int Rows> EMU_INLINE simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T v) {
  simdgroup_matrix<T, Cols, Rows> m;
  m.__e = vec<T, 2>{v, v};
  return m;
}

// Element (row, col) of a matrix at `origin` (column, row) in memory with
// `stride` elements per row; a transposed matrix swaps row and col.
EMU_INLINE ulong __emu_sgm_index(uint r, uint c, ulong stride, ulong2 origin, bool transpose) {
  return transpose ? (origin.y + c) * stride + origin.x + r : (origin.y + r) * stride + origin.x + c;
}
template <class T, class P>
EMU_INLINE void simdgroup_load(thread simdgroup_matrix<T, 8, 8>& d, P src, ulong elements_per_row = 8,
                               ulong2 matrix_origin = ulong2(0, 0), bool transpose_matrix = false, EMU_SITE) {
  uint lane = __emu_lane(__emu_site), r = __emu_sgm_row(lane), c = __emu_sgm_col(lane);
  for (uint j = 0; j < 2; ++j) d.__e[j] = src[__emu_sgm_index(r, c + j, elements_per_row, matrix_origin, transpose_matrix)];
}
template <class T, class P>
EMU_INLINE void simdgroup_store(const thread simdgroup_matrix<T, 8, 8>& s, P dst, ulong elements_per_row = 8,
                                ulong2 matrix_origin = ulong2(0, 0), bool transpose_matrix = false, EMU_SITE) {
  uint lane = __emu_lane(__emu_site), r = __emu_sgm_row(lane), c = __emu_sgm_col(lane);
  for (uint j = 0; j < 2; ++j) dst[__emu_sgm_index(r, c + j, elements_per_row, matrix_origin, transpose_matrix)] = s.__e[j];
}

// d = a * b + c. Every lane gathers a and b from the SIMD-group and computes
// its own two elements of d in float, rounded once to d's type.
template <class TD, class TA, class TB, class TC>
EMU_INLINE void simdgroup_multiply_accumulate(thread simdgroup_matrix<TD, 8, 8>& d, const thread simdgroup_matrix<TA, 8, 8>& a,
                                              const thread simdgroup_matrix<TB, 8, 8>& b,
                                              const thread simdgroup_matrix<TC, 8, 8>& c, EMU_SITE) {
  struct Pair { vec<TA, 2> a; vec<TB, 2> b; };
  auto L = __emu_exchange(Pair{a.__e, b.__e}, EMU_SIMD_WIDTH, __emu_site);
  float A[8][8], B[8][8];
  for (uint l = 0; l < EMU_SIMD_WIDTH; ++l) {
    Pair p = L.get(l);
    for (uint j = 0; j < 2; ++j) {
      A[__emu_sgm_row(l)][__emu_sgm_col(l) + j] = float(p.a[j]);
      B[__emu_sgm_row(l)][__emu_sgm_col(l) + j] = float(p.b[j]);
    }
  }
  uint r = __emu_sgm_row(L.lane), col = __emu_sgm_col(L.lane);
  vec<TD, 2> out;
  for (uint j = 0; j < 2; ++j) {
    float acc = float(c.__e[j]);
    for (uint k = 0; k < 8; ++k) acc += A[r][k] * B[k][col + j];
    out[j] = static_cast<TD>(acc);
  }
  d.__e = out;
}
template <class TD, class TA, class TB>
EMU_INLINE void simdgroup_multiply(thread simdgroup_matrix<TD, 8, 8>& d, const thread simdgroup_matrix<TA, 8, 8>& a,
                                   const thread simdgroup_matrix<TB, 8, 8>& b, EMU_SITE) {
  simdgroup_multiply_accumulate(d, a, b, make_filled_simdgroup_matrix<TD, 8, 8>(TD(0)), __emu_site);
}
} // namespace metal

#endif
