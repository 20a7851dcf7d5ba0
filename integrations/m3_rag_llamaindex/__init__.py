"""LlamaIndex adapter for m3-rag: BGE-M3 embeddings and a Qdrant-backed vector store with
dense, sparse and hybrid + ColBERT-rerank retrieval. Needs ``pip install "m3-rag[llamaindex]"``."""

from m3_rag_llamaindex import _compat  # noqa: F401  (first: ImportError naming the extra)
from m3_rag_llamaindex.embedding import BGEM3Embedding

__all__ = ["BGEM3Embedding"]
