"""MLX transformation rules shared by the custom functions of both paths.

``mx.vmap`` of a ``custom_function`` with no vmap rule vectorises the
primitives inside it, and ``mx.grad`` of that then differentiates those
primitives instead of calling the custom VJP: max-mode ties, ``padding_idx``,
``scale_grad_by_freq`` and ``max_norm``'s straight-through would all be lost.
:func:`loop_vmap` gives a custom function a rule that runs it once per batch
element, so every element keeps the custom VJP. (MLX still traces the forward's
own primitives first, so a forward built on a primitive without a vmap rule,
such as ``segmented_mm`` or a Metal kernel, raises under ``mx.vmap`` before
any rule runs.)

MLX passes ``None`` arguments of a custom function to its vmap rule with the
wrong axes, so the functions given a rule here take arrays only.

Example:
    >>> import mlx.core as mx
    >>> @mx.custom_function
    ... def twice(x, y):
    ...     return 2 * x + 0 * y
    >>> twice = loop_vmap(twice)
    >>> mx.vmap(twice, in_axes=(0, None))(mx.ones((3, 2)), mx.zeros(2)).tolist()
    [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
"""

from __future__ import annotations

import mlx.core as mx

JVP_UNSUPPORTED = (
    "mx.jvp (forward mode) is not supported by mlx_embag: MLX's custom Metal kernels "
    "have no JVP and MLX cannot take a JVP through the reference path's gathers. "
    "Use reverse mode (mx.grad, mx.vjp, nn.value_and_grad)."
)


def evaluate_unless_traced(*arrays) -> bool:
    """``mx.eval(*arrays)``; False instead when MLX is tracing (``mx.compile``, ``mx.vmap``),
    where arrays cannot be evaluated. Only for the documented sync points (a requested
    host check, a sparse optimizer's step), never on the forward or backward path.

    Example:
        >>> import mlx.core as mx
        >>> evaluate_unless_traced(mx.ones(2))
        True
        >>> mx.compile(lambda x: x + evaluate_unless_traced(x))(mx.ones(2)).tolist()
        [1.0, 1.0]
    """
    try:
        mx.eval(*arrays)
        return True
    except (ValueError, RuntimeError) as e:
        if "transformations" not in str(e) and "compile" not in str(e):
            raise
        return False


def _rule(fn):
    def rule(inputs, axes):
        if isinstance(inputs, mx.array):  # MLX unwraps a single argument
            inputs, axes = (inputs,), (axes,)
        size = next(x.shape[a] for x, a in zip(inputs, axes) if a is not None)
        results = []
        for k in range(size):
            args = [x if a is None else mx.take(x, k, axis=a) for x, a in zip(inputs, axes)]
            results.append(fn(*args))
        if isinstance(results[0], mx.array):
            return mx.stack(results), 0
        outs = tuple(mx.stack(list(parts)) for parts in zip(*results))
        return outs, (0,) * len(outs)

    return rule


def loop_vmap(fn):
    """Give the custom function ``fn`` a vmap rule that calls it once per batch element.

    Each call is ``fn`` itself, so ``mx.grad`` of the vectorised function uses
    ``fn``'s VJP for every element. Outputs are stacked along axis 0.

    Example:
        >>> import mlx.core as mx
        >>> @mx.custom_function
        ... def f(x, i):
        ...     return x[i]
        >>> f = loop_vmap(f)
        >>> mx.vmap(f, in_axes=(None, 0))(mx.array([5.0, 6.0]), mx.array([1, 0])).tolist()
        [6.0, 5.0]
    """
    fn.vmap(_rule(fn))
    return fn


def refuse_jvp(fn):
    """Make ``mx.jvp`` through the custom function ``fn`` raise :data:`JVP_UNSUPPORTED`.

    The forward must not differentiate through its own primitives first: wrap
    its inputs in ``mx.stop_gradient`` so that MLX reaches this rule.

    Example:
        >>> import mlx.core as mx
        >>> @mx.custom_function
        ... def f(x, y):
        ...     return mx.stop_gradient(x) * 2
        >>> f = refuse_jvp(f)
        >>> try:
        ...     mx.jvp(lambda x: f(x, x), [mx.ones(2)], [mx.ones(2)])
        ... except ValueError as e:
        ...     print(str(e)[:35])
        mx.jvp (forward mode) is not suppor
    """

    def no_jvp(primals, tangents):
        raise ValueError(JVP_UNSUPPORTED)

    fn.jvp(no_jvp)
    return fn
