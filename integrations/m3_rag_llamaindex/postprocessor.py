"""Rerank retrieved nodes with BGE-M3: ColBERT MaxSim or the model's weighted m3 score.

Works after any retriever. Nodes are encoded through the shared :class:`CachedEncoder`, so
nodes ingested (or reranked) a moment ago cost no forward pass.
"""

from __future__ import annotations

from typing import Any, Literal

from m3_rag_llamaindex import _compat  # noqa: F401  (ImportError naming the extra)

# isort: split

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr, field_validator

from m3_rag.cache import CachedEncoder
from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores
from m3_rag.store.queries import check_weights, model_weights
from m3_rag.types import require_output
from m3_rag_llamaindex.embedding import as_cached

__all__ = ["M3RerankPostprocessor"]


class M3RerankPostprocessor(BaseNodePostprocessor):
    """Rescore nodes against the query; the score they came with is kept in metadata.

    Nodes are scored on their EMBED-mode content (what the vector store encoded at ingestion).
    ``score="colbert"``: ColBERT MaxSim. ``score="m3"``: BGE-M3's weighted sum of dense,
    sparse and ColBERT scores (``weights``; ``None``: the model's own, ``encoder.config.default_weights``,
    as the store's ``m3`` mode). ``top_n=None`` keeps all.
    """

    top_n: int | None = Field(default=None, gt=0)
    score: Literal["colbert", "m3"] = "colbert"
    weights: tuple[float, float, float] | None = None
    score_key: str = Field(default="retrieval_score", description="Metadata key for the incoming score.")
    _encoder: CachedEncoder = PrivateAttr()

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = as_cached(encoder)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, w: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        return None if w is None else check_weights(w, "weights")

    @classmethod
    def class_name(cls) -> str:
        return "M3RerankPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("M3RerankPostprocessor needs the query: pass query_bundle (or query_str).")
        if not nodes:
            return []
        wanted = ("colbert",) if self.score == "colbert" else ("dense", "sparse", "colbert")
        q = self._encoder.encode_queries([query_bundle.query_str], outputs=wanted)
        docs = self._encoder.encode_documents(
            [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes], outputs=wanted
        )
        colbert = maxsim_scores(require_output(q.colbert, "colbert")[0], require_output(docs.colbert, "colbert"))
        if self.score == "colbert":
            scores = colbert
        else:
            weights = self.weights if self.weights is not None else model_weights(self._encoder)
            dense = dense_scores(require_output(q.dense, "dense")[0], require_output(docs.dense, "dense"))
            lexical = lexical_scores(require_output(q.sparse, "sparse")[0], require_output(docs.sparse, "sparse"))
            scores = combine_scores(dense, lexical, colbert, weights=weights)
        out = []
        for n, s in zip(nodes, scores, strict=True):
            # A copy: the node object may be shared with a docstore or a cache.
            node = n.node.model_copy(deep=True)
            node.metadata[self.score_key] = n.score
            # A score is not content: keep it out of what the LLM and embedder see.
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if self.score_key not in keys:
                    keys.append(self.score_key)
            out.append(NodeWithScore(node=node, score=float(s)))
        out.sort(key=lambda n: n.get_score(raise_error=True), reverse=True)
        return out if self.top_n is None else out[: self.top_n]
