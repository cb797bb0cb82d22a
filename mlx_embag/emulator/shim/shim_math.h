// shim_math.h: metal::, metal::precise:: and metal::fast:: math, relational, geometric and
// integer functions, and <metal_math>'s constants. Part of metal_shim.h.
#ifndef MLX_EMBAG_SHIM_MATH_H
#define MLX_EMBAG_SHIM_MATH_H
#pragma clang system_header

namespace metal {
// ---------------------------------------------------------------- math
// Constants of <metal_math> / <metal_limits>.
#define MAXFLOAT __builtin_bit_cast(float, 0x7f7fffffu)
#define HUGE_VALF __builtin_huge_valf()
#define INFINITY __builtin_inff()
#define NAN __builtin_nanf("")
#define FLT_MAX __builtin_bit_cast(float, 0x7f7fffffu)
#define FLT_MIN __builtin_bit_cast(float, 0x00800000u)
#define FLT_EPSILON __builtin_bit_cast(float, 0x34000000u)
#define HALF_MAX ((half)65504.0f)
#define HALF_MIN ((half)6.103515625e-05f)
#define HALF_EPSILON ((half)0.0009765625f)
#define CHAR_BIT 8
#define SCHAR_MAX 127
#define SCHAR_MIN (-128)
#define UCHAR_MAX 255
#define SHRT_MAX 32767
#define SHRT_MIN (-32768)
#define USHRT_MAX 65535
#define INT_MAX 2147483647
#define INT_MIN (-2147483647 - 1)
#define UINT_MAX 4294967295u
#define LONG_MAX 9223372036854775807L
#define LONG_MIN (-9223372036854775807L - 1)
#define ULONG_MAX 18446744073709551615ul
#define M_E_F 2.71828182845904523536f
#define M_LOG2E_F 1.44269504088896340736f
#define M_LOG10E_F 0.434294481903251827651f
#define M_LN2_F 0.693147180559945309417f
#define M_LN10_F 2.30258509299404568402f
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_PI_4_F 0.785398163397448309616f
#define M_1_PI_F 0.318309886183790671538f
#define M_2_PI_F 0.636619772367581343076f
#define M_2_SQRTPI_F 1.12837916709551257390f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.707106781186547524401f
// Each function exists for float, half and bfloat (computed in float and
// rounded, which is what Apple GPUs do for most half functions) and their
// vectors, element-wise.
#define EMU_FLOATS(X) X(float) X(half) X(bfloat)
#define EMU_M1(name, expr)                                                     \
  EMU_INLINE float name(float x) { return expr; }                             \
  EMU_INLINE half name(half x) { return (half)name((float)x); }               \
  EMU_INLINE bfloat name(bfloat x) { return (bfloat)name((float)x); }         \
  template <class T, int N> EMU_INLINE vec<T, N> name(vec<T, N> x) {           \
    vec<T, N> r{};                                                               \
    for (int i = 0; i < N; ++i) r[i] = name((T)x[i]);                         \
    return r;                                                                  \
  }
#define EMU_M2(name, expr)                                                     \
  EMU_INLINE float name(float x, float y) { return expr; }                    \
  EMU_INLINE half name(half x, half y) { return (half)name((float)x, (float)y); } \
  EMU_INLINE bfloat name(bfloat x, bfloat y) { return (bfloat)name((float)x, (float)y); } \
  template <class T, int N> EMU_INLINE vec<T, N> name(vec<T, N> x, vec<T, N> y) { \
    vec<T, N> r{};                                                               \
    for (int i = 0; i < N; ++i) r[i] = name((T)x[i], (T)y[i]);                \
    return r;                                                                  \
  }
#define EMU_M3(name, expr)                                                     \
  EMU_INLINE float name(float x, float y, float z) { return expr; }           \
  EMU_INLINE half name(half x, half y, half z) {                              \
    return (half)name((float)x, (float)y, (float)z);                           \
  }                                                                            \
  EMU_INLINE bfloat name(bfloat x, bfloat y, bfloat z) {                      \
    return (bfloat)name((float)x, (float)y, (float)z);                         \
  }                                                                            \
  template <class T, int N>                                                    \
  EMU_INLINE vec<T, N> name(vec<T, N> x, vec<T, N> y, vec<T, N> z) {           \
    vec<T, N> r{};                                                               \
    for (int i = 0; i < N; ++i) r[i] = name((T)x[i], (T)y[i], (T)z[i]);         \
    return r;                                                                  \
  }

EMU_M1(fabs, __builtin_fabsf(x))
EMU_M1(sqrt, __builtin_sqrtf(x))
EMU_M1(rsqrt, 1.0f / __builtin_sqrtf(x))
EMU_M1(exp, __builtin_expf(x))
EMU_M1(exp2, __builtin_exp2f(x))
EMU_M1(exp10, __builtin_powf(10.0f, x))
EMU_M1(log, __builtin_logf(x))
EMU_M1(log2, __builtin_log2f(x))
EMU_M1(log10, __builtin_log10f(x))
EMU_M1(sin, __builtin_sinf(x))
EMU_M1(cos, __builtin_cosf(x))
EMU_M1(tan, __builtin_tanf(x))
EMU_M1(asin, __builtin_asinf(x))
EMU_M1(acos, __builtin_acosf(x))
EMU_M1(atan, __builtin_atanf(x))
EMU_M1(sinh, __builtin_sinhf(x))
EMU_M1(cosh, __builtin_coshf(x))
EMU_M1(tanh, __builtin_tanhf(x))
EMU_M1(asinh, __builtin_asinhf(x))
EMU_M1(acosh, __builtin_acoshf(x))
EMU_M1(atanh, __builtin_atanhf(x))
EMU_M1(sinpi, __builtin_sinf(3.14159265358979323846f * x))
EMU_M1(cospi, __builtin_cosf(3.14159265358979323846f * x))
EMU_M1(tanpi, __builtin_tanf(3.14159265358979323846f * x))
EMU_M1(ceil, __builtin_ceilf(x))
EMU_M1(floor, __builtin_floorf(x))
EMU_M1(round, __builtin_roundf(x))
EMU_M1(rint, __builtin_rintf(x))
EMU_M1(trunc, __builtin_truncf(x))
EMU_M1(fract, __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f))
EMU_M1(saturate, __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f))
EMU_M1(sign, (x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x != x ? 0.0f : x))))
EMU_M2(pow, __builtin_powf(x, y))
EMU_M2(powr, __builtin_powf(x, y))
EMU_M2(fmod, __builtin_fmodf(x, y))
EMU_M2(atan2, __builtin_atan2f(x, y))
EMU_M2(copysign, __builtin_copysignf(x, y))
EMU_M2(fdim, __builtin_fdimf(x, y))
EMU_M2(fmax, __builtin_fmaxf(x, y))
EMU_M2(fmin, __builtin_fminf(x, y))
EMU_M2(nextafter, __builtin_nextafterf(x, y))
EMU_M2(step, (y < x ? 0.0f : 1.0f))
EMU_M2(divide, x / y)
EMU_M3(fma, __builtin_fmaf(x, y, z))
EMU_M3(mad, x * y + z)
EMU_M3(mix, x + (y - x) * z)
EMU_M3(fmax3, __builtin_fmaxf(__builtin_fmaxf(x, y), z))
EMU_M3(fmin3, __builtin_fminf(__builtin_fminf(x, y), z))
EMU_M3(fmedian3, __builtin_fmaxf(__builtin_fminf(x, y), __builtin_fminf(__builtin_fmaxf(x, y), z)))
EMU_M3(smoothstep, ([](float e0, float e1, float v) {
         float t = __builtin_fminf(__builtin_fmaxf((v - e0) / (e1 - e0), 0.0f), 1.0f);
         return t * t * (3.0f - 2.0f * t);
       })(x, y, z))

