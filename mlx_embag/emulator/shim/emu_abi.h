// The binary interface between a compiled kernel (.so built from the MSL shim
// plus MLX's generated source) and the emulator runtime (runtime.cpp).
// Plain C types only: it is included both by the runtime, which sees the
// system headers, and by kernels, which see none.
#ifndef MLX_EMBAG_EMU_ABI_H
#define MLX_EMBAG_EMU_ABI_H

#define EMU_ABI_VERSION 1
#define EMU_SIMD_WIDTH 32
#define EMU_QUAD_WIDTH 4
#define EMU_SIMD_SLOT_BYTES 64
#define EMU_MAX_TG_VARS 256
#define EMU_MAX_TG_MEMORY 32768

#ifdef __cplusplus
extern "C" {
#endif

// Every kernel attribute of the MSL spec that MLX detects, for one thread.
typedef struct EmuAttrs {
  unsigned thread_position_in_grid[3];
  unsigned thread_position_in_threadgroup[3];
  unsigned threadgroup_position_in_grid[3];
  unsigned threads_per_threadgroup[3];          // actual size (smaller at the grid edge)
  unsigned dispatch_threads_per_threadgroup[3]; // the requested (clamped) size
  unsigned threadgroups_per_grid[3];
  unsigned threads_per_grid[3];
  unsigned grid_origin[3];
  unsigned thread_index_in_threadgroup;
  unsigned thread_index_in_simdgroup;
  unsigned simdgroup_index_in_threadgroup;
  unsigned simdgroups_per_threadgroup;
  unsigned dispatch_simdgroups_per_threadgroup;
  unsigned thread_index_in_quadgroup;
  unsigned quadgroup_index_in_threadgroup;
  unsigned quadgroups_per_threadgroup;
  unsigned dispatch_quadgroups_per_threadgroup;
  unsigned threads_per_simdgroup;
  unsigned thread_execution_width;
} EmuAttrs;

// Runs one GPU thread of the kernel: generated per kernel.
typedef void (*EmuEntry)(void** buffers, const EmuAttrs* attrs);

// Runtime services a kernel calls (resolved from the runtime library, which is
// loaded RTLD_GLOBAL before any kernel).
// kind: 0 = threadgroup_barrier, 1 = simdgroup_barrier. `site` identifies
// the call in the kernel source (line * 4096 + column).
void __emu_barrier(int kind, unsigned site);
// Publishes `size` bytes of this lane's value, waits until every live lane of
// the SIMD-group reached the same call site, and returns the base of the
// 32 x EMU_SIMD_SLOT_BYTES exchange area; *mask gets the live lanes and
// *lane this lane's index. group_width (32, or 4 for quad functions) is
// informational: the whole SIMD-group synchronises.
const void* __emu_simd_exchange(const void* value, unsigned size, unsigned* mask, unsigned* lane,
                                int group_width, unsigned site);
// Shared storage for the threadgroup variable `id` of the current threadgroup.
void* __emu_tg_alloc(unsigned id, unsigned size, unsigned align);
// Marks the calling thread as having left the kernel with an explicit
// `return` (the generated source routes the body's `return;` here): only such
// lanes stop counting as live for SIMD-group functions. A lane that runs off
// the end of the kernel while others wait at a SIMD call skipped that call.
void __emu_return(void);
// Aborts the launch with a message (never returns to the kernel).
void __emu_fail(const char* message);

#ifdef __cplusplus
}
#endif
#endif
