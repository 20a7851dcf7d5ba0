"""qdrant-client backend: a Qdrant server or cluster (url), or local mode (``:memory:``) in tests.

The sync (:class:`ClientBackend`, ``QdrantClient``) and the natively async
(:class:`AsyncClientBackend`, ``AsyncQdrantClient``) backends share every operation, written
once as a coroutine in the pattern of :mod:`m3_rag.store.core`: it reaches the client through
one hook, ``_io``, which the async backend awaits and the sync one calls directly (never
suspending, so :func:`~m3_rag.store.core.blocking` runs it with one ``send``).
"""

from __future__ import annotations

import datetime as dt
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from m3_rag.store.backends.base import Hit, refuse_vacuous_filter
from m3_rag.store.core import blocking
from m3_rag.store.filters import FilterClauses, FilterNode, build_filter
from m3_rag.store.ids import PointId
from m3_rag.store.ingest import PointData
from m3_rag.store.payload import DOC_ID_KEY
from m3_rag.store.queries import MmrQuery, Prefetch, QueryPlan, RrfFusion, VectorQuery
from m3_rag.store.schema import (
    COLBERT,
    DENSE,
    LEGACY_POOL_FACTOR,
    SPARSE,
    ColbertSettings,
    SchemaMismatchError,
    StoreSchema,
    VectorSpec,
    check_schema,
    quantization_kind,
)
from m3_rag.types import SparseVector

__all__ = ["ServerOptions", "ClientBackend", "AsyncClientBackend", "to_client_filter", "collection_params"]


@dataclass(frozen=True)
class ServerOptions:
    """Collection-creation options that only matter on a server / cluster."""

    shard_number: int | None = None
    replication_factor: int | None = None


_DATATYPES = {
    "float16": models.Datatype.FLOAT16, "float32": models.Datatype.FLOAT32,
    "turbo8": models.Datatype.TURBO8, "turbo4": models.Datatype.TURBO4,
}  # fmt: skip
#: Where a collection records its ColBERT settings: Qdrant's collection metadata, under this key.
METADATA_KEY = "m3_rag"


#: Exact scores: no HNSW and no quantized copy (the m3 plan's rescoring).
_EXACT = models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
# always_ram: HNSW walks the int8 copy in RAM; the float32 originals only rescore the hits.
_INT8 = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True))


def collection_params(schema: StoreSchema) -> dict[str, Any]:
    quantization = _INT8 if schema.dense_quantization == "int8" else None
    vectors = {DENSE: models.VectorParams(size=schema.dense_dim, distance=models.Distance.COSINE, quantization_config=quantization)}
    if schema.has_colbert:
        vectors[COLBERT] = models.VectorParams(
            size=schema.colbert_size,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0),  # rerank only: no graph
            datatype=_DATATYPES[schema.colbert.datatype],
            on_disk=True,
        )
    sparse = {SPARSE: models.SparseVectorParams(modifier=models.Modifier.NONE)} if schema.has_sparse else None
    return {"vectors_config": vectors, "sparse_vectors_config": sparse, "metadata": {METADATA_KEY: schema.colbert.to_json()}}


def _opened_schema(collection: str, info: models.CollectionInfo, schema: StoreSchema) -> StoreSchema:
    """``schema`` with what an existing collection recorded (validated)."""
    check_schema(collection, _found_specs(info), schema)
    params = info.config.params.vectors
    dense = params.get(DENSE) if isinstance(params, dict) else None
    found = (dense.quantization_config if dense is not None else None) or info.config.quantization_config
    schema = schema.with_recorded_dense(collection, quantization_kind(found.model_dump(exclude_none=True) if found else None))
    if not schema.has_colbert:
        return schema
    datatype = params[COLBERT].datatype if isinstance(params, dict) else None
    record = (info.config.metadata or {}).get(METADATA_KEY) or {}
    try:
        recorded = ColbertSettings.validated(
            str(datatype.value if datatype is not None else "float32"),
            record.get("colbert_pool_factor", LEGACY_POOL_FACTOR),
        )
    except ValueError as exc:
        raise SchemaMismatchError(
            f"collection {collection!r} records ColBERT settings m3-rag cannot use: {exc} "
            "Fix: index into a new collection."
        ) from exc
    return schema.with_recorded(collection, recorded)