// max/min/clamp/abs exist for floats (fmax semantics) and integers.
#define EMU_ARITH(X)                                                           \
  X(float) X(half) X(bfloat) X(char) X(signed char) X(uchar) X(short) X(ushort) \
  X(int) X(uint) X(long) X(ulong)
#define EMU_MINMAX(T)                                                          \
  EMU_INLINE T max(T x, T y) {                                                 \
    if constexpr (is_floating_point_v<T>) return (T)__builtin_fmaxf((float)x, (float)y); \
    else return x > y ? x : y;                                                 \
  }                                                                            \
  EMU_INLINE T min(T x, T y) {                                                 \
    if constexpr (is_floating_point_v<T>) return (T)__builtin_fminf((float)x, (float)y); \
    else return x < y ? x : y;                                                 \
  }                                                                            \
  EMU_INLINE T clamp(T x, T lo, T hi) { return min(max(x, lo), hi); }          \
  EMU_INLINE T max3(T x, T y, T z) { return max(max(x, y), z); }               \
  EMU_INLINE T min3(T x, T y, T z) { return min(min(x, y), z); }               \
  EMU_INLINE T median3(T x, T y, T z) { return max(min(x, y), min(max(x, y), z)); } \
  EMU_INLINE T abs(T x) {                                                      \
    if constexpr (is_floating_point_v<T>) return (T)__builtin_fabsf((float)x); \
    else if constexpr (is_signed_v<T>) return x < 0 ? (T)-x : x;               \
    else return x;                                                             \
  }
