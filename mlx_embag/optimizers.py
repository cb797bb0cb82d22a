"""Optimizers that update a :class:`~mlx_embag.RowSparseGrad` table only on its rows.

Each is an ``mlx.optimizers.Optimizer``: alone, or inside
``mlx.optimizers.MultiOptimizer`` beside stock optimizers for the dense
parameters. A ``RowSparseGrad`` leaf is updated on its listed rows only
(duplicates summed first, as PyTorch's ``coalesce()``); a dense leaf gets the
same rule applied densely.

The rows are written with MLX's scatter (``x.at[rows].add``), which updates
the table and the state in place as long as nothing else in the evaluated
graph reads them. Hence the one sync point, as in PyTorch: ``update`` first
evaluates the gradient (and the forward rows it came from, so that the loss
no longer reads the table) unless it runs inside ``mx.compile``, where nothing
can be evaluated; a compiled update should be given a gradient that was
evaluated before (see the README's "Sparse training").

Two paths, picked by ``backend=`` (by default the table's, from the gradient):
on the reference path the state rows are updated without gathering them
first (a gather and a scatter of one array in one graph would copy the
array): e.g. Adam's moment is ``m.at[rows].multiply(b1).at[rows].add((1 - b1) * g)``,
and only the new rows are read back. On the Metal path one kernel per rule
(``metal/sparse_update.metal``, see :mod:`mlx_embag._sparse_kernels`) sums each
row's entries in a fixed order and computes the row's update in the same pass;
the sync point then evaluates the kernel's output instead of the gradient (still
one evaluation), and the scatter-adds that apply it run in place. Inside
``mx.compile`` a rule with state takes the split path instead (the sums from the
deterministic backward's kernels, the rule in MLX ops), which stays in place.

Example:
    >>> import mlx.core as mx, mlx_embag as meb
    >>> emb = meb.Embedding(6, 2, sparse=True, _weight=mx.zeros((6, 2)))
    >>> opt = meb.optimizers.SparseSGD(learning_rate=0.5)
    >>> loss, grads = meb.value_and_grad(emb, lambda x: emb(x).sum())(mx.array([1, 1, 4]))
    >>> opt.update(emb, grads)
    >>> emb.weight[:, 0].tolist()
    [0.0, -1.0, 0.0, 0.0, -0.5, 0.0]
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.optimizers as optim

from . import _sparse_kernels, kernels
from . import backend as _backend
from ._transforms import evaluate_unless_traced
from ._validate import check_backend
from .sparse_grad import RowSparseGrad, row_runs

_F32 = mx.float32

__all__ = ["SparseSGD", "SparseAdagrad", "SparseAdam", "RowWiseAdagrad"]


def _evaluate(grad):
    """The step's sync point: evaluate the gradient unless we are being traced (inside
    mx.compile the graph then stays whole)."""
    evaluate_unless_traced(grad.indices, grad.values, *grad._pending)


class _RowOptimizer(optim.Optimizer):
    """Dispatch per leaf: a ``RowSparseGrad`` to the fused kernel (Metal) or ``_rows``, an array
    to ``_dense``. ``_RULE`` names the kernel's rule, ``_STATE`` the state arrays it updates."""

    _RULE = ""
    _STATE = ()

    def __init__(self, backend=None):
        super().__init__()
        self.backend = check_backend(backend)

    def apply_single(self, gradient, parameter, state):
        if not isinstance(gradient, RowSparseGrad):
            return self._dense(gradient.astype(_F32), parameter, state)
        if gradient.indices.size == 0:
            return parameter
        backend = self.backend if self.backend is not None else gradient._backend
        path = _backend.resolve_backend(
            backend, lambda: _sparse_kernels.unsupported(parameter, gradient.values)
        )
        if path == "metal":
            auto = _backend.is_auto(backend)
            try:
                with kernels.auto_fallback() if auto else contextlib.nullcontext():
                    fused = self._fused(gradient, parameter, state)
            except kernels.KernelUnavailable:  # "auto": this Mac cannot build it (warned once)
                if not auto:
                    raise
                fused, path = None, "reference"
            if fused is not None:
                return fused
        _evaluate(gradient)
        rows, sums, live = row_runs(gradient.indices, gradient.values, path)
        return self._rows(rows, sums, live, parameter, state)

    def _fused(self, gradient, parameter, state):
        """The Metal kernel's step, or None where it must not run (traced, with state to read)."""
        out = _sparse_kernels.step(
            self._RULE,
            gradient.indices,
            gradient.values,
            parameter.dtype,
            parameter.shape[0],
            [state[name] for name in self._STATE],
            self._constants(),
            gradient._pending,
        )
        if out is None:
            return None
        rows, dw, increments = out
        for name, inc in zip(self._STATE, increments):
            state[name] = state[name].at[rows].add(inc)
        return parameter.at[rows].add(dw)

    def _lr(self):
        return self.learning_rate.astype(_F32)


