"""``M3VectorStore``: a LlamaIndex vector store over the core m3 store (Qdrant).

A thin adapter: nodes map to the shared payload layout (:mod:`m3_rag_llamaindex.nodes`),
filters to the core filter model (:mod:`m3_rag_llamaindex.filters`), query modes to core
search modes; storage and search are the core store's.

Query modes (``similarity_top_k`` = k1, ``sparse_top_k`` = k2, ``hybrid_top_k`` = k3):

- DEFAULT: core ``dense``, k1 results (the retriever's query embedding is used as is).
- SPARSE, TEXT_SEARCH: core ``sparse`` (BGE-M3 lexical weights), k2 or k1 results; they need
  the query text.
- HYBRID: core ``hybrid_mode`` (default ``hybrid+rerank``: dense + sparse prefetch, ColBERT
  MaxSim over the union). With k1 only, k1 results over the core's default prefetch; with
  k2 or k3 given, LlamaIndex's definition: k1 dense and k2 (or k1) sparse candidates, k3 (or
  k1) results.
- MMR: core ``search_mmr`` (Qdrant's maximal marginal relevance by the dense vector), k1 of
  the ``fetch_k`` best dense hits, in pick order with their dense (cosine) score. As in
  LlamaIndex's stores: ``mmr_threshold`` (the query's, else a query kwarg; default 0.5) is the
  relevance weight (1: the dense order, 0: diversity only); ``fetch_k`` is the kwarg
  ``mmr_prefetch_k``, else ``mmr_prefetch_factor`` (default 4.0) x k1. Pass the kwargs as
  ``as_retriever(vector_store_query_mode="mmr", vector_store_kwargs={"mmr_threshold": 0.3})``.

``alpha`` (1 = dense only, 0 = sparse only) applies where scores are weighted, i.e. with
``hybrid_mode="m3"`` (the ColBERT weight stays ``weights[2]``); the other hybrid modes rank by
RRF or MaxSim and refuse an ``alpha``. ``weights`` (dense, sparse, colbert) default to the core
store's, i.e. the encoder's model's (``encoder.config.default_weights``).

``doc_ids``/``node_ids`` restrict every mode to those documents / nodes. The other LlamaIndex
modes (semantic_hybrid, svm, logistic_regression, linear_regression) raise, naming what to use.

Every list argument (``nodes``, ``node_ids``, a query's ``doc_ids``/``node_ids``) given as a
single str or node raises ``TypeError`` rather than being read character by character.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from pydantic import Field, PrivateAttr
from tqdm.auto import tqdm

from m3_rag.cache import CachedEncoder
from m3_rag.store import DEFAULT_COLLECTION, AsyncM3Store, Connection, M3Store, StoredPoint
from m3_rag.store.filters import And, Condition, FilterNode
from m3_rag.store.schema import ColbertDatatype
from m3_rag.types import Encoder, M3Output, async_encoder, require_output
from m3_rag.validation import as_list
from m3_rag_llamaindex.embedding import BGEM3Embedding, Weights, as_cached
from m3_rag_llamaindex.filters import to_core_filter
from m3_rag_llamaindex.nodes import NodeRecord, node_to_record, record_to_node

__all__ = ["M3VectorStore", "HybridMode", "mmr_fetch_k"]

HybridMode = Literal["hybrid+rerank", "hybrid", "m3"]
# A node embedding computed by another model would not match the stored sparse/ColBERT
# vectors; the same model on the same text agrees to float noise (batch padding, fp16).
_SAME_VECTOR_COSINE = 0.99
# LlamaIndex's MMR defaults (its get_top_k_mmr_embeddings; DEFAULT_MMR_PREFETCH_FACTOR of its stores).
DEFAULT_MMR_THRESHOLD = 0.5
DEFAULT_MMR_PREFETCH_FACTOR = 4.0
# What to use instead of the LlamaIndex modes this store refuses.
_INSTEAD_OF_A_LEARNER = "'default' (dense) or 'hybrid', or rerank with M3RerankPostprocessor"
_REFUSED_MODES = {
    VectorStoreQueryMode.SEMANTIC_HYBRID: "'hybrid' (dense + sparse, reranked by ColBERT MaxSim)",
    VectorStoreQueryMode.SVM: _INSTEAD_OF_A_LEARNER,
    VectorStoreQueryMode.LOGISTIC_REGRESSION: _INSTEAD_OF_A_LEARNER,
    VectorStoreQueryMode.LINEAR_REGRESSION: _INSTEAD_OF_A_LEARNER,
}


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
    weights: Weights = Field(
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

    def __init__(
        self,
        encoder: Encoder | None = None,
        path: str | Path | None = None,
        *,
        location: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        connection: Connection | None = None,
        collection: str = DEFAULT_COLLECTION,
        store: M3Store | None = None,
        async_store: AsyncM3Store | None = None,
        cache_size: int = 4096,
        colbert_datatype: ColbertDatatype | None = None,
        colbert_pool_factor: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Open (or create) a collection.

        Give an ``encoder`` (an ``M3Encoder`` or ``CachedEncoder``) and where the collection
        lives: ``connection=`` (an ``m3_rag.store.Connection``) or one of ``path`` (Qdrant Edge,
        on disk), ``location=":memory:"`` (qdrant-client local mode) or ``url`` (a Qdrant server,
        with ``api_key``: sync and native-async clients both). Or give ready core stores:
        ``store=`` and/or ``async_store=`` (with ``encoder`` to share a cache; else the
        store's own encoder is used). ``colbert_datatype`` / ``colbert_pool_factor``: how a new
        collection stores ColBERT vectors (see ``m3_rag.store.M3Store``; None: the collection's).

        Async methods go through :attr:`aclient`: the ``AsyncM3Store`` when there is one
        (``url=``, ``async_store=``), else the core store's async view (``M3Store.aio()``: the
        same in-process engine, its calls on one worker thread).
        """
        super().__init__(**kwargs)
        options: dict[str, Any] = {  # the core store's (None: its defaults)
            "path": path,
            "location": location,
            "url": url,
            "api_key": api_key,
            "connection": connection,
            "colbert_datatype": colbert_datatype,
            "colbert_pool_factor": colbert_pool_factor,
        }
        if store is not None or async_store is not None:
            given = sorted(key for key, value in options.items() if value is not None)
            if given:
                raise ValueError(
                    f"got store=/async_store= and {given}; expected one or the other. "
                    "Fix: pass the ready store(s) alone, or encoder= with a location and options."
                )
            self._store, self._astore = store, async_store
            self._encoder = as_cached(encoder if encoder is not None else self.core_store.encoder, cache_size)
            return
        if encoder is None:
            raise ValueError("no encoder given. Fix: M3VectorStore(M3Encoder.from_pretrained(...), path=...)")
        self._encoder = as_cached(encoder, cache_size)
        # The core store makes the Connection of connection= or of the keywords, and checks them.
        self._store = M3Store(self._encoder, collection=collection, **options)
        if self._store.connection.kind == "url":
            self._astore = AsyncM3Store(self._encoder, collection=collection, **options)

    @classmethod
    def class_name(cls) -> str:
        return "M3VectorStore"

    @property
    def client(self) -> M3Store:
        """The core store (``m3_rag.store.M3Store``)."""
        return self._sync()

    @property
    def aclient(self) -> AsyncM3Store:
        """The async core store: the native one (``url=``, ``async_store=``), else the sync
        store's async view (``M3Store.aio()``, over the same open engine)."""
        return self._astore if self._astore is not None else self._sync().aio()

    @property
    def core_store(self) -> M3Store | AsyncM3Store:
        """The core store behind this one (the sync one if there is one), for its schema and weights."""
        if self._store is not None:
            return self._store
        if self._astore is not None:
            return self._astore
        raise RuntimeError("this M3VectorStore has no core store (neither store= nor async_store=); it was not built.")

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
        for batch, records in self._batches(nodes):
            # The strings VectorStoreIndex embedded: the cache answers, the model does not run.
            store.add_encoded(*_add_args(batch, records, self._encoder.encode_documents(_embed_texts(records))))
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        nodes = as_list(nodes, "nodes", "nodes")
        encoder, store = async_encoder(self._encoder), self.aclient
        for batch, records in self._batches(nodes):
            encoded = await encoder.aencode_documents(_embed_texts(records))
            await store.add_encoded(*_add_args(batch, records, encoded))
        return [n.node_id for n in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self._sync().delete_by_doc_id(ref_doc_id)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self.aclient.delete_by_doc_id(ref_doc_id)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the nodes that have one of ``node_ids`` and match ``filters`` (both, when both
        are given, as LlamaIndex's stores do); one of them is needed (``clear()`` deletes all)."""
        _deletion(node_ids, filters, "delete_nodes")(self._sync())

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await _deletion(node_ids, filters, "adelete_nodes")(self.aclient)

    def clear(self) -> None:
        """Delete every node; the collection (and its schema) stays."""
        self._sync().clear()

    async def aclear(self) -> None:
        await self.aclient.clear()

    # ------------------------------------------------------------------------------ reading
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes that have one of ``node_ids`` and match ``filters`` (both, when both
        are given), in the order of ``node_ids`` (ids not stored are absent), else in the
        store's order."""
        ids, flt = _selection(node_ids, filters, "get_nodes")
        store = self._sync()
        return _to_nodes(store.get(ids or []) if flt is None else store.scroll(flt, limit=None)[0], ids)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        ids, flt = _selection(node_ids, filters, "aget_nodes")
        store = self.aclient
        return _to_nodes(await store.get(ids or []) if flt is None else (await store.scroll(flt, limit=None))[0], ids)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Search in ``query.mode`` (see the module docstring); ``kwargs``: the MMR options."""
        return _to_result(self._search_call(query, kwargs)(self._sync()))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return _to_result(await self._search_call(query, kwargs)(self.aclient))

    # ------------------------------------------------------------------------------ helpers
    def _sync(self) -> M3Store:
        if self._store is None:
            raise RuntimeError(
                "this M3VectorStore was built with async_store= only, so it has no sync client. "
                "Fix: use the async methods (aquery, async_add, ...), or pass store=M3Store(...) too."
            )
        return self._store

    def _batches(self, nodes: list[BaseNode]) -> Iterator[tuple[list[BaseNode], list[NodeRecord]]]:
        """``nodes`` in batches of ``batch_size``, each with its records; a progress bar counts them."""
        with tqdm(total=len(nodes), desc="m3: add nodes", unit="node", disable=not self.show_progress) as bar:
            for start in range(0, len(nodes), self.batch_size):
                batch = nodes[start : start + self.batch_size]
                yield batch, [node_to_record(n) for n in batch]
                bar.update(len(batch))

    def _search_call(self, query: VectorStoreQuery, kwargs: dict[str, Any]) -> Callable[[Any], Any]:
        """The core search for a LlamaIndex query, as a call on an ``M3Store`` (its result) or an
        ``AsyncM3Store`` (its coroutine): by the query embedding (the retriever's, through
        ``embed_model``) where the search is dense, else by the text, which the core store encodes."""
        flt = self._query_filter(query)
        if query.mode == VectorStoreQueryMode.MMR:
            k = query.similarity_top_k
            fetch_k, lambda_mult = _mmr_options(query, kwargs)
            if query.query_embedding is not None:
                vector = self._embedding(query.query_embedding)
                return lambda store: store.search_mmr_by_vector(vector, k, fetch_k, lambda_mult, flt)
            text = _text(query)
            return lambda store: store.search_mmr(text, k, fetch_k, lambda_mult, "dense", flt)
        mode, k, prefetch_k, weights = self._plan(query)
        if mode == "dense" and query.query_embedding is not None:
            vector = self._embedding(query.query_embedding)
            return lambda store: store.search_by_vector(vector, k, flt)
        text = _text(query)
        return lambda store: store.search(text, mode, k, flt, prefetch_k, weights)

    def _plan(
        self, query: VectorStoreQuery
    ) -> tuple[str, int, int | tuple[int, int] | None, tuple[float, float, float] | None]:
        """Core mode, result size, prefetch sizes and weights (None: the core store's) for a
        LlamaIndex query that is not MMR."""
        if query.mode == VectorStoreQueryMode.DEFAULT:
            return "dense", query.similarity_top_k, None, self.weights
        if query.mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH):
            return "sparse", query.sparse_top_k or query.similarity_top_k, None, self.weights
        if query.mode != VectorStoreQueryMode.HYBRID:
            mode = VectorStoreQueryMode(query.mode)
            raise ValueError(
                f"query mode {mode.value!r} is not supported by M3VectorStore; expected one of 'default' (dense), "
                "'sparse' / 'text_search' (BGE-M3 lexical), 'hybrid', 'mmr'. "
                f"Fix: use {_REFUSED_MODES.get(mode, 'one of those')} (as_retriever(vector_store_query_mode=...))."
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
                raise ValueError(
                    f"alpha is {query.alpha}; expected a number in [0, 1] (1 = dense only, 0 = sparse only)"
                )
            colbert = (self.weights if self.weights is not None else self.core_store.weights)[2]
            weights = (query.alpha, 1.0 - query.alpha, colbert)
        return self.hybrid_mode, k, prefetch_k, weights

    def _embedding(self, emb: list[float]) -> list[float]:
        """``emb``, the query embedding the retriever computed (through store.embed_model, normally);
        the core store refuses NaN and other sizes too, this says which embed_model to use."""
        if len(emb) != self._encoder.dense_dim:
            raise ValueError(
                f"query embedding has {len(emb)} dimensions; the store's model gives "
                f"{self._encoder.dense_dim}. Fix: use store.embed_model as the index's embed_model."
            )
        return emb

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


def _mmr_options(query: VectorStoreQuery, kwargs: dict[str, Any]) -> tuple[int, float]:
    """``(fetch_k, lambda_mult)`` of an MMR query, from LlamaIndex's options as its stores read
    them; the core store checks the values (``k <= fetch_k``, ``lambda_mult`` in [0, 1])."""
    threshold = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
    prefetch_k, factor = kwargs.get("mmr_prefetch_k"), kwargs.get("mmr_prefetch_factor")
    if prefetch_k is not None and factor is not None:
        raise ValueError(
            f"got mmr_prefetch_k={prefetch_k!r} and mmr_prefetch_factor={factor!r}; expected one of them "
            "(the MMR candidates: a number, or a multiple of similarity_top_k). Fix: drop one."
        )
    lambda_mult = DEFAULT_MMR_THRESHOLD if threshold is None else threshold
    return mmr_fetch_k(query.similarity_top_k, prefetch_k, factor), lambda_mult


def mmr_fetch_k(k: Any, fetch_k: int | None = None, factor: float | None = None) -> Any:
    """MMR's candidate count: ``fetch_k``, else ``factor`` (None: LlamaIndex's 4.0) x ``k`` (a bad
    ``k`` is passed on for the core store to refuse)."""
    if fetch_k is not None or not isinstance(k, int):
        return fetch_k if fetch_k is not None else k
    return max(k, int(k * (DEFAULT_MMR_PREFETCH_FACTOR if factor is None else factor)))


def _text(query: VectorStoreQuery) -> str:
    """The query text, for a search that encodes it; raises naming the fix when there is none."""
    if not query.query_str:
        mode = VectorStoreQueryMode(query.mode).value
        found = "only an embedding" if query.query_embedding is not None else "none"
        raise ValueError(
            f"query mode {mode!r} needs the query text (query_str); found {found}. "
            "Fix: query through a retriever, or pass VectorStoreQuery(query_str=...)."
        )
    return query.query_str


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


def _deletion(node_ids: list[str] | None, filters: MetadataFilters | None, what: str) -> Callable[[Any], Any]:
    """The core delete of ``delete_nodes``' selection, as a call on an ``M3Store`` or an ``AsyncM3Store``."""
    ids, flt = _selection(node_ids, filters, what)
    if flt is None:  # ids alone: a list
        return lambda store: store.delete(ids or [])
    return lambda store: store.delete_where(flt)


def _to_nodes(points: Sequence[StoredPoint], ids: list[str] | None) -> list[BaseNode]:
    if ids is not None:  # the order asked for (a filtered scroll returns the store's order)
        rank = {str(node_id): i for i, node_id in enumerate(dict.fromkeys(ids))}
        points = sorted(points, key=lambda p: rank.get(str(p.id), len(rank)))
    return [record_to_node(p.id, p.text, p.metadata, p.doc_id, p.extra) for p in points]


def _embed_texts(records: list[NodeRecord]) -> list[str]:
    return [r.embed_text for r in records]


def _add_args(nodes: list[BaseNode], records: list[NodeRecord], encoded: M3Output) -> tuple[Any, ...]:
    """``add_encoded``'s arguments for the nodes' records, once their own embeddings are checked."""
    _check_embeddings(nodes, encoded)
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
    for node, ours in zip(nodes, require_output(encoded.dense, "dense"), strict=True):
        if node.embedding is None:
            continue
        given = np.asarray(node.embedding, dtype=np.float32)
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