def _found_specs(info: models.CollectionInfo) -> dict[str, VectorSpec]:
    params = info.config.params
    specs: dict[str, VectorSpec] = {}
    vectors = params.vectors
    if isinstance(vectors, models.VectorParams):  # a single unnamed vector
        vectors = {"": vectors}
    for name, v in (vectors or {}).items():
        multi = v.multivector_config
        specs[name] = VectorSpec(
            name,
            "multi" if multi else "dense",
            v.size,
            str(v.distance.value).lower(),
            str(multi.comparator.value) if multi else None,
        )
    for name, sv in (params.sparse_vectors or {}).items():
        modifier = sv.modifier.value if sv.modifier is not None else "none"
        specs[name] = VectorSpec(name, "sparse", modifier=str(modifier).lower())
    return specs


def _point(p: PointData) -> models.PointStruct:
    vector: dict[str, Any] = {DENSE: p.dense.tolist()}
    if p.sparse is not None:
        vector[SPARSE] = models.SparseVector(indices=p.sparse.indices.tolist(), values=p.sparse.values.tolist())
    if p.colbert is not None:
        vector[COLBERT] = p.colbert.tolist()
    return models.PointStruct(id=p.id, vector=vector, payload=p.payload)


def _vector(q: VectorQuery) -> Any:
    if isinstance(q.vector, SparseVector):
        return models.SparseVector(indices=q.vector.indices.tolist(), values=q.vector.values.tolist())
    return q.vector.tolist()


def _scoring(query: Any) -> Any:
    if isinstance(query, VectorQuery):
        return _vector(query)
    if isinstance(query, RrfFusion):
        return models.RrfQuery(rrf=models.Rrf(k=query.k))
    if isinstance(query, MmrQuery):
        mmr = models.Mmr(diversity=1.0 - query.lambda_mult, candidates_limit=query.candidates)
        return models.NearestQuery(nearest=query.vector.tolist(), mmr=mmr)
    raise TypeError(f"unsupported query {query!r}")


def _using(query: Any) -> str | None:
    return query.using if isinstance(query, (VectorQuery, MmrQuery)) else None


def _prefetch(p: Prefetch, flt: models.Filter | None) -> models.Prefetch:
    # The filter goes on every stage so no stage can fill its limit with excluded points.
    return models.Prefetch(
        limit=p.limit,
        query=_scoring(p.query) if p.query is not None else None,
        using=_using(p.query),
        prefetch=[_prefetch(c, flt) for c in p.prefetches] or None,
        filter=flt,
    )


def _query_kwargs(
    plan: QueryPlan, with_vectors: bool | list[str], with_payload: bool = True, local: bool = False
) -> dict[str, Any]:
    flt = _maybe_filter(plan.filter)
    if plan.point_ids is not None:
        only = models.HasIdCondition(has_id=list(plan.point_ids))
        flt = models.Filter(must=[only] if flt is None else [only, flt])
    return {
        "query": _scoring(plan.query),
        "using": _using(plan.query),
        "prefetch": [_prefetch(p, flt) for p in plan.prefetches] or None,
        "query_filter": flt,
        # Local mode is exact anyway, and warns on every search that is given search params.
        "search_params": _EXACT if plan.exact and not local else None,
        "limit": plan.limit,
        "with_payload": with_payload,
        "with_vectors": with_vectors,
    }


def _batch_requests(plans: Sequence[QueryPlan], local: bool) -> list[models.QueryRequest]:
    renamed = {"query_filter": "filter", "search_params": "params", "with_vectors": "with_vector"}
    return [
        models.QueryRequest(**{renamed.get(k, k): v for k, v in _query_kwargs(p, False, False, local).items()}) for p in plans
    ]


def _batch_hits(responses: Sequence[Any]) -> list[list[Hit]]:
    return [[_hit(point, False) for point in r.points] for r in responses]


