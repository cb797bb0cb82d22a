"""mlx-embag: PyTorch-exact Embedding and EmbeddingBag for Apple MLX."""

from . import backend
from .backend import use_backend

__version__ = "0.1.0"
