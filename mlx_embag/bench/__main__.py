"""``python -m mlx_embag.bench``: the benchmark's command line (see :mod:`mlx_embag.bench`)."""

import sys

from mlx_embag.bench import main

if __name__ == "__main__":
    sys.exit(main())
