""":class:`M3Store`: BGE-M3 texts in one Qdrant collection, searched in one round trip per query.

The operations themselves live in :mod:`m3_rag.store.core` (shared with :class:`AsyncM3Store`);
here they call the sync backend directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from m3_rag.store.backends.base import Backend
from m3_rag.store.core import DEFAULT_COLLECTION, StoreCore, StoreOperations, blocking
from m3_rag.types import M3Output, OutputName

__all__ = ["M3Store", "DEFAULT_COLLECTION"]


class M3Store(StoreCore):
    """A BGE-M3 index on Qdrant: Edge (``path=``), a server (``url=``) or local mode (``location=":memory:"``).

    The collection is created on first use (sized from ``encoder.dense_dim``/``colbert_dim``)
    or validated if it exists. ``colbert_datatype``: how a new collection stores the ColBERT
    vectors, ``"float16"`` (default, half the disk) or ``"float32"`` (Qdrant Edge 0.9's MaxSim
    runs ~2x faster on it: see ``benchmarks/store.py``). ``weights``: the (dense, sparse,
    colbert) weights of ``m3`` searches that pass none (:attr:`weights`); default the encoder's
    model's, ``encoder.config.default_weights``. See ``docs/architecture.md`` (Store) for the
    whole API.
    """

    backend: Backend

    def _started(self) -> None:
        self.backend.open(self.schema)

    async def _io(self, call: Callable[..., Any], *args: Any) -> Any:
        return call(*args)  # a sync call: the operation never suspends (see core.blocking)

    async def _encode(self, kind: str, texts: list[str], outputs: tuple[OutputName, ...]) -> M3Output:
        return getattr(self.encoder, f"encode_{kind}")(texts, outputs=outputs)

    # writes
    add_texts = blocking(StoreOperations.add_texts)
    add_encoded = blocking(StoreOperations.add_encoded)
    # reads
    search = blocking(StoreOperations.search)
    search_encoded = blocking(StoreOperations.search_encoded)
    get = blocking(StoreOperations.get)
    scroll = blocking(StoreOperations.scroll)
    count = blocking(StoreOperations.count)
    # maintenance
    delete = blocking(StoreOperations.delete)
    delete_where = blocking(StoreOperations.delete_where)
    delete_by_doc_id = blocking(StoreOperations.delete_by_doc_id)
    clear = blocking(StoreOperations.clear)
    optimize = blocking(StoreOperations.optimize)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> M3Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