def _scroll_kwargs(filter: FilterNode | None, limit: int, offset: PointId | None, with_vectors: bool) -> dict[str, Any]:
    return {"scroll_filter": _maybe_filter(filter), "limit": limit, "offset": offset,
            "with_payload": True, "with_vectors": with_vectors}  # fmt: skip


def _page(result: tuple[list[Any], Any], with_vectors: bool) -> tuple[list[Hit], PointId | None]:
    records, next_offset = result
    return [_hit(r, with_vectors) for r in records], None if next_offset is None else _point_id(next_offset)


def _point_id(pid: Any) -> PointId:
    return pid if isinstance(pid, int) else str(pid)


def _hit(point: Any, with_vectors: bool | list[str]) -> Hit:
    vectors: dict[str, Any] = {}
    if with_vectors and isinstance(point.vector, dict):
        for name, v in point.vector.items():
            if isinstance(v, models.SparseVector):
                vectors[name] = SparseVector(np.asarray(v.indices, np.int64), np.asarray(v.values, np.float32))
            else:
                vectors[name] = np.asarray(v, dtype=np.float32)
    return Hit(point.id, float(getattr(point, "score", 0.0) or 0.0), dict(point.payload or {}), vectors)


class _ClientFilterParts(FilterClauses):
    """qdrant-client's filter models, for the shared walk :func:`~m3_rag.store.filters.build_filter`
    (every condition translates here, booleans included)."""

    filter_class = models.Filter

    def match_value(self, key: str, value: str | int | bool) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def match_any(self, key: str, values: list[str]) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    def match_text(self, key: str, text: str) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchText(text=text))

    def range_float(self, key: str, bounds: dict[str, float]) -> models.FieldCondition:
        return models.FieldCondition(key=key, range=models.Range(**bounds))

    def range_datetime(self, key: str, bounds: dict[str, dt.date]) -> models.FieldCondition:
        return models.FieldCondition(key=key, range=models.DatetimeRange(**bounds))

    def is_empty(self, key: str) -> models.IsEmptyCondition:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))


_FILTER_PARTS = _ClientFilterParts()


def _maybe_filter(node: FilterNode | None) -> models.Filter | None:
    return None if node is None else to_client_filter(node)


def to_client_filter(node: FilterNode) -> models.Filter:
    return build_filter(node, _FILTER_PARTS)


def _delete_selector(filter: FilterNode) -> models.FilterSelector:
    translated = to_client_filter(filter)
    refuse_vacuous_filter(translated, "delete_where")
    return models.FilterSelector(filter=translated)


def _doc_id_index_args() -> dict[str, Any]:
    return {"field_name": DOC_ID_KEY, "field_schema": models.PayloadSchemaType.KEYWORD}


# Local mode warns that payload indexes have no effect there; on a server they do.
_LOCAL_INDEX_WARNING = "Payload indexes have no effect in the local Qdrant"


class _Serialised:
    """A ``QdrantClient`` whose calls run one at a time: local mode (``:memory:`` or a local
    path) keeps its collections in plain Python structures that concurrent threads corrupt
    (an IndexError under 4 threads). A server client is thread-safe and is not wrapped."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked


def _is_local(client: Any) -> bool:
    from qdrant_client.local.async_qdrant_local import AsyncQdrantLocal
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), (QdrantLocal, AsyncQdrantLocal))


class _ClientCore:
    """The state of both client backends, and the one hook their operations reach the client through."""

    def __init__(self, client: Any, collection: str, options: ServerOptions) -> None:
        self._local = _is_local(client)
        self.client: Any = client
        self.collection = collection
        self.options = options

    async def _io(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call (``call`` is a bound method of ``self.client``)."""
        raise NotImplementedError


