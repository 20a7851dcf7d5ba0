"""LangChain adapter for m3-rag: BGE-M3 embeddings, a Qdrant vector store, retriever and reranker.

Needs the ``langchain`` extra: ``pip install "m3-rag[langchain]"``.
"""

from m3_rag_langchain import _compat  # noqa: F401  (first: ImportError naming the extra, for every submodule)
from m3_rag_langchain.dense_only import EmbeddingsEncoder
from m3_rag_langchain.embeddings import BGEM3Embeddings
from m3_rag_langchain.reranker import M3Reranker
from m3_rag_langchain.retriever import M3Retriever
from m3_rag_langchain.sparse import BGEM3SparseEmbeddings
from m3_rag_langchain.vectorstore import M3VectorStore

__all__ = [
    "BGEM3Embeddings",
    "BGEM3SparseEmbeddings",
    "EmbeddingsEncoder",
    "M3Reranker",
    "M3Retriever",
    "M3VectorStore",
]
