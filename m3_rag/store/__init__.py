"""The Qdrant store: BGE-M3's dense, sparse and ColBERT vectors in one collection.

Two backends behind one API: Qdrant Edge (``path=``, embedded, on disk) and qdrant-client
(``url=`` for a server or cluster, ``location=":memory:"`` for tests). See
``docs/architecture.md`` (Store) for the API and the payload layout.
"""

from m3_rag.store.async_store import AsyncM3Store
from m3_rag.store.backends.base import StoreLockedError
from m3_rag.store.connection import Connection
from m3_rag.store.filters import And, Condition, Not, Or, parse_filter
from m3_rag.store.ids import to_point_id
from m3_rag.store.ingest import max_colbert_rows
from m3_rag.store.queries import DEFAULT_MODE, DEFAULT_WEIGHTS, MODES
from m3_rag.store.results import SearchResult, StoredPoint
from m3_rag.store.schema import SchemaMismatchError, StoreSchema
from m3_rag.store.store import DEFAULT_COLLECTION, M3Store

__all__ = [
    "M3Store",
    "AsyncM3Store",
    "Connection",
    "SearchResult",
    "StoredPoint",
    "StoreSchema",
    "SchemaMismatchError",
    "StoreLockedError",
    "Condition",
    "And",
    "Or",
    "Not",
    "parse_filter",
    "to_point_id",
    "max_colbert_rows",
    "MODES",
    "DEFAULT_MODE",
    "DEFAULT_WEIGHTS",
    "DEFAULT_COLLECTION",
]
