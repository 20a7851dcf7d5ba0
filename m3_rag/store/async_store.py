""":class:`AsyncM3Store`: the :class:`M3Store` API as coroutines.

A server (``url=``) or local mode goes through ``AsyncQdrantClient``, natively async. The
Edge engine is in-process and its calls block, so on ``path=`` they run on one worker
thread; encoding goes through the encoder's async view (:func:`m3_rag.types.async_encoder`: its
own ``aencode_*`` methods, else a worker thread). The operations themselves are
:class:`m3_rag.store.core.StoreOperations`, shared with :class:`M3Store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from m3_rag.store.backends.base import AsyncBackend
from m3_rag.store.core import StoreCore, StoreOperations
from m3_rag.types import M3Output, OutputName, async_encoder

__all__ = ["AsyncM3Store"]

R = TypeVar("R")


class AsyncM3Store(StoreOperations):
    """Same constructor and methods as :class:`M3Store`, all ``async``.

    The collection is created/validated on the first call (``await store.open()`` does it
    eagerly). Use ``async with AsyncM3Store(...) as store:`` to close it.
    """

    asynchronous = True
    backend: AsyncBackend

    def _started(self) -> None:
        self._opened = False
        self._open_lock = asyncio.Lock()

    @classmethod
    def view_of(cls, store: StoreCore, backend: AsyncBackend) -> AsyncM3Store:
        """An async store over ``store``'s open collection through ``backend`` (see ``M3Store.aio``)."""
        view = cls.__new__(cls)
        view.encoder, view.collection, view.weights = store.encoder, store.collection, store.weights
        view.schema, view.backend = store.schema, backend
        view._opened, view._open_lock = True, asyncio.Lock()
        return view

    async def open(self) -> AsyncM3Store:
        async with self._open_lock:
            if not self._opened:
                self.schema = await self.backend.open(self.schema)
                self._opened = True
        return self

    async def _ready(self) -> AsyncBackend:
        if not self._opened:
            await self.open()
        return self.backend

    async def _io(self, call: Callable[..., Any], *args: Any) -> Any:
        await self._ready()
        return await call(*args)

    async def _encode(self, kind: str, texts: list[str], outputs: tuple[OutputName, ...]) -> M3Output:
        await self._ready()  # a wrong schema fails before any encoding
        encoder = async_encoder(self.encoder)
        encode = encoder.aencode_queries if kind == "queries" else encoder.aencode_documents
        return await encode(texts, outputs=outputs)

    async def _compute(self, fn: Callable[..., R], *args: Any) -> R:
        await self._ready()  # the collection's settings are read when it opens
        return await asyncio.to_thread(fn, *args)

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> AsyncM3Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
