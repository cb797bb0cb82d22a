"""``mlx.nn.Module`` layers: :class:`EmbeddingBag` and :class:`Embedding`.

They follow MLX's own ``nn.Embedding``: the table is the ``weight`` parameter,
``freeze``/``save_weights``/``load_weights`` work as on any module, and
``Embedding`` has ``as_linear`` and ``to_quantized`` (the ``nn.quantize`` hook).
Like PyTorch's modules, a call with ``max_norm`` writes the rescaled rows back
into ``weight``; inside ``mx.compile`` that needs the module's state declared:
``mx.compile(step, inputs=model.state, outputs=model.state)``.
"""

from __future__ import annotations

import numbers
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from . import backend as _backend
from . import functional as F
from ._write_back import renormed_for_call


def _check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}.")
    return int(value)


def _init_weight(num_embeddings, embedding_dim, padding_idx, _weight, dtype):
    num_embeddings = _check_size(num_embeddings, "num_embeddings")
    embedding_dim = _check_size(embedding_dim, "embedding_dim")
    if dtype not in (mx.float32, mx.float16, mx.bfloat16):
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}.")
    padding_idx = F._check_padding_idx(padding_idx, num_embeddings)
    if _weight is not None:
        _weight = F._check_weight(_weight)
        if _weight.shape != (num_embeddings, embedding_dim):
            raise ValueError(
                f"_weight must have shape ({num_embeddings}, {embedding_dim}), got {_weight.shape}."
            )
        return _weight, padding_idx
    # N(0, 1), as PyTorch (MLX's nn.Embedding scales by 1/sqrt(D); we match PyTorch).
    weight = mx.random.normal((num_embeddings, embedding_dim), dtype=dtype)
    if padding_idx is not None:
        weight[padding_idx] = 0
    return weight, padding_idx


def _check_call_options(backend, check_indices, deterministic):
    """Refuse a bad ``backend``/``check_indices``/``deterministic`` when the module is built,
    not at its first call."""
    _backend._check_name(backend)
    if check_indices is not None:
        _backend.resolve_check_indices(check_indices)
    if deterministic is not None:
        _backend.resolve_deterministic(deterministic)


def _check_pretrained(embeddings):
    embeddings = F._as_array(embeddings, "embeddings")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (num_embeddings, embedding_dim), got shape {embeddings.shape}.")
    return embeddings


class _RenormMixin:
    def _table_for_call(self, input):
        """``weight``, or with ``max_norm`` the renormed table this call uses and stores."""
        if self.max_norm is None:
            return self.weight
        return renormed_for_call(self, input)

    def _store(self, table):
        # Only once the call has succeeded: a call that raises changes nothing.
        if table is not self.weight:
            self.weight = table


