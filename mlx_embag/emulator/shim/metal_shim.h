// metal_shim.h: the Metal Shading Language, as far as MLX kernels use it, for
// a host C++ compiler (clang), plus the helpers of MLX's Metal preamble.
//
// Compiled with -nostdinc -nostdinc++ and no C++ library: what Metal lacks
// (std::, printf, <vector>, exceptions) fails to compile here too. Address
// spaces are clang address_space attributes, so a `constant` pointer passed
// where a `device` one is expected is an error as on Metal. EMU_NO_ADDRESS_SPACES
// (the sanitizer build: ASan does not instrument address-space accesses) turns
// them into nothing.
#ifndef MLX_EMBAG_METAL_SHIM_H
#define MLX_EMBAG_METAL_SHIM_H

#include "emu_abi.h"

#define __METAL__ 1
#define __METAL_VERSION__ 310
#define __METAL_MACOS__ 1
#define MLX_METAL_JIT 1

#ifndef EMU_NO_ADDRESS_SPACES
#define device __attribute__((address_space(1)))
#define constant __attribute__((address_space(2)))
#define threadgroup __attribute__((address_space(3)))
#else
#define device
#define constant
#define threadgroup
#endif
#define thread
#define threadgroup_imageblock threadgroup
#define ray_data
#define object_data

#define METAL_FUNC inline __attribute__((always_inline))
#define EMU_INLINE inline __attribute__((always_inline))
#define METAL_INTERNAL
#define METAL_ASM

// ---------------------------------------------------------------- scalars
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long int64_t;
typedef unsigned long uint64_t;
typedef unsigned long size_t;
typedef long ptrdiff_t;
typedef long intptr_t;
typedef unsigned long uintptr_t;
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef _Float16 half;
typedef __bf16 bfloat;

