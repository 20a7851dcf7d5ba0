"""Rerank retrieved nodes with BGE-M3: ColBERT MaxSim or the model's weighted m3 score.

Works after any retriever. Nodes are encoded through the shared :class:`CachedEncoder`, so
nodes ingested (or reranked) a moment ago cost no forward pass.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from m3_rag.cache import CachedEncoder
from m3_rag.rerank import RerankScore, rerank
from m3_rag.types import Encoder
from m3_rag_llamaindex.embedding import Weights, as_cached

__all__ = ["M3RerankPostprocessor"]


class M3RerankPostprocessor(BaseNodePostprocessor):
    """Rescore nodes against the query; the score they came with is kept in metadata.

    Nodes are scored on their EMBED-mode content (what the vector store encoded at ingestion).
    ``score="colbert"``: ColBERT MaxSim. ``score="m3"``: BGE-M3's weighted sum of dense,
    sparse and ColBERT scores (``weights``; ``None``: the model's own, ``encoder.config.default_weights``,
    as the store's ``m3`` mode): the core's :func:`m3_rag.rerank.rerank`. ``top_n=None`` keeps all.
    """

    top_n: int | None = Field(default=None, gt=0)
    score: RerankScore = "colbert"
    weights: Weights = None
    score_key: str = Field(default="retrieval_score", description="Metadata key for the incoming score.")
    _encoder: CachedEncoder = PrivateAttr()

    def __init__(self, encoder: Encoder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = as_cached(encoder)

    @classmethod
    def class_name(cls) -> str:
        return "M3RerankPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("M3RerankPostprocessor needs the query: pass query_bundle (or query_str).")
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        out = []
        for i, score in rerank(self._encoder, query_bundle.query_str, texts, self.score, self.weights, self.top_n):
            # A copy: the node object may be shared with a docstore or a cache.
            node = nodes[i].node.model_copy(deep=True)
            node.metadata[self.score_key] = nodes[i].score
            # A score is not content: keep it out of what the LLM and embedder see.
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if self.score_key not in keys:
                    keys.append(self.score_key)
            out.append(NodeWithScore(node=node, score=score))
        return out
