// mlx_preamble.h: the names MLX 0.32's generated Metal preamble makes available
// to a custom kernel (its bf16, complex, defines, logging and utils headers),
// written for the emulator's shim: the same names and signatures, computing the
// same values (numeric helpers such as log1p and hypot follow MLX's formulas
// step for step, so a kernel gets the same bits here as on a Mac).
#ifndef MLX_EMBAG_MLX_PREAMBLE_H
#define MLX_EMBAG_MLX_PREAMBLE_H
#pragma clang system_header

// ---------------------------------------------------------------- defines.h
#define MTL_CONST constant
static constexpr int MAX_REDUCE_SPECIALIZED_DIMS = 4;
static constexpr int REDUCE_N_READS = 4;
static constexpr int REDUCE_N_WRITES = 4;
static constexpr int SOFTMAX_N_READS = 4;
static constexpr int RMS_N_READS = 4;
static constexpr int RMS_LOOPED_LIMIT = 4096;
static constexpr int CROSS_ENTROPY_N_READS = 4;
#define instantiate_kernel(name, func, ...) \
  template decltype(func<__VA_ARGS__>) func<__VA_ARGS__>;

// ---------------------------------------------------------------- bf16.h
inline uint16_t bfloat16_to_uint16(const bfloat16_t x) { return as_type<uint16_t>(x); }
inline bfloat16_t uint16_to_bfloat16(const uint16_t x) { return as_type<bfloat16_t>(x); }

// ---------------------------------------------------------------- complex.h
template <typename T> struct complex_t {
  T real;
  T imag;
  constexpr complex_t() : real(0), imag(0) {}
  constexpr complex_t(T r, T i) : real(r), imag(i) {}
  template <typename U, typename = metal::enable_if_t<metal::is_convertible_v<U, T>>>
  constexpr complex_t(U x) : real(T(x)), imag(0) {}
  constexpr complex_t(metal::vec<T, 2> v) : real(v.x), imag(v.y) {}
  constexpr operator metal::vec<T, 2>() const { return metal::vec<T, 2>{real, imag}; }
};
typedef complex_t<float> complex64_t;
typedef complex_t<half> complex32_t;
template <typename T> constexpr complex_t<T> operator-(complex_t<T> x) { return {-x.real, -x.imag}; }
template <typename T> constexpr complex_t<T> operator+(complex_t<T> a, complex_t<T> b) {
  return {a.real + b.real, a.imag + b.imag};
}
template <typename T> constexpr complex_t<T> operator-(complex_t<T> a, complex_t<T> b) {
  return {a.real - b.real, a.imag - b.imag};
}
template <typename T> constexpr complex_t<T> operator*(complex_t<T> a, complex_t<T> b) {
  return {a.real * b.real - a.imag * b.imag, a.real * b.imag + a.imag * b.real};
}
template <typename T> constexpr complex_t<T> operator/(complex_t<T> a, complex_t<T> b) {
  auto d = b.real * b.real + b.imag * b.imag;
  return {(a.real * b.real + a.imag * b.imag) / d, (a.imag * b.real - a.real * b.imag) / d};
}
template <typename T> constexpr bool operator==(complex_t<T> a, complex_t<T> b) {
  return a.real == b.real && a.imag == b.imag;
}
template <typename T> constexpr bool operator!=(complex_t<T> a, complex_t<T> b) { return !(a == b); }
template <typename T> constexpr bool operator<(complex_t<T> a, complex_t<T> b) {
  return (a.real < b.real) || (a.real == b.real && a.imag < b.imag);
}
template <typename T> constexpr bool operator>(complex_t<T> a, complex_t<T> b) { return b < a; }
template <typename T> constexpr complex_t<T> operator+(complex_t<T> a, T b) { return {a.real + b, a.imag}; }
template <typename T> constexpr complex_t<T> operator*(complex_t<T> a, T b) { return {a.real * b, a.imag * b}; }
template <typename T> inline thread complex_t<T>& operator+=(thread complex_t<T>& a, complex_t<T> b) {
  a = a + b;
  return a;
}
template <typename T> inline thread complex_t<T>& operator*=(thread complex_t<T>& a, complex_t<T> b) {
  a = a * b;
  return a;
}

// ---------------------------------------------------------------- logging.h
namespace mlx {
struct os_log {
  constexpr os_log(const char*, const char*) {}
  template <typename... Args> void log_debug(const char*, Args...) const {}
};
} // namespace mlx

// ---------------------------------------------------------------- utils.h
template <typename U> struct WorkPerThread {
  static_assert(sizeof(U) <= 8, "Type too large");
  static constexpr int n = 8 / sizeof(U);
};