namespace metal {
// ---------------------------------------------------------------- type traits
template <class T, T v> struct integral_constant {
  static constexpr T value = v;
  constexpr operator T() const { return v; }
};
typedef integral_constant<bool, true> true_type;
typedef integral_constant<bool, false> false_type;
template <bool B, class T = void> struct enable_if {};
template <class T> struct enable_if<true, T> { typedef T type; };
template <bool B, class T = void> using enable_if_t = typename enable_if<B, T>::type;
template <bool B, class T, class F> struct conditional { typedef T type; };
template <class T, class F> struct conditional<false, T, F> { typedef F type; };
template <bool B, class T, class F> using conditional_t = typename conditional<B, T, F>::type;
template <class A, class B> struct is_same : false_type {};
template <class A> struct is_same<A, A> : true_type {};
template <class A, class B> constexpr bool is_same_v = is_same<A, B>::value;
template <class T> struct remove_cv { typedef T type; };
template <class T> struct remove_cv<const T> { typedef T type; };
template <class T> struct remove_cv<volatile T> { typedef T type; };
template <class T> struct remove_cv<const volatile T> { typedef T type; };
template <class T> using remove_cv_t = typename remove_cv<T>::type;
template <class T> struct remove_reference { typedef T type; };
template <class T> struct remove_reference<T&> { typedef T type; };
template <class T> struct remove_reference<T&&> { typedef T type; };
template <class T> using remove_reference_t = typename remove_reference<T>::type;
template <class T> struct make_unsigned;
template <> struct make_unsigned<char> { typedef uchar type; };
template <> struct make_unsigned<signed char> { typedef uchar type; };
template <> struct make_unsigned<uchar> { typedef uchar type; };
template <> struct make_unsigned<short> { typedef ushort type; };
template <> struct make_unsigned<ushort> { typedef ushort type; };
template <> struct make_unsigned<int> { typedef uint type; };
template <> struct make_unsigned<uint> { typedef uint type; };
template <> struct make_unsigned<long> { typedef ulong type; };
template <> struct make_unsigned<ulong> { typedef ulong type; };
template <class T> using make_unsigned_t = typename make_unsigned<T>::type;
template <class F, class T> constexpr bool is_convertible_v = __is_convertible_to(F, T);
template <class F, class T> struct is_convertible : integral_constant<bool, __is_convertible_to(F, T)> {};
template <class T> constexpr bool is_floating_point_v =
    is_same_v<remove_cv_t<T>, float> || is_same_v<remove_cv_t<T>, half> || is_same_v<remove_cv_t<T>, bfloat>;
template <class T> struct is_floating_point : integral_constant<bool, is_floating_point_v<T>> {};
template <class T> constexpr bool is_integral_v = __is_integral(T);
template <class T> struct is_integral : integral_constant<bool, __is_integral(T)> {};
template <class T> constexpr bool is_signed_v = __is_signed(T);
template <class T> constexpr bool is_unsigned_v = __is_unsigned(T);
template <class T> constexpr bool is_arithmetic_v = is_integral_v<T> || is_floating_point_v<T>;
template <class T> struct is_arithmetic : integral_constant<bool, is_arithmetic_v<T>> {};
template <class T> constexpr bool is_scalar_v = is_arithmetic_v<T>;
template <class T> struct is_scalar : integral_constant<bool, is_arithmetic_v<T>> {};
template <class T> T&& declval();

// ---------------------------------------------------------------- vectors
template <class T, int N> using vec = T __attribute__((ext_vector_type(N)));

template <class T> struct __emu_vinfo { typedef T scalar; static constexpr int n = 1; static constexpr bool is_vec = false; };
template <class T, int N> struct __emu_vinfo<T __attribute__((ext_vector_type(N)))> {
  typedef T scalar; static constexpr int n = N; static constexpr bool is_vec = true;
};
template <class T> constexpr bool is_vector_v = __emu_vinfo<remove_cv_t<T>>::is_vec;
template <class T> struct is_vector : integral_constant<bool, is_vector_v<T>> {};
template <class T> using __emu_scalar_t = typename __emu_vinfo<remove_cv_t<T>>::scalar;

// Metal's vector constructors: float4(x) splats a scalar or converts a vector
// element-wise; float4(a, b.xy, c) concatenates. (A C cast between ext vectors
// of different element sizes is a bit cast or an error in clang, so the
// shim's constructor macros route here.)
// clang refuses direct half <-> bfloat conversions; Metal allows them.
template <class S, class A> EMU_INLINE constexpr S __emu_cvt(A a) {
  if constexpr ((is_same_v<S, half> && is_same_v<A, bfloat>) || (is_same_v<S, bfloat> && is_same_v<A, half>))
    return static_cast<S>(static_cast<float>(a));
  else
    return static_cast<S>(a);
}
template <class V, int I> EMU_INLINE void __emu_fill(thread V&) {}
template <class V, int I, class A, class... R>
EMU_INLINE void __emu_fill(thread V& v, A a, R... r) {
  typedef __emu_scalar_t<V> S;
  if constexpr (__emu_vinfo<A>::is_vec) {
    for (int k = 0; k < __emu_vinfo<A>::n; ++k) v[I + k] = __emu_cvt<S>(a[k]);
    __emu_fill<V, I + __emu_vinfo<A>::n>(v, r...);
  } else {
    v[I] = __emu_cvt<S>(a);
    __emu_fill<V, I + 1>(v, r...);
  }
}
template <class A> constexpr int __emu_ncomp = __emu_vinfo<remove_cv_t<A>>::n;
template <class V, class... A> EMU_INLINE constexpr V __emu_make_vec(A... a) {
  typedef __emu_scalar_t<V> S;
  constexpr int N = __emu_vinfo<V>::n;
  V v{};
  if constexpr (sizeof...(A) == 0) {
    return v;
  } else if constexpr (sizeof...(A) == 1 && (!__emu_vinfo<A>::is_vec && ...)) {
    S s = __emu_cvt<S>(a...);
    for (int k = 0; k < N; ++k) v[k] = s;
    return v;
  } else {
    static_assert((__emu_ncomp<A> + ...) == N,
                  "Metal vector constructor: the number of components does not match");
    __emu_fill<V, 0>(v, a...);
    return v;
  }
}
} // namespace metal

#define EMU_VEC_TYPES(T, P)                                                    \
  typedef metal::vec<T, 2> P##2;                                               \
  typedef metal::vec<T, 3> P##3;                                               \
  typedef metal::vec<T, 4> P##4;
