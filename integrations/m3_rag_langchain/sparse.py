"""``BGEM3SparseEmbeddings``: BGE-M3's lexical weights in langchain-qdrant's sparse interface."""

from __future__ import annotations

from langchain_qdrant.sparse_embeddings import SparseEmbeddings, SparseVector

from m3_rag.types import SparseVector as M3SparseVector
from m3_rag.validation import as_list
from m3_rag_langchain._encoder import EmbeddingFields

__all__ = ["BGEM3SparseEmbeddings", "to_langchain_sparse"]


def to_langchain_sparse(vector: M3SparseVector) -> SparseVector:
    """Token ids and weights as langchain-qdrant's ``SparseVector`` (plain lists)."""
    return SparseVector(indices=vector.indices.tolist(), values=vector.values.tolist())


class BGEM3SparseEmbeddings(EmbeddingFields, SparseEmbeddings):
    """BGE-M3 sparse (lexical) weights: indices are tokenizer ids, values the learned weights.

    Works as ``sparse_embedding=`` of a stock ``langchain_qdrant.QdrantVectorStore`` in
    ``RetrievalMode.HYBRID``. Build it with ``encoder=dense_embeddings.encoder`` to share the
    model (and its cache) with :class:`BGEM3Embeddings`: the same texts then run the model once.
    The async methods are langchain-qdrant's: the sync ones on LangChain's executor.
    """

    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        texts = as_list(texts, "texts", "texts")
        out = self.encoder.encode_documents(texts, outputs=("sparse",), show_progress=self.show_progress)
        return [to_langchain_sparse(v) for v in out.sparse]

    def embed_query(self, text: str) -> SparseVector:
        return to_langchain_sparse(self.encoder.encode_queries([text], outputs=("sparse",)).sparse[0])