template <typename U> struct Limits {
  static constexpr U max = metal::numeric_limits<U>::max();
  static constexpr U min = metal::numeric_limits<U>::min();
  static constexpr U finite_max = metal::numeric_limits<U>::max();
  static constexpr U finite_min = metal::numeric_limits<U>::min();
};
#define EMU_FLOAT_LIMIT(T)                                                     \
  template <> struct Limits<T> {                                               \
    static constexpr T max = metal::numeric_limits<T>::infinity();            \
    static constexpr T min = -metal::numeric_limits<T>::infinity();           \
    static constexpr T finite_max = metal::numeric_limits<T>::max();          \
    static constexpr T finite_min = -metal::numeric_limits<T>::max();         \
  };
EMU_FLOAT_LIMIT(half)
EMU_FLOAT_LIMIT(float)
EMU_FLOAT_LIMIT(bfloat16_t)
#undef EMU_FLOAT_LIMIT
template <> struct Limits<bool> {
  static constexpr bool max = true;
  static constexpr bool min = false;
};
template <typename T> struct Limits<complex_t<T>> {
  static constexpr complex_t<T> max = complex_t<T>(metal::numeric_limits<T>::infinity(),
                                                    metal::numeric_limits<T>::infinity());
  static constexpr complex_t<T> min = complex_t<T>(-metal::numeric_limits<T>::infinity(),
                                                    -metal::numeric_limits<T>::infinity());
};

#define MLX_MTL_PRAGMA_UNROLL _Pragma("clang loop unroll(full)")

// ----- strided indexing: where the n-th element of a strided array lives.
// Each helper peels an element's row-major multi-index off from the last axis
// and weighs every digit by its axis' stride, in IdxT arithmetic, as MLX's do.

template <typename IdxT = int64_t>
METAL_FUNC IdxT elem_to_loc(IdxT elem, constant const int* shape, constant const int64_t* strides,
                            int ndim) {
  IdxT offset = 0;
  for (int axis = ndim - 1; axis >= 0 && elem > 0; --axis) {
    offset += (elem % shape[axis]) * IdxT(strides[axis]);
    elem /= shape[axis];
  }
  return offset;
}

// A grid position: x runs along the last axis, y the one before it, z over all
// the leading axes together.
template <typename IdxT>
METAL_FUNC IdxT __emu_grid_loc(uint3 elem, constant const int* shape, constant const int64_t* strides,
                               int ndim) {
  IdxT offset = elem.x * IdxT(strides[ndim - 1]) + elem.y * IdxT(strides[ndim - 2]);
  for (int axis = ndim - 3; axis >= 0; --axis) {
    offset += (elem.z % shape[axis]) * IdxT(strides[axis]);
    elem.z /= shape[axis];
  }
  return offset;
}

template <typename IdxT = int64_t>
METAL_FUNC IdxT elem_to_loc(uint3 elem, constant const int* shape, constant const int64_t* strides,
                            int ndim) {
  return __emu_grid_loc<IdxT>(elem, shape, strides, ndim);
}

// Fixed ranks: strides only, innermost axis last.
template <typename IdxT = int64_t>
METAL_FUNC IdxT elem_to_loc_1(uint elem, constant const int64_t& stride) {
  return elem * IdxT(stride);
}
template <typename IdxT = int64_t>
METAL_FUNC IdxT elem_to_loc_2(uint2 elem, constant const int64_t* strides) {
  return elem_to_loc_1<IdxT>(elem.y, strides[0]) + elem_to_loc_1<IdxT>(elem.x, strides[1]);
}
template <typename IdxT = int64_t>
METAL_FUNC IdxT elem_to_loc_3(uint3 elem, constant const int64_t* strides) {
  return elem_to_loc_1<IdxT>(elem.z, strides[0]) + elem_to_loc_2<IdxT>(elem.xy, strides + 1);
}

// The same grid position in two or three arrays of one shape and their own strides.
template <typename IdxT = int64_t>
METAL_FUNC vec<IdxT, 2> elem_to_loc_2_nd(uint3 elem, constant const int* shape,
                                         constant const int64_t* a_strides,
                                         constant const int64_t* b_strides, int ndim) {
  vec<IdxT, 2> loc = {__emu_grid_loc<IdxT>(elem, shape, a_strides, ndim),
                      __emu_grid_loc<IdxT>(elem, shape, b_strides, ndim)};
  return loc;
}
template <typename IdxT = int64_t>
METAL_FUNC vec<IdxT, 3> elem_to_loc_3_nd(uint3 elem, constant const int* shape,
                                         constant const int64_t* a_strides,
                                         constant const int64_t* b_strides,
                                         constant const int64_t* c_strides, int ndim) {
  vec<IdxT, 3> loc = {__emu_grid_loc<IdxT>(elem, shape, a_strides, ndim),
                      __emu_grid_loc<IdxT>(elem, shape, b_strides, ndim),
                      __emu_grid_loc<IdxT>(elem, shape, c_strides, ndim)};
  return loc;
}

