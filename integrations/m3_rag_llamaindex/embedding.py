"""BGE-M3 dense embeddings as a LlamaIndex ``BaseEmbedding``.

Share the encoder with :class:`~m3_rag_llamaindex.M3VectorStore` (take ``store.embed_model``,
or pass the same :class:`~m3_rag.cache.CachedEncoder` to both): the dense call made by
``VectorStoreIndex`` then computes and caches all three outputs, and the store's ``add``
reads the sparse and ColBERT ones from the cache instead of running the model again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import AfterValidator, Field, PrivateAttr

from m3_rag.cache import CachedEncoder
from m3_rag.store.queries import check_weights
from m3_rag.types import Encoder, M3Output, async_encoder, require_output

__all__ = ["BGEM3Embedding", "as_cached", "Weights"]


def _checked(weights: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    return None if weights is None else check_weights(weights, "weights")


#: An m3 ``weights`` field: (dense, sparse, colbert), checked by the core's rule; None: the model's own.
Weights = Annotated[tuple[float, float, float] | None, AfterValidator(_checked)]


def as_cached(encoder: Encoder, max_items: int = 4096) -> CachedEncoder:
    """The encoder behind a cache (an encoder that already is one is returned as is)."""
    return encoder if isinstance(encoder, CachedEncoder) else CachedEncoder(encoder, max_items=max_items)


class BGEM3Embedding(BaseEmbedding):
    """Dense BGE-M3 vectors (L2-normalised) for queries and documents."""

    model_name: str = Field(default="BAAI/bge-m3", description="Model name or path (informational).")
    embed_batch_size: int = Field(default=32, gt=0, description="Texts per encoder call.")
    _encoder: CachedEncoder = PrivateAttr()

    def __init__(self, encoder: Encoder, **kwargs: Any) -> None:
        """``encoder``: an ``M3Encoder`` or ``CachedEncoder`` (wrapped in a cache if it is not one)."""
        kwargs.setdefault("model_name", getattr(getattr(encoder, "config", None), "name_or_path", "BAAI/bge-m3"))
        super().__init__(**kwargs)
        self._encoder = as_cached(encoder)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "BAAI/bge-m3", **encoder_kwargs: Any) -> BGEM3Embedding:
        """Load the model (see ``M3Encoder.from_pretrained`` for the keyword arguments)."""
        from m3_rag import M3Encoder

        return cls(M3Encoder.from_pretrained(name_or_path, **encoder_kwargs))

    @classmethod
    def class_name(cls) -> str:
        return "BGEM3Embedding"

    @property
    def encoder(self) -> CachedEncoder:
        """The cached encoder; hand it to the vector store so ingestion runs the model once."""
        return self._encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        return _dense(self._encoder.encode_queries([query], outputs=("dense",)))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return _dense(self._encoder.encode_documents(texts, outputs=("dense",)))

    # The core's async view of the encoder (LlamaIndex's defaults would encode on the event loop).
    async def _aget_query_embedding(self, query: str) -> list[float]:
        return _dense(await async_encoder(self._encoder).aencode_queries([query], outputs=("dense",)))[0]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return _dense(await async_encoder(self._encoder).aencode_documents(texts, outputs=("dense",)))


def _dense(encoded: M3Output) -> list[list[float]]:
    return require_output(encoded.dense, "dense").tolist()