EMU_ARITH(EMU_MINMAX)
#undef EMU_MINMAX
template <class T, int N> EMU_INLINE vec<T, N> max(vec<T, N> x, vec<T, N> y) {
  vec<T, N> r{}; for (int i = 0; i < N; ++i) r[i] = max((T)x[i], (T)y[i]); return r;
}
template <class T, int N> EMU_INLINE vec<T, N> min(vec<T, N> x, vec<T, N> y) {
  vec<T, N> r{}; for (int i = 0; i < N; ++i) r[i] = min((T)x[i], (T)y[i]); return r;
}
template <class T, int N> EMU_INLINE vec<T, N> max(vec<T, N> x, T y) { return max(x, vec<T, N>(y)); }
template <class T, int N> EMU_INLINE vec<T, N> min(vec<T, N> x, T y) { return min(x, vec<T, N>(y)); }
template <class T, int N> EMU_INLINE vec<T, N> clamp(vec<T, N> x, vec<T, N> lo, vec<T, N> hi) {
  return min(max(x, lo), hi);
}
template <class T, int N> EMU_INLINE vec<T, N> clamp(vec<T, N> x, T lo, T hi) {
  return min(max(x, vec<T, N>(lo)), vec<T, N>(hi));
}
template <class T, int N> EMU_INLINE vec<T, N> abs(vec<T, N> x) {
  vec<T, N> r{}; for (int i = 0; i < N; ++i) r[i] = abs((T)x[i]); return r;
}

// Classification: scalars give bool, vectors bool vectors.
#define EMU_CLASS(name, expr)                                                  \
  EMU_INLINE bool name(float x) { return expr; }                              \
  EMU_INLINE bool name(half x) { return name((float)x); }                     \
  EMU_INLINE bool name(bfloat x) { return name((float)x); }                   \
  template <class T, int N> EMU_INLINE vec<char, N> name(vec<T, N> x) {        \
    vec<char, N> r{};                                                            \
    for (int i = 0; i < N; ++i) r[i] = name((T)x[i]);                         \
    return r;                                                                  \
  }
EMU_CLASS(isnan, __builtin_isnan(x))
EMU_CLASS(isinf, __builtin_isinf(x))
EMU_CLASS(isfinite, __builtin_isfinite(x))
EMU_CLASS(isnormal, __builtin_isnormal(x))
EMU_CLASS(signbit, __builtin_signbit(x) != 0)
#undef EMU_CLASS

