"""What every backend provides, in backend-neutral types."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from m3_rag.store.filters import FilterNode
from m3_rag.store.ids import PointId
from m3_rag.store.ingest import PointData
from m3_rag.store.queries import QueryPlan
from m3_rag.store.schema import StoreSchema

__all__ = ["Hit", "Backend", "AsyncBackend", "StoreLockedError", "StorageFullError", "ThreadedBackend",
           "refuse_vacuous_filter"]


class StoreLockedError(RuntimeError):
    """Another process (or store) holds this Edge path open."""


class StorageFullError(OSError):
    """Too little free disk for a write the engine would make through memory-mapped files
    (``errno`` ENOSPC; the message is ``strerror``, without the "[Errno 28]" prefix)."""

    def __str__(self) -> str:
        return str(self.strerror)


_CLAUSES = ("must", "should", "must_not", "min_should")
_FIELD_TESTS = ("match", "range", "geo_bounding_box", "geo_radius", "geo_polygon", "values_count", "is_empty", "is_null")


def refuse_vacuous_filter(translated: Any, what: str) -> None:
    """Raise if a backend's filter (a Qdrant ``Filter`` of either client) holds a part that
    tests nothing: an engine evaluates such a part as "every point", which a delete must
    never take from a translation slip. Both Qdrant filter classes share these field names."""
    stack = [translated]
    while stack:
        node = stack.pop()
        if hasattr(node, "must_not"):
            clauses = [getattr(node, c, None) for c in _CLAUSES]
            if not any(clauses):
                raise ValueError(
                    f"{what}(): the filter translated to an empty Qdrant condition, which matches every point; "
                    "expected every part to test something. Fix: report this as a bug, and call clear() "
                    "to delete every point on purpose."
                )
            for c in clauses[:3]:
                stack.extend(c if isinstance(c, list) else [c] if c is not None else [])
        elif hasattr(node, "key") and hasattr(node, "match") and not any(getattr(node, t, None) is not None for t in _FIELD_TESTS):
            raise ValueError(f"{what}(): the filter on {node.key!r} translated to a condition that tests nothing.")


@dataclass(frozen=True, eq=False)
class Hit:
    """A point as a backend returns it; ``vectors`` maps names to numpy arrays / SparseVector."""

    point_id: PointId
    score: float
    payload: dict[str, Any]
    vectors: dict[str, Any] = field(default_factory=dict)
    #: The backend's ColBERT MaxSim (sum over query tokens) where the plan reranked by it: the
    #: ColBERT score of record (Turbo4's own scoring differs slightly from a MaxSim over the
    #: vectors it returns, so mode scores and m3 use this one).
    colbert_sum: float | None = None


class Backend(Protocol):
    """``open`` creates or validates the collection and returns the schema with the ColBERT
    settings in force (what an existing collection recorded). ``scroll`` returns one page in point-id order and the next page's first point id (None
    after the last page), as Qdrant's scroll does."""

    def open(self, schema: StoreSchema) -> StoreSchema: ...
    def upsert(self, points: Sequence[PointData]) -> None: ...
    def query(self, plan: QueryPlan, with_vectors: bool | list[str] = False) -> list[Hit]: ...
    def query_batch(self, plans: Sequence[QueryPlan]) -> list[list[Hit]]: ...
    def retrieve(self, point_ids: Sequence[PointId], with_vectors: bool = False) -> list[Hit]: ...
    def scroll(
        self, filter: FilterNode | None, limit: int, offset: PointId | None = None, with_vectors: bool = False
    ) -> tuple[list[Hit], PointId | None]: ...
    def delete(self, point_ids: Sequence[PointId]) -> None: ...
    def delete_where(self, filter: FilterNode) -> None: ...
    def count(self, filter: FilterNode | None = None) -> int: ...
    def clear(self) -> None: ...
    def optimize(self) -> None: ...
    def close(self) -> None: ...


class AsyncBackend(Protocol):
    async def open(self, schema: StoreSchema) -> StoreSchema: ...
    async def upsert(self, points: Sequence[PointData]) -> None: ...
    async def query(self, plan: QueryPlan, with_vectors: bool | list[str] = False) -> list[Hit]: ...
    async def query_batch(self, plans: Sequence[QueryPlan]) -> list[list[Hit]]: ...
    async def retrieve(self, point_ids: Sequence[PointId], with_vectors: bool = False) -> list[Hit]: ...
    async def scroll(
        self, filter: FilterNode | None, limit: int, offset: PointId | None = None, with_vectors: bool = False
    ) -> tuple[list[Hit], PointId | None]: ...
    async def delete(self, point_ids: Sequence[PointId]) -> None: ...
    async def delete_where(self, filter: FilterNode) -> None: ...
    async def count(self, filter: FilterNode | None = None) -> int: ...
    async def clear(self) -> None: ...
    async def optimize(self) -> None: ...
    async def close(self) -> None: ...


class ThreadedBackend:
    """An :class:`AsyncBackend` over a sync :class:`Backend`: each call runs on one worker thread.

    For the in-process engine (Edge), whose calls block: one thread keeps them in call order, as
    from a sync caller, while the event loop runs on. ``owns=False`` (an async view of a store
    that stays open, :meth:`M3Store.aio`): :meth:`close` stops the thread only."""

    def __init__(self, sync: Backend, *, owns: bool = True) -> None:
        self.sync = sync
        self._owns = owns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3-store")

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.sync, name)
        if name.startswith("_") or not callable(call):
            raise AttributeError(name)

        async def on_worker(*args: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

        return on_worker

    async def close(self) -> None:
        try:
            if self._owns:
                await self.__getattr__("close")()
        finally:
            self.shutdown(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
