"""``M3Reranker``: rerank any retriever's documents by BGE-M3 ColBERT MaxSim or the m3 score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, field_validator, model_validator

from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores
from m3_rag.store.queries import DEFAULT_WEIGHTS, check_weights, model_weights
from m3_rag.validation import as_list
from m3_rag_langchain._encoder import resolve_encoder

__all__ = ["M3Reranker", "DEFAULT_M3_WEIGHTS"]

# (dense, sparse, colbert): the m3 weights used only for an encoder whose config has no
# default_weights (as the store does); otherwise the weights default to the model's own.
DEFAULT_M3_WEIGHTS = DEFAULT_WEIGHTS


class M3Reranker(BaseDocumentCompressor):
    """Reorders documents by relevance to the query and keeps the best ``top_n``.

    ``score="colbert"`` ranks by ColBERT MaxSim; ``score="m3"`` by BGE-M3's weighted sum of
    dense, sparse and ColBERT scores (``weights``; ``None``: the model's own,
    ``encoder.config.default_weights``, as the store's ``m3`` mode). Each returned document is
    a copy whose metadata has ``relevance_score`` (``score_key``) added; the input documents
    are not modified.
    Use it as ``ContextualCompressionRetriever(base_compressor=M3Reranker(...), base_retriever=...)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    model_name: str | None = None
    encoder: Any = None
    device: str | None = None
    top_n: int | None = Field(default=3, description="documents kept; None keeps all, reordered")
    score: Literal["colbert", "m3"] = "colbert"
    weights: tuple[float, float, float] | None = Field(
        default=None, description="(dense, sparse, colbert) of score='m3'; None: the encoder's model's"
    )
    score_key: str = "relevance_score"

    @model_validator(mode="after")
    def _load(self) -> M3Reranker:
        self.encoder = resolve_encoder(self.encoder, self.model_name, self.device, type(self).__name__)
        return self

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        return None if value is None else check_weights(value, "weights")

    @field_validator("top_n")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"top_n must be >= 1 or None (keep all); found {value}")
        return value

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The relevance score of each text for ``query`` (higher is better)."""
        texts = as_list(texts, "texts", "texts")
        outputs = ("colbert",) if self.score == "colbert" else ("dense", "sparse", "colbert")
        q = self.encoder.encode_queries([query], outputs=outputs)
        d = self.encoder.encode_documents(texts, outputs=outputs)
        colbert = maxsim_scores(q.colbert[0], d.colbert)
        if self.score == "colbert":
            return colbert
        return combine_scores(
            dense_scores(q.dense[0], d.dense), lexical_scores(q.sparse[0], d.sparse), colbert,
            self.weights if self.weights is not None else model_weights(self.encoder),
        )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        documents = as_list(documents, "documents", "Documents")
        if not documents:
            return []
        scores = self.scores(query, [doc.page_content for doc in documents])
        # Stable sort: equal scores keep the base retriever's order.
        order = np.argsort(-scores, kind="stable")[: self.top_n]
        return [
            documents[i].model_copy(update={"metadata": {**documents[i].metadata, self.score_key: float(scores[i])}})
            for i in order
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        # Scoring is model inference (CPU/GPU-bound): a worker thread keeps the event loop free.
        return await run_in_executor(None, self.compress_documents, documents, query, callbacks)
