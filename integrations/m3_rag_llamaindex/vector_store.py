"""``M3VectorStore``: a LlamaIndex vector store over the core m3 store (Qdrant).

A thin adapter: nodes map to the shared payload layout (:mod:`m3_rag_llamaindex.nodes`),
filters to the core filter model (:mod:`m3_rag_llamaindex.filters`), query modes to core
search modes; storage and search are the core store's.

Query modes (``similarity_top_k`` = k1, ``sparse_top_k`` = k2, ``hybrid_top_k`` = k3):

- DEFAULT: core ``dense``, k1 results (the retriever's query embedding is used as is).
- SPARSE: core ``sparse`` (BGE-M3 lexical weights), k2 or k1 results.
- HYBRID: core ``hybrid_mode`` (default ``hybrid+rerank``: dense + sparse prefetch, ColBERT
  MaxSim over the union). With k1 only, k1 results over the core's default prefetch; with
  k2 or k3 given, LlamaIndex's definition: k1 dense and k2 (or k1) sparse candidates, k3 (or
  k1) results.

``alpha`` (1 = dense only, 0 = sparse only) applies where scores are weighted, i.e. with
``hybrid_mode="m3"`` (the ColBERT weight stays ``weights[2]``); the other hybrid modes rank by
RRF or MaxSim and refuse an ``alpha``. ``weights`` (dense, sparse, colbert) default to the core
store's, i.e. the encoder's model's (``encoder.config.default_weights``).
``doc_ids``/``node_ids`` restrict every mode to those documents / nodes.

Every list argument (``nodes``, ``node_ids``, a query's ``doc_ids``/``node_ids``) given as a
single str or node raises ``TypeError`` rather than being read character by character.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from m3_rag_llamaindex import _compat  # noqa: F401  (ImportError naming the extra)

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from pydantic import Field, PrivateAttr, field_validator
from tqdm.auto import tqdm

from m3_rag.cache import CachedEncoder
from m3_rag.store.schema import ColbertDatatype
from m3_rag.store import DEFAULT_COLLECTION, AsyncM3Store, M3Store, StoredPoint
from m3_rag.store.queries import check_weights
from m3_rag.store.filters import And, Condition, FilterNode
from m3_rag.types import M3Output
from m3_rag.validation import as_list
from m3_rag_llamaindex.embedding import BGEM3Embedding, as_cached
from m3_rag_llamaindex.filters import to_core_filter
from m3_rag_llamaindex.nodes import NodeRecord, node_to_record, record_to_node

__all__ = ["M3VectorStore", "HybridMode"]

T = TypeVar("T")
HybridMode = Literal["hybrid+rerank", "hybrid", "m3"]
# A node embedding computed by another model would not match the stored sparse/ColBERT
# vectors; the same model on the same text agrees to float noise (batch padding, fp16).
_SAME_VECTOR_COSINE = 0.99


class M3VectorStore(BasePydanticVectorStore):
    """LlamaIndex vector store with BGE-M3 dense, sparse and hybrid + ColBERT-rerank search::

        store = M3VectorStore(M3Encoder.from_pretrained("BAAI/bge-m3"), path="./m3_index")
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=store.embed_model)
        index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=5)

    Use ``store.embed_model`` as the index's embedding model: it shares this store's encoder
    cache, so each node runs through the model once although the index embeds it before
    calling :meth:`add`.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    hybrid_mode: HybridMode = "hybrid+rerank"
    weights: tuple[float, float, float] | None = Field(
        default=None,
        description="(dense, sparse, colbert) weights of the 'm3' hybrid score; None: the core store's "
        "(by default the encoder's model's, encoder.config.default_weights).",
    )
    batch_size: int = Field(default=64, gt=0, description="Nodes encoded and written per batch in add().")
    show_progress: bool = False

    _store: M3Store | None = PrivateAttr(default=None)
    _astore: AsyncM3Store | None = PrivateAttr(default=None)
    _encoder: CachedEncoder = PrivateAttr()
    _embed_model: BGEM3Embedding | None = PrivateAttr(default=None)
    _worker: ThreadPoolExecutor | None = PrivateAttr(default=None)

    def __init__(
        self,
        encoder: Any = None,
        path: str | Path | None = None,
        *,
        location: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        store: M3Store | None = None,
        async_store: AsyncM3Store | None = None,
        cache_size: int = 4096,
        colbert_datatype: ColbertDatatype | None = None,
        colbert_pool_factor: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Open (or create) a collection.

        Give an ``encoder`` (``M3Encoder`` or ``CachedEncoder``) and one of ``path`` (Qdrant
        Edge, on disk), ``location=":memory:"`` (qdrant-client local mode) or ``url`` (a
        Qdrant server: sync and native-async clients both). Or give ready core stores:
        ``store=`` and/or ``async_store=`` (with ``encoder`` to share a cache; else the
        store's own encoder is used). ``colbert_datatype`` / ``colbert_pool_factor``: how a new
        collection stores ColBERT vectors (see ``m3_rag.store.M3Store``; None: the collection's).

        Async methods go through the ``AsyncM3Store`` when there is one; otherwise they run
        the in-process engine (Edge, local mode) on one worker thread of this store.
        """
        super().__init__(**kwargs)
        given = store is not None or async_store is not None
        if given and (path is not None or location is not None or url is not None
                      or colbert_datatype is not None or colbert_pool_factor is not None):  # fmt: skip
            raise ValueError(
                "got store=/async_store= and path/location/url or ColBERT options; expected one or the other. "
                "Fix: pass the ready store(s) alone, or encoder= with a location and options."
            )
        if not given:
            if encoder is None:
                raise ValueError("no encoder given. Fix: M3VectorStore(M3Encoder.from_pretrained(...), path=...)")
            if sum(x is not None for x in (path, location, url)) != 1:
                raise ValueError(
                    f"expected exactly one of path=, location=, url=; found path={path!r}, "
                    f"location={location!r}, url={url!r}."
                )
            self._encoder = as_cached(encoder, cache_size)
            options = {"api_key": api_key, "collection": collection, "colbert_datatype": colbert_datatype,
                       "colbert_pool_factor": colbert_pool_factor}  # fmt: skip
            self._store = M3Store(self._encoder, path, location=location, url=url, **options)
            if url is not None:
                self._astore = AsyncM3Store(self._encoder, url=url, **options)
            return
        self._store, self._astore = store, async_store
        core = store if store is not None else async_store
        self._encoder = as_cached(encoder if encoder is not None else core.encoder, cache_size)

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, w: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        return None if w is None else check_weights(w, "weights")

    @classmethod
    def class_name(cls) -> str:
        return "M3VectorStore"

    @property
    def client(self) -> M3Store:
        """The core store (``m3_rag.store.M3Store``)."""
        return self._sync()

    @property
    def aclient(self) -> AsyncM3Store | None:
        """The native-async core store, if this store has one."""
        return self._astore

    @property
    def encoder(self) -> CachedEncoder:
        return self._encoder

    @property
    def embed_model(self) -> BGEM3Embedding:
        """A ``BGEM3Embedding`` sharing this store's encoder cache (one forward pass per node)."""
        if self._embed_model is None:
            self._embed_model = BGEM3Embedding(self._encoder)
        return self._embed_model

    def close(self) -> None:
        """Release the engine (an Edge path can then be reopened)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._store is not None:
            self._store.close()

    async def aclose(self) -> None:
        if self._astore is not None:
            await self._astore.close()
        self.close()

    # ------------------------------------------------------------------------------ writing
    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        nodes = as_list(nodes, "nodes", "nodes")
        store = self._sync()
        ids: list[str] = []
        with self._progress(len(nodes)) as bar:
            for batch in self._batches(nodes):
                records, encoded = self._encode_nodes(batch)
                store.add_encoded(*_add_args(records, encoded))
                ids += [r.id for r in records]
                bar.update(len(batch))
        return ids

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        if self._astore is None:
            return await self._in_worker(self.add, nodes, **kwargs)
        nodes = as_list(nodes, "nodes", "nodes")
        ids: list[str] = []
        with self._progress(len(nodes)) as bar:
            for batch in self._batches(nodes):
                # Encoding is CPU/GPU-bound: a worker thread; the write is natively async.
                records, encoded = await asyncio.to_thread(self._encode_nodes, batch)
                await self._astore.add_encoded(*_add_args(records, encoded))
                ids += [r.id for r in records]
                bar.update(len(batch))
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._sync().delete_by_doc_id(ref_doc_id)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        if self._astore is None:
            return await self._in_worker(self.delete, ref_doc_id)
        await self._astore.delete_by_doc_id(ref_doc_id)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the nodes that have one of ``node_ids`` and match ``filters`` (both, when both
        are given, as LlamaIndex's stores do); one of them is needed (``clear()`` deletes all)."""
        ids, flt = _selection(node_ids, filters, "delete_nodes")
        if flt is None:
            self._sync().delete(ids)
        else:
            self._sync().delete_where(flt)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        if self._astore is None:
            return await self._in_worker(self.delete_nodes, node_ids, filters)
        ids, flt = _selection(node_ids, filters, "adelete_nodes")
        if flt is None:
            await self._astore.delete(ids)
        else:
            await self._astore.delete_where(flt)

    def clear(self) -> None:
        """Delete every node; the collection (and its schema) stays."""
        self._sync().clear()

    async def aclear(self) -> None:
        if self._astore is None:
            return await self._in_worker(self.clear)
        await self._astore.clear()

    # ------------------------------------------------------------------------------ reading
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes that have one of ``node_ids`` and match ``filters`` (both, when both
        are given), in the order of ``node_ids`` (ids not stored are absent), else in the
        store's order."""
        ids, flt = _selection(node_ids, filters, "get_nodes")
        store = self._sync()
        return _to_nodes(store.get(ids) if flt is None else store.scroll(flt, limit=None)[0], ids)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        if self._astore is None:
            return await self._in_worker(self.get_nodes, node_ids, filters)
        ids, flt = _selection(node_ids, filters, "aget_nodes")
        points = await self._astore.get(ids) if flt is None else (await self._astore.scroll(flt, limit=None))[0]
        return _to_nodes(points, ids)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        mode, k, prefetch_k, weights = self._plan(query)
        flt = self._query_filter(query)
        encoded = self._encode_query(query, mode)
        hits = self._sync().search_encoded(encoded, mode, k, flt, prefetch_k, weights)
        return _to_result(hits)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if self._astore is None:
            return await self._in_worker(self.query, query, **kwargs)
        mode, k, prefetch_k, weights = self._plan(query)
        flt = self._query_filter(query)
        encoded = await asyncio.to_thread(self._encode_query, query, mode)
        hits = await self._astore.search_encoded(encoded, mode, k, flt, prefetch_k, weights)
        return _to_result(hits)

    # ------------------------------------------------------------------------------ helpers
    def _weights(self) -> tuple[float, float, float]:
        """The 'm3' weights in effect: this store's ``weights``, else the core store's."""
        return self.weights if self.weights is not None else self._core().weights

    def _core(self) -> M3Store | AsyncM3Store:
        """The core store behind this one (sync if there is one), for its weights and schema."""
        return self._store if self._store is not None else self._astore  # type: ignore[return-value]

    def _sync(self) -> M3Store:
        if self._store is None:
            raise RuntimeError(
                "this M3VectorStore was built with async_store= only, so it has no sync client. "
                "Fix: use the async methods (aquery, async_add, ...), or pass store=M3Store(...) too."
            )
        return self._store

    async def _in_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a sync method off the event loop, on this store's one worker thread: the
        in-process engines (Edge, local mode) then see their calls one at a time, as on the
        sync API."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3-llamaindex")
        return await asyncio.get_running_loop().run_in_executor(self._worker, partial(fn, *args, **kwargs))

    def _progress(self, total: int) -> tqdm:
        return tqdm(total=total, desc="m3: add nodes", unit="node", disable=not self.show_progress)

    def _batches(self, nodes: Sequence[BaseNode]) -> list[Sequence[BaseNode]]:
        return [nodes[i : i + self.batch_size] for i in range(0, len(nodes), self.batch_size)]

    def _encode_nodes(self, nodes: Sequence[BaseNode]) -> tuple[list[NodeRecord], M3Output]:
        records = [node_to_record(n) for n in nodes]
        # The same strings VectorStoreIndex embedded: the cache answers, the model does not run.
        encoded = self._encoder.encode_documents([r.embed_text for r in records])
        _check_embeddings(nodes, encoded)
        return records, encoded

    def _plan(
        self, query: VectorStoreQuery
    ) -> tuple[str, int, int | tuple[int, int] | None, tuple[float, float, float] | None]:
        """Core mode, result size, prefetch sizes and weights (None: the core store's) for a
        LlamaIndex query."""
        if query.mode == VectorStoreQueryMode.DEFAULT:
            return "dense", query.similarity_top_k, None, self.weights
        if query.mode == VectorStoreQueryMode.SPARSE:
            return "sparse", query.sparse_top_k or query.similarity_top_k, None, self.weights
        if query.mode != VectorStoreQueryMode.HYBRID:
            raise ValueError(
                f"query mode {query.mode.value!r} is not supported by M3VectorStore; expected one of "
                "'default' (dense), 'sparse', 'hybrid'. Fix: as_retriever(vector_store_query_mode=...)."
            )
        if query.sparse_top_k is None and query.hybrid_top_k is None:
            # Only similarity_top_k: it is the result size, and the core's default prefetch
            # gives the rerank enough candidates to reorder.
            k, prefetch_k = query.similarity_top_k, None
        else:
            # LlamaIndex's (and its Qdrant store's) definition of the three sizes.
            k = query.hybrid_top_k or query.similarity_top_k
            prefetch_k = (query.similarity_top_k, query.sparse_top_k or query.similarity_top_k)
        weights = self.weights
        if query.alpha is not None:
            if self.hybrid_mode != "m3":
                raise ValueError(
                    f"alpha={query.alpha} was given but hybrid_mode is {self.hybrid_mode!r}, which ranks by "
                    + ("ColBERT MaxSim" if self.hybrid_mode == "hybrid+rerank" else "reciprocal rank fusion")
                    + " and has no dense/sparse weight. Fix: drop alpha, or use "
                    "M3VectorStore(..., hybrid_mode='m3') to weight dense (alpha) against sparse (1 - alpha)."
                )
            if not 0.0 <= query.alpha <= 1.0:
                raise ValueError(f"alpha is {query.alpha}; expected a number in [0, 1] (1 = dense only, 0 = sparse only)")
            weights = (query.alpha, 1.0 - query.alpha, self._weights()[2])
        return self.hybrid_mode, k, prefetch_k, weights

    def _encode_query(self, query: VectorStoreQuery, mode: str) -> M3Output:
        emb = query.query_embedding
        if mode == "dense" and emb is not None:
            # The embedding the retriever computed (through store.embed_model, normally).
            vec = np.asarray(emb, dtype=np.float32)[None, :]
            if vec.shape[1] != self._encoder.dense_dim:
                raise ValueError(
                    f"query embedding has {vec.shape[1]} dimensions; the store's model gives "
                    f"{self._encoder.dense_dim}. Fix: use store.embed_model as the index's embed_model."
                )
            return M3Output(dense=vec, sparse=None, colbert=None,
                            token_counts=np.zeros(1, np.int64), truncated=np.zeros(1, bool))  # fmt: skip
        if not query.query_str:
            raise ValueError(
                f"{mode!r} search needs the query text (query_str); found none. "
                "Fix: query through a retriever, or pass VectorStoreQuery(query_str=...)."
            )
        return self._encoder.encode_queries([query.query_str])

    def _query_filter(self, query: VectorStoreQuery) -> FilterNode | None:
        parts: list[FilterNode] = []
        # An empty list restricts nothing, as in LlamaIndex's own stores.
        if query.doc_ids:
            parts.append(Condition("$doc_id", "in", as_list(query.doc_ids, "VectorStoreQuery.doc_ids", "ids")))
        if query.node_ids:
            parts.append(Condition("$id", "in", as_list(query.node_ids, "VectorStoreQuery.node_ids", "ids")))
        user = to_core_filter(query.filters)
        if user is not None:
            parts.append(user)
        return None if not parts else parts[0] if len(parts) == 1 else And(parts)


def _selection(
    node_ids: list[str] | None, filters: MetadataFilters | None, what: str
) -> tuple[list[str] | None, FilterNode | None]:
    """What ``get_nodes``/``delete_nodes`` select, as LlamaIndex's own stores do: ``(ids, None)``
    for ids alone (a plain get/delete by id), else ``(ids, filter)`` with the ids ANDed into the
    filter, since a node must match both (a filtered scroll/delete)."""
    flt = to_core_filter(filters)
    if node_ids is None and flt is None:
        raise ValueError(
            f"{what}() got no node_ids and no filters; expected node ids and/or metadata filters. "
            + ("Fix: call clear() to remove everything." if "delete" in what else "Fix: pass node_ids or filters.")
        )
    ids = None if node_ids is None else as_list(node_ids, "node_ids", "node ids")
    if flt is None or ids == []:  # ids alone; no ids: nothing can match both
        return ids or [], None
    return ids, flt if ids is None else And([Condition("$id", "in", ids), flt])


def _to_nodes(points: Sequence[StoredPoint], ids: list[str] | None) -> list[BaseNode]:
    if ids is not None:  # the order asked for (a filtered scroll returns the store's order)
        rank = {str(node_id): i for i, node_id in enumerate(dict.fromkeys(ids))}
        points = sorted(points, key=lambda p: rank.get(str(p.id), len(rank)))
    return [record_to_node(p.id, p.text, p.metadata, p.doc_id, p.extra) for p in points]


def _add_args(records: list[NodeRecord], encoded: M3Output) -> tuple[Any, ...]:
    return (
        [r.text for r in records],
        encoded,
        [r.id for r in records],
        [r.metadata for r in records],
        [r.doc_id for r in records],
        [r.extra for r in records],
    )


def _check_embeddings(nodes: Sequence[BaseNode], encoded: M3Output) -> None:
    """Refuse nodes embedded by another model: their dense vector would not match the rest."""
    for i, node in enumerate(nodes):
        if node.embedding is None:
            continue
        given = np.asarray(node.embedding, dtype=np.float32)
        ours = encoded.dense[i]
        if given.shape != ours.shape:
            raise ValueError(
                f"node {node.node_id!r} carries a {given.shape[0]}-dim embedding; this store's model gives "
                f"{ours.shape[0]}. Fix: index with embed_model=store.embed_model (BGE-M3)."
            )
        cos = float(given @ ours / max(np.linalg.norm(given) * np.linalg.norm(ours), 1e-12))
        if cos < _SAME_VECTOR_COSINE:
            raise ValueError(
                f"node {node.node_id!r} carries an embedding from another model (cosine {cos:.3f} with "
                "BGE-M3's for the same text). Fix: index with embed_model=store.embed_model."
            )


def _to_result(hits: Sequence[Any]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[record_to_node(h.id, h.text, h.metadata, h.doc_id, h.extra) for h in hits],
        similarities=[float(h.score) for h in hits],
        ids=[str(h.id) for h in hits],
    )