def _add_rows(parameter, rows, live, delta):
    """``parameter[rows] += delta`` on the live entries (the others add exact zeros)."""
    delta = mx.where(live.reshape(-1, *([1] * (delta.ndim - 1))), delta, 0.0)
    return parameter.at[rows].add(delta.astype(parameter.dtype))


class SparseSGD(_RowOptimizer):
    """Plain SGD, ``w -= lr * g``, as ``torch.optim.SGD`` with a sparse gradient.

    Args:
        learning_rate (float or callable): the step size (or a schedule).
        backend (str, optional): ``"auto"``, ``"metal"`` or ``"reference"``; None (default)
            follows the table's ``backend=``. Metal runs the fused kernel.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import RowSparseGrad
        >>> opt = SparseSGD(learning_rate=0.1)
        >>> w = opt.apply_gradients({"w": RowSparseGrad(mx.array([0, 0]), mx.ones((2, 1)), 2)},
        ...                         {"w": mx.zeros((2, 1))})["w"]
        >>> [round(x, 4) for x in w.reshape(-1).tolist()]
        [-0.2, 0.0]
    """

    _RULE = "sgd"

    def __init__(self, learning_rate, backend=None):
        super().__init__(backend)
        self._maybe_schedule("learning_rate", learning_rate)

    def init_single(self, parameter, state):
        pass

    def _constants(self):
        return dict(LR=self._lr())

    def _dense(self, g, parameter, state):
        return (parameter - self._lr() * g).astype(parameter.dtype)

    def _rows(self, rows, sums, live, parameter, state):
        return _add_rows(parameter, rows, live, -self._lr() * sums)


class SparseAdagrad(_RowOptimizer):
    """Adagrad as ``torch.optim.Adagrad`` with a sparse gradient (no decay options).

    ``acc[r] += g[r]**2``; ``w[r] -= lr * g[r] / (sqrt(acc[r]) + eps)`` for each listed row.

    Args:
        learning_rate (float or callable): the step size.
        eps (float): added to the root of the accumulator.
        initial_accumulator_value (float): the accumulator's starting value.
        backend (str, optional): as :class:`SparseSGD`'s.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import RowSparseGrad
        >>> opt = SparseAdagrad(learning_rate=1.0)
        >>> g = RowSparseGrad(mx.array([1]), mx.array([[2.0]]), 3)
        >>> opt.apply_gradients({"w": g}, {"w": mx.zeros((3, 1))})["w"].reshape(-1).tolist()
        [0.0, -1.0, 0.0]
    """

    _RULE, _STATE = "adagrad", ("sum",)

    def __init__(self, learning_rate, eps=1e-10, initial_accumulator_value=0.0, backend=None):
        super().__init__(backend)
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps, self.initial_accumulator_value = eps, initial_accumulator_value

    def init_single(self, parameter, state):
        state["sum"] = mx.full(parameter.shape, self.initial_accumulator_value, dtype=_F32)

    def _constants(self):
        return dict(LR=self._lr(), EPS=self.eps)

    def _dense(self, g, parameter, state):
        state["sum"] = state["sum"] + g * g
        return (parameter - self._lr() * g / (mx.sqrt(state["sum"]) + self.eps)).astype(parameter.dtype)

    def _rows(self, rows, sums, live, parameter, state):
        state["sum"] = acc = state["sum"].at[rows].add(sums * sums)
        std = mx.sqrt(mx.take(acc, rows, axis=0)) + self.eps
        return _add_rows(parameter, rows, live, -self._lr() * sums / std)