EMU_VEC_TYPES(float, float)
EMU_VEC_TYPES(half, half)
EMU_VEC_TYPES(bfloat, bfloat)
EMU_VEC_TYPES(int, int)
EMU_VEC_TYPES(uint, uint)
EMU_VEC_TYPES(short, short)
EMU_VEC_TYPES(ushort, ushort)
EMU_VEC_TYPES(char, char)
EMU_VEC_TYPES(uchar, uchar)
EMU_VEC_TYPES(long, long)
EMU_VEC_TYPES(ulong, ulong)
#undef EMU_VEC_TYPES
// Bool vectors hold one byte (0 or 1) per lane: clang miscompiles its native
// bool ext vectors (bit-packed) at -O1. Comparisons of vectors give clang's
// integer masks; all(), any() and select() take either.
typedef metal::vec<char, 2> bool2;
typedef metal::vec<char, 3> bool3;
typedef metal::vec<char, 4> bool4;
typedef half float16_t;
typedef bfloat bfloat16_t;
typedef float4 packed_float4;
typedef float2 packed_float2;
typedef half4 packed_half4;
typedef half2 packed_half2;

#define float2(...) ::metal::__emu_make_vec<::float2>(__VA_ARGS__)
#define float3(...) ::metal::__emu_make_vec<::float3>(__VA_ARGS__)
#define float4(...) ::metal::__emu_make_vec<::float4>(__VA_ARGS__)
#define half2(...) ::metal::__emu_make_vec<::half2>(__VA_ARGS__)
#define half3(...) ::metal::__emu_make_vec<::half3>(__VA_ARGS__)
#define half4(...) ::metal::__emu_make_vec<::half4>(__VA_ARGS__)
#define bfloat2(...) ::metal::__emu_make_vec<::bfloat2>(__VA_ARGS__)
#define bfloat3(...) ::metal::__emu_make_vec<::bfloat3>(__VA_ARGS__)
#define bfloat4(...) ::metal::__emu_make_vec<::bfloat4>(__VA_ARGS__)
#define int2(...) ::metal::__emu_make_vec<::int2>(__VA_ARGS__)
#define int3(...) ::metal::__emu_make_vec<::int3>(__VA_ARGS__)
#define int4(...) ::metal::__emu_make_vec<::int4>(__VA_ARGS__)
#define uint2(...) ::metal::__emu_make_vec<::uint2>(__VA_ARGS__)
#define uint3(...) ::metal::__emu_make_vec<::uint3>(__VA_ARGS__)
#define uint4(...) ::metal::__emu_make_vec<::uint4>(__VA_ARGS__)
#define short2(...) ::metal::__emu_make_vec<::short2>(__VA_ARGS__)
#define short3(...) ::metal::__emu_make_vec<::short3>(__VA_ARGS__)
#define short4(...) ::metal::__emu_make_vec<::short4>(__VA_ARGS__)
#define ushort2(...) ::metal::__emu_make_vec<::ushort2>(__VA_ARGS__)
#define ushort3(...) ::metal::__emu_make_vec<::ushort3>(__VA_ARGS__)
#define ushort4(...) ::metal::__emu_make_vec<::ushort4>(__VA_ARGS__)
#define char2(...) ::metal::__emu_make_vec<::char2>(__VA_ARGS__)
#define char3(...) ::metal::__emu_make_vec<::char3>(__VA_ARGS__)
#define char4(...) ::metal::__emu_make_vec<::char4>(__VA_ARGS__)
#define uchar2(...) ::metal::__emu_make_vec<::uchar2>(__VA_ARGS__)
#define uchar3(...) ::metal::__emu_make_vec<::uchar3>(__VA_ARGS__)
#define uchar4(...) ::metal::__emu_make_vec<::uchar4>(__VA_ARGS__)
#define long2(...) ::metal::__emu_make_vec<::long2>(__VA_ARGS__)
#define long3(...) ::metal::__emu_make_vec<::long3>(__VA_ARGS__)
#define long4(...) ::metal::__emu_make_vec<::long4>(__VA_ARGS__)
#define ulong2(...) ::metal::__emu_make_vec<::ulong2>(__VA_ARGS__)
#define ulong3(...) ::metal::__emu_make_vec<::ulong3>(__VA_ARGS__)
#define ulong4(...) ::metal::__emu_make_vec<::ulong4>(__VA_ARGS__)
#define bool2(...) ::metal::__emu_make_vec<::bool2>(__VA_ARGS__)
#define bool3(...) ::metal::__emu_make_vec<::bool3>(__VA_ARGS__)
#define bool4(...) ::metal::__emu_make_vec<::bool4>(__VA_ARGS__)

