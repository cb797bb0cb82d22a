"""``backend="auto"`` survives a Metal kernel that does not build on this Mac.

The first time a call under ``"auto"`` would use a kernel specialisation
(kernel, template arguments, dtypes), :mod:`.kernels` builds and runs it once
on tiny inputs; one that fails warns once with the compiler's message, and
every call needing it takes the reference path from then on. The backward
pass's kernels run later, inside ``mx.grad``, where no fallback is possible,
so the first call of each kind also builds its backward graph here (lazily on
a Mac; the probes themselves run eagerly). ``backend="metal"`` never comes
here and raises as before.
"""

from __future__ import annotations

import dataclasses
import functools

import mlx.core as mx

from . import kernels

_backward_checked = set()
_reference_only = set()  # signatures with a kernel that failed: no more tries


_SHAPE_FIELDS = ("num_bags", "bag_size")  # a call's shape: no kernel specialisation depends on it


@functools.lru_cache(maxsize=None)
def _option_names(cls):
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _SHAPE_FIELDS)


def _signature(op_name, args):
    """What decides the backward kernels' specialisations: dtypes, the table's width, static options.

    Every ``"auto"`` call computes it, so it reads the spec's fields directly
    (``dataclasses.asdict`` alone cost ~30 us a call).
    """
    parts = [op_name, args[0].shape[-1:]]
    for a in args:
        if isinstance(a, mx.array):
            parts.append(a.dtype)
        elif dataclasses.is_dataclass(a):
            parts.append((type(a), *(getattr(a, name) for name in _option_names(type(a)))))
        else:
            parts.append(a is None)
    return tuple(parts)


def _check_backward(metal_fn, args, out, key):
    """Build the vjp graph once per signature ``key``, so its kernels are probed now."""
    if key in _backward_checked:
        return
    wrt = [i for i, a in enumerate(args) if isinstance(a, mx.array) and mx.issubdtype(a.dtype, mx.floating)]

    def f(*primals):
        full = list(args)
        for i, p in zip(wrt, primals):
            full[i] = p
        return metal_fn(*full)

    try:
        mx.vjp(f, [args[i] for i in wrt], [mx.zeros(out.shape, out.dtype)])
    except kernels.KernelUnavailable:
        raise
    except Exception:  # noqa: BLE001 - a transform that cannot take the vjp here: the probe waits
        return
    _backward_checked.add(key)


def run(op_name, metal_fn, reference_fn, args, backward=True):
    """``metal_fn(*args)`` with kernel specialisations probed, else ``reference_fn(*args)``.

    ``backward=False`` for a call that is never differentiated.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import _fallback, kernels
        >>> def broken(x):
        ...     raise kernels.KernelUnavailable("no kernel")
        >>> _fallback.run("double", broken, lambda x: 2 * x, (mx.array([1.0]),)).tolist()
        [2.0]
    """
    return runner(op_name, metal_fn, reference_fn, args, backward)(*args)


def runner(op_name, metal_fn, reference_fn, args, backward=True):
    """:func:`run` for every call with the signature of ``args`` (dtypes, the table's width,
    static options; not shapes): ``run(*args)``, the signature computed once here rather
    than on every call (the functional layer's call plans use it).

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import _fallback
        >>> double = _fallback.runner("double", lambda x: 2 * x, lambda x: x + x, (mx.array([0.0]),))
        >>> double(mx.array([1.0])).tolist()
        [2.0]
    """
    key = _signature(op_name, args)

    def run(*args):
        # The module's sets, read on every call (tests replace them).
        if key not in _reference_only:
            try:
                with kernels.auto_fallback():
                    out = metal_fn(*args)
                    if backward and key not in _backward_checked:
                        _check_backward(metal_fn, args, out, key)
                    return out
            except kernels.KernelUnavailable:
                _reference_only.add(key)
        return reference_fn(*args)

    return run
