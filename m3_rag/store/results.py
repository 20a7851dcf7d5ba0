"""Typed results of the store: search hits and stored points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from m3_rag.store.ids import UserId
from m3_rag.types import SparseVector

__all__ = ["SearchResult", "StoredPoint"]


@dataclass(frozen=True)
class SearchResult:
    """One search hit.

    ``score`` is the final score of the mode; ColBERT scores are BGE-M3's (mean over query
    tokens, not Qdrant's sum). ``mode_scores`` holds ``dense``/``sparse``/``colbert`` scores
    when ``with_mode_scores=True`` was asked, else ``None``.
    """

    id: UserId
    text: str
    metadata: dict[str, Any]
    doc_id: str | None
    score: float
    mode_scores: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class StoredPoint:
    """A point as stored; vectors are filled only when asked for (``with_vectors=True``)."""

    id: UserId
    text: str
    metadata: dict[str, Any]
    doc_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    colbert: np.ndarray | None = None
