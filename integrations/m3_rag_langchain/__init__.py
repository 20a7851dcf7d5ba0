"""LangChain adapter for m3-rag: BGE-M3 embeddings, a Qdrant vector store, retriever and reranker.

Needs the ``langchain`` extra: ``pip install "m3-rag[langchain]"``.
"""

from m3_rag_langchain._compat import require_langchain

require_langchain()

from m3_rag_langchain.dense_only import EmbeddingsEncoder  # noqa: E402
from m3_rag_langchain.embeddings import BGEM3Embeddings  # noqa: E402
from m3_rag_langchain.reranker import M3Reranker  # noqa: E402
from m3_rag_langchain.retriever import M3Retriever  # noqa: E402
from m3_rag_langchain.sparse import BGEM3SparseEmbeddings  # noqa: E402
from m3_rag_langchain.vectorstore import M3VectorStore  # noqa: E402

__all__ = [
    "BGEM3Embeddings",
    "BGEM3SparseEmbeddings",
    "EmbeddingsEncoder",
    "M3Reranker",
    "M3Retriever",
    "M3VectorStore",
]
