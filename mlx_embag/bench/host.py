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

Example:
    >>> from mlx_embag.bench.host import host_costs
    >>> from mlx_embag.bench.workloads import Case, make_inputs
    >>> case = Case(V=50, D=8, B=4, L=3, layout="1d", mode="sum")
    >>> costs = host_costs(case, make_inputs(case), ["reference", "metal", "take"], calls=5, rounds=2)
    >>> sorted(costs), all(us > 0 for us in costs.values())
    (['metal', 'reference', 'take'], True)
"""

from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterable

import mlx.core as mx

from mlx_embag import kernels

from .contenders import _pick, call_of
from .workloads import Case, Inputs

# The backends with a host cost figure; "take" is a bare mx.take of the same rows.
HOST_BACKENDS = ("reference", "metal", "take")
CALLS, ROUNDS = 50, 40


class _StubKernel:
    """Stands in for one ``metal_kernel`` object: lazy zeros of the requested outputs."""

    def __call__(self, *, inputs, template, grid, threadgroup, output_shapes, output_dtypes, init_value=None):
        return [mx.zeros(shape, dtype) for shape, dtype in zip(output_shapes, output_dtypes)]


@contextlib.contextmanager
def stub_kernels():
    """Inside, ``backend="metal"`` builds its graphs on stub kernels (lazy zeros), on any machine.

    Nothing built inside may be evaluated for a result: the zeros are not the answer.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> with stub_kernels():
        ...     out = meb.embedding_bag(mx.array([[0, 1]]), mx.ones((3, 2)), backend="metal")
        >>> out.shape
        (1, 2)
    """
    saved = kernels._factory, kernels.emulator_enabled
    kernels._factory = lambda: ((lambda **_: _StubKernel()), "stub")
    kernels.emulator_enabled = lambda: True  # Metal counts as available
    try:
        yield
    finally:
        kernels._factory, kernels.emulator_enabled = saved
        for key in [k for k in kernels._built if k[1] == "stub"]:
            del kernels._built[key]


def _call(backend, case: Case, inp: Inputs):
    if backend == "take":
        return lambda w, i: mx.take(w, _pick(inp, i)[0], axis=0)
    return call_of(backend, case, inp)


def host_costs(
    case: Case, inp: Inputs, backends: Iterable[str], *, calls: int = CALLS, rounds: int = ROUNDS
) -> Dict[str, float]:
    """Microseconds per forward call spent building its graph, per backend (best round).

    Args:
        case, inp: the workload and its inputs.
        backends: names among :data:`HOST_BACKENDS`.
        calls (int): calls per round; rounds (int): rounds, interleaved across backends.
    """
    fns = {name: _call(name, case, inp) for name in backends if name in HOST_BACKENDS}
    best = {name: float("inf") for name in fns}
    with stub_kernels():
        w = inp.weight
        for f in fns.values():
            for i in range(3):  # first calls build the custom functions and caches
                f(w, i)
        for _ in range(rounds):
            for name, f in fns.items():
                t0 = time.thread_time()
                for i in range(calls):
                    f(w, i)
                best[name] = min(best[name], (time.thread_time() - t0) / calls)
    return {name: t * 1e6 for name, t in best.items()}