class SparseAdam(_RowOptimizer):
    """Adam on the listed rows only, exactly as ``torch.optim.SparseAdam``.

    Each listed row's moments decay and take the new gradient (rows listed with
    a zero gradient decay too); the others are untouched. The bias correction
    uses the optimizer's step count. Dense leaves get Adam's rule densely.

    Args:
        learning_rate (float or callable): the step size.
        betas (tuple): the moments' decay rates ``(b1, b2)``.
        eps (float): added to the root of the second moment.
        backend (str, optional): as :class:`SparseSGD`'s.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import RowSparseGrad
        >>> opt = SparseAdam(learning_rate=0.1)
        >>> g = RowSparseGrad(mx.array([2]), mx.array([[3.0]]), 3)
        >>> [round(x, 4) for x in opt.apply_gradients({"w": g}, {"w": mx.zeros((3, 1))})["w"].reshape(-1).tolist()]
        [0.0, 0.0, -0.1]
    """

    _RULE, _STATE = "adam", ("m", "v")

    def __init__(self, learning_rate, betas=(0.9, 0.999), eps=1e-8, backend=None):
        super().__init__(backend)
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas, self.eps = tuple(betas), eps

    def init_single(self, parameter, state):
        state["m"] = mx.zeros(parameter.shape, dtype=_F32)
        state["v"] = mx.zeros(parameter.shape, dtype=_F32)

    def _constants(self):
        b1, b2 = self.betas
        return dict(LR=self._step_size(), EPS=self.eps, SHARE1=1 - b1, SHARE2=1 - b2)

    def _step_size(self):
        b1, b2 = self.betas
        t = self.step.astype(_F32)
        return self._lr() * mx.sqrt(1 - b2**t) / (1 - b1**t)

    def _dense(self, g, parameter, state):
        b1, b2 = self.betas
        state["m"] = m = b1 * state["m"] + (1 - b1) * g
        state["v"] = v = b2 * state["v"] + (1 - b2) * g * g
        return (parameter - self._step_size() * m / (mx.sqrt(v) + self.eps)).astype(parameter.dtype)

    def _rows(self, rows, sums, live, parameter, state):
        b1, b2 = self.betas
        # Each listed row decays once: the live entry multiplies, the duplicates by exactly 1.
        keep1, keep2 = (mx.where(live, b, 1.0)[:, None] for b in (b1, b2))
        state["m"] = m = state["m"].at[rows].multiply(keep1).at[rows].add((1 - b1) * sums)
        state["v"] = v = state["v"].at[rows].multiply(keep2).at[rows].add((1 - b2) * sums * sums)
        numer, denom = mx.take(m, rows, axis=0), mx.sqrt(mx.take(v, rows, axis=0)) + self.eps
        return _add_rows(parameter, rows, live, -self._step_size() * numer / denom)


class RowWiseAdagrad(_RowOptimizer):
    """FBGEMM's exact row-wise Adagrad: one accumulator per row.

    ``acc[r] += mean_d(g[r, d]**2)``; ``w[r] -= lr * g[r] / (sqrt(acc[r]) + eps)``.
    A dense leaf of any shape is treated as rows along its last axis.

    Args:
        learning_rate (float or callable): the step size.
        eps (float): added to the root of the accumulator.
        backend (str, optional): as :class:`SparseSGD`'s.

    Example:
        >>> import mlx.core as mx
        >>> from mlx_embag import RowSparseGrad
        >>> opt = RowWiseAdagrad(learning_rate=1.0)
        >>> g = RowSparseGrad(mx.array([0]), mx.array([[3.0, 4.0]]), 2)
        >>> w = opt.apply_gradients({"w": g}, {"w": mx.zeros((2, 2))})["w"]
        >>> [round(x, 4) for x in w[0].tolist()], opt.state["w"]["sum"].tolist()
        ([-0.8485, -1.1314], [12.5, 0.0])
    """

    _RULE, _STATE = "rowwise", ("sum",)

    def __init__(self, learning_rate, eps=1e-8, backend=None):
        super().__init__(backend)
        self._maybe_schedule("learning_rate", learning_rate)
        self.eps = eps

    def init_single(self, parameter, state):
        state["sum"] = mx.zeros(tuple(parameter.shape[:-1]), dtype=_F32)

    def _constants(self):
        return dict(LR=self._lr(), EPS=self.eps)

    def _dense(self, g, parameter, state):
        g2 = mx.mean(g * g, axis=-1) if g.ndim else g * g
        state["sum"] = acc = state["sum"] + g2
        std = mx.sqrt(acc) + self.eps
        return (parameter - self._lr() * g / (std[..., None] if g.ndim else std)).astype(parameter.dtype)

    def _rows(self, rows, sums, live, parameter, state):
        state["sum"] = acc = state["sum"].at[rows].add(mx.mean(sums * sums, axis=-1))
        std = mx.sqrt(mx.take(acc, rows)) + self.eps
        return _add_rows(parameter, rows, live, -self._lr() * sums / std[:, None])
