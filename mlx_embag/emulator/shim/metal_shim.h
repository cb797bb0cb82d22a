// metal_shim.h: the Metal Shading Language, as far as MLX kernels use it, for
// a host C++ compiler (clang), plus the helpers of MLX's Metal preamble.
//
// Compiled with -nostdinc -nostdinc++ and no C++ library: what Metal lacks
// (std::, printf, <vector>, exceptions) fails to compile here too. The code
// that runs has no address spaces (clang refuses the implicit copy of a
// struct out of an address space, which MSL allows); the strict pass
// (strict.py, EMU_STRICT) makes them clang address spaces, `constant` also
// const, so a `constant` pointer passed where a `device` one is expected, or
// written through, is an error as on Metal.
#ifndef MLX_EMBAG_METAL_SHIM_H
#define MLX_EMBAG_METAL_SHIM_H
// Diagnostics inside the shim are not the kernel's (the strict pass turns
// some warnings into errors).
#pragma clang system_header

#include "emu_abi.h"

#define __METAL__ 1
#define __METAL_VERSION__ 310
#define __METAL_MACOS__ 1
#define MLX_METAL_JIT 1

#ifdef EMU_STRICT
#define device __attribute__((address_space(1)))
#define constant const __attribute__((address_space(2)))
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

#include "shim_types.h"
#include "shim_math.h"
#include "shim_atomic.h"
#include "shim_simd.h"
#include "shim_simdgroup_matrix.h"
#include "shim_strict.h"

using namespace metal;

#include "mlx_preamble.h"

// Metal has no double precision: the type is rejected (literals such as 1.0
// stay legal, as in Metal, and are evaluated in double here).
#define double __metal_has_no_double_type
// No dynamic allocation on a GPU.
#define new __metal_has_no_new_operator
#define delete __metal_has_no_delete_operator
#endif
