"""``metal_kernel``: the emulator's drop-in for ``mx.fast.metal_kernel``.

It validates arguments as MLX does, generates MLX's exact source
(:mod:`.generator`), marshals the inputs and outputs to NumPy buffers in
MLX's binding order and hands them to :func:`.runtime.launch`, which compiles
the source against the MSL shim and runs the grid on the CPU.

Example:
    >>> import mlx.core as mx
    >>> from mlx_embag.emulator import metal_kernel
    >>> k = metal_kernel("twice", ["a"], ["b"],
    ...                  "uint i = thread_position_in_grid.x; b[i] = 2 * a[i];")
    >>> k(inputs=[mx.arange(8, dtype=mx.float32)], output_shapes=[(8,)],
    ...   output_dtypes=[mx.float32], grid=(8, 1, 1), threadgroup=(4, 1, 1))[0].tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from . import generator, settings

MATH_MODES = ("safe", "relaxed", "fast")


def _parse_compile_options(compile_options) -> str:
    if compile_options is None:
        return "safe"
    if not isinstance(compile_options, dict):
        raise ValueError("[metal_kernel] compile_options must be None or a dict.")
    mode = "safe"
    for key, value in compile_options.items():
        if key != "math_mode":
            raise ValueError(f"[metal_kernel] Unknown compile option `{key}`.")
        if value not in MATH_MODES:
            raise ValueError("[metal_kernel] Expected math_mode to be 'safe', 'relaxed', or 'fast'.")
        mode = value
    return mode


def _to_array(value) -> mx.array:
    """MLX's ``to_array`` for a ScalarOrArray input: float32, int32 (int64 if needed), bool."""
    if isinstance(value, mx.array):
        return value
    if isinstance(value, bool):
        return mx.array(value, dtype=mx.bool_)
    if isinstance(value, int):
        return mx.array(value, dtype=mx.int32 if -(2**31) <= value < 2**31 else mx.int64)
    if isinstance(value, float):
        return mx.array(value, dtype=mx.float32)
    raise TypeError(
        f"[metal_kernel] inputs: expected mx.array or a Python scalar, got {type(value).__name__}"
    )


def _is_cpu_stream(stream) -> bool:
    """MLX refuses a CPU stream or device (``stream=None`` means the GPU stream)."""
    if stream is None:
        return False
    if isinstance(stream, mx.DeviceType):
        return stream == mx.DeviceType.cpu
    device = stream if isinstance(stream, mx.Device) else getattr(stream, "device", None)
    return device is not None and device.type == mx.DeviceType.cpu


def _host(a: mx.array, display_name: str) -> np.ndarray:
    """A C-contiguous NumPy copy; bfloat16 travels as uint16 bits."""
    if a.dtype == mx.bfloat16:
        a = a.view(mx.uint16)
    try:
        return np.ascontiguousarray(np.array(a))
    except (ValueError, RuntimeError) as e:
        raise RuntimeError(
            f"[metal_kernel] The Metal emulator runs `{display_name}` eagerly on concrete inputs and "
            f"cannot be used inside mx.compile or mx.vmap (or other tracing transforms) ({e})."
        ) from None