// An iterator over the elements of the leading `dim` axes (row-major), for
// kernels that walk an array a step or n steps at a time. Its position is a
// count of steps; location() is where that element lives. As MLX's, it lets
// the outermost axis run on past its extent (steps / inner elements, never
// wrapped), except DIM = 1 over several axes, which wraps like elem_to_loc;
// General = false (DIM = 1) walks one axis by its stride alone.
template <int DIM, typename OffsetT = size_t, bool General = true> struct LoopedElemToLoc {
  int dim;
  int64_t steps{0};
  OffsetT offset{0};

  LoopedElemToLoc(int dim) : dim(dim) {}

  void next(const constant int* shape, const constant int64_t* strides) { next(1, shape, strides); }

  void next(int n, const constant int* shape, const constant int64_t* strides) {
    if (dim <= 0) return;
    steps += n;
    if (DIM == 1) {
      offset = (General && dim > 1) ? OffsetT(elem_to_loc<int64_t>(steps, shape, strides, dim))
                                    : OffsetT(steps * strides[0]);
      return;
    }
    int64_t inner = 1;
    for (int axis = 1; axis < dim; ++axis) inner *= shape[axis];
    offset = OffsetT((steps / inner) * strides[0] +
                     elem_to_loc<int64_t>(steps % inner, shape + 1, strides + 1, dim - 1));
  }

  OffsetT location() { return offset; }
};

// ceil(N / M) for positive integers.
template <typename T, typename U> inline T ceildiv(T N, U M) { return (N + M - 1) / M; }

inline float log1p(float x) {
  float xp1 = 1.0f + x;
  if (xp1 == Limits<float>::max) return Limits<float>::max;
  if (xp1 == 1.0f) return x;
  return x * (metal::log(xp1) / (xp1 - 1.0f));
}
inline bfloat16_t log1p(bfloat16_t x) {
  float xp1 = 1.0f + static_cast<float>(x);
  if (xp1 == Limits<float>::max) return Limits<bfloat16_t>::max;
  if (xp1 == 1.0f) return x;
  return bfloat16_t(x * (metal::log(xp1) / (xp1 - 1.0f)));
}

inline float hypot(float x, float y) {
  if (metal::isinf(x) || metal::isinf(y)) return metal::numeric_limits<float>::infinity();
  if (metal::isnan(x) || metal::isnan(y)) return metal::numeric_limits<float>::quiet_NaN();
  float a = metal::fmax(metal::fabs(x), metal::fabs(y));
  float b = metal::fmin(metal::fabs(x), metal::fabs(y));
  if (a == 0.0f) return 0.0f;
  float r = (b / a) * (b / a);
  float sqrt_1_plus_r = metal::precise::sqrt(1.0f + r);
  float h1 = metal::sqrt(2.0f) * a;
  float h2 = a + a * r / 2.0f;
  float h3 = a * sqrt_1_plus_r;
  bool is_h1 = (a == b);
  bool is_h2 = ((sqrt_1_plus_r == 1.0f) && (r > 0.0f));
  return metal::select(metal::select(h3, h2, is_h2), h1, is_h1);
}

template <bool condition, typename T, typename U> struct ConditionalType { using type = U; };
template <typename T, typename U> struct ConditionalType<true, T, U> { using type = T; };

template <typename U, typename T> inline U cast_to(T val) { return static_cast<U>(val); }
template <> inline bool cast_to<bool, float>(float val) { return (as_type<uint32_t>(val) & 0x7FFFFFFF) != 0; }
template <> inline bool cast_to<bool, bfloat16_t>(bfloat16_t val) {
  return (as_type<uint16_t>(val) & 0x7FFF) != 0;
}
template <> inline bool cast_to<bool, complex64_t>(complex64_t val) {
  return cast_to<bool, float>(val.real) || cast_to<bool, float>(val.imag);
}

template <int BM>
METAL_FUNC bool schedule_row_tile(const device int32_t* offsets, const int num_groups, const int M,
                                  const int tile, const uint simd_lane_id, thread int& row,
                                  thread int& group, thread short& rows) {
  int tiles_before = 0;
  for (int e = 0; e < num_groups; e += 32) {
    const int g = e + simd_lane_id;
    int start = M;
    int end = M;
    if (g < num_groups) {
      start = offsets[g];
      end = g + 1 < num_groups ? offsets[g + 1] : M;
    }
    const int n = (end - start + BM - 1) / BM;
    const int tiles_through = tiles_before + simd_prefix_inclusive_sum(n);
    const ushort owner_lane = ushort(simd_sum(int(tiles_through <= tile)));
    if (owner_lane < 32) {
      group = e + owner_lane;
      row = simd_shuffle(start, owner_lane) + (tile - simd_shuffle(tiles_through - n, owner_lane)) * BM;
      rows = short(min(BM, simd_shuffle(end, owner_lane) - row));
      return true;
    }
    tiles_before = simd_shuffle(tiles_through, 31);
  }
  return false;
}

#endif
