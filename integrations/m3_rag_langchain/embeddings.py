"""``BGEM3Embeddings``: BGE-M3's dense vectors as a LangChain ``Embeddings``."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from m3_rag.validation import as_list
from m3_rag_langchain._encoder import EmbeddingFields

__all__ = ["BGEM3Embeddings"]


class BGEM3Embeddings(EmbeddingFields, Embeddings):
    """Dense BGE-M3 embeddings (L2-normalised, so dot product = cosine).

    Pass ``model_name`` (a hub id, local directory or ``"m3-mini"``) to load a model, or
    ``encoder=`` to share one already loaded. Sharing one :class:`m3_rag.cache.CachedEncoder`
    between this class, :class:`BGEM3SparseEmbeddings` and :class:`M3VectorStore` makes the
    model run once per text for all three representations. The async methods are LangChain's:
    the sync ones on its executor (model inference releases the GIL).
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        texts = as_list(texts, "texts", "texts")
        out = self.encoder.encode_documents(texts, outputs=("dense",), show_progress=self.show_progress)
        return out.dense.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_queries([text], outputs=("dense",)).dense[0].tolist()
