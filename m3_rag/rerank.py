"""Rerank texts for a query with BGE-M3: ColBERT MaxSim or the m3 score (what the adapters' rerankers run).

The query and the texts are encoded with the outputs the score needs; through a
:class:`~m3_rag.cache.CachedEncoder`, texts ingested or retrieved a moment ago cost no forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores
from m3_rag.store.queries import check_weights, model_weights
from m3_rag.types import ALL_OUTPUTS, Encoder, OutputName, require_output

__all__ = ["RerankScore", "RERANK_SCORES", "rerank_scores", "rerank"]

RerankScore = Literal["colbert", "m3"]
RERANK_SCORES: tuple[RerankScore, ...] = ("colbert", "m3")


def rerank_scores(
    encoder: Encoder,
    query: str,
    texts: Sequence[str],
    score: RerankScore = "colbert",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """The relevance of each of ``texts`` to ``query`` (higher is better): ColBERT MaxSim for
    ``score="colbert"``; for ``"m3"``, BGE-M3's weighted sum of the dense, sparse and ColBERT scores
    (``weights``: (dense, sparse, colbert); None: the encoder's model's, as the store's ``m3`` mode)."""
    if score not in RERANK_SCORES:
        raise ValueError(f"score={score!r}; expected one of {RERANK_SCORES}. Fix: pass score='colbert' or 'm3'.")
    outputs: tuple[OutputName, ...] = ("colbert",) if score == "colbert" else ALL_OUTPUTS
    q = encoder.encode_queries([query], outputs=outputs)
    d = encoder.encode_documents(texts, outputs=outputs)
    colbert = maxsim_scores(require_output(q.colbert, "colbert")[0], require_output(d.colbert, "colbert"))
    if score == "colbert":
        return colbert
    dense = dense_scores(require_output(q.dense, "dense")[0], require_output(d.dense, "dense"))
    lexical = lexical_scores(require_output(q.sparse, "sparse")[0], require_output(d.sparse, "sparse"))
    w = model_weights(encoder) if weights is None else check_weights(weights, "weights")
    return combine_scores(dense, lexical, colbert, weights=w)


def rerank(
    encoder: Encoder,
    query: str,
    texts: Sequence[str],
    score: RerankScore = "colbert",
    weights: Sequence[float] | None = None,
    top_n: int | None = None,
) -> list[tuple[int, float]]:
    """``(index in texts, score)`` of the ``top_n`` (None: all) most relevant ``texts``, best first
    (:func:`rerank_scores`); equal scores keep the input order (a stable sort). No texts: ``[]``."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ValueError(f"top_n={top_n!r}; expected an int >= 1, or None to keep every text. Fix: pass e.g. top_n=3.")
    if not texts:
        return []
    scores = rerank_scores(encoder, query, texts, score, weights)
    return [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")[:top_n]]