class _ClientOperations(_ClientCore):
    """Every backend operation once, as a coroutine that reaches the client only through ``_io``
    (:class:`AsyncClientBackend` inherits them; :class:`ClientBackend` wraps each in
    :func:`~m3_rag.store.core.blocking`), so the sync and async backends cannot drift apart."""

    async def open(self, schema: StoreSchema) -> StoreSchema:
        if await self._io(self.client.collection_exists, self.collection):
            return _opened_schema(self.collection, await self._io(self.client.get_collection, self.collection), schema)
        schema = schema.for_new_collection()
        await self._io(
            self.client.create_collection,
            self.collection,
            shard_number=self.options.shard_number,
            replication_factor=self.options.replication_factor,
            **collection_params(schema),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LOCAL_INDEX_WARNING)
            await self._io(self.client.create_payload_index, self.collection, **_doc_id_index_args())
        return schema

    async def upsert(self, points: Sequence[PointData]) -> None:
        if points:
            await self._io(self.client.upsert, self.collection, [_point(p) for p in points], wait=True)

    async def query_batch(self, plans: Sequence[QueryPlan]) -> list[list[Hit]]:
        requests = _batch_requests(plans, self._local)
        return _batch_hits(await self._io(self.client.query_batch_points, self.collection, requests))

    async def query(self, plan: QueryPlan, with_vectors: bool | list[str] = False) -> list[Hit]:
        res = await self._io(self.client.query_points, self.collection, **_query_kwargs(plan, with_vectors))
        return [_hit(p, with_vectors) for p in res.points]

    async def retrieve(self, point_ids: Sequence[PointId], with_vectors: bool = False) -> list[Hit]:
        if not point_ids:
            return []
        recs = await self._io(
            self.client.retrieve, self.collection, list(point_ids), with_payload=True, with_vectors=with_vectors
        )
        return [_hit(r, with_vectors) for r in recs]

    async def scroll(
        self, filter: FilterNode | None, limit: int, offset: PointId | None = None, with_vectors: bool = False
    ) -> tuple[list[Hit], PointId | None]:
        kwargs = _scroll_kwargs(filter, limit, offset, with_vectors)
        result = await self._io(self.client.scroll, self.collection, **kwargs)
        return _page(result, with_vectors)

    async def delete(self, point_ids: Sequence[PointId]) -> None:
        if point_ids:
            await self._io(self.client.delete, self.collection, models.PointIdsList(points=list(point_ids)), wait=True)

    async def delete_where(self, filter: FilterNode) -> None:
        await self._io(self.client.delete, self.collection, _delete_selector(filter), wait=True)

    async def count(self, filter: FilterNode | None = None) -> int:
        counted = await self._io(self.client.count, self.collection, count_filter=_maybe_filter(filter), exact=True)
        return int(counted.count)

    async def clear(self) -> None:
        await self._io(self.client.delete, self.collection, models.FilterSelector(filter=models.Filter()), wait=True)

    async def optimize(self) -> None:
        """A server optimizes in the background; nothing to do."""

    async def close(self) -> None:
        await self._io(self.client.close)


class ClientBackend(_ClientCore):
    """The operations over ``QdrantClient``, as plain blocking calls."""

    def __init__(self, client: QdrantClient, collection: str, options: ServerOptions = ServerOptions()) -> None:
        super().__init__(client, collection, options)
        if self._local:  # decided on the client itself: the wrapper would hide what it is
            self.client = _Serialised(client)

    async def _io(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)  # a sync call: the operation never suspends (see core.blocking)

    open = blocking(_ClientOperations.open)
    upsert = blocking(_ClientOperations.upsert)
    query_batch = blocking(_ClientOperations.query_batch)
    query = blocking(_ClientOperations.query)
    retrieve = blocking(_ClientOperations.retrieve)
    scroll = blocking(_ClientOperations.scroll)
    delete = blocking(_ClientOperations.delete)
    delete_where = blocking(_ClientOperations.delete_where)
    count = blocking(_ClientOperations.count)
    clear = blocking(_ClientOperations.clear)
    optimize = blocking(_ClientOperations.optimize)
    close = blocking(_ClientOperations.close)


class AsyncClientBackend(_ClientOperations):
    """The same over ``AsyncQdrantClient``: every call is a native coroutine."""

    def __init__(self, client: AsyncQdrantClient, collection: str, options: ServerOptions = ServerOptions()) -> None:
        super().__init__(client, collection, options)

    async def _io(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await call(*args, **kwargs)
