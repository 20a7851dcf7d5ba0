"""Storage backends: Qdrant Edge (embedded, on disk) and qdrant-client (server or local mode).

Each module holds all of one backend's Qdrant-specific code; the query semantics are built
once in :mod:`m3_rag.store.queries` and only translated here.
"""

__all__: list[str] = []
