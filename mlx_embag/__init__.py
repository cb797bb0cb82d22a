"""mlx-embag: PyTorch-exact Embedding and EmbeddingBag for Apple MLX.

Example:
    >>> import mlx.core as mx, mlx_embag as meb
    >>> bag = meb.EmbeddingBag(10, 4, mode="sum")
    >>> bag(mx.array([[1, 2], [3, 3]])).shape
    (2, 4)
"""

from . import backend, optimizers
from .autograd import value_and_grad
from .backend import use_backend
from .compiled import compiled_step
from .functional import embedding, embedding_bag
from .layers import Embedding, EmbeddingBag
from .sharded import ShardedEmbeddingBag
from .sparse_grad import RowSparseGrad, arrays_to_grads, grads_to_arrays

__all__ = [
    "embedding_bag",
    "embedding",
    "EmbeddingBag",
    "Embedding",
    "ShardedEmbeddingBag",
    "use_backend",
    "backend",
    "RowSparseGrad",
    "value_and_grad",
    "optimizers",
    "grads_to_arrays",
    "arrays_to_grads",
    "compiled_step",
]
# The one place the version is written: pyproject.toml reads it ([tool.hatch.version]).
__version__ = "0.1.0"
