"""``mlx.nn.Module`` layers: :class:`EmbeddingBag` and :class:`Embedding`.

They follow MLX's own ``nn.Embedding``: the table is the ``weight`` parameter,
``freeze``/``save_weights``/``load_weights`` work as on any module, and
``Embedding`` has ``as_linear`` and ``to_quantized`` (the ``nn.quantize`` hook).
Like PyTorch's modules, a call with ``max_norm`` writes the rescaled rows back
into ``weight``; inside ``mx.compile`` that needs the module's state declared:
``mx.compile(step, inputs=model.state, outputs=model.state)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from . import functional as F
from ._validate import (
    check_bag_options,
    check_bool,
    check_call_options,
    check_embedding_options,
    check_padding_idx,
    check_size,
    check_table_dtype,
    check_table_shape,
    check_weight,
)
from ._write_back import renormed_for_call
from .autograd import active_record, note_weight_read, sparse_lookup


def _init_weight(num_embeddings, embedding_dim, padding_idx, _weight, dtype):
    num_embeddings = check_size(num_embeddings, "num_embeddings")
    embedding_dim = check_size(embedding_dim, "embedding_dim")
    check_table_dtype(dtype)
    padding_idx = check_padding_idx(padding_idx, num_embeddings)
    if _weight is not None:
        _weight = check_weight(_weight)
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


@dataclass(frozen=True)
class _Options:
    """A module's options, the one place ``__init__``, ``__call__`` and ``_extra_repr`` read.

    A frozen dataclass rather than a dict: ``nn.Module`` would keep a dict as a
    child, and ``parameters()`` must hold ``weight`` alone. The defaults are
    PyTorch's; ``_extra_repr`` shows what differs from them (``mode`` always,
    ``check_indices``/``deterministic`` never). ``Embedding`` takes neither
    ``mode`` nor ``include_last_offset``: each class lists the names it takes.
    """

    mode: str = field(default="mean", metadata={"always_shown": True})
    padding_idx: Optional[int] = None  # normalised into [0, V)
    max_norm: Optional[float] = None
    norm_type: float = 2.0
    scale_grad_by_freq: bool = False
    sparse: bool = False
    include_last_offset: bool = False
    backend: Optional[str] = None
    check_indices: Optional[bool] = field(default=None, repr=False)
    deterministic: Optional[bool] = field(default=None, repr=False)

    def call_options(self, names):
        """The options of ``names`` as the functional call's keyword arguments (``max_norm``
        None: the module renorms its table itself), built once per options object: the
        options change only by replacement, and a module call would otherwise spend
        microseconds rebuilding them."""
        cached = self.__dict__.get("_call_options")
        if cached is None or cached[0] is not names:
            kwargs = {name: getattr(self, name) for name in names}
            kwargs["max_norm"] = None
            cached = (names, kwargs)
            object.__setattr__(self, "_call_options", cached)  # not a field: frozen all the same
        return cached[1]

    def shown(self, names):
        """``name=value`` for each of ``names`` that ``_extra_repr`` shows, in that order."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        return [
            f"{name}={getattr(self, name)!r}"
            for name in names
            if fields[name].repr
            and (fields[name].metadata.get("always_shown") or getattr(self, name) != fields[name].default)
        ]


def _option(name):
    """The attribute ``module.<name>``, read from (and written into) the module's options."""

    def get(self):
        return getattr(self._options, name)

    def set(self, value):
        self._options = dataclasses.replace(self._options, **{name: value})

    return property(get, set, doc=f"The ``{name}`` option (see the class docstring).")


