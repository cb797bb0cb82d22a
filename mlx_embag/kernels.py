"""The one place that builds Metal kernels: ``mx.fast.metal_kernel`` or the emulator's.

Each kernel family lives in ``metal/<name>.metal`` (a kernel *body*; MLX writes
the signature), built with the shared header ``metal/embag_common.h`` (slot and
flag names, the bag-bounds and poison helpers). :func:`call` runs one by name;
``mlx_embag.launchers`` holds one launcher per kernel. The kernel object is built once
per (name, implementation) and reused: MLX then compiles one library per
template / dtype combination and caches it.

On a Mac with Metal the real ``mx.fast.metal_kernel`` is used; elsewhere the
CPU emulator's drop-in (``mlx_embag.emulator.metal_kernel``) when it is enabled
(``mlx_embag.emulator.enable()`` or ``MLX_EMBAG_EMULATE_METAL=1``).

Every input with fewer than 8 elements is flattened and padded to 8:
MLX puts inputs under 8 elements in the ``constant`` address space, which
would change the kernel's parameter types (and cost one more compiled
specialisation) for tiny calls. The kernels read sizes from their ``params``
input, never from the padded lengths. This is the one place inputs are padded:
an input a call's flags say the kernel never reads is :func:`absent`, and the
``params`` builders write only the slots the header names.
"""

from __future__ import annotations

import threading
import warnings

import mlx.core as mx

from . import backend, emulator
from ._sources import HEADER, read_metal, read_source
from .emulator.profile import recording

# name -> (input names, output names, atomic outputs)
KERNELS = {
    "bag_fwd": (
        ("weight", "indices", "offsets", "prevmax", "psw", "scale", "params"),
        ("out", "argmax", "meta"),
        False,
    ),
    "bag_combine": (("part", "pargmax", "pmeta", "params"), ("out", "argmax", "meta"), False),
    "row_scale": (("weight", "indices", "params", "fparams"), ("scale",), False),
    "bag_bwd": (("cot", "indices", "offsets", "meta", "psw", "freq", "params"), ("grad",), True),
    "max_bwd": (("cot", "argmax", "params"), ("grad",), True),
    "psw_grad": (("cot", "weight", "indices", "offsets", "meta", "scale", "params"), ("dpsw",), False),
    "bag_owner": (("indices", "offsets", "meta", "psw", "freq", "params"), ("owner", "coef"), False),
    "det_partial": (("skey", "order", "srcrow", "coef", "src", "params"), ("part",), False),
    "det_write": (("skey", "order", "srcrow", "coef", "src", "part", "params"), ("grad",), False),
    "sparse_update": (
        ("skey", "order", "values", "part", "state1", "state2", "hyper", "params"),
        ("dw", "dstate1", "dstate2"),
        False,
    ),
}

MIN_DEVICE_SIZE = 8
_built = {}


def emulator_enabled() -> bool:
    """Whether kernels are built with the CPU emulator where Metal is missing: the library's one
    question to :mod:`mlx_embag.emulator` (``emulator.enable()`` or ``MLX_EMBAG_EMULATE_METAL=1``).

    Example:
        >>> from mlx_embag import emulator, kernels
        >>> emulator.enable()
        >>> kernels.emulator_enabled()
        True
        >>> emulator.reset()
    """
    return emulator.is_enabled()


def _factory():
    """``(metal_kernel, tag)`` for this machine; raises ``RuntimeError`` without either."""
    if recording():  # a profile measures the emulator, also on a Mac
        return emulator.metal_kernel, "emulator"
    if mx.metal.is_available():
        return mx.fast.metal_kernel, "metal"
    if emulator_enabled():
        return emulator.metal_kernel, "emulator"
    raise RuntimeError(backend.metal_unavailable_reason())


def get(name: str):
    """The kernel object for ``metal/<name>.metal`` (built once per implementation)."""
    make, tag = _factory()
    key = (name, tag)
    k = _built.get(key)
    if k is None:
        inputs, outputs, atomic = KERNELS[name]
        k = make(
            name=f"mlx_embag_{name}",
            input_names=list(inputs),
            output_names=list(outputs),
            source=read_metal(name),
            header=read_source(HEADER),
            atomic_outputs=atomic,
        )
        _built[key] = k
    return k


