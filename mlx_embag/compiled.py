"""Compiled sparse training: a compiled gradient step, an evaluation, a compiled update.

A :class:`~mlx_embag.RowSparseGrad` cannot cross an ``mx.compile`` boundary
(as an argument it is refused; as a return value its arrays are dead
tracers), so the gradient step returns plain arrays
(:func:`~mlx_embag.grads_to_arrays`) and the update takes them
(:func:`~mlx_embag.arrays_to_grads`). The evaluation between the two is what
keeps the table's update in place: had the forward's gather of the table and
the update's scatter into it been one graph, MLX would copy the whole table.
:func:`compiled_step` wires the recipe up; the README's "Sparse training"
spells it out for a hand-written loop.

Example:
    >>> import mlx.core as mx, mlx_embag as meb
    >>> emb = meb.EmbeddingBag(50, 4, mode="sum", sparse=True, backend="reference")
    >>> step = meb.compiled_step(emb, lambda m, x: (m(x) ** 2).sum(), meb.optimizers.SparseAdam(1e-2))
    >>> loss = step(mx.array([[1, 2], [2, 3]]))
    >>> mx.eval(loss, emb.parameters()); loss.shape
    ()
"""

from __future__ import annotations

from functools import partial

import mlx.core as mx

from .autograd import value_and_grad
from .sparse_grad import arrays_to_grads, grads_to_arrays

__all__ = ["compiled_step"]


def compiled_step(model, loss_fn, optimizer):
    """One training step as two compiled functions with an evaluation between them.

    ``loss_fn(model, *batch)`` is the loss, as for :func:`mlx_embag.value_and_grad`
    in the eager loop. The returned ``step(*batch)`` computes the loss and the
    gradients (compiled), evaluates them, and applies ``optimizer`` (compiled);
    it returns the loss. The model's and optimizer's new arrays are left lazy:
    evaluate them with ``mx.eval(loss, model.parameters(), optimizer.state)``, as
    in the eager loop. The batch must be arrays (``mx.compile``'s rule).

    Args:
        model (mlx.nn.Module): the model (its ``sparse=True`` tables get row-sparse updates).
        loss_fn (callable): ``loss_fn(model, *batch) -> scalar``.
        optimizer (mlx.optimizers.Optimizer): e.g. :class:`mlx_embag.optimizers.SparseAdam`,
            or a ``MultiOptimizer`` holding one.

    Example:
        >>> import mlx.core as mx, mlx.nn as nn, mlx_embag as meb
        >>> emb = meb.Embedding(20, 3, sparse=True, backend="reference")
        >>> step = compiled_step(emb, lambda m, x: m(x).sum(), meb.optimizers.SparseSGD(0.5))
        >>> before = emb.weight[4].tolist()
        >>> mx.eval(step(mx.array([4])), emb.parameters())
        >>> [round(a - b, 4) for a, b in zip(emb.weight[4].tolist(), before)]
        [-0.5, -0.5, -0.5]
    """
    loss_and_grad = value_and_grad(model, loss_fn)
    optimizer.init(model.trainable_parameters())
    template = []  # the gradient tree of the trace: which leaves are row-sparse, and their rows

    @partial(mx.compile, inputs=model.state)
    def gradient_step(*batch):
        loss, grads = loss_and_grad(model, *batch)
        template[:] = [grads]
        return (loss, *grads_to_arrays(grads))

    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def update_step(*arrays):
        optimizer.update(model, arrays_to_grads(arrays, template[0]))

    def step(*batch):
        params = model.parameters()
        loss, *arrays = gradient_step(*batch)
        # Tracing ran model.update with tracers inside value_and_grad: put the arrays back.
        model.update(params)
        mx.eval(loss, *arrays)  # the sync point: the forward's gather is done before the scatter
        update_step(*arrays)
        return loss

    return step