class _Table(nn.Module):
    """What both modules do with their table and options.

    ``__init__`` and ``from_pretrained`` keep PyTorch's signatures, spelled out;
    they hand their ``locals()`` here, which reads the options by name, so the
    list of options is written once, in ``_OPTIONS``, rather than again in
    every method.
    """

    _OPTIONS = ()  # the option names the class takes, in its repr order

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._OPTIONS:
            setattr(cls, name, _option(name))

    def _build(self, args):
        """``__init__`` past the class's own option checks; ``args`` is its ``locals()``."""
        self.weight, padding_idx = _init_weight(
            args["num_embeddings"], args["embedding_dim"], args["padding_idx"], args["_weight"], args["dtype"]
        )
        self.num_embeddings, self.embedding_dim = self.weight.shape
        check_call_options(args["backend"], args["check_indices"], args["deterministic"])
        options = {name: args[name] for name in self._OPTIONS}
        self._options = _Options(**{**options, "padding_idx": padding_idx})

    @classmethod
    def _pretrained(cls, args):
        """``from_pretrained``; ``args`` is its ``locals()`` (options not named there come in ``kw``)."""
        embeddings = check_table_shape(args["embeddings"], "embeddings")
        freeze = check_bool(args["freeze"], "freeze")
        options = {name: args[name] for name in cls._OPTIONS if name in args}
        module = cls(*embeddings.shape, _weight=embeddings, **options, **args["kw"])
        if freeze:
            module.freeze()
        return module

    def _extra_repr(self):
        return ", ".join(
            [f"{self.num_embeddings}, {self.embedding_dim}", *self._options.shown(self._OPTIONS)]
        )

    def __getattr__(self, key):
        # meb.value_and_grad must know when a sparse table is also used densely (as_linear,
        # a penalty): every such use reads the attribute; the module's own code reads self["weight"].
        if key == "weight":
            note_weight_read(self)
        return super().__getattr__(key)

    def _lookup(self, fn, input, **kwargs):
        """``fn(input, table, **kwargs)`` with the module's options."""
        table = self._table_for_call(input)
        # The table is already renormed here; the write-back keeps it once the call succeeds.
        call = {"input": input, "weight": table, **kwargs, **self._options.call_options(self._OPTIONS)}
        record = active_record(self)
        out = fn(**call) if record is None else sparse_lookup(record, fn, call)
        self._store(table)
        return out

    def _table_for_call(self, input):
        """``weight``, or with ``max_norm`` the renormed table this call uses and stores."""
        if self.max_norm is None:
            return self["weight"]
        return renormed_for_call(self, input)

    def _store(self, table):
        # Only once the call has succeeded: a call that raises changes nothing.
        if table is not self["weight"]:
            self["weight"] = table  # not self.weight =: nn.Module's setattr reads the attribute first


class EmbeddingBag(_Table):
    """Sums, means or maxes of bags of embeddings, as ``torch.nn.EmbeddingBag``.

    Args:
        num_embeddings (int): rows of the table.
        embedding_dim (int): columns of the table.
        max_norm (float, optional): renormalise referenced rows to at most this norm
            (written back into ``weight`` after each call).
        norm_type (float): the p of the p-norm for ``max_norm``.
        scale_grad_by_freq (bool): divide row gradients by their count in the input.
        mode (str): ``"sum"``, ``"mean"`` or ``"max"``.
        sparse (bool): under :func:`mlx_embag.value_and_grad` the table's gradient is a
            :class:`mlx_embag.RowSparseGrad` (for :mod:`mlx_embag.optimizers`); dense elsewhere.
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

    _OPTIONS = (
        "mode",
        "max_norm",
        "norm_type",
        "scale_grad_by_freq",
        "sparse",
        "include_last_offset",
        "padding_idx",
        "backend",
        "check_indices",
        "deterministic",
    )

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
        check_bag_options(mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset)
        self._build(locals())

    def __call__(self, input, offsets=None, per_sample_weights=None):
        return self._lookup(F.embedding_bag, input, offsets=offsets, per_sample_weights=per_sample_weights)

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
        return cls._pretrained(locals())


class Embedding(_Table):
    """A lookup table, as ``torch.nn.Embedding`` (and MLX's ``nn.Embedding``).

    Args:
        num_embeddings (int): rows of the table.
        embedding_dim (int): columns of the table.
        padding_idx (int, optional): a row that gets no gradient (initialised to zeros).
        max_norm (float, optional): renormalise referenced rows to at most this norm
            (written back into ``weight`` after each call).
        norm_type (float): the p of the p-norm for ``max_norm``.
        scale_grad_by_freq (bool): divide row gradients by their count in the input.
        sparse (bool): under :func:`mlx_embag.value_and_grad` the table's gradient is a
            :class:`mlx_embag.RowSparseGrad` (for :mod:`mlx_embag.optimizers`); dense elsewhere.
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

    _OPTIONS = (
        "padding_idx",
        "max_norm",
        "norm_type",
        "scale_grad_by_freq",
        "sparse",
        "backend",
        "check_indices",
        "deterministic",
    )

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
        check_embedding_options(max_norm, norm_type, scale_grad_by_freq, sparse)
        self._build(locals())
        if check_bool(_freeze, "_freeze"):
            self.freeze()

    def __call__(self, input):
        return self._lookup(F.embedding, input)

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
        return cls._pretrained(locals())