namespace metal {
// ---------------------------------------------------------------- bit casts, limits
template <class To, class From> EMU_INLINE To as_type(From x) {
  static_assert(sizeof(To) == sizeof(From), "as_type: sizes differ");
  return __builtin_bit_cast(To, x);
}

template <class T> struct numeric_limits {
  static constexpr bool is_specialized = false;
};
#define EMU_INT_LIMITS(T, LO, HI)                                              \
  template <> struct numeric_limits<T> {                                       \
    static constexpr bool is_specialized = true;                               \
    static constexpr bool is_signed = (T)(-1) < (T)0;                          \
    static constexpr bool is_integer = true;                                   \
    static constexpr T min() { return LO; }                                    \
    static constexpr T lowest() { return LO; }                                 \
    static constexpr T max() { return HI; }                                    \
  };
EMU_INT_LIMITS(bool, false, true)
EMU_INT_LIMITS(char, (char)-128, (char)127)
EMU_INT_LIMITS(signed char, (signed char)-128, (signed char)127)
EMU_INT_LIMITS(uchar, (uchar)0, (uchar)255)
EMU_INT_LIMITS(short, (short)-32768, (short)32767)
EMU_INT_LIMITS(ushort, (ushort)0, (ushort)65535)
EMU_INT_LIMITS(int, (int)(-2147483647 - 1), 2147483647)
EMU_INT_LIMITS(uint, 0u, 4294967295u)
EMU_INT_LIMITS(long, (long)(-9223372036854775807L - 1), 9223372036854775807L)
EMU_INT_LIMITS(ulong, 0ul, 18446744073709551615ul)
#undef EMU_INT_LIMITS
#define EMU_FLOAT_LIMITS(T, BITS, MIN, MAX, EPS, INF, QNAN, DMIN, DIG)            \
  template <> struct numeric_limits<T> {                                       \
    static constexpr bool is_specialized = true;                               \
    static constexpr bool is_signed = true;                                    \
    static constexpr bool is_integer = false;                                  \
    static constexpr bool has_infinity = true;                                 \
    static constexpr bool has_quiet_NaN = true;                                \
    static constexpr int digits = DIG;                                         \
    static constexpr T min() { return __builtin_bit_cast(T, (BITS)MIN); }      \
    static constexpr T max() { return __builtin_bit_cast(T, (BITS)MAX); }      \
    static constexpr T lowest() { return -max(); }                             \
    static constexpr T epsilon() { return __builtin_bit_cast(T, (BITS)EPS); }  \
    static constexpr T infinity() { return __builtin_bit_cast(T, (BITS)INF); } \
    static constexpr T quiet_NaN() { return __builtin_bit_cast(T, (BITS)QNAN); } \
    static constexpr T signaling_NaN() { return quiet_NaN(); }                 \
    static constexpr T denorm_min() { return __builtin_bit_cast(T, (BITS)DMIN); } \
  };
EMU_FLOAT_LIMITS(float, uint, 0x00800000u, 0x7f7fffffu, 0x34000000u, 0x7f800000u, 0x7fc00000u, 1u, 24)
EMU_FLOAT_LIMITS(half, ushort, 0x0400, 0x7bff, 0x1400, 0x7c00, 0x7e00, 1, 11)
EMU_FLOAT_LIMITS(bfloat, ushort, 0x0080, 0x7f7f, 0x3c00, 0x7f80, 0x7fc0, 1, 8)
#undef EMU_FLOAT_LIMITS

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

// ---------------------------------------------------------------- atomics
enum memory_order {
  memory_order_relaxed = 0,
  memory_order_acquire = 2,
  memory_order_release = 3,
  memory_order_acq_rel = 4,
  memory_order_seq_cst = 5,
};
enum class thread_scope { thread_scope_thread, thread_scope_simdgroup, thread_scope_threadgroup, thread_scope_device };

// Metal has atomics of int, uint, bool, float (and 64-bit ulong/long in a
// limited form); no half, bfloat or double.
template <class T> struct atomic {
  static_assert(is_same_v<T, int> || is_same_v<T, uint> || is_same_v<T, float> ||
                    is_same_v<T, bool> || is_same_v<T, ulong> || is_same_v<T, long>,
                "Metal atomics exist only for int, uint, bool, float, long and ulong");
  typedef T value_type;
  T __value;
};
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
typedef atomic<ulong> atomic_ulong;
typedef atomic<long> atomic_long;

// The atomic object may sit in any address space (it is deduced into A); a C
// cast moves it to the generic one the __atomic builtins need.
template <class A> using __emu_aval = typename remove_cv_t<A>::value_type;
template <class A> EMU_INLINE __emu_aval<A>* __emu_aptr(A* obj) {
  return (__emu_aval<A>*)(void*)obj;
}
template <class A> EMU_INLINE __emu_aval<A> atomic_load_explicit(A* obj, memory_order) {
  __emu_aval<A> r;
  __atomic_load(__emu_aptr(obj), &r, __ATOMIC_SEQ_CST);
  return r;
}
template <class A> EMU_INLINE void atomic_store_explicit(A* obj, __emu_aval<A> v, memory_order) {
  __atomic_store(__emu_aptr(obj), &v, __ATOMIC_SEQ_CST);
}
template <class A> EMU_INLINE __emu_aval<A> atomic_exchange_explicit(A* obj, __emu_aval<A> v, memory_order) {
  __emu_aval<A> r;
  __atomic_exchange(__emu_aptr(obj), &v, &r, __ATOMIC_SEQ_CST);
  return r;
}
template <class A>
EMU_INLINE bool atomic_compare_exchange_weak_explicit(A* obj, thread __emu_aval<A>* expected,
                                                     __emu_aval<A> desired, memory_order, memory_order) {
  return __atomic_compare_exchange(__emu_aptr(obj), (__emu_aval<A>*)(void*)expected, &desired, true,
                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
template <class A>
EMU_INLINE bool atomic_compare_exchange_strong_explicit(A* obj, thread __emu_aval<A>* expected,
                                                       __emu_aval<A> desired, memory_order, memory_order) {
  return __atomic_compare_exchange(__emu_aptr(obj), (__emu_aval<A>*)(void*)expected, &desired, false,
                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
// Float read-modify-write is a compare-and-swap loop; integers use the builtins.
template <class A, class F> EMU_INLINE __emu_aval<A> __emu_rmw(A* obj, F f) {
  typedef __emu_aval<A> T;
  T* p = __emu_aptr(obj);
  T old, next;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  do {
    next = f(old);
  } while (!__atomic_compare_exchange(p, &old, &next, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  return old;
}
#define EMU_ATOMIC_ARITH(op, builtin, fexpr)                                   \
  template <class A>                                                           \
  EMU_INLINE __emu_aval<A> atomic_fetch_##op##_explicit(A* obj, __emu_aval<A> v, memory_order) { \
    typedef __emu_aval<A> T;                                                   \
    static_assert(!is_same_v<T, bool>, "atomic_fetch_" #op " is not defined for atomic_bool"); \
    if constexpr (is_same_v<T, float>) return __emu_rmw(obj, [v](T a) { return (T)(fexpr); }); \
    else return builtin(__emu_aptr(obj), v, __ATOMIC_SEQ_CST);                 \
  }
EMU_ATOMIC_ARITH(add, __atomic_fetch_add, a + v)
EMU_ATOMIC_ARITH(sub, __atomic_fetch_sub, a - v)
EMU_ATOMIC_ARITH(min, __atomic_fetch_min, (v < a ? v : a))
EMU_ATOMIC_ARITH(max, __atomic_fetch_max, (v > a ? v : a))
#undef EMU_ATOMIC_ARITH
#define EMU_ATOMIC_BITS(op, builtin)                                           \
  template <class A>                                                           \
  EMU_INLINE __emu_aval<A> atomic_fetch_##op##_explicit(A* obj, __emu_aval<A> v, memory_order) { \
    static_assert(is_integral_v<__emu_aval<A>> && !is_same_v<__emu_aval<A>, bool>, \
                  "atomic_fetch_" #op " needs an integer atomic");             \
    return builtin(__emu_aptr(obj), v, __ATOMIC_SEQ_CST);                      \
  }
EMU_ATOMIC_BITS(and, __atomic_fetch_and)
EMU_ATOMIC_BITS(or, __atomic_fetch_or)
EMU_ATOMIC_BITS(xor, __atomic_fetch_xor)
#undef EMU_ATOMIC_BITS

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

using namespace metal;

#include "mlx_preamble.h"

// Metal has no double precision: the type is rejected (literals such as 1.0
// stay legal, as in Metal, and are evaluated in double here).
#define double __metal_has_no_double_type
// No dynamic allocation on a GPU.
#define new __metal_has_no_new_operator
#define delete __metal_has_no_delete_operator
#endif
