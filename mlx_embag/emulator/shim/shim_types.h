// shim_types.h: Metal's scalar types, type traits, vectors (clang ext vectors with Metal's
// constructors), as_type and numeric_limits. Part of metal_shim.h.
#ifndef MLX_EMBAG_SHIM_TYPES_H
#define MLX_EMBAG_SHIM_TYPES_H
#pragma clang system_header

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

// clang lowers float -> bfloat to a call of __truncsfbf2, which the compiler-rt
// of recent ziglang wheels (0.15 to 0.17) does not provide: an undefined symbol
// at load time. Defined here (hidden, weak: a runtime that has one wins) as
// IEEE round-to-nearest-even, as Metal converts; a NaN stays a quiet NaN.
extern "C" __attribute__((visibility("hidden"), weak)) __bf16 __truncsfbf2(float x) {
  unsigned int u = __builtin_bit_cast(unsigned int, x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __builtin_bit_cast(__bf16, (unsigned short)((u >> 16) | 0x40u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return __builtin_bit_cast(__bf16, (unsigned short)(u >> 16));
}

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
// Metal's bool vectors convert by truth (bool4(float4(0.5)) is all true);
// here they hold chars, so their constructors convert through `!= 0` first.
template <class A> EMU_INLINE constexpr auto __emu_truth(A a) {
  if constexpr (__emu_vinfo<A>::is_vec) {
    vec<char, __emu_vinfo<A>::n> r{};
    for (int k = 0; k < __emu_vinfo<A>::n; ++k) r[k] = a[k] != 0;
    return r;
  } else {
    return (char)(a != 0);
  }
}
template <class V, class... A> EMU_INLINE constexpr V __emu_make_bool_vec(A... a) {
  return __emu_make_vec<V>(__emu_truth(a)...);
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
#define bool2(...) ::metal::__emu_make_bool_vec<::bool2>(__VA_ARGS__)
#define bool3(...) ::metal::__emu_make_bool_vec<::bool3>(__VA_ARGS__)
#define bool4(...) ::metal::__emu_make_bool_vec<::bool4>(__VA_ARGS__)

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

} // namespace metal

#endif