class EmbeddingBag(_RenormMixin, nn.Module):
    """Sums, means or maxes of bags of embeddings, as ``torch.nn.EmbeddingBag``.

    Args:
        num_embeddings (int): rows of the table.
        embedding_dim (int): columns of the table.
        max_norm (float, optional): renormalise referenced rows to at most this norm
            (written back into ``weight`` after each call).
        norm_type (float): the p of the p-norm for ``max_norm``.
        scale_grad_by_freq (bool): divide row gradients by their count in the input.
        mode (str): ``"sum"``, ``"mean"`` or ``"max"``.
        sparse (bool): accepted for porting; gradients are dense.
        _weight (array, optional): an initial table, kept as given.
        include_last_offset (bool): offsets carry a final end offset.
        padding_idx (int, optional): a row excluded from bags and gradients
            (initialised to zeros).
        dtype: the table's dtype (float32, float16, bfloat16).
        backend, check_indices, deterministic: see :func:`mlx_embag.embedding_bag`.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> bag = meb.EmbeddingBag(10, 3, mode="max")
        >>> bag(mx.array([1, 2, 4, 5, 4]), mx.array([0, 2])).shape
        (2, 3)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: Optional[mx.array] = None,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        dtype=mx.float32,
        *,
        backend=None,
        check_indices=None,
        deterministic=None,
    ):
        super().__init__()
        F._check_bag_options(mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset)
        self.weight, self.padding_idx = _init_weight(
            num_embeddings, embedding_dim, padding_idx, _weight, dtype
        )
        self.num_embeddings, self.embedding_dim = self.weight.shape
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.mode = mode
        self.sparse = sparse
        self.include_last_offset = include_last_offset
        _check_call_options(backend, check_indices, deterministic)
        self.backend = backend
        self.check_indices = check_indices
        self.deterministic = deterministic

    def _extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}, mode={self.mode!r}"
        for name, default in (
            ("max_norm", None),
            ("norm_type", 2.0),
            ("scale_grad_by_freq", False),
            ("sparse", False),
            ("include_last_offset", False),
            ("padding_idx", None),
            ("backend", None),
        ):
            value = getattr(self, name)
            if value != default:
                s += f", {name}={value!r}"
        return s

    def __call__(self, input, offsets=None, per_sample_weights=None):
        table = self._table_for_call(input)
        out = F.embedding_bag(
            input,
            table,
            offsets,
            max_norm=None,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            mode=self.mode,
            sparse=self.sparse,
            per_sample_weights=per_sample_weights,
            include_last_offset=self.include_last_offset,
            padding_idx=self.padding_idx,
            backend=self.backend,
            check_indices=self.check_indices,
            deterministic=self.deterministic,
        )
        self._store(table)
        return out

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        **kw,
    ):
        """An :class:`EmbeddingBag` over a given table (frozen unless ``freeze=False``).

        Example:
            >>> import mlx.core as mx, mlx_embag as meb
            >>> bag = meb.EmbeddingBag.from_pretrained(mx.eye(3), mode="sum")
            >>> bag(mx.array([[0, 2]])).tolist()
            [[1.0, 0.0, 1.0]]
        """
        embeddings = _check_pretrained(embeddings)
        bag = cls(
            *embeddings.shape,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            mode=mode,
            sparse=sparse,
            _weight=embeddings,
            include_last_offset=include_last_offset,
            padding_idx=padding_idx,
            **kw,
        )
        if F._check_bool(freeze, "freeze"):
            bag.freeze()
        return bag


class Embedding(_RenormMixin, nn.Module):
    """A lookup table, as ``torch.nn.Embedding`` (and MLX's ``nn.Embedding``).

    Args:
        num_embeddings (int): rows of the table.
        embedding_dim (int): columns of the table.
        padding_idx (int, optional): a row that gets no gradient (initialised to zeros).
        max_norm (float, optional): renormalise referenced rows to at most this norm
            (written back into ``weight`` after each call).
        norm_type (float): the p of the p-norm for ``max_norm``.
        scale_grad_by_freq (bool): divide row gradients by their count in the input.
        sparse (bool): accepted for porting; gradients are dense.
        _weight (array, optional): an initial table, kept as given.
        _freeze (bool): freeze the table.
        dtype: the table's dtype.
        backend, check_indices, deterministic: see :func:`mlx_embag.embedding`.

    Example:
        >>> import mlx.core as mx, mlx_embag as meb
        >>> emb = meb.Embedding(10, 4, padding_idx=0)
        >>> emb(mx.array([[0, 3]])).shape
        (1, 2, 4)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Optional[mx.array] = None,
        _freeze: bool = False,
        dtype=mx.float32,
        *,
        backend=None,
        check_indices=None,
        deterministic=None,
    ):
        super().__init__()
        F._check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse)
        self.weight, self.padding_idx = _init_weight(
            num_embeddings, embedding_dim, padding_idx, _weight, dtype
        )
        self.num_embeddings, self.embedding_dim = self.weight.shape
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        _check_call_options(backend, check_indices, deterministic)
        self.backend = backend
        self.check_indices = check_indices
        self.deterministic = deterministic
        if F._check_bool(_freeze, "_freeze"):
            self.freeze()

    def _extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        for name, default in (
            ("padding_idx", None),
            ("max_norm", None),
            ("norm_type", 2.0),
            ("scale_grad_by_freq", False),
            ("sparse", False),
            ("backend", None),
        ):
            value = getattr(self, name)
            if value != default:
                s += f", {name}={value!r}"
        return s

    def __call__(self, input):
        table = self._table_for_call(input)
        out = F.embedding(
            input,
            table,
            padding_idx=self.padding_idx,
            max_norm=None,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            backend=self.backend,
            check_indices=self.check_indices,
            deterministic=self.deterministic,
        )
        self._store(table)
        return out

    def as_linear(self, x):
        """``x @ weight.T``: the table as an output projection (weight tying).

        Example:
            >>> import mlx.core as mx, mlx_embag as meb
            >>> meb.Embedding(5, 3).as_linear(mx.ones((2, 3))).shape
            (2, 5)
        """
        return x @ self.weight.T

    def to_quantized(self, group_size=None, bits=None, mode="affine", quantize_input=False):
        """The ``nn.quantize`` hook: MLX's ``QuantizedEmbedding`` over this table.

        The quantized layer is MLX's plain lookup: ``padding_idx``, ``max_norm`` and
        the poison rule do not carry over.

        Example:
            >>> import mlx.nn as nn, mlx_embag as meb
            >>> m = nn.Sequential(meb.Embedding(64, 64))
            >>> nn.quantize(m)
            >>> type(m.layers[0]).__name__
            'QuantizedEmbedding'
        """
        if quantize_input:
            raise ValueError("Quantized input is not supported.")
        return nn.QuantizedEmbedding.from_embedding(self, group_size, bits, mode)

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        **kw,
    ):
        """An :class:`Embedding` over a given table (frozen unless ``freeze=False``).

        Example:
            >>> import mlx.core as mx, mlx_embag as meb
            >>> meb.Embedding.from_pretrained(mx.eye(3))(mx.array([1])).tolist()
            [[0.0, 1.0, 0.0]]
        """
        embeddings = _check_pretrained(embeddings)
        return cls(
            *embeddings.shape,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
            _weight=embeddings,
            _freeze=F._check_bool(freeze, "freeze"),
            **kw,
        )
