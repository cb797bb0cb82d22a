// shim_strict.h: checks the strict pass (strict.py) rewrites kernel code into.
// Part of metal_shim.h; harmless in the build that runs.
#ifndef MLX_EMBAG_SHIM_STRICT_H
#define MLX_EMBAG_SHIM_STRICT_H
#pragma clang system_header

namespace metal {
template <class T> struct __emu_space { static constexpr int value = 0; };
#ifdef EMU_STRICT
template <class T> struct __emu_space<__attribute__((address_space(1))) T> { static constexpr int value = 1; };
template <class T> struct __emu_space<__attribute__((address_space(2))) T> { static constexpr int value = 2; };
template <class T> struct __emu_space<__attribute__((address_space(3))) T> { static constexpr int value = 3; };
#endif
template <class T> struct __emu_pointee { typedef void type; static constexpr bool pointer = false; };
template <class T> struct __emu_pointee<T*> { typedef T type; static constexpr bool pointer = true; };
template <class T> struct __emu_pointee<T* const> { typedef T type; static constexpr bool pointer = true; };
template <class T> constexpr int __emu_space_of = __emu_space<__remove_cv(typename __emu_pointee<T>::type)>::value;

// A C-style cast to an address-space pointer, as the strict pass rewrites it.
template <class To, class From> EMU_INLINE To __emu_as_cast(From x) {
  if constexpr (__emu_pointee<To>::pointer && __emu_pointee<From>::pointer)
    static_assert(__emu_space_of<To> == __emu_space_of<From>,
                  "Metal: a cast cannot move a pointer to another address space (device, constant, "
                  "threadgroup, thread)");
  return (To)x;
}

// The count of a `#pragma unroll`, as the strict pass rewrites it.
template <long N> constexpr long __emu_unroll_count() {
  static_assert(N != 0, "Metal: '#pragma unroll 0' is invalid (the count must be positive)");
  return N;
}
} // namespace metal

#endif
