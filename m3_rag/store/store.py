""":class:`M3Store`: BGE-M3 texts in one Qdrant collection, searched in one round trip per query.

The operations themselves live in :mod:`m3_rag.store.core` (shared with :class:`AsyncM3Store`);
here they call the sync backend directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from m3_rag.store.async_store import AsyncM3Store
from m3_rag.store.backends.base import Backend, ThreadedBackend
from m3_rag.store.core import DEFAULT_COLLECTION, StoreCore, StoreOperations, blocking
from m3_rag.types import M3Output, OutputName

__all__ = ["M3Store", "DEFAULT_COLLECTION"]

R = TypeVar("R")


class M3Store(StoreCore):
    """A BGE-M3 index on Qdrant: Edge (``path=``), a server (``url=``) or local mode (``location=":memory:"``).

    The collection is created on first use (sized from ``encoder.dense_dim``/``colbert_dim``)
    or validated if it exists. ``colbert_datatype`` (``"turbo8"``, ``"turbo4"``, ``"float16"``,
    ``"float32"``) and ``colbert_pool_factor`` (1: every token vector; f: about 1/f of them,
    merged by hierarchical pooling): how ColBERT vectors are stored. ``None`` (the default)
    takes an existing collection's recorded settings, else :data:`m3_rag.store.schema.DEFAULT_COLBERT`;
    an explicit value an existing collection does not have raises ``SchemaMismatchError``. ``dense_quantization``
    (``"int8"``, the default for a new collection: Qdrant's scalar quantization, hits rescored with the
    originals; ``"none"``: float32 only, m3-rag 0.1.0's) is read back and checked the same way. ``weights``: the (dense, sparse,
    colbert) weights of ``m3`` searches that pass none (:attr:`weights`); default the encoder's
    model's, ``encoder.config.default_weights``. See ``docs/architecture.md`` (Store) for the
    whole API.
    """

    backend: Backend

    def _started(self) -> None:
        self.schema = self.backend.open(self.schema)
        self._aio: AsyncM3Store | None = None
        self._aio_threads: ThreadedBackend | None = None  # the aio() view's worker thread

    def aio(self) -> AsyncM3Store:
        """This open store as an :class:`AsyncM3Store`: the same collection, backend and
        settings, every call on one worker thread (the engine's calls block), so adapters and
        async code share a store that one process has opened (an Edge path opens once).
        The view needs no closing; :meth:`close` stops it with the store."""
        if self._aio is None:
            self._aio_threads = ThreadedBackend(self.backend, owns=False)
            self._aio = AsyncM3Store.view_of(self, self._aio_threads)
        return self._aio

    async def _io(self, call: Callable[..., Any], *args: Any) -> Any:
        return call(*args)  # a sync call: the operation never suspends (see core.blocking)

    async def _encode(self, kind: str, texts: list[str], outputs: tuple[OutputName, ...]) -> M3Output:
        encode = self.encoder.encode_queries if kind == "queries" else self.encoder.encode_documents
        return encode(texts, outputs=outputs)

    async def _compute(self, fn: Callable[..., R], *args: Any) -> R:
        return fn(*args)

    # writes
    add_texts = blocking(StoreOperations.add_texts)
    add_encoded = blocking(StoreOperations.add_encoded)
    # reads
    search = blocking(StoreOperations.search)
    search_encoded = blocking(StoreOperations.search_encoded)
    search_by_vector = blocking(StoreOperations.search_by_vector)
    search_mmr = blocking(StoreOperations.search_mmr)
    search_mmr_encoded = blocking(StoreOperations.search_mmr_encoded)
    search_mmr_by_vector = blocking(StoreOperations.search_mmr_by_vector)
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
        if self._aio_threads is not None:
            self._aio_threads.shutdown(wait=True)
        self.backend.close()

    def __enter__(self) -> M3Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
