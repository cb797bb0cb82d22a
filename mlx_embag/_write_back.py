"""The modules' ``max_norm`` write-back, kept differentiable and vmap-safe.

PyTorch's modules renormalise the referenced rows of ``weight`` in place
(under ``no_grad``) and then look them up. Here a call computes the renormed
table once, stores it back as the module's ``weight`` and runs the lookup on
that very array (without ``max_norm``), so the rows written back are bitwise
the rows the forward used. The stored table is the output of a custom
function ``written(w, r) -> r`` whose VJP hands the cotangent to ``w``: the
gradient passes straight through the renorm (as PyTorch's), and a second use
of the table in the same loss (another call, or ``as_linear``) still reaches
the parameter.

Under ``mx.vmap`` each vectorised call would write a different table, and the
stored array would be a vmap tracer that can never be evaluated. MLX has no
"inside vmap" query, but it calls this custom function's vmap rule: the rule
puts back the table the module held before the vectorised calls and warns.

Example:
    >>> import mlx.core as mx, mlx_embag as meb
    >>> m = meb.Embedding(3, 2, max_norm=1.0, _weight=mx.full((3, 2), 3.0))
    >>> _ = m(mx.array([1]))
    >>> [round(v, 4) for v in m.weight[1].tolist()], m.weight[0].tolist()
    [[0.7071, 0.7071], [3.0, 3.0]]
"""

from __future__ import annotations

import warnings
import weakref

import mlx.core as mx

from . import functional as F

# The module attribute (outside its parameters) that links the vectorised
# write-backs of one vmap trace, so that the last one restores the first's table.
_MARK = "_mlx_embag_vmapped_write"


def _restore(module, previous, written_id):
    """Called from the vmap rule of one write-back (rules run in call order)."""
    mark = module.__dict__.get(_MARK)
    # An earlier write-back of the same trace already stands for the true table.
    origin = mark[1] if mark is not None and mark[0] == id(previous) else previous
    if id(module.get("weight")) == written_id:
        module["weight"] = origin
        module.__dict__.pop(_MARK, None)
        warnings.warn(
            f"{type(module).__name__} with max_norm was called inside mx.vmap: the "
            "renormalised rows are not written back (each vectorised call would write a "
            "different table); weight is left as it was before the call.",
            UserWarning,
            stacklevel=2,
        )
    else:
        object.__setattr__(module, _MARK, (written_id, origin))


def renormed_for_call(module, input):
    """The table ``module`` should use and store for this call (``max_norm`` set).

    Returns the table after PyTorch's in-place renorm over ``input`` (factors
    from the backend the call runs on); its gradient flows to the module's
    current ``weight``.
    """
    previous = module["weight"]  # not module.weight: that counts as a dense use (autograd.py)
    r = F._renormed_table(input, previous, module.max_norm, module.norm_type, module.backend)
    ref = weakref.ref(module)  # the rule must not keep the module (and its table) alive
    written_id = []

    @mx.custom_function
    def written(w, r):
        return r

    @written.vjp
    def written_vjp(primals, cotangent, output):
        return cotangent, mx.zeros_like(primals[1])

    @written.vmap
    def written_vmap(inputs, axes):
        (_, r), (_, ar) = inputs, axes
        m = ref()
        if m is not None:
            _restore(m, previous, written_id[0])
        if ar is None:
            size = next(x.shape[a] for x, a in zip(inputs, axes) if a is not None)
            r, ar = mx.broadcast_to(r[None], (size, *r.shape)), 0
        return r, ar

    out = written(previous, mx.stop_gradient(r))
    written_id.append(id(out))
    return out
