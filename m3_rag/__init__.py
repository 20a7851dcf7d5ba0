"""m3-rag: BGE-M3 (dense + sparse + ColBERT from one forward pass) for RAG on Qdrant.

The core imports no framework; the LangChain and LlamaIndex adapters live in
``m3_rag_langchain`` and ``m3_rag_llamaindex``.
"""

from m3_rag.encoder import EncoderConfig, EncoderStats, M3Encoder, PairScores
from m3_rag.loading import ModelNotFoundError
from m3_rag.types import M3Output, SparseVector

__all__ = [
    "EncoderConfig",
    "EncoderStats",
    "M3Encoder",
    "M3Output",
    "ModelNotFoundError",
    "PairScores",
    "SparseVector",
]
__version__ = "0.1.0"