def device_input(x: mx.array) -> mx.array:
    """``x`` itself, or, under 8 elements, flattened and zero-padded to 8 (see the module docstring).

    Example:
        >>> from mlx_embag import kernels
        >>> import mlx.core as mx
        >>> kernels.device_input(mx.array([3, 4])).tolist()
        [3, 4, 0, 0, 0, 0, 0, 0]

    Larger inputs keep their shape: the kernels index them flat, and MLX
    shapes are 32-bit, so a table of more than 2**31 elements cannot be
    flattened.
    """
    if x.size >= MIN_DEVICE_SIZE:
        return x
    x = x.reshape(-1)
    return mx.concatenate([x, mx.zeros((MIN_DEVICE_SIZE - x.size,), dtype=x.dtype)])


_absent = {}


def absent(dtype) -> mx.array:
    """The stand-in for an input the kernel does not read in this call (its flag is off).

    Its dtype still picks the specialisation, so pass the dtype the real input would have.
    One constant per dtype, built from a Python list (so it holds data even when
    first asked for inside ``mx.compile``) and shared by every call.

    Example:
        >>> from mlx_embag import kernels
        >>> import mlx.core as mx
        >>> kernels.absent(mx.float16).shape
        (8,)
    """
    x = _absent.get(dtype)
    if x is None:
        x = _absent[dtype] = mx.array([0] * MIN_DEVICE_SIZE, dtype=dtype)
    return x


class KernelUnavailable(RuntimeError):
    """A kernel specialisation failed to build or run; ``backend="auto"`` takes the reference path.

    Example:
        >>> from mlx_embag import kernels
        >>> issubclass(kernels.KernelUnavailable, RuntimeError)
        True
    """


class _AutoDepth(threading.local):
    # A class default, not getattr(local, "depth", 0): a missing attribute raises and
    # clears an AttributeError inside getattr, a microsecond on every launch.
    depth = 0


_auto = _AutoDepth()
_probed = {}  # specialisation -> None (it runs) or the failure's message


class _Probing:
    # A plain context manager, not a contextlib generator: every "auto" call enters one,
    # and a generator-based one costs a few microseconds to create and run.
    def __enter__(self):
        _auto.depth += 1

    def __exit__(self, *exc):
        _auto.depth -= 1
        return False


_PROBING = _Probing()


def auto_fallback():
    """While active, :func:`call` first builds and runs each new kernel specialisation once on
    tiny inputs; one that fails warns once (with the compiler's message) and raises
    :class:`KernelUnavailable` then and on every later use, for the caller to fall back.

    Example:
        >>> from mlx_embag import kernels
        >>> with kernels.auto_fallback():
        ...     kernels.probing()
        True
        >>> kernels.probing()
        False
    """
    return _PROBING


def probing() -> bool:
    """Whether :func:`call` is checking specialisations for ``backend="auto"`` (see :func:`auto_fallback`)."""
    return _auto.depth > 0


def _probe(name, key, template, inputs, output_dtypes):
    """Build and run specialisation ``key`` once on zero inputs of 8 elements (the size
    :func:`device_input` pads to, so the same library) and zero ``params``: no work."""
    try:
        outs = get(name)(
            inputs=[mx.zeros((MIN_DEVICE_SIZE,), dtype=x.dtype) for x in inputs],
            template=list(template),
            grid=(1, 1, 1),
            threadgroup=(1, 1, 1),
            output_shapes=[(MIN_DEVICE_SIZE,)] * len(output_dtypes),
            output_dtypes=list(output_dtypes),
            init_value=0,
        )
        mx.eval(outs)
    except Exception as e:  # noqa: BLE001 - any failure of the kernel means the reference path
        if "function transformations" in str(e):
            return  # tracing (mx.compile, vmap) cannot evaluate: probe on a later, eager call
        _probed[key] = str(e)
        warnings.warn(
            f"mlx_embag: the Metal kernel {name} (template {list(template)}) failed to build or run; "
            f"backend='auto' uses the reference path for it in this process. The error was:\n{e}",
            RuntimeWarning,
            stacklevel=4,
        )
        return
    _probed[key] = None


def _probe_key(name, tag, template_repr, inputs, output_dtypes):
    """A specialisation's key in ``_probed``: what building the kernel depends on."""
    return name, tag, template_repr, tuple(x.dtype for x in inputs), output_dtypes


