"""Host cost per call: the time to build the graph of one forward call, evaluating nothing.

An eager training step pays this on every call, on top of the arithmetic; on a
Mac the kernels of a small batch run in tens of microseconds, so it can
dominate. Each figure is the best of 40 rounds of 50 calls, the contenders
interleaved round by round, timed by the calling thread's CPU clock
(``time.thread_time``): graph building is CPU work on that thread, and a wall
clock would also count the time other processes hold the CPU (on a loaded
machine a 60 ms round is preempted, a 1 ms round of ``mx.take`` is not, and
their ratio would be wrong). Many short rounds rather than a few long ones, so
that a short quiet spell is enough for a contender's best round: the project's
shared 2-core machines run in slow and fast spells (a bare ``mx.take`` costs 1.5
us per call in one, 2.6-2.9 us in the other), so compare a figure with the
``take`` column measured beside it. 1-D calls rotate through the case's draws of bag
lengths, so N changes between calls.

The Metal path runs with its kernel objects replaced by a stub that returns
lazy zeros of the kernel's output shapes (:func:`stub_kernels`): what is timed
is the library's own Python and graph building, on any machine.

``auto`` is the call users make by default, ``backend="auto"``: the Metal path
with the reference path as fallback (its kernel specialisations probed once,
then a fallback key checked on every call). It is no timing contender (on a Mac
it runs the kernels ``metal`` runs), only a host figure, so :func:`host_backends`
measures it whenever ``metal`` is. Under the stub Metal counts as available, so
``auto`` resolves to the kernels; :func:`host_costs` raises if a ``metal`` or
``auto`` call launched no kernel (resolved to the reference path) or ``auto``
launched one outside the fallback's probing (took the plain Metal route).

Example:
    >>> from mlx_embag.bench.host import host_costs
    >>> from mlx_embag.bench.workloads import Case, make_inputs
    >>> case = Case(V=50, D=8, B=4, L=3, layout="1d", mode="sum")
    >>> names = host_backends(["reference", "metal"])
    >>> names
    ['reference', 'metal', 'auto', 'take']
    >>> costs = host_costs(case, make_inputs(case), names, calls=5, rounds=2)
    >>> sorted(costs), all(us > 0 for us in costs.values())
    (['auto', 'metal', 'reference', 'take'], True)
"""

from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterable

import mlx.core as mx

from mlx_embag import _fallback, kernels

from .contenders import _pick, call_of
from .workloads import Case, Inputs

# The backends with a host cost figure: "auto" is backend="auto" (the default), "take"
# a bare mx.take of the same rows.
HOST_BACKENDS = ("reference", "metal", "auto", "take")
CALLS, ROUNDS = 50, 40
# Stub launches counted by whether backend="auto"'s probing was active: [outside, inside].
_launches = [0, 0]


class _StubKernel:
    """Stands in for one ``metal_kernel`` object: lazy zeros of the requested outputs."""

    def __call__(self, *, inputs, template, grid, threadgroup, output_shapes, output_dtypes, init_value=None):
        # The count tells host_costs which route a call took (an attribute read and an add:
        # noise beside the zeros built below).
        _launches[kernels._auto.depth > 0] += 1
        return [mx.zeros(shape, dtype) for shape, dtype in zip(output_shapes, output_dtypes)]


def host_backends(requested):
    """The backends among ``requested`` with a host figure: ``auto`` whenever ``metal`` is
    measured (it is no timing contender of its own), ``take`` beside any of them.

    Example:
        >>> host_backends(["metal", "naive"]), host_backends(["naive"])
        (['metal', 'auto', 'take'], [])
    """
    names = [b for b in HOST_BACKENDS if b in requested or (b == "auto" and "metal" in requested)]
    if names and "take" not in names:
        names.append("take")
    return names


@contextlib.contextmanager
def stub_kernels():
    """Inside, ``backend="metal"`` and ``"auto"`` build their graphs on stub kernels (lazy zeros), on any machine.

    Nothing built inside may be evaluated for a result: the zeros are not the answer.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> with stub_kernels():
        ...     out = meb.embedding_bag(mx.array([[0, 1]]), mx.ones((3, 2)), backend="metal")
        >>> out.shape
        (1, 2)
    """
    saved = kernels._factory, kernels.emulator_enabled
    # backend="auto" records what it probed on the stub; the records are not the real
    # kernels', so they are kept apart and dropped on leaving.
    records = kernels._probed, _fallback._backward_checked, _fallback._reference_only
    kernels._factory = lambda: ((lambda **_: _StubKernel()), "stub")
    kernels.emulator_enabled = lambda: True  # Metal counts as available
    kernels._probed = dict(kernels._probed)
    _fallback._backward_checked, _fallback._reference_only = set(records[1]), set(records[2])
    try:
        yield
    finally:
        kernels._factory, kernels.emulator_enabled = saved
        kernels._probed, _fallback._backward_checked, _fallback._reference_only = records
        for key in [k for k in kernels._built if k[1] == "stub"]:
            del kernels._built[key]


def _call(backend, case: Case, inp: Inputs):
    if backend == "take":
        return lambda w, i: mx.take(w, _pick(inp, i)[0], axis=0)
    return call_of(backend, case, inp)


def _check_route(name, launches):
    """Raise unless ``launches`` (stub launches ``[outside, inside]`` auto's probing) fit ``name``."""
    want = {"metal": (True, False), "auto": (False, True)}.get(name)
    if want is not None and (bool(launches[0]), bool(launches[1])) != want:
        raise RuntimeError(
            f"host cost of {name!r}: the calls launched {launches[0]} kernels outside and {launches[1]} "
            f"inside backend='auto''s probing; they did not take the {name!r} route"
        )


def host_costs(
    case: Case, inp: Inputs, backends: Iterable[str], *, calls: int = CALLS, rounds: int = ROUNDS
) -> Dict[str, float]:
    """Microseconds per forward call spent building its graph, per backend (best round).

    Args:
        case, inp: the workload and its inputs.
        backends: names among :data:`HOST_BACKENDS`.
        calls (int): calls per round; rounds (int): rounds, interleaved across backends.

    Raises:
        RuntimeError: a ``metal`` or ``auto`` call did not take its route (see the module).

    Example:
        >>> from mlx_embag.bench.workloads import Case, make_inputs
        >>> case = Case(V=50, D=8, B=4, L=3, layout="2d", mode="max")
        >>> costs = host_costs(case, make_inputs(case), ["metal", "auto"], calls=5, rounds=2)
        >>> sorted(costs), all(us > 0 for us in costs.values())
        (['auto', 'metal'], True)
    """
    fns = {name: _call(name, case, inp) for name in backends if name in HOST_BACKENDS}
    best = {name: float("inf") for name in fns}
    with stub_kernels():
        w = inp.weight
        for name, f in fns.items():
            _launches[:] = [0, 0]
            for i in range(3):  # first calls build the custom functions and caches
                f(w, i)
            _check_route(name, _launches)
        for _ in range(rounds):
            for name, f in fns.items():
                t0 = time.thread_time()
                for i in range(calls):
                    f(w, i)
                best[name] = min(best[name], (time.thread_time() - t0) / calls)
    return {name: t * 1e6 for name, t in best.items()}
