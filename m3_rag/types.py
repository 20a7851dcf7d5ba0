"""Typed results of the encoder (one forward pass, three representations) and the encoder contract.

:class:`Encoder` is what the stores, the cache and the adapters need from an encoder;
:func:`async_encoder` is its async view, so that no caller runs its own thread for encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

__all__ = [
    "OutputName",
    "ALL_OUTPUTS",
    "SparseVector",
    "M3Output",
    "validate_outputs",
    "Encoder",
    "AsyncEncoder",
    "check_encoder",
    "async_encoder",
]

OutputName = Literal["dense", "sparse", "colbert"]
ALL_OUTPUTS: tuple[OutputName, ...] = ("dense", "sparse", "colbert")

_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class SparseVector:
    """Lexical weights of one text: token ids (ascending, unique) and their positive weights.

    >>> v = SparseVector.from_dict({7: 0.5, 3: 0.25})
    >>> v.indices.tolist(), v.values.tolist()
    ([3, 7], [0.25, 0.5])
    >>> v.to_dict()
    {3: 0.25, 7: 0.5}
    >>> len(SparseVector.empty())
    0
    """

    indices: np.ndarray  # int64 token ids
    values: np.ndarray  # float32 weights, all > 0

    def __post_init__(self) -> None:
        if self.indices.shape != self.values.shape or self.indices.ndim != 1:
            raise ValueError(
                f"SparseVector needs 1-D indices and values of equal length; found indices "
                f"{self.indices.shape} and values {self.values.shape}. Pass one weight per token id."
            )

    @classmethod
    def from_dict(cls, weights: dict[int, float]) -> SparseVector:
        ids = np.fromiter((int(k) for k in weights), dtype=np.int64, count=len(weights))
        vals = np.fromiter((float(v) for v in weights.values()), dtype=np.float32, count=len(weights))
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], vals[order])

    @classmethod
    def empty(cls) -> SparseVector:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    def to_dict(self) -> dict[int, float]:
        return {int(i): float(v) for i, v in zip(self.indices, self.values, strict=True)}

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseVector):
            return NotImplemented
        return np.array_equal(self.indices, other.indices) and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside


@dataclass(frozen=True, eq=False)
class M3Output:
    """The outputs of one encoder call, in input order.

    An output that was not requested is ``None``. ``token_counts`` are the tokens each text
    was encoded with (after truncation, special tokens included); ``truncated`` marks the
    texts that were cut to the maximum length.
    """

    dense: np.ndarray | None  # [n, H] float32, L2-normalised
    sparse: list[SparseVector] | None
    colbert: list[np.ndarray] | None  # n arrays of [t_i, D] float32, rows L2-normalised
    token_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.token_counts.shape[0])

    @property
    def num_truncated(self) -> int:
        return int(self.truncated.sum())

    def select(self, rows: Iterable[int]) -> M3Output:
        """The outputs of a subset of the texts, in the order given."""
        idx = list(rows)
        return M3Output(
            dense=None if self.dense is None else self.dense[idx],
            sparse=None if self.sparse is None else [self.sparse[i] for i in idx],
            colbert=None if self.colbert is None else [self.colbert[i] for i in idx],
            token_counts=self.token_counts[idx],
            truncated=self.truncated[idx],
        )


def validate_outputs(outputs: Collection[str] | str) -> tuple[OutputName, ...]:
    """Normalise an ``outputs=`` argument; unknown names raise.

    >>> validate_outputs(["colbert", "dense"])
    ('dense', 'colbert')
    >>> validate_outputs("sparse")
    ('sparse',)
    >>> validate_outputs(["lexical"])
    Traceback (most recent call last):
    ...
    ValueError: unknown output 'lexical': expected any of ('dense', 'sparse', 'colbert'). Fix: pass outputs=("dense", "sparse", "colbert") or a subset.
    """
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    for name in names:
        if name not in ALL_OUTPUTS:
            raise ValueError(
                f"unknown output {name!r}: expected any of {ALL_OUTPUTS}. "
                'Fix: pass outputs=("dense", "sparse", "colbert") or a subset.'
            )
    if not names:
        raise ValueError(
            f"no output requested: expected at least one of {ALL_OUTPUTS}. "
            'Fix: pass outputs=("dense", "sparse", "colbert") or a subset.'
        )
    return tuple(n for n in ALL_OUTPUTS if n in names)


def require_output(value: _T | None, name: OutputName) -> _T:
    """``value``, the ``name`` field of an :class:`M3Output`, when it was computed; raises if it is None.

    >>> require_output(M3Output(dense=None, sparse=[], colbert=None).sparse, "sparse")
    []
    >>> require_output(M3Output(dense=None, sparse=[], colbert=None).dense, "dense")
    Traceback (most recent call last):
    ...
    ValueError: the encoder output has no 'dense' vectors (M3Output.dense is None: not requested); expected them. Fix: encode with outputs= including 'dense'.
    """
    if value is None:
        raise ValueError(
            f"the encoder output has no {name!r} vectors (M3Output.{name} is None: not requested); expected them. "
            f"Fix: encode with outputs= including {name!r}."
        )
    return value


@runtime_checkable
class Encoder(Protocol):
    """What the stores, the cache and the adapters use of an encoder: :class:`~m3_rag.M3Encoder`,
    :class:`~m3_rag.cache.CachedEncoder`, the LangChain adapter's dense-only ``EmbeddingsEncoder``
    and the training ``StateCachedEncoder`` are ones.

    ``outputs``: what it produces (a subset of :data:`ALL_OUTPUTS`); ``dense_dim`` / ``colbert_dim``:
    its vector sizes, from its config (``colbert_dim`` None without ColBERT); ``encode_*``: the
    requested ``outputs`` (a subset of its own) of ``texts``, in input order.
    """

    @property
    def outputs(self) -> tuple[OutputName, ...]: ...

    @property
    def dense_dim(self) -> int: ...

    @property
    def colbert_dim(self) -> int | None: ...

    def encode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] = ..., show_progress: bool = ...
    ) -> M3Output: ...

    def encode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] = ..., show_progress: bool = ...
    ) -> M3Output: ...


# Encoder's members, for the message of check_encoder (tests/test_types.py checks they are the protocol's).
ENCODER_MEMBERS = ("outputs", "dense_dim", "colbert_dim", "encode_queries", "encode_documents")


@runtime_checkable
class AsyncEncoder(Protocol):
    """An encoder's coroutines (:func:`async_encoder`). An encoder with an async path of its own
    (e.g. a remote embedding API) has them itself, and they are used."""

    async def aencode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] = ..., show_progress: bool = ...
    ) -> M3Output: ...

    async def aencode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] = ..., show_progress: bool = ...
    ) -> M3Output: ...


def check_encoder(encoder: object, what: str) -> Encoder:
    """``encoder`` if it is an :class:`Encoder`; else ``TypeError`` naming what it lacks (``what``:
    who got it, for the message)."""
    if isinstance(encoder, Encoder):
        return encoder
    missing = [name for name in ENCODER_MEMBERS if not hasattr(encoder, name)]
    raise TypeError(
        f"{what} got encoder={type(encoder).__name__!r}, which has no {', '.join(missing)}; expected an m3_rag "
        "Encoder (M3Encoder, CachedEncoder, ...). Fix: pass M3Encoder.from_pretrained(...), or give it those members."
    )


def async_encoder(encoder: Encoder) -> AsyncEncoder:
    """``encoder`` as coroutines: its own when it has them (an :class:`AsyncEncoder`), else its
    sync methods on a worker thread (model inference, which releases the GIL: the event loop stays free)."""
    return encoder if isinstance(encoder, AsyncEncoder) else _ThreadedEncoder(check_encoder(encoder, "async_encoder()"))


class _ThreadedEncoder:
    """An :class:`AsyncEncoder` that runs a sync encoder's calls on worker threads."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    async def aencode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False
    ) -> M3Output:
        return await asyncio.to_thread(self.encoder.encode_queries, texts, outputs=outputs, show_progress=show_progress)

    async def aencode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False
    ) -> M3Output:
        return await asyncio.to_thread(
            self.encoder.encode_documents, texts, outputs=outputs, show_progress=show_progress
        )
