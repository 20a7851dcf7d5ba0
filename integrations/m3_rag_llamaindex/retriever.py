"""``M3Retriever``: every core search mode of the m3 store, chosen per call.

``VectorStoreIndex.as_retriever`` only knows LlamaIndex's three modes; this retriever exposes
the store's own (``dense``, ``sparse``, ``hybrid`` (RRF), ``hybrid+rerank`` (default),
``m3``) and lets one call override the mode, ``k``, filters or MMR's ``lambda_mult``::

    retriever = M3Retriever(vector_store, k=5)
    retriever.retrieve("query")                       # hybrid+rerank
    retriever.retrieve("query", mode="sparse", k=20)  # this call only
    retriever.retrieve("query", lambda_mult=0.3)      # MMR over the 20 best hybrid+rerank hits

With ``lambda_mult`` (here or per call) the retriever runs the core store's maximal marginal
relevance (``search_mmr``): ``k`` of the ``fetch_k`` (default 4 x ``k``, LlamaIndex's factor)
best hits of ``mode``, picked by the dense vector for relevance (weight ``lambda_mult``; 1: the
dense order of the candidates) and difference from each other, scored by dense cosine.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from llama_index.core.vector_stores.types import MetadataFilters

from m3_rag.store.queries import MODES, Mode, check_mmr, check_mode
from m3_rag_llamaindex.filters import to_core_filter
from m3_rag_llamaindex.nodes import record_to_node
from m3_rag_llamaindex.vector_store import M3VectorStore, mmr_fetch_k

__all__ = ["M3Retriever", "SearchMode", "SEARCH_MODES"]

# The core's modes (one list, in m3_rag.store.queries).
SearchMode = Mode
SEARCH_MODES: tuple[str, ...] = MODES


@dataclass(frozen=True)
class _CallOptions:
    mode: Mode | None = None
    k: int | None = None
    filters: MetadataFilters | None = None
    lambda_mult: float | None = None


# Per-call overrides travel in a context variable: BaseRetriever.retrieve() takes only the
# query, and a contextvar is private to each thread and asyncio task.
_CALL: contextvars.ContextVar[_CallOptions] = contextvars.ContextVar("m3_retriever_call", default=_CallOptions())  # noqa: B039  (a frozen dataclass: immutable)


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
        lambda_mult: float | None = None,
        fetch_k: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``lambda_mult`` (None: plain ranking) and ``fetch_k`` (None: 4 x ``k``): MMR's."""
        check_mode(mode, vector_store.core_store.schema)
        if k < 1:
            raise ValueError(f"k is {k}; expected at least 1")
        if lambda_mult is not None:
            check_mmr(k, mmr_fetch_k(k, fetch_k), lambda_mult)
        elif fetch_k is not None:
            raise ValueError(
                f"fetch_k={fetch_k} is MMR's candidate count, but lambda_mult is None. Fix: pass lambda_mult too."
            )
        self._vector_store = vector_store
        self._mode = mode
        self._k = k
        self._prefetch_k = prefetch_k
        self._weights = weights
        self._filters = filters
        self._lambda_mult = lambda_mult
        self._fetch_k = fetch_k
        super().__init__(**kwargs)

    def retrieve(
        self, str_or_query_bundle: QueryType, *, mode: SearchMode | None = None, k: int | None = None,
        filters: MetadataFilters | None = None, lambda_mult: float | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        """Retrieve; ``mode``, ``k``, ``filters`` and ``lambda_mult`` (MMR) override the
        retriever's for this call."""
        token = _CALL.set(_CallOptions(mode, k, filters, lambda_mult))
        try:
            return super().retrieve(str_or_query_bundle)
        finally:
            _CALL.reset(token)

    async def aretrieve(
        self, str_or_query_bundle: QueryType, *, mode: SearchMode | None = None, k: int | None = None,
        filters: MetadataFilters | None = None, lambda_mult: float | None = None,
    ) -> list[NodeWithScore]:  # fmt: skip
        token = _CALL.set(_CallOptions(mode, k, filters, lambda_mult))
        try:
            return await super().aretrieve(str_or_query_bundle)
        finally:
            _CALL.reset(token)

    def _search_call(self) -> Callable[[Any, str], Any]:
        """The core search of this call, as a call on an ``M3Store`` (its result) or an
        ``AsyncM3Store`` (its coroutine) with the query text, which the core store encodes."""
        call = _CALL.get()
        # None means "the retriever's"; "" or 0 are values, and the core refuses them.
        k = self._k if call.k is None else call.k
        kwargs: dict[str, Any] = {
            "mode": self._mode if call.mode is None else call.mode,
            "k": k,
            "filter": to_core_filter(call.filters if call.filters is not None else self._filters),
            "prefetch_k": self._prefetch_k,
            "weights": self._weights,
        }
        lambda_mult = self._lambda_mult if call.lambda_mult is None else call.lambda_mult
        if lambda_mult is None:
            return lambda store, query: store.search(query, **kwargs)
        mmr = {**kwargs, "fetch_k": mmr_fetch_k(k, self._fetch_k), "lambda_mult": lambda_mult}
        return lambda store, query: store.search_mmr(query, **mmr)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_to_node(h) for h in self._search_call()(self._vector_store.client, query_bundle.query_str)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_to_node(h) for h in await self._search_call()(self._vector_store.aclient, query_bundle.query_str)]


def _to_node(hit: Any) -> NodeWithScore:
    return NodeWithScore(
        node=record_to_node(hit.id, hit.text, hit.metadata, hit.doc_id, hit.extra), score=float(hit.score)
    )
