"""BGE-M3 relevance scores as pure functions on arrays (the same math the store runs in Qdrant).

Tiny examples:

>>> import numpy as np
>>> q = np.array([1.0, 0.0]); docs = np.array([[1.0, 0.0], [0.6, 0.8]])
>>> print(dense_scores(q, docs).round(4))
[1.  0.6]
>>> from m3_rag.types import SparseVector
>>> qs = SparseVector.from_dict({1: 0.5, 2: 1.0})
>>> print(lexical_scores(qs, [SparseVector.from_dict({2: 0.3, 9: 1.0}), SparseVector.empty()]).round(4))
[0.3 0. ]
>>> qc = np.array([[1.0, 0.0], [0.0, 1.0]])
>>> print(maxsim_scores(qc, [np.array([[1.0, 0.0], [0.6, 0.8]])]).round(4))
[0.9]
>>> print(combine_scores(np.array([0.5]), np.array([0.2]), np.array([0.9]), weights=(1.0, 1.0, 2.0)).round(4))
[0.625]
>>> print(combine_scores(np.array([0.5]), np.array([0.2]), weights=(1.0, 3.0, 100.0)).round(4))
[0.275]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3_rag.pooling import pool_colbert, pooled_rows
from m3_rag.types import SparseVector

__all__ = [
    "dense_scores",
    "lexical_scores",
    "lexical_score",
    "maxsim_scores",
    "maxsim_score",
    "combine_scores",
    "pool_colbert",
    "pooled_rows",
]


def dense_scores(query: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Dot products of one normalised query vector ``[H]`` with ``[n, H]`` documents (= cosine)."""
    return np.asarray(docs, dtype=np.float32) @ np.asarray(query, dtype=np.float32)


def lexical_score(query: SparseVector, doc: SparseVector) -> float:
    """Σ over the token ids both share of w_q · w_d.

    >>> lexical_score(SparseVector.from_dict({3: 2.0}), SparseVector.from_dict({3: 0.25, 4: 1.0}))
    0.5
    """
    common, qi, di = np.intersect1d(query.indices, doc.indices, assume_unique=True, return_indices=True)
    if common.size == 0:
        return 0.0
    return float(np.dot(query.values[qi].astype(np.float64), doc.values[di].astype(np.float64)))


def lexical_scores(query: SparseVector, docs: Sequence[SparseVector]) -> np.ndarray:
    """:func:`lexical_score` of one query against many documents."""
    return np.array([lexical_score(query, d) for d in docs], dtype=np.float32)


def maxsim_score(query: np.ndarray, doc: np.ndarray) -> float:
    """ColBERT late interaction: mean over query tokens of the best dot with any document token.

    >>> maxsim_score(np.array([[1.0, 0.0]]), np.zeros((0, 2)))
    0.0
    """
    query = np.asarray(query, dtype=np.float32)
    doc = np.asarray(doc, dtype=np.float32)
    if query.shape[0] == 0 or doc.shape[0] == 0:
        return 0.0
    return float((query @ doc.T).max(axis=1).sum() / query.shape[0])


def maxsim_scores(query: np.ndarray, docs: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`maxsim_score` of one query ``[t, D]`` against many documents ``[t_i, D]``."""
    return np.array([maxsim_score(query, d) for d in docs], dtype=np.float32)


def combine_scores(
    dense: np.ndarray,
    sparse: np.ndarray,
    colbert: np.ndarray | None = None,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """FlagEmbedding's weighted combination: Σ w_mode · score_mode / Σ of the weights used.

    Without ``colbert`` this is its ``sparse+dense`` score, with it ``colbert+sparse+dense``.
    """
    if len(weights) != 3:
        raise ValueError(f"weights has {len(weights)} values, expected 3: (dense, sparse, colbert)")
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
    total = np.asarray(dense, dtype=np.float32) * w_dense + np.asarray(sparse, dtype=np.float32) * w_sparse
    used = w_dense + w_sparse
    if colbert is not None:
        total = total + np.asarray(colbert, dtype=np.float32) * w_colbert
        used += w_colbert
    if used == 0:
        raise ValueError(f"the weights used sum to 0 ({tuple(weights)}); expected a positive sum")
    return total / used
