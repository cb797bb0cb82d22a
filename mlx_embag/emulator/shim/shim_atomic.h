// shim_atomic.h: Metal's atomic<T> and the atomic_*_explicit functions. Part of metal_shim.h.
#ifndef MLX_EMBAG_SHIM_ATOMIC_H
#define MLX_EMBAG_SHIM_ATOMIC_H
#pragma clang system_header

namespace metal {
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
// limited form); no half, bfloat or double. The 64-bit limit: MSL has no
// 64-bit read-modify-write that returns a value (no atomic_fetch_add / sub /
// min / max / and / or / xor on atomic<long> or atomic<ulong>); recent GPU
// families only add void atomic_min_explicit / atomic_max_explicit on device
// atomic_ulong (not in this shim). So every atomic_fetch_*_explicit below
// refuses a 64-bit atomic at compile time, as the Metal compiler does.
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

// Cost builds (the profiler, EMU_COST) report every atomic operation to the
// runtime with its call's source position; the function is kept out of line
// and uninstrumented, so the loads inside the compare-and-swap loop below do
// not count as the kernel's loads.
#ifdef EMU_COST
extern "C" void __emu_cost_atomic(const void* p, unsigned size, unsigned site);
#define EMU_ATOMIC_FN __attribute__((noinline, no_sanitize("coverage"))) inline
#define EMU_ATOMIC_SITE , unsigned __emu_site = __builtin_LINE() * 4096u + __builtin_COLUMN()
#define EMU_ATOMIC_COST(obj) __emu_cost_atomic((const void*)(obj), sizeof(__emu_aval<A>), __emu_site)
#else
#define EMU_ATOMIC_FN EMU_INLINE
#define EMU_ATOMIC_SITE
#define EMU_ATOMIC_COST(obj) (void)0
#endif

// The atomic object may sit in any address space (it is deduced into A); a C
// cast moves it to the generic one the __atomic builtins need.
template <class A> using __emu_aval = typename remove_cv_t<A>::value_type;
template <class A> EMU_INLINE __emu_aval<A>* __emu_aptr(A* obj) {
  return (__emu_aval<A>*)(void*)obj;
}
template <class A> EMU_ATOMIC_FN __emu_aval<A> atomic_load_explicit(A* obj, memory_order EMU_ATOMIC_SITE) {
  EMU_ATOMIC_COST(obj);
  __emu_aval<A> r;
  __atomic_load(__emu_aptr(obj), &r, __ATOMIC_SEQ_CST);
  return r;
}
template <class A> EMU_ATOMIC_FN void atomic_store_explicit(A* obj, __emu_aval<A> v, memory_order EMU_ATOMIC_SITE) {
  EMU_ATOMIC_COST(obj);
  __atomic_store(__emu_aptr(obj), &v, __ATOMIC_SEQ_CST);
}
template <class A>
EMU_ATOMIC_FN __emu_aval<A> atomic_exchange_explicit(A* obj, __emu_aval<A> v, memory_order EMU_ATOMIC_SITE) {
  EMU_ATOMIC_COST(obj);
  __emu_aval<A> r;
  __atomic_exchange(__emu_aptr(obj), &v, &r, __ATOMIC_SEQ_CST);
  return r;
}
template <class A>
EMU_ATOMIC_FN bool atomic_compare_exchange_weak_explicit(A* obj, thread __emu_aval<A>* expected,
                                                        __emu_aval<A> desired, memory_order,
                                                        memory_order EMU_ATOMIC_SITE) {
  EMU_ATOMIC_COST(obj);
  return __atomic_compare_exchange(__emu_aptr(obj), (__emu_aval<A>*)(void*)expected, &desired, true,
                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
template <class A>
EMU_ATOMIC_FN bool atomic_compare_exchange_strong_explicit(A* obj, thread __emu_aval<A>* expected,
                                                          __emu_aval<A> desired, memory_order,
                                                          memory_order EMU_ATOMIC_SITE) {
  EMU_ATOMIC_COST(obj);
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
  EMU_ATOMIC_FN __emu_aval<A> atomic_fetch_##op##_explicit(A* obj, __emu_aval<A> v, memory_order EMU_ATOMIC_SITE) { \
    typedef __emu_aval<A> T;                                                   \
    EMU_ATOMIC_COST(obj);                                                      \
    static_assert(!is_same_v<T, bool>, "atomic_fetch_" #op " is not defined for atomic_bool"); \
    static_assert(sizeof(T) != 8, "Metal has no 64-bit atomic_fetch_" #op "_explicit (atomic<long> / " \
                  "atomic<ulong> have no fetch operations; use 32-bit atomics)"); \
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
  EMU_ATOMIC_FN __emu_aval<A> atomic_fetch_##op##_explicit(A* obj, __emu_aval<A> v, memory_order EMU_ATOMIC_SITE) { \
    EMU_ATOMIC_COST(obj);                                                      \
    static_assert(is_integral_v<__emu_aval<A>> && !is_same_v<__emu_aval<A>, bool>, \
                  "atomic_fetch_" #op " needs an integer atomic");             \
    static_assert(sizeof(__emu_aval<A>) != 8, "Metal has no 64-bit atomic_fetch_" #op "_explicit " \
                  "(atomic<long> / atomic<ulong> have no fetch operations; use 32-bit atomics)"); \
    return builtin(__emu_aptr(obj), v, __ATOMIC_SEQ_CST);                      \
  }
EMU_ATOMIC_BITS(and, __atomic_fetch_and)
EMU_ATOMIC_BITS(or, __atomic_fetch_or)
EMU_ATOMIC_BITS(xor, __atomic_fetch_xor)
#undef EMU_ATOMIC_BITS

} // namespace metal

#endif