def input_buffers(hosts, shape_infos) -> list[np.ndarray]:
    """The buffers MLX binds for the inputs, in binding order.

    Each input (a 0-d one as one element) is followed by the ``_shape``
    (int32), ``_strides`` (int64, in elements) and ``_ndim`` (int32) buffers
    its source asks for (:func:`.generator.detect_shape_info`).

    Args:
        hosts: one C-contiguous NumPy array per input.
        shape_infos: per input, whether the source uses its shape, strides, ndim.

    Example:
        >>> import numpy as np
        >>> [b.tolist() for b in input_buffers([np.zeros((2, 3)), np.float32(5)], [(True, True, True)] * 2)]
        [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [2, 3], [3, 1], [2], [5.0]]
    """
    buffers = []
    for host, (has_shape, has_strides, has_ndim) in zip(hosts, shape_infos):
        host = np.asarray(host)
        if host.ndim == 0:
            buffers.append(host.reshape(1))
            continue
        buffers.append(host)
        if has_shape:
            buffers.append(np.array(host.shape, np.int32))
        if has_strides:
            buffers.append(np.array([s // max(host.itemsize, 1) for s in host.strides], np.int64))
        if has_ndim:
            buffers.append(np.array([host.ndim], np.int32))
    return buffers


def output_buffer(shape, dtype, init_value=None) -> np.ndarray:
    """A NumPy buffer for one output of MLX dtype ``dtype`` (bfloat16 as uint16 bits).

    Without ``init_value`` it holds garbage as a reused GPU buffer might: all
    bits set (NaN for floats, -1 for ints); else ``init_value`` cast as MLX casts.

    Example:
        >>> import mlx.core as mx
        >>> output_buffer((3,), mx.int32).tolist(), output_buffer((2,), mx.bfloat16, 1.0).tolist()
        ([-1, -1, -1], [16256, 16256])
    """
    proto = np.array(mx.zeros((0,), dtype).view(mx.uint16) if dtype == mx.bfloat16 else mx.zeros((0,), dtype))
    count = int(np.prod(shape, dtype=np.int64))
    if init_value is None:
        return np.full(count * proto.itemsize, 0xFF, np.uint8).view(proto.dtype).reshape(shape)
    filled = mx.full(tuple(shape), mx.array(init_value, dtype=mx.float32)).astype(dtype)
    if dtype == mx.bfloat16:
        filled = filled.view(mx.uint16)
    return np.array(filled).reshape(shape).copy()


class _TransformNotImplemented(ValueError, RuntimeError):
    """Metal raises ``ValueError`` (C++ ``std::invalid_argument``); every other failure of an emulated
    kernel is a ``RuntimeError``, so an ``except`` clause written for either catches it."""


def _not_implemented(transform: str, display_name: str) -> _TransformNotImplemented:
    """The error for ``mx.grad``/``mx.jvp``/``mx.vmap`` through a bare kernel, worded like Metal's."""
    return _TransformNotImplemented(
        f"[metal_kernel] {transform.upper()} is not implemented for the custom kernel `{display_name}` "
        f'(as on Metal: "[Primitive::{transform}] Not implemented for CustomKernel."): '
        + (
            "wrap it in mx.custom_function with a vjp."
            if transform == "vjp"
            else "only reverse mode (a custom_function's vjp) can go through a Metal kernel."
        )
    )


class MetalKernel:
    """A kernel object; call it like the one ``mx.fast.metal_kernel`` returns.

    :func:`metal_kernel` builds one. As on Metal, ``mx.grad``, ``mx.jvp`` and
    ``mx.vmap`` cannot go through a bare kernel: wrap it in ``mx.custom_function``
    with a vjp for reverse mode.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag.emulator import MetalKernel
        >>> k = MetalKernel("inc", ["a"], ["b"], "uint i = thread_position_in_grid.x; b[i] = a[i] + 1;")
        >>> k
        MetalKernel(name='inc', emulated)
        >>> call = dict(output_shapes=[(4,)], output_dtypes=[mx.float32], grid=(4, 1, 1), threadgroup=(4, 1, 1))
        >>> k(inputs=[mx.zeros(4)], **call)[0].tolist()
        [1.0, 1.0, 1.0, 1.0]
        >>> try:
        ...     mx.jvp(lambda a: k(inputs=[a], **call)[0], [mx.zeros(4)], [mx.ones(4)])
        ... except ValueError as e:  # the type Metal raises
        ...     print(e)  # doctest: +ELLIPSIS
        [metal_kernel] JVP is not implemented for the custom kernel `inc` (as on Metal: ...
    """

    def __init__(
        self,
        name,
        input_names,
        output_names,
        source,
        header="",
        ensure_row_contiguous=True,
        atomic_outputs=False,
        compile_options=None,
    ):
        if not isinstance(name, str):
            raise TypeError("[metal_kernel] name must be a str")
        self.name = name
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        if not self.output_names:
            raise ValueError("[metal_kernel] Must specify at least one output.")
        self.source = source
        self.header = header
        self.ensure_row_contiguous = bool(ensure_row_contiguous)
        self.atomic_outputs = bool(atomic_outputs)
        self.math_mode = _parse_compile_options(compile_options)
        self._shape_infos = generator.detect_shape_info(self.input_names, source)

    def __repr__(self):
        return f"MetalKernel(name={self.name!r}, emulated)"

    def generate(self, inputs, output_dtypes, template=None) -> tuple[str, str]:
        """``(kernel_name, kernel_source)`` for these inputs (arrays) and output dtypes."""
        infos = [generator.InputInfo(a.dtype, a.ndim, a.size) for a in inputs]
        return generator.generate_source(
            self.name,
            self.input_names,
            self.output_names,
            self.source,
            infos,
            list(output_dtypes),
            template,
            self.header,
            self.atomic_outputs,
        )

    def __call__(
        self,
        *,
        inputs,
        output_shapes,
        output_dtypes,
        grid,
        threadgroup,
        template=None,
        init_value=None,
        verbose=False,
        stream=None,
        seed=None,
        sanitize=None,
    ):
        """Run the kernel on the CPU; returns the outputs as a list of ``mx.array``.

        ``seed`` and ``sanitize`` (not in MLX's API) override :func:`enable`'s settings.
        """
        for arg, given, want in (
            ("inputs", inputs, self.input_names),
            ("output_shapes", output_shapes, self.output_names),
            ("output_dtypes", output_dtypes, self.output_names),
        ):
            if len(given) != len(want):
                raise ValueError(
                    f"[metal_kernel] Expected `{arg}` to have size {len(want)} but got size {len(given)}."
                )
        if _is_cpu_stream(stream):
            raise ValueError("[metal_kernel] Only supports the GPU.")
        arrays = [_to_array(x) for x in inputs]
        run = lambda *xs: self._run(
            list(xs),
            output_shapes,
            output_dtypes,
            grid,
            threadgroup,
            template,
            init_value,
            verbose,
            seed,
            sanitize,
        )
        if not arrays:
            return run()
        # On Metal a CustomKernel has no VJP, JVP or vmap rule: transforming a bare kernel must fail
        # here too, not give silent zeros (the NumPy round trip cuts the graph, so MLX's fallback of
        # differentiating `run` itself would return zero tangents).
        op = mx.custom_function(run)

        @op.vjp
        def _no_vjp(primals, cotangents, outputs):
            raise _not_implemented("vjp", self.name)

        @op.jvp
        def _no_jvp(primals, tangents):
            raise _not_implemented("jvp", self.name)

        @op.vmap
        def _no_vmap(inputs, axes):
            # A backstop: the forward pass already refuses vmap's tracers (see `_host`).
            raise _not_implemented("vmap", self.name)

        return list(op(*arrays))

    def _run(
        self,
        arrays,
        output_shapes,
        output_dtypes,
        grid,
        threadgroup,
        template,
        init_value,
        verbose,
        seed,
        sanitize,
    ):
        output_dtypes = list(output_dtypes)
        output_shapes = [tuple(int(d) for d in s) for s in output_shapes]
        kname, text = self.generate(arrays, output_dtypes, template)
        if verbose:
            print(f"Generated source code for `{self.name}`:\n```\n{text}\n```", flush=True)

        # Contiguous copies always (ensure_row_contiguous=False cannot share MLX's buffer here).
        buffers = input_buffers([_host(a, self.name) for a in arrays], self._shape_infos)
        outs = [output_buffer(s, dt, init_value) for s, dt in zip(output_shapes, output_dtypes)]
        cfg = settings.current()
        from . import runtime

        runtime.launch(
            display_name=self.name,
            kernel_name=kname,
            kernel_source=text,
            buffers=buffers + outs,
            grid=tuple(grid),
            threadgroup=tuple(threadgroup),
            math_mode=self.math_mode,
            seed=cfg.seed if seed is None else seed,
            sanitize=cfg.sanitize if sanitize is None else bool(sanitize),
        )
        results = []
        for o, dt in zip(outs, output_dtypes):
            r = mx.array(o)
            results.append(r.view(mx.bfloat16) if dt == mx.bfloat16 else r)
        return results


def metal_kernel(
    name,
    input_names,
    output_names,
    source,
    header="",
    ensure_row_contiguous=True,
    atomic_outputs=False,
    compile_options=None,
) -> MetalKernel:
    """Same signature as ``mx.fast.metal_kernel``; the kernel runs on the CPU emulator.

    Returns:
        MetalKernel: call it with ``inputs``, ``output_shapes``, ``output_dtypes``,
        ``grid``, ``threadgroup`` and optionally ``template`` and ``init_value``.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag.emulator import metal_kernel
        >>> make = mx.fast.metal_kernel if mx.metal.is_available() else metal_kernel
        >>> k = make(name="scale", input_names=["a"], output_names=["b"],
        ...          source="uint i = thread_position_in_grid.x; b[i] = T(3) * a[i];")
        >>> k(inputs=[mx.arange(4, dtype=mx.float16)], template=[("T", mx.float16)],
        ...   output_shapes=[(4,)], output_dtypes=[mx.float16], grid=(4, 1, 1), threadgroup=(2, 1, 1))[0].tolist()
        [0.0, 3.0, 6.0, 9.0]
    """
    return MetalKernel(
        name,
        input_names,
        output_names,
        source,
        header,
        ensure_row_contiguous,
        atomic_outputs,
        compile_options,
    )
