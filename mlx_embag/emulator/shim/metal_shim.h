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

#include "shim_types.h"
#include "shim_math.h"
#include "shim_atomic.h"
#include "shim_simd.h"

using namespace metal;

#include "mlx_preamble.h"

// Metal has no double precision: the type is rejected (literals such as 1.0
// stay legal, as in Metal, and are evaluated in double here).
#define double __metal_has_no_double_type
// No dynamic allocation on a GPU.
#define new __metal_has_no_new_operator
#define delete __metal_has_no_delete_operator
#endif
