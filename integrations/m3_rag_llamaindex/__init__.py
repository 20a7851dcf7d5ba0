"""LlamaIndex adapter for m3-rag: BGE-M3 embeddings and a Qdrant-backed vector store with
dense, sparse and hybrid + ColBERT-rerank retrieval. Needs ``pip install "m3-rag[llamaindex]"``."""

from m3_rag_llamaindex import _compat  # noqa: F401  (first: ImportError naming the extra, for every submodule)
from m3_rag_llamaindex.embedding import BGEM3Embedding
from m3_rag_llamaindex.filters import UnsupportedFilterError, to_core_filter
from m3_rag_llamaindex.postprocessor import M3RerankPostprocessor
from m3_rag_llamaindex.retriever import M3Retriever
from m3_rag_llamaindex.vector_store import M3VectorStore

__all__ = [
    "BGEM3Embedding",
    "M3VectorStore",
    "M3Retriever",
    "M3RerankPostprocessor",
    "UnsupportedFilterError",
    "to_core_filter",
]
