"""Benchmark of ``embedding_bag``: time and peak memory per backend, forward and backward.

For each shape ``(V, D)``, bag length ``L`` and mode, it times (median of at
least 20 runs after a warm-up, ``mx.eval`` every run) the forward and the
forward + backward (gradient with respect to the table, through ``mx.vjp``) of:

* ``reference``: ``meb.embedding_bag(..., backend="reference")``, the pure-MLX path;
* ``metal``: ``backend="metal"``, the hand-written kernels (Apple silicon only);
* ``naive``: ``nn.Embedding`` then ``sum``/``mean``/``max`` under MLX autodiff
  (2-D fixed-length bags only: that is all the composition can express);
* ``take``: a bare ``mx.take`` of the same rows, without any reduction: the
  floor for any MLX implementation that gathers rows;
* ``segmm``: 1-D sum/mean only, MLX's own floor for variable-length bags, a
  gather followed by ``mx.segmented_mm`` (no poison rule);
* ``ref2d``: 1-D cases only, the reference path on a ``(B, L)`` input of the
  same table and sizes (what 1-D max answers to);
* ``torch``: ``torch.nn.functional.embedding_bag`` on the CPU, when torch is installed;
* ``mps``: the same on PyTorch's MPS device, when available.

Inputs come in two layouts: ``2d``, a ``(B, L)`` index array, and ``1d``, flat
indices with ``offsets`` and bag lengths drawn uniformly from ``[1, 2L-1]``
(mean ``L``); 1-D calls rotate through several draws of those lengths, so N
changes from call to call as in training. Peak memory is MLX's ``get_peak_memory`` during one run minus
the memory already held before it (the table, the indices), so it counts what
the operation allocates. Effective bandwidth counts the bytes a pass must move
(see :func:`~.workloads.bytes_moved`) over its time; on a Mac it is shown against the
chip's memory bandwidth (:data:`~.hardware.CHIP_BANDWIDTH_GBS`, or ``--bandwidth-gbs``).

A second table gives the host time per forward call (``host us/call``: building
the graph, nothing evaluated, the Metal path on stub kernels so that it runs
anywhere; ``auto``, the default ``backend="auto"``, beside ``metal``; see :mod:`~.host`). After the tables, the targets of the project are checked and printed with the
measured ratios (``reference`` against ``take``, ``segmm``, ``ref2d`` and
``naive``; ``metal`` against the bandwidth, ``reference`` and ``mps`` where
those ran; the host costs against their limits).

    python -m mlx_embag.bench                       # default sweep (about 4 minutes on 2 cores)
    python -m mlx_embag.bench --quick               # tiny sizes, seconds
    python -m mlx_embag.bench --shapes 1000000x64 --bag-sizes 1,16,64 --modes sum \\
        --json bench.json --plot bench.png

The package, one job a module: :mod:`~.timing` (the interleaved measurement),
:mod:`~.workloads` (cases and their inputs), :mod:`~.contenders` (one maker per
backend), :mod:`~.runner` (a case on every backend), :mod:`~.results` (typed
results and their JSON form), :mod:`~.host` (host cost per call), :mod:`~.targets` (the :data:`~.targets.TARGETS`
table), :mod:`~.hardware` (device name and bandwidth), :mod:`~.report` (table,
verdicts, plot), :mod:`~.profile` (``--profile``: every kernel launch's memory
traffic from the emulator's cost model, and a roofline per Apple chip) and
:mod:`~.cli` (the command line).

Example:
    >>> from mlx_embag.bench import measure
    >>> m = measure(lambda: None, warmup=1, repeat=3)
    >>> m.runs
    3
"""

from .cli import build_parser, main
from .contenders import BACKENDS, CONTENDERS, MLX_BACKENDS, available_backends
from .hardware import CHIP_BANDWIDTH_GBS, chip_bandwidth_gbs, device_name
from .host import HOST_BACKENDS, host_backends, host_costs, stub_kernels
from .report import RATIOS, format_checks, format_host, format_table, plot
from .results import Check, HostCost, Result
from .runner import run_case
from .targets import HOST_TARGETS, TARGETS, Target, check_host, check_targets
from .timing import MIN_RUNS, Measurement, measure, measure_interleaved
from .workloads import LAYOUTS, PASSES, Case, Inputs, bytes_moved, make_inputs

__all__ = [
    "main",
    "build_parser",
    "measure",
    "measure_interleaved",
    "Measurement",
    "MIN_RUNS",
    "Case",
    "Inputs",
    "make_inputs",
    "bytes_moved",
    "LAYOUTS",
    "PASSES",
    "CONTENDERS",
    "BACKENDS",
    "MLX_BACKENDS",
    "available_backends",
    "CHIP_BANDWIDTH_GBS",
    "chip_bandwidth_gbs",
    "device_name",
    "Result",
    "Check",
    "HostCost",
    "host_costs",
    "host_backends",
    "stub_kernels",
    "HOST_BACKENDS",
    "HOST_TARGETS",
    "check_host",
    "format_host",
    "run_case",
    "Target",
    "TARGETS",
    "check_targets",
    "RATIOS",
    "format_table",
    "format_checks",
    "plot",
]
