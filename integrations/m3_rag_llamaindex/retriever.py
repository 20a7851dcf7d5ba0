"""``M3Retriever``: every core search mode of the m3 store, chosen per call.

``VectorStoreIndex.as_retriever`` only knows LlamaIndex's three modes; this retriever exposes
the store's own (``dense``, ``sparse``, ``hybrid`` (RRF), ``hybrid+rerank`` (default),
``m3``) and lets one call override the mode, ``k`` or filters::

    retriever = M3Retriever(vector_store, k=5)
    retriever.retrieve("query")                       # hybrid+rerank
    retriever.retrieve("query", mode="sparse", k=20)  # this call only
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any

from m3_rag_llamaindex import _compat  # noqa: F401  (ImportError naming the extra)

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from llama_index.core.vector_stores.types import MetadataFilters

from m3_rag.store.queries import MODES, Mode, check_mode
from m3_rag_llamaindex.filters import to_core_filter
from m3_rag_llamaindex.nodes import record_to_node
from m3_rag_llamaindex.vector_store import M3VectorStore

__all__ = ["M3Retriever", "SearchMode", "SEARCH_MODES"]

# The core's modes (one list, in m3_rag.store.queries).
SearchMode = Mode
SEARCH_MODES: tuple[str, ...] = MODES


@dataclass(frozen=True)
class _CallOptions:
    mode: str | None = None
    k: int | None = None
    filters: MetadataFilters | None = None


# Per-call overrides travel in a context variable: BaseRetriever.retrieve() takes only the
# query, and a contextvar is private to each thread and asyncio task.
_CALL: contextvars.ContextVar[_CallOptions] = contextvars.ContextVar("m3_retriever_call", default=_CallOptions())


class M3Retriever(BaseRetriever):
    """Retrieve from an :class:`M3VectorStore` in any core search mode."""

    def __init__(
        self,
        vector_store: M3VectorStore,
        *,
        mode: SearchMode = "hybrid+rerank",
        k: int = 10,
        prefetch_k: int | None = None,
        weights: tuple[float, float, float] | None = None,
        filters: MetadataFilters | None = None,
        **kwargs: Any,
    ) -> None:
        check_mode(mode, vector_store._core().schema)
        if k < 1:
            raise ValueError(f"k is {k}; expected at least 1")
        self._vector_store = vector_store
        self._mode = mode
        self._k = k
        self._prefetch_k = prefetch_k
        self._weights = weights
        self._filters = filters
        super().__init__(**kwargs)

    def retrieve(  # type: ignore[override]
        self, str_or_query_bundle: QueryType, *, mode: SearchMode | None = None, k: int | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Retrieve; ``mode``, ``k`` and ``filters`` override the retriever's for this call."""
        token = _CALL.set(_CallOptions(mode, k, filters))
        try:
            return super().retrieve(str_or_query_bundle)
        finally:
            _CALL.reset(token)

    async def aretrieve(  # type: ignore[override]
        self, str_or_query_bundle: QueryType, *, mode: SearchMode | None = None, k: int | None = None,
        filters: MetadataFilters | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        token = _CALL.set(_CallOptions(mode, k, filters))
        try:
            return await super().aretrieve(str_or_query_bundle)
        finally:
            _CALL.reset(token)

    def _search_kwargs(self, query_bundle: QueryBundle) -> dict[str, Any]:
        call = _CALL.get()
        # None means "the retriever's"; "" or 0 are values, and the core refuses them.
        mode = self._mode if call.mode is None else check_mode(call.mode, self._vector_store._core().schema)
        k = self._k if call.k is None else call.k
        flt = to_core_filter(call.filters if call.filters is not None else self._filters)
        kwargs: dict[str, Any] = {"mode": mode, "k": k, "filter": flt, "prefetch_k": self._prefetch_k}
        if self._weights is not None:
            kwargs["weights"] = self._weights
        return kwargs

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str, self._search_kwargs(query_bundle))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Read the per-call options here, in the caller's context: a worker thread has none.
        kwargs = self._search_kwargs(query_bundle)
        astore = self._vector_store.aclient
        if astore is None:  # an in-process engine: the sync search on the store's worker thread
            return await self._vector_store._in_worker(self._search, query_bundle.query_str, kwargs)
        encoded = await asyncio.to_thread(self._vector_store.encoder.encode_queries, [query_bundle.query_str])
        hits = await astore.search_encoded(encoded, **kwargs)
        return [_to_node(h) for h in hits]

    def _search(self, query: str, kwargs: dict[str, Any]) -> list[NodeWithScore]:
        encoded = self._vector_store.encoder.encode_queries([query])
        hits = self._vector_store.client.search_encoded(encoded, **kwargs)
        return [_to_node(h) for h in hits]


def _to_node(hit: Any) -> NodeWithScore:
    return NodeWithScore(node=record_to_node(hit.id, hit.text, hit.metadata, hit.doc_id, hit.extra), score=float(hit.score))