def call(name, inputs, *, template, grid, threadgroup, output_shapes, output_dtypes, init_value=None):
    """Run kernel ``name`` on ``inputs`` (in the order of ``KERNELS[name]``); returns its outputs.

    Under :func:`auto_fallback` a specialisation that does not build raises :class:`KernelUnavailable`.
    """
    if _auto.depth > 0:  # probing(), inlined: every launch asks
        key = _probe_key(name, _factory()[1], repr(list(template)), inputs, tuple(output_dtypes))
        if key not in _probed:
            _probe(name, key, template, inputs, output_dtypes)
        if _probed.get(key) is not None:
            raise KernelUnavailable(_probed[key])
    k = get(name)
    kw = {} if init_value is None else {"init_value": init_value}
    return k(
        inputs=[x if x.size >= MIN_DEVICE_SIZE else device_input(x) for x in inputs],
        template=list(template),
        grid=tuple(map(int, grid)),
        threadgroup=tuple(map(int, threadgroup)),
        output_shapes=[tuple(s) for s in output_shapes],
        output_dtypes=list(output_dtypes),
        **kw,
    )


_call = call  # the module's own, to tell a replaced ``call`` (a test's spy) from it
_UNPROBED = "not probed yet"  # a stand-in failure message for a key _probed does not hold


def launch(name, *, template, grid, threadgroup, output_shapes, output_dtypes, init_value=None, small=True):
    """One launch of kernel ``name`` with everything but its inputs fixed: ``run(inputs)``.

    ``run(inputs)`` returns what ``call(name, inputs, ...)`` with these keyword
    arguments returns; a launch repeated on every call skips rebuilding its lists
    and tuples and re-checking its inputs' sizes. ``small`` says whether an input
    may have fewer than 8 elements: such a launch, one under :func:`auto_fallback`
    whose specialisation has not yet been probed and found working, and every launch
    while :func:`call` is replaced (tests spy on it) go through :func:`call`. The
    kernel object is looked up on every launch, by the current :func:`_factory`'s
    tag, so switching implementations (the emulator on or off) is honoured. A closure, not an object with ``__call__``: calling it is cheaper.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import emulator, kernels
        >>> from mlx_embag import _embag_common as common
        >>> emulator.enable()
        >>> scale = kernels.launch("row_scale", template=[("T", mx.float32)], grid=(32, 1, 1),
        ...                        threadgroup=(32, 8, 1), output_shapes=[(1,)], output_dtypes=[mx.float32])
        >>> p, f = common.params(N=1, V=1, D=2), common.fparams(MAX_NORM_HI=1.0, NORM_TYPE=2.0)
        >>> [round(v, 4) for v in scale([mx.array([[3.0, 4.0]]), mx.array([0]), p, f])[0].tolist()]
        [0.2]
        >>> emulator.reset()
    """
    template = list(template)
    grid = tuple(map(int, grid))
    threadgroup = tuple(map(int, threadgroup))
    output_shapes = [tuple(s) for s in output_shapes]
    output_dtypes = list(output_dtypes)
    # The parts of call's probe key that do not change between launches (repr is slow).
    template_key, outputs_key = repr(template), tuple(output_dtypes)

    def run(inputs):
        slow = small or call is not _call
        if not slow:
            tag = _factory()[1]
            if _auto.depth > 0:
                # Under "auto", only a specialisation already probed and found working skips
                # call's probing: the same key, read from the same registry (tests reset it).
                key = _probe_key(name, tag, template_key, inputs, outputs_key)
                slow = _probed.get(key, _UNPROBED) is not None
        if slow:
            return call(
                name,
                inputs,
                template=template,
                grid=grid,
                threadgroup=threadgroup,
                output_shapes=output_shapes,
                output_dtypes=output_dtypes,
                init_value=init_value,
            )
        k = _built.get((name, tag))  # get(name), inlined
        if k is None:
            k = get(name)
        return k(
            inputs=inputs,
            template=template,
            grid=grid,
            threadgroup=threadgroup,
            output_shapes=output_shapes,
            output_dtypes=output_dtypes,
            init_value=init_value,  # None: no initial fill, as when left out
        )

    return run
