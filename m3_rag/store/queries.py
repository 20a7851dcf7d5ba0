"""Retrieval modes as one backend-neutral query plan (one ``query_points`` round trip each; ``m3`` two).

Each backend translates a :class:`QueryPlan` into its own request types; the semantics live
here only:

- ``dense`` / ``sparse``: one nearest-neighbour query.
- ``hybrid``: dense prefetch k1 + sparse prefetch k2, fused with RRF (``rrf_k``).
- ``hybrid+rerank``: the same prefetches, ColBERT MaxSim over their union, top k.
- ``m3``: the union reranked by ColBERT as in ``hybrid+rerank``, all of it returned; a second
  round trip scores exactly those points by dense (exact) and by sparse (:func:`rescore_plans`),
  and the store combines, per candidate, BGE-M3's
  ``(w_d·dense + w_s·sparse + w_c·colbert/n_query_tokens) / (w_d + w_s + w_c)``
  (:func:`m3_rag.scoring.combine_scores`) and keeps the top k (:class:`Combine`). Qdrant's
  MaxSim sums over query tokens; BGE-M3 averages, hence the division by the number of query
  tokens. The scores are Qdrant's own, as exact as ``hybrid+rerank``'s. (Alternatives measured
  slower: a server-side formula over three re-scoring prefetches runs the dense and sparse union
  searches three times, twice ``hybrid+rerank``'s latency at 50k points; returning the union's
  stored dense/sparse vectors to score them here cost 3 ms more per query on Edge than the
  second round trip, the Python copies of 20 x 1024 floats.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, TypeVar

import numpy as np

from m3_rag.store.filters import FilterNode
from m3_rag.store.ids import PointId
from m3_rag.store.schema import COLBERT, DENSE, SPARSE, StoreSchema
from m3_rag.types import M3Output, OutputName, SparseVector

__all__ = [
    "Mode",
    "MODES",
    "MODE_OUTPUTS",
    "DEFAULT_MODE",
    "DEFAULT_WEIGHTS",
    "DEFAULT_RRF_K",
    "VectorQuery",
    "RrfFusion",
    "Prefetch",
    "Combine",
    "QueryPlan",
    "build_plan",
    "rescore_plans",
    "MmrQuery",
    "mmr_plan",
    "check_mmr",
    "dense_query",
    "check_mode",
    "check_weights",
    "model_weights",
]

Mode = Literal["dense", "sparse", "hybrid", "hybrid+rerank", "m3"]
MODES: tuple[str, ...] = ("dense", "sparse", "hybrid", "hybrid+rerank", "m3")
DEFAULT_MODE: Mode = "hybrid+rerank"
DEFAULT_WEIGHTS = (1.0, 0.3, 1.0)
DEFAULT_RRF_K = 60
# The smallest default prefetch per branch (see _prefetch_sizes).
MIN_DEFAULT_PREFETCH = 10
MODE_OUTPUTS: dict[str, tuple[OutputName, ...]] = {
    "dense": (DENSE,),
    "sparse": (SPARSE,),
    "hybrid": (DENSE, SPARSE),
    "hybrid+rerank": (DENSE, SPARSE, COLBERT),
    "m3": (DENSE, SPARSE, COLBERT),
}


@dataclass(frozen=True, eq=False)
class VectorQuery:
    """Nearest to ``vector`` by the named vector ``using``."""

    using: OutputName
    vector: np.ndarray | SparseVector  # dense [H], sparse, or colbert [t, D]


@dataclass(frozen=True, eq=False)
class MmrQuery:
    """Qdrant's maximal marginal relevance over ``candidates`` points, by the dense vector: each
    pick maximises ``lambda_mult · sim(query, d) − (1 − lambda_mult) · max sim(d, picked)``
    (``lambda_mult=1``: plain similarity order). Hits come in pick order, scored by ``sim(query, d)``."""

    using: OutputName
    vector: np.ndarray
    lambda_mult: float
    candidates: int


@dataclass(frozen=True)
class RrfFusion:
    k: int


@dataclass(frozen=True, eq=False)
class Prefetch:
    limit: int
    query: VectorQuery | RrfFusion | MmrQuery | None = None
    prefetches: tuple[Prefetch, ...] = ()


@dataclass(frozen=True, eq=False)
class Combine:
    """The store's last step of ``m3``: each hit's score becomes ``weights · (dense, sparse,
    ColBERT sum)``, dense and sparse as the backend scores ``dense``/``sparse`` on exactly those
    hits (:func:`rescore_plans`); the top ``k`` stay."""

    weights: tuple[float, float, float]
    k: int
    dense: VectorQuery
    sparse: VectorQuery


@dataclass(frozen=True, eq=False)
class QueryPlan:
    limit: int
    query: VectorQuery | RrfFusion | MmrQuery
    prefetches: tuple[Prefetch, ...] = ()
    filter: FilterNode | None = None
    # What to divide the backend's score by to report BGE-M3's scale (ColBERT: n query tokens).
    score_divisor: float = 1.0
    # Only these points are scored (None: all); exact: no HNSW approximation.
    point_ids: tuple[PointId, ...] | None = None
    exact: bool = False
    # What the store does with the hits (m3's combination).
    combine: Combine | None = None


def _is_mode(mode: str) -> TypeGuard[Mode]:
    return mode in MODE_OUTPUTS


def check_mode(mode: str, schema: StoreSchema) -> Mode:
    if not _is_mode(mode):
        raise ValueError(f"unknown search mode {mode!r}; expected one of {MODES}.")
    schema.require(MODE_OUTPUTS[mode], f"mode {mode!r}")
    return mode


def _row(query: M3Output) -> tuple[np.ndarray | None, SparseVector | None, np.ndarray | None]:
    if len(query) != 1 and not (query.dense is not None and query.dense.shape[0] == 1):
        raise ValueError(f"search_encoded takes one encoded query, found {len(query)}. Fix: pass enc.select([i]).")
    dense = None if query.dense is None else np.asarray(query.dense[0], dtype=np.float32)
    sparse = None if query.sparse is None else query.sparse[0]
    colbert = None if query.colbert is None else np.asarray(query.colbert[0], dtype=np.float32)
    return dense, sparse, colbert


def check_weights(weights: Any, what: str = "weights") -> tuple[float, float, float]:
    """``weights`` as a (dense, sparse, colbert) tuple of floats; raises unless there are three
    non-negative numbers with a positive sum (only their ratios matter)."""
    try:
        w = tuple(float(x) for x in weights)
    except (TypeError, ValueError):
        w = ()
    if len(w) != 3 or not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(
            f"{what} is {weights!r}; expected three finite non-negative numbers (dense, sparse, colbert) with a "
            "positive sum. Fix: pass e.g. (0.4, 0.2, 0.4), or None for the model's own weights."
        )
    return w


def model_weights(encoder: Any) -> tuple[float, float, float]:
    """The m3 weights the encoder's model recommends (``encoder.config.default_weights``: BGE-M3's
    (0.4, 0.2, 0.4), or what a model's ``m3_config.json`` sets), or :data:`DEFAULT_WEIGHTS` for
    an encoder that has none (e.g. a test double without a ``config``)."""
    weights = getattr(getattr(encoder, "config", None), "default_weights", None)
    if weights is None:
        return DEFAULT_WEIGHTS
    return check_weights(weights, "encoder.config.default_weights")


def build_plan(
    mode: str,
    query: M3Output,
    schema: StoreSchema,
    *,
    k: int,
    prefetch_k: int | tuple[int, int] | None = None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    rrf_k: int = DEFAULT_RRF_K,
    filter: FilterNode | None = None,
    max_query_tokens: int | None = None,
) -> QueryPlan:
    """The plan for one search (``query`` holds one encoded query with the mode's outputs)."""
    mode = check_mode(mode, schema)
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"k={k!r}; expected a positive int.")
    k1, k2 = _prefetch_sizes(prefetch_k, k)
    dense, sparse, colbert = _row(query)
    parts = {"dense": dense, "sparse": sparse.values if sparse is not None else None, "colbert": colbert}
    for name in MODE_OUTPUTS[mode]:
        _needed(parts[name], mode, name)
    bad = [name for name, v in parts.items() if v is not None and not np.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"the query's {' and '.join(bad)} vectors contain NaN or inf; expected finite values. "
            "Fix: check the encoder's heads (NaN weights, or float16 overflow: try dtype='float32')."
        )
    if colbert is not None and max_query_tokens is not None:
        colbert = colbert[:max_query_tokens]
    dq = VectorQuery(DENSE, dense) if dense is not None else None
    sq = VectorQuery(SPARSE, sparse) if sparse is not None else None

    if mode == "dense":
        return QueryPlan(limit=k, query=_needed(dq, mode, DENSE), filter=filter)
    if mode == "sparse":
        return QueryPlan(limit=k, query=_needed(sq, mode, SPARSE), filter=filter)
    union = (Prefetch(k1, dq), Prefetch(k2, sq))
    if mode == "hybrid":
        if not isinstance(rrf_k, int) or rrf_k <= 0:
            raise ValueError(f"rrf_k={rrf_k!r}; expected a positive int.")
        return QueryPlan(limit=k, query=RrfFusion(rrf_k), prefetches=union, filter=filter)
    colbert = _needed(colbert, mode, COLBERT)
    n_tokens = int(colbert.shape[0])
    if n_tokens == 0:
        raise ValueError("the query has no ColBERT token vectors; expected at least one. Fix: use a non-empty query.")
    cq = VectorQuery(COLBERT, colbert)
    if mode == "hybrid+rerank":
        return QueryPlan(limit=k, query=cq, prefetches=union, filter=filter, score_divisor=float(n_tokens))
    # m3: the whole union reranked by ColBERT, combined with its stored dense/sparse vectors.
    w = check_weights(weights, "weights")
    total = sum(w)
    dense_q, sparse_q = _needed(dq, mode, DENSE), _needed(sq, mode, SPARSE)
    combine = Combine((w[0] / total, w[1] / total, w[2] / (total * n_tokens)), k, dense_q, sparse_q)
    return QueryPlan(limit=k1 + k2, query=cq, prefetches=union, filter=filter, combine=combine)


