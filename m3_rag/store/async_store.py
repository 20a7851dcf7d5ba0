""":class:`AsyncM3Store`: the :class:`M3Store` API as coroutines.

A server (``url=``) or local mode goes through ``AsyncQdrantClient``, natively async. The
Edge engine is in-process and its calls block, so on ``path=`` they run on one worker
thread; query encoding (CPU-bound) runs on a thread too, or on the encoder's own
``aencode_*`` methods when it has them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from m3_rag.store.backends.base import AsyncBackend
from m3_rag.store.core import backend_location, new_ids, point_ids_of, query_outputs, to_search_results, to_stored_points
from m3_rag.store.filters import Condition, FilterLike, as_filter
from m3_rag.store.ids import UserId, to_point_id
from m3_rag.store.ingest import batched_inputs, max_colbert_rows, prepare_points
from m3_rag.store.queries import DEFAULT_MODE, DEFAULT_RRF_K, DEFAULT_WEIGHTS, build_plan
from m3_rag.store.results import SearchResult, StoredPoint
from m3_rag.store.schema import StoreSchema, schema_from_encoder
from m3_rag.store.store import DEFAULT_COLLECTION, _doc_id
from m3_rag.types import M3Output, OutputName

__all__ = ["AsyncM3Store"]


class AsyncM3Store:
    """Same constructor and methods as :class:`M3Store`, all ``async``.

    The collection is created/validated on the first call (``await store.open()`` does it
    eagerly). Use ``async with AsyncM3Store(...) as store:`` to close it.
    """

    def __init__(
        self,
        encoder: Any,
        path: str | Path | None = None,
        *,
        location: str | None = None,
        url: str | None = None,
        client: Any = None,
        collection: str = DEFAULT_COLLECTION,
        api_key: str | None = None,
        prefer_grpc: bool = False,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.encoder = encoder
        self.collection = collection
        self.schema: StoreSchema = schema_from_encoder(encoder)
        self.backend: AsyncBackend = _make_backend(
            path, location, url, client, collection, api_key, prefer_grpc, shard_number, replication_factor, client_kwargs
        )
        self._opened = False
        self._open_lock = asyncio.Lock()

    async def open(self) -> AsyncM3Store:
        async with self._open_lock:
            if not self._opened:
                await self.backend.open(self.schema)
                self._opened = True
        return self

    async def _ready(self) -> AsyncBackend:
        if not self._opened:
            await self.open()
        return self.backend

    async def _encode(self, kind: str, texts: list[str], outputs: tuple[OutputName, ...]) -> M3Output:
        native = getattr(self.encoder, f"aencode_{kind}", None)
        if native is not None:
            return await native(texts, outputs=outputs)
        return await asyncio.to_thread(getattr(self.encoder, f"encode_{kind}"), texts, outputs=outputs)

    # --------------------------------------------------------------------------------- writes
    async def add_texts(
        self,
        texts: Iterable[str],
        ids: Iterable[UserId] | None = None,
        metadatas: Iterable[Mapping[str, Any] | None] | None = None,
        doc_ids: Iterable[str | None] | None = None,
        *,
        extras: Iterable[Mapping[str, Any] | None] | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        skip_existing: bool = False,
    ) -> list[UserId]:
        """See :meth:`M3Store.add_texts`."""
        if skip_existing and ids is None:
            raise ValueError("skip_existing=True needs ids= to know what is stored. Fix: pass stable ids.")
        backend = await self._ready()
        total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
        added: list[UserId] = []
        with tqdm(total=total, disable=not show_progress, unit="text", desc="indexing") as bar:
            for b_texts, b_ids, b_meta, b_docs, b_extra in batched_inputs(texts, ids, metadatas, doc_ids, extras, batch_size):
                b_ids = b_ids if b_ids is not None else new_ids(len(b_texts))
                rows = list(range(len(b_texts)))
                if skip_existing:
                    stored = {str(h.point_id) for h in await backend.retrieve(point_ids_of(b_ids))}
                    rows = [i for i in rows if str(to_point_id(b_ids[i])) not in stored]
                if rows:
                    pick = (lambda col: None if col is None else [col[i] for i in rows])  # noqa: E731
                    sub_texts = pick(b_texts)
                    encoded = await self._encode("documents", sub_texts, self.schema.outputs)
                    await self.add_encoded(sub_texts, encoded, pick(b_ids), pick(b_meta), pick(b_docs), pick(b_extra))
                added.extend(b_ids)
                bar.update(len(b_texts))
        return added

    async def add_encoded(
        self,
        texts: Sequence[str],
        encoded: M3Output,
        ids: Sequence[UserId] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        doc_ids: Sequence[str | None] | None = None,
        extras: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[UserId]:
        backend = await self._ready()
        ids = list(ids) if ids is not None else new_ids(len(texts))
        points = prepare_points(
            list(texts), encoded, self.schema, ids=ids, metadatas=metadatas, doc_ids=doc_ids, extras=extras
        )
        await backend.upsert(points)
        return ids

    # ---------------------------------------------------------------------------------- reads
    async def search(
        self,
        query: str,
        mode: str = DEFAULT_MODE,
        k: int = 10,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        with_mode_scores: bool = False,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, found {type(query).__name__}. Fix: use search_encoded for vectors.")
        encoded = await self._encode("queries", [query], query_outputs(mode, self.schema, with_mode_scores))
        return await self.search_encoded(encoded, mode, k, filter, prefetch_k, weights, with_mode_scores, rrf_k)

    async def search_encoded(
        self,
        query: M3Output,
        mode: str = DEFAULT_MODE,
        k: int = 10,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        with_mode_scores: bool = False,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        max_tokens = max_colbert_rows(self.schema.colbert_dim) if self.schema.colbert_dim else None
        plan = build_plan(
            mode, query, self.schema, k=k, prefetch_k=prefetch_k, weights=weights, rrf_k=rrf_k,
            filter=as_filter(filter), max_query_tokens=max_tokens,
        )  # fmt: skip
        hits = await (await self._ready()).query(plan, with_vectors=with_mode_scores)
        return to_search_results(hits, plan, query, self.schema, with_mode_scores, max_tokens)

    async def get(self, ids: Sequence[UserId], with_vectors: bool = False) -> list[StoredPoint]:
        pids = point_ids_of(ids)
        return to_stored_points(await (await self._ready()).retrieve(pids, with_vectors), pids)

    async def count(self, filter: FilterLike = None) -> int:
        return await (await self._ready()).count(as_filter(filter))

    # ---------------------------------------------------------------------------- maintenance
    async def delete(self, ids: Sequence[UserId]) -> None:
        await (await self._ready()).delete(point_ids_of(ids))

    async def delete_by_doc_id(self, doc_id: str) -> None:
        await (await self._ready()).delete_where(Condition("$doc_id", "eq", _doc_id(doc_id)))

    async def clear(self) -> None:
        await (await self._ready()).clear()

    async def optimize(self) -> None:
        await (await self._ready()).optimize()

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> AsyncM3Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _make_backend(
    path: Any, location: Any, url: Any, client: Any, collection: str, api_key: Any, prefer_grpc: bool,
    shard_number: Any, replication_factor: Any, client_kwargs: dict[str, Any],
) -> AsyncBackend:  # fmt: skip
    kind = backend_location(path, location, url, client)
    if kind == "path":
        from m3_rag.store.backends.edge import AsyncEdgeBackend

        return AsyncEdgeBackend(path, collection)
    from qdrant_client import AsyncQdrantClient

    from m3_rag.store.backends.client import AsyncClientBackend, ServerOptions

    if kind == "client":
        if not isinstance(client, AsyncQdrantClient):
            raise TypeError(f"client= takes a qdrant_client.AsyncQdrantClient, found {type(client).__name__}.")
        qc = client
    elif kind == "location":
        qc = AsyncQdrantClient(location=location, **client_kwargs)
    else:
        qc = AsyncQdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc, **client_kwargs)
    return AsyncClientBackend(qc, collection, ServerOptions(shard_number, replication_factor))