template <class T> EMU_INLINE T select(T a, T b, bool c) { return c ? b : a; }
template <class T, int N, class C> EMU_INLINE vec<T, N> select(vec<T, N> a, vec<T, N> b, C c) {
  vec<T, N> r{}; for (int i = 0; i < N; ++i) r[i] = c[i] ? b[i] : a[i]; return r;
}
EMU_INLINE bool all(bool x) { return x; }
EMU_INLINE bool any(bool x) { return x; }
template <class T, int N> EMU_INLINE bool all(vec<T, N> x) {
  for (int i = 0; i < N; ++i) if (!x[i]) return false;
  return true;
}
template <class T, int N> EMU_INLINE bool any(vec<T, N> x) {
  for (int i = 0; i < N; ++i) if (x[i]) return true;
  return false;
}

// Geometric functions.
template <class T, int N> EMU_INLINE T dot(vec<T, N> a, vec<T, N> b) {
  T s = 0; for (int i = 0; i < N; ++i) s += a[i] * b[i]; return s;
}
template <class T, int N> EMU_INLINE T length(vec<T, N> a) { return sqrt(dot(a, a)); }
template <class T, int N> EMU_INLINE T length_squared(vec<T, N> a) { return dot(a, a); }
template <class T, int N> EMU_INLINE T distance(vec<T, N> a, vec<T, N> b) { return length(a - b); }
template <class T, int N> EMU_INLINE vec<T, N> normalize(vec<T, N> a) { return a * rsqrt(dot(a, a)); }
template <class T> EMU_INLINE vec<T, 3> cross(vec<T, 3> a, vec<T, 3> b) {
  return vec<T, 3>{a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// Integer functions.
template <class T> EMU_INLINE enable_if_t<is_integral_v<T>, T> popcount(T x) {
  return (T)__builtin_popcountll((ulong)(make_unsigned_t<T>)x);
}
template <class T> EMU_INLINE enable_if_t<is_integral_v<T>, T> clz(T x) {
  constexpr int bits = 8 * sizeof(T);
  ulong u = (ulong)(make_unsigned_t<T>)x;
  return (T)(u == 0 ? bits : __builtin_clzll(u) - (64 - bits));
}
template <class T> EMU_INLINE enable_if_t<is_integral_v<T>, T> ctz(T x) {
  constexpr int bits = 8 * sizeof(T);
  ulong u = (ulong)(make_unsigned_t<T>)x;
  return (T)(u == 0 ? bits : __builtin_ctzll(u));
}
template <class T> EMU_INLINE enable_if_t<is_integral_v<T>, T> mulhi(T x, T y) {
  if constexpr (sizeof(T) == 8) {
    if constexpr (is_signed_v<T>) return (T)(((__int128)x * (__int128)y) >> 64);
    else return (T)(((unsigned __int128)x * (unsigned __int128)y) >> 64);
  } else {
    return (T)(((long)x * (long)y) >> (8 * sizeof(T)));
  }
}

namespace precise {
using metal::abs; using metal::acos; using metal::acosh; using metal::asin; using metal::asinh;
using metal::atan; using metal::atan2; using metal::atanh; using metal::ceil; using metal::copysign;
using metal::cos; using metal::cosh; using metal::cospi; using metal::divide; using metal::exp;
using metal::exp10; using metal::exp2; using metal::fabs; using metal::fdim; using metal::floor;
using metal::fma; using metal::fmax; using metal::fmax3; using metal::fmedian3; using metal::fmin;
using metal::fmin3; using metal::fmod; using metal::fract; using metal::log; using metal::log10;
using metal::log2; using metal::max; using metal::min; using metal::pow; using metal::powr;
using metal::rint; using metal::round; using metal::rsqrt; using metal::sin; using metal::sinh;
using metal::sinpi; using metal::sqrt; using metal::tan; using metal::tanh; using metal::tanpi;
using metal::trunc; using metal::clamp; using metal::saturate; using metal::sign; using metal::normalize;
using metal::length; using metal::distance; using metal::dot;
} // namespace precise
namespace fast {
using namespace metal::precise;
} // namespace fast

} // namespace metal

#endif