_T = TypeVar("_T")


def _needed(part: _T | None, mode: Mode, name: OutputName) -> _T:
    """A part of the encoded query that ``mode`` needs; raises if the query lacks it."""
    if part is None:
        raise ValueError(f"mode {mode!r} needs the query's {name!r} output, which the encoded query lacks.")
    return part


def rescore_plans(combine: Combine, point_ids: Sequence[PointId]) -> tuple[QueryPlan, QueryPlan]:
    """m3's second round trip: the dense (exact) and sparse scores of exactly ``point_ids``.

    A point absent from the sparse answer shares no term with the query (score 0)."""
    ids, n = tuple(point_ids), len(point_ids)
    return (
        QueryPlan(limit=n, query=combine.dense, point_ids=ids, exact=True),
        QueryPlan(limit=n, query=combine.sparse, point_ids=ids, exact=True),
    )


def _prefetch_sizes(prefetch_k: int | tuple[int, int] | None, k: int) -> tuple[int, int]:
    if prefetch_k is None:
        # max(k, 10) per branch: the union holds k..2k candidates (at least 10), enough for the
        # rerank to reorder and cheap enough to stay fast. The ColBERT rerank costs |union| x doc
        # tokens x query tokens x dim multiply-adds, ~0.7 ms per candidate with float16 on Qdrant
        # Edge 0.9.0 (benchmarks/store.py: hybrid+rerank p50 16.9 ms at 50k points with 10 per
        # branch, 27.5 ms with 20, 64.2 ms with 50). Quality barely moves (m3-mini, SciFact test, k=10, nDCG@10 at
        # 10 vs 50 per branch: hybrid+rerank 0.751 vs 0.747, m3 0.764 vs 0.766). Raise prefetch_k
        # where rerank recall matters more than latency.
        size = max(k, MIN_DEFAULT_PREFETCH)
        return size, size
    pair = (prefetch_k, prefetch_k) if isinstance(prefetch_k, int) else tuple(prefetch_k)
    if len(pair) != 2 or not all(isinstance(x, int) and x > 0 for x in pair):
        raise ValueError(f"prefetch_k={prefetch_k!r}; expected a positive int or a (dense, sparse) pair of them.")
    return pair[0], pair[1]


