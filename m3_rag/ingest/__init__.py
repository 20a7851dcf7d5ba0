"""Reading files and folders into chunks, and indexing them into a store (idempotent, resumable)."""

from m3_rag.ingest.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, Chunk, ChunkConfig, TokenChunker
from m3_rag.ingest.files import DEFAULT_MAX_FILE_BYTES, SkippedEntry
from m3_rag.ingest.indexer import FilePlan, IndexPlan, IndexReport, PlannedChunk, chunk_limit, plan_index, run_index
from m3_rag.ingest.sources import IngestError, SourceDocument, SourceFile, discover, parse_documents, read_documents

__all__ = [
    "Chunk",
    "ChunkConfig",
    "TokenChunker",
    "DEFAULT_CHUNK_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "IngestError",
    "SourceDocument",
    "SourceFile",
    "discover",
    "read_documents",
    "parse_documents",
    "SkippedEntry",
    "DEFAULT_MAX_FILE_BYTES",
    "PlannedChunk",
    "FilePlan",
    "IndexPlan",
    "IndexReport",
    "plan_index",
    "run_index",
    "chunk_limit",
]
