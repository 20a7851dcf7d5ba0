"""``M3Reranker``: rerank any retriever's documents by BGE-M3 ColBERT MaxSim or the m3 score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import Field, field_validator

from m3_rag.rerank import RerankScore, rerank, rerank_scores
from m3_rag.store.queries import DEFAULT_WEIGHTS, check_weights
from m3_rag.validation import as_list
from m3_rag_langchain._encoder import EncoderFields

__all__ = ["M3Reranker", "DEFAULT_M3_WEIGHTS"]

# (dense, sparse, colbert): the m3 weights used only for an encoder whose config has no
# default_weights (as the store does); otherwise the weights default to the model's own.
DEFAULT_M3_WEIGHTS = DEFAULT_WEIGHTS


class M3Reranker(EncoderFields, BaseDocumentCompressor):
    """Reorders documents by relevance to the query and keeps the best ``top_n``.

    ``score="colbert"`` ranks by ColBERT MaxSim; ``score="m3"`` by BGE-M3's weighted sum of
    dense, sparse and ColBERT scores (``weights``; ``None``: the model's own,
    ``encoder.config.default_weights``, as the store's ``m3`` mode): the core's
    :func:`m3_rag.rerank.rerank`. Each returned document is a copy whose metadata has
    ``relevance_score`` (``score_key``) added; the input documents are not modified.
    Use it as ``ContextualCompressionRetriever(base_compressor=M3Reranker(...), base_retriever=...)``.
    ``acompress_documents`` is LangChain's: this on its executor (model inference releases the GIL).
    """

    top_n: int | None = Field(default=3, description="documents kept; None keeps all, reordered")
    score: RerankScore = "colbert"
    weights: tuple[float, float, float] | None = Field(
        default=None, description="(dense, sparse, colbert) of score='m3'; None: the encoder's model's"
    )
    score_key: str = "relevance_score"

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
        return rerank_scores(self.encoder, query, as_list(texts, "texts", "texts"), self.score, self.weights)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        documents = as_list(documents, "documents", "Documents")
        ranked = rerank(self.encoder, query, [d.page_content for d in documents], self.score, self.weights, self.top_n)
        return [
            documents[i].model_copy(update={"metadata": {**documents[i].metadata, self.score_key: score}})
            for i, score in ranked
        ]
