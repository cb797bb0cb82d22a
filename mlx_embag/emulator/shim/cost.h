// cost.h: the profiler's side of the runtime (see cost_record.cpp and
// cost_replay.cpp, compiled into the same library as runtime.cpp).
//
// A "cost" build of a kernel (emulator/_cost_build.py) carries SanitizerCoverage
// callbacks: one at the start of every basic block and one before every load
// and store, plus a hook in the shim's atomics. While a profile records, the
// runtime runs the grid on one worker and tells this code which GPU thread
// (lane) runs, when a SIMD-group's lanes have all stopped (finished, or blocked
// at a barrier) and when a threadgroup ends; the lanes' traces are then
// regrouped into SIMD-group instructions (cost_replay.cpp).
#ifndef MLX_EMBAG_COST_H
#define MLX_EMBAG_COST_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

namespace cost {
extern int g_on;  // a profiled launch is running
void tg_begin(unsigned n, const char* arena, size_t arena_bytes);
void set_lane(unsigned i);   // thread i of the threadgroup runs now
void lane_done(unsigned i);  // thread i finished the kernel
void sync_point();           // fibers: every thread is blocked or finished
void tg_end();

// A growable array (no C++ library here).
template <class T> struct Vec {
  T* p = nullptr;
  size_t n = 0, cap = 0;
  bool push(const T& v) {
    if (n == cap && !reserve(cap ? 2 * cap : 64)) return false;
    p[n++] = v;
    return true;
  }
  bool reserve(size_t c) {
    if (c <= cap) return true;
    T* q = (T*)realloc(p, c * sizeof(T));
    if (!q) return false;
    p = q;
    cap = c;
    return true;
  }
  void release() {
    free(p);
    p = nullptr;
    n = cap = 0;
  }
};
}  // namespace cost

#define EMU_COST_HOOK(call)                       \
  do {                                            \
    if (__builtin_expect(cost::g_on, 0)) cost::call; \
  } while (0)
#endif
