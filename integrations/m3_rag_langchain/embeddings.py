"""``BGEM3Embeddings``: BGE-M3's dense vectors as a LangChain ``Embeddings``."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor

from m3_rag.validation import as_list
from m3_rag_langchain._encoder import EncoderFields

__all__ = ["BGEM3Embeddings"]


class BGEM3Embeddings(EncoderFields, Embeddings):
    """Dense BGE-M3 embeddings (L2-normalised, so dot product = cosine).

    Pass ``model_name`` (a hub id, local directory or ``"m3-mini"``) to load a model, or
    ``encoder=`` to share one already loaded. Sharing one :class:`m3_rag.cache.CachedEncoder`
    between this class, :class:`BGEM3SparseEmbeddings` and :class:`M3VectorStore` makes the
    model run once per text for all three representations.
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        texts = as_list(texts, "texts", "texts")
        if not texts:
            return []
        out = self.encoder.encode_documents(texts, outputs=("dense",), show_progress=self.show_progress)
        return out.dense.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_queries([text], outputs=("dense",)).dense[0].tolist()

    # Encoding is CPU/GPU-bound work in torch, so a worker thread is the honest async here.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await run_in_executor(None, self.embed_query, text)
