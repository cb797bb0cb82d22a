"""Run ``mx.fast.metal_kernel`` sources on any CPU, with GPU semantics.

``metal_kernel`` has ``mx.fast.metal_kernel``'s signature: it generates the
exact source MLX 0.32 would, compiles it as C++ with clang against a small
Metal Shading Language shim and runs the grid on the CPU (threadgroups as
fibers with real barriers, SIMD groups of 32, atomics, seeded threadgroup
order, optional AddressSanitizer). Inside ``with profile() as prof:`` every launch is
recorded with the memory traffic a GPU would see (``prof.launches``, ``prof.report()``).

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag.emulator import metal_kernel
    >>> k = metal_kernel("neg", ["a"], ["b"], "uint i = thread_position_in_grid.x; b[i] = -a[i];")
    >>> k(inputs=[mx.ones(8)], output_shapes=[(8,)], output_dtypes=[mx.float32],
    ...   grid=(8, 1, 1), threadgroup=(8, 1, 1))[0].sum().item()
    -8.0
"""

from .kernel import MetalKernel, metal_kernel
from .profile import profile
from .settings import disable, enable, is_enabled, reset

__all__ = ["MetalKernel", "metal_kernel", "enable", "disable", "is_enabled", "reset", "profile"]
