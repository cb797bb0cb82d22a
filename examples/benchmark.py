"""Benchmark of ``embedding_bag`` across backends: a thin wrapper of ``mlx_embag.bench``.

Times the forward and forward + backward (median of at least 20 runs) and MLX's
peak memory of the reference path, the Metal kernels (Apple silicon only), the
naive ``nn.Embedding``-then-reduce composition, a bare ``mx.take`` of the same
rows and PyTorch (CPU, and MPS on a Mac), prints a table and checks the
project's performance targets. Same as ``python -m mlx_embag.bench`` and the
``mlx-embag-bench`` command.

    python examples/benchmark.py                     # default sweep
    python examples/benchmark.py --quick --json out.json --plot out.png
    python examples/benchmark.py --help
"""

import sys

from mlx_embag.bench import main

if __name__ == "__main__":
    sys.exit(main())