def check_mmr(k: Any, fetch_k: Any, lambda_mult: Any) -> tuple[int, int, float]:
    """MMR's arguments checked: ``0 < k <= fetch_k`` ints, ``lambda_mult`` a number in [0, 1]."""
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k={k!r}; expected a positive int.")
    if not isinstance(fetch_k, int) or isinstance(fetch_k, bool) or fetch_k < k:
        raise ValueError(
            f"fetch_k={fetch_k!r}; expected an int >= k={k} (the candidates MMR picks k from). Fix: raise fetch_k."
        )
    ok = isinstance(lambda_mult, (int, float)) and not isinstance(lambda_mult, bool)
    if not ok or not 0.0 <= float(lambda_mult) <= 1.0:
        raise ValueError(
            f"lambda_mult={lambda_mult!r}; expected a number in [0, 1] (1: relevance only, 0: diversity only). "
            "Fix: pass e.g. 0.5."
        )
    return k, fetch_k, float(lambda_mult)


def mmr_plan(candidates: QueryPlan, dense: np.ndarray, *, k: int, lambda_mult: float) -> QueryPlan:
    """MMR over the points ``candidates`` finds, in the same round trip: its plan becomes the
    prefetch of an :class:`MmrQuery` by ``dense`` (the query's dense vector).

    ``candidates`` must be a one-round-trip plan (not ``m3``, which combines in the store: MMR
    then runs over its hits by id, ``point_ids``)."""
    if candidates.combine is not None:
        raise ValueError("mmr_plan() takes a one-round-trip plan; m3's candidates are passed as point_ids.")
    mmr = MmrQuery(DENSE, np.asarray(dense, dtype=np.float32), lambda_mult, candidates.limit)
    inner = Prefetch(candidates.limit, candidates.query, candidates.prefetches)
    return QueryPlan(limit=k, query=mmr, prefetches=(inner,), filter=candidates.filter)


def dense_query(vector: Any, dim: int) -> M3Output:
    """A caller's dense vector (a list of floats or a 1-d array) as an encoded query of the dense
    output only; raises unless it is ``dim`` finite numbers."""
    try:
        v = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        v = np.zeros(0, dtype=np.float32)
    if v.ndim != 1 or v.shape[0] != dim or isinstance(vector, (str, bytes)):
        shape = getattr(v, "shape", None)
        raise ValueError(
            f"the query vector has shape {shape} ({type(vector).__name__}); expected {dim} numbers, the "
            "collection's dense size. Fix: pass the embedding of the same model (e.g. embed_query(text))."
        )
    if not np.isfinite(v).all():
        raise ValueError("the query vector contains NaN or inf; expected finite numbers.")
    return M3Output(dense=v[None, :], sparse=None, colbert=None, token_counts=np.zeros(1, np.int64),
                    truncated=np.zeros(1, dtype=bool))  # fmt: skip
