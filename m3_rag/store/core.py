"""What :class:`M3Store` and :class:`AsyncM3Store` share, written once.

Every store operation (argument checks, request building, id mapping, the ColBERT length
rule, result conversion) is a coroutine of :class:`StoreOperations` that reaches I/O only
through two hooks, ``_io`` (a backend call) and ``_encode`` (the encoder):

- :class:`AsyncM3Store` inherits the coroutines as they are; its hooks await real I/O
  (``AsyncQdrantClient`` natively, or the Edge engine on its worker thread).
- :class:`M3Store`'s hooks call the sync backend and encoder directly and never suspend, so
  :func:`blocking` runs an operation to its end with a single ``send``: no event loop, no
  thread, a plain function call.

So the sync and async stores cannot drift apart: there is one body per operation.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
from tqdm.auto import tqdm

from m3_rag.scoring import dense_scores, lexical_score, maxsim_score
from m3_rag.store.backends.base import Hit
from m3_rag.store.connection import Connection
from m3_rag.store.filters import Condition, FilterLike, FilterNode, as_filter
from m3_rag.store.ids import PointId, UserId, check_user_id, to_point_id
from m3_rag.store.ingest import attach_vectors, batched_inputs, max_colbert_rows, pool_documents, prepare_rows
from m3_rag.store.names import check_collection_name
from m3_rag.store.payload import DOC_ID_KEY, EXTRA_KEY, ID_KEY, METADATA_KEY, TEXT_KEY
from m3_rag.store.queries import (
    DEFAULT_MODE,
    DEFAULT_RRF_K,
    MODE_OUTPUTS,
    Combine,
    MmrQuery,
    Mode,
    QueryPlan,
    VectorQuery,
    build_plan,
    check_mmr,
    check_mode,
    check_weights,
    dense_query,
    mmr_plan,
    model_weights,
    rescore_plans,
)
from m3_rag.store.results import SearchResult, StoredPoint
from m3_rag.store.schema import (
    COLBERT,
    DENSE,
    SPARSE,
    ColbertDatatype,
    DenseQuantization,
    StoreSchema,
    check_dense_quantization,
    schema_from_encoder,
)
from m3_rag.types import Encoder, M3Output, OutputName

__all__ = [
    "DEFAULT_COLLECTION",
    "StoreCore",
    "StoreOperations",
    "blocking",
    "new_ids",
    "query_outputs",
    "point_ids_of",
    "required_filter",
    "to_search_results",
    "to_stored_points",
]

DEFAULT_COLLECTION = "m3"
SCROLL_PAGE = 256  # points per request when scroll(limit=None) fetches everything

P = ParamSpec("P")
R = TypeVar("R")


# ------------------------------------------------------------------------------------ helpers
def new_ids(n: int) -> list[UserId]:
    """Fresh ids for texts added without ids (random: re-adding such texts makes new points)."""
    return [str(uuid.uuid4()) for _ in range(n)]


def query_outputs(mode: str, schema: StoreSchema, with_mode_scores: bool) -> tuple[OutputName, ...]:
    """What to encode the query into: the mode's outputs, or all the store has for mode scores."""
    check_mode(mode, schema)
    return schema.outputs if with_mode_scores else MODE_OUTPUTS[mode]


def point_ids_of(ids: Sequence[UserId]) -> list:
    if isinstance(ids, (str, int)):
        raise TypeError(f"ids must be a list, found a single {type(ids).__name__}. Fix: pass [{ids!r}].")
    return [to_point_id(check_user_id(i)) for i in ids]


def check_doc_id(doc_id: str) -> str:
    if not isinstance(doc_id, str):
        raise TypeError(f"doc_id {doc_id!r} is a {type(doc_id).__name__}; expected a str. Fix: pass str(doc_id).")
    return doc_id


def required_filter(filter: FilterLike, what: str) -> FilterNode:
    """A filter that must select something: ``None`` or ``{}`` would mean every point, which a
    delete never takes silently."""
    node = None if isinstance(filter, Mapping) and not filter else as_filter(filter)
    if node is None:
        raise ValueError(
            f"{what}() got the filter {filter!r}, which would match every point; expected a non-empty filter. "
            "Fix: pass a filter, or call clear() to delete every point."
        )
    return node


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit={limit!r}; expected a positive int (points per page).")
    return limit


def _user_id(hit: Hit) -> UserId:
    # Points written by other tools may lack our `id` key; their point id is then the id.
    return hit.payload.get(ID_KEY, hit.point_id)


def _record_fields(hit: Hit) -> dict[str, Any]:
    """The fields every result type has, read from the shared payload layout."""
    p = hit.payload
    return {
        "id": _user_id(hit),
        "text": p.get(TEXT_KEY, ""),
        "metadata": dict(p.get(METADATA_KEY) or {}),
        "doc_id": p.get(DOC_ID_KEY),
        "extra": dict(p.get(EXTRA_KEY) or {}),
    }


def _mode_scores(hit: Hit, query: M3Output, schema: StoreSchema, max_query_tokens: int | None) -> dict[str, float]:
    """Each mode's score of the hit, from its stored vectors (BGE-M3's formulas), ColBERT's from the
    backend's rerank where the search made one."""
    scores: dict[str, float] = {}
    v = hit.vectors
    if DENSE in v and query.dense is not None:
        scores[DENSE] = float(dense_scores(query.dense[0], v[DENSE][None, :])[0])
    if schema.has_sparse and query.sparse is not None:
        scores[SPARSE] = lexical_score(query.sparse[0], v[SPARSE]) if SPARSE in v else 0.0
    if query.colbert is not None and (hit.colbert_sum is not None or COLBERT in v):
        q = query.colbert[0][:max_query_tokens] if max_query_tokens else query.colbert[0]
        scores[COLBERT] = hit.colbert_sum / q.shape[0] if hit.colbert_sum is not None else maxsim_score(q, v[COLBERT])
    return scores


def to_search_results(
    hits: Sequence[Hit],
    plan: QueryPlan,
    query: M3Output,
    schema: StoreSchema,
    with_mode_scores: bool,
    max_query_tokens: int | None = None,
) -> list[SearchResult]:
    return [
        SearchResult(
            **_record_fields(hit),
            score=hit.score / plan.score_divisor,
            mode_scores=_mode_scores(hit, query, schema, max_query_tokens) if with_mode_scores else None,
        )
        for hit in hits
    ]


def combined_hits(hits: Sequence[Hit], combine: Combine, dense: Sequence[Hit], sparse: Sequence[Hit]) -> list[Hit]:
    """``m3``'s last step: each hit scored ``combine.weights · (dense, sparse, ColBERT sum)``,
    ``dense``/``sparse`` being the backend's scores of those hits (:func:`rescore_plans`); the
    top ``combine.k`` kept (stable). A hit without a dense score was deleted meanwhile: dropped."""
    w_d, w_s, w_c = combine.weights
    dense_of = {h.point_id: h.score for h in dense}
    sparse_of = {h.point_id: h.score for h in sparse}
    scored = [
        replace(hit, score=w_d * dense_of[hit.point_id] + w_s * sparse_of.get(hit.point_id, 0.0) + w_c * _colbert_sum(hit))
        for hit in hits
        if hit.point_id in dense_of
    ]
    return sorted(scored, key=lambda h: -h.score)[: combine.k]


def _pick(column: list[R] | None, rows: Sequence[int]) -> list[R] | None:
    """The ``rows`` of an optional input column (None: not given)."""
    return None if column is None else [column[i] for i in rows]


def _colbert_sum(hit: Hit) -> float:
    if hit.colbert_sum is None:
        raise ValueError(
            f"hit {hit.point_id!r} has no ColBERT score (colbert_sum); expected the hits of a plan reranked by ColBERT."
        )
    return hit.colbert_sum


def _stored_point(hit: Hit) -> StoredPoint:
    v = hit.vectors
    return StoredPoint(**_record_fields(hit), dense=v.get(DENSE), sparse=v.get(SPARSE), colbert=v.get(COLBERT))


def to_stored_points(hits: Sequence[Hit], point_ids: Sequence[Any] | None = None) -> list[StoredPoint]:
    """Stored points in the order of ``point_ids`` (ids not found are simply absent), or in the
    hits' own order when ``point_ids`` is None."""
    if point_ids is None:
        return [_stored_point(h) for h in hits]
    by_id = {str(h.point_id): h for h in hits}
    return [_stored_point(by_id[pid]) for pid in dict.fromkeys(str(p) for p in point_ids) if pid in by_id]


# --------------------------------------------------------------------------------- the stores
class StoreCore:
    """The constructor and state of both stores, and the two I/O hooks the operations use."""

    #: Whether the backend's calls are coroutines (set by the subclass).
    asynchronous = False

    def __init__(
        self,
        encoder: Encoder,
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
        colbert_datatype: ColbertDatatype | None = None,
        colbert_pool_factor: int | None = None,
        dense_quantization: DenseQuantization | None = None,
        weights: Sequence[float] | None = None,
        connection: Connection | None = None,
        **client_kwargs: Any,
    ) -> None:
        given = {"path": path, "location": location, "url": url, "client": client, "api_key": api_key,
                 "shard_number": shard_number, "replication_factor": replication_factor}  # fmt: skip
        given = {k: v for k, v in given.items() if v is not None}
        if prefer_grpc:
            given["prefer_grpc"] = True
        if connection is None:
            connection = Connection(**given, client_kwargs=client_kwargs)
        elif given or client_kwargs:
            raise ValueError(
                f"connection= was given together with {sorted({*given, *client_kwargs})}; expected one. "
                "Fix: put every connection option in the Connection."
            )
        #: Where the collection lives (:class:`~m3_rag.store.connection.Connection`).
        self.connection = connection
        self.encoder = encoder
        self.collection = check_collection_name(collection)
        #: (dense, sparse, colbert) weights of ``m3`` searches that pass no ``weights``: the
        #: constructor's ``weights=``, else the encoder's model's (:func:`model_weights`).
        self.weights: tuple[float, float, float] = (
            model_weights(encoder) if weights is None else check_weights(weights, "weights=")
        )
        #: What the collection holds; its ColBERT settings are the collection's once it is open.
        self.schema: StoreSchema = replace(
            schema_from_encoder(encoder, colbert_datatype=colbert_datatype, colbert_pool_factor=colbert_pool_factor),
            dense_quantization=None if dense_quantization is None else check_dense_quantization(dense_quantization),
        )
        self.backend: Any = connection.backend(self.collection, asynchronous=self.asynchronous)
        self._started()

    def _started(self) -> None:
        """Called at the end of the constructor (the sync store opens its collection here)."""

    async def _io(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run one backend call (``call`` is a bound method of ``self.backend``)."""
        raise NotImplementedError

    async def _encode(self, kind: str, texts: list[str], outputs: tuple[OutputName, ...]) -> M3Output:
        """``encoder.encode_documents`` (kind ``"documents"``) or ``encode_queries`` (``"queries"``)."""
        raise NotImplementedError

    async def _compute(self, fn: Callable[..., R], *args: Any) -> R:
        """Run CPU/device work of an open store (ColBERT pooling) off the event loop where there is one."""
        raise NotImplementedError

    def _documents_as_stored(self, encoded: M3Output) -> M3Output:
        """Document vectors as the collection stores them (ColBERT pooled; see :func:`pool_documents`)."""
        return pool_documents(encoded, self.schema, device=getattr(self.encoder, "device", None))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(collection={self.collection!r}, backend={type(self.backend).__name__}, "
            f"outputs={self.schema.outputs}, weights={self.weights})"
        )


class StoreOperations(StoreCore):
    """Every store operation, once, as a coroutine (the async store's public methods; the sync
    store wraps each in :func:`blocking`). One operation calls another through this class, not
    ``self``, so that it gets the coroutine on the sync store too."""

    # ----------------------------------------------------------------------------- writes
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
        """Encode (one pass per batch, all outputs) and upsert, streaming; returns the ids.

        Re-adding an id overwrites its point. ``skip_existing=True`` (needs ``ids``) skips the
        texts whose id is already stored without encoding them: an interrupted ingestion
        resumes where it stopped, without duplicates.
        """
        if skip_existing and ids is None:
            raise ValueError("skip_existing=True needs ids= to know what is stored. Fix: pass stable ids.")
        total = len(texts) if isinstance(texts, Sized) else None
        added: list[UserId] = []
        with tqdm(total=total, disable=not show_progress, unit="text", desc="indexing") as bar:
            for b_texts, b_ids, b_meta, b_docs, b_extra in batched_inputs(texts, ids, metadatas, doc_ids, extras, batch_size):
                b_ids = b_ids if b_ids is not None else new_ids(len(b_texts))
                rows = list(range(len(b_texts)))
                if skip_existing:
                    existing = {str(h.point_id) for h in await self._io(self.backend.retrieve, point_ids_of(b_ids))}
                    rows = [i for i in rows if str(to_point_id(b_ids[i])) not in existing]
                if rows:
                    sub_texts = [b_texts[i] for i in rows]
                    # Rows first: a bad text, id or payload fails before the model runs on it.
                    point_rows = prepare_rows(
                        sub_texts,
                        ids=[b_ids[i] for i in rows],
                        metadatas=_pick(b_meta, rows),
                        doc_ids=_pick(b_docs, rows),
                        extras=_pick(b_extra, rows),
                    )
                    encoded = await self._encode("documents", sub_texts, self.schema.outputs)
                    stored = await self._compute(self._documents_as_stored, encoded)
                    await self._io(self.backend.upsert, attach_vectors(point_rows, stored, self.schema))
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
        """Upsert texts already encoded (e.g. by a framework's embedding class); one write.

        ``encoded`` is the encoder's output as it is (ColBERT unpooled): the store pools it."""
        if isinstance(texts, str):
            raise TypeError("texts is a single str; expected a list of texts. Fix: pass [text].")
        ids = list(ids) if ids is not None else new_ids(len(texts))
        rows = prepare_rows(list(texts), ids=ids, metadatas=metadatas, doc_ids=doc_ids, extras=extras)
        stored = await self._compute(self._documents_as_stored, encoded)
        await self._io(self.backend.upsert, attach_vectors(rows, stored, self.schema))
        return ids

    # ------------------------------------------------------------------------------ reads
    async def search(
        self,
        query: str,
        mode: Mode = DEFAULT_MODE,
        k: int = 10,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] | None = None,
        with_mode_scores: bool = False,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        """Encode the query (only the outputs the mode needs) and run one ``query_points``.

        The other arguments are :meth:`search_encoded`'s.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, found {type(query).__name__}. Fix: use search_encoded for vectors.")
        encoded = await self._encode("queries", [query], query_outputs(mode, self.schema, with_mode_scores))
        args = (mode, k, filter, prefetch_k, weights, with_mode_scores, rrf_k)
        return await StoreOperations.search_encoded(self, encoded, *args)

    async def search_encoded(
        self,
        query: M3Output,
        mode: Mode = DEFAULT_MODE,
        k: int = 10,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] | None = None,
        with_mode_scores: bool = False,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        """Search with an already encoded query (one row); one ``query_points`` round trip.

        ``mode``: dense, sparse, hybrid, hybrid+rerank or m3 (see ``docs/architecture.md``);
        ``filter``: a filter node or a Mongo-style dict; ``prefetch_k``: candidates per
        prefetch, an int or (dense, sparse); ``weights``: (dense, sparse, colbert) of ``m3``
        (``None``: the store's :attr:`weights`, by default the encoder's model's);
        ``with_mode_scores``: add each hit's dense/sparse/ColBERT scores; ``rrf_k``: RRF's k.
        """
        max_tokens = max_colbert_rows(self.schema.colbert_dim) if self.schema.colbert_dim else None
        plan = build_plan(
            mode, query, self.schema, k=k, prefetch_k=prefetch_k, rrf_k=rrf_k,
            weights=self.weights if weights is None else weights,
            filter=as_filter(filter), max_query_tokens=max_tokens,
        )  # fmt: skip
        hits = await self._io(self.backend.query, plan, with_mode_scores)
        if isinstance(plan.query, VectorQuery) and plan.query.using == COLBERT:
            hits = [replace(h, colbert_sum=h.score) for h in hits]
        if plan.combine is not None and hits:
            dense_plan, sparse_plan = rescore_plans(plan.combine, [h.point_id for h in hits])
            dense, sparse = await self._io(self.backend.query_batch, (dense_plan, sparse_plan))
            hits = combined_hits(hits, plan.combine, dense, sparse)
        return to_search_results(hits, plan, query, self.schema, with_mode_scores, max_tokens)

    async def search_by_vector(
        self, vector: Sequence[float] | np.ndarray, k: int = 10, filter: FilterLike = None
    ) -> list[SearchResult]:
        """Dense search with a caller's vector (e.g. LangChain's ``embed_query``): ``dense`` mode;
        raises unless it has the collection's dense size."""
        encoded = dense_query(vector, self.schema.dense_dim)
        return await StoreOperations.search_encoded(self, encoded, "dense", k, filter)

    async def search_mmr(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        mode: Mode = DEFAULT_MODE,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        """Maximal marginal relevance: ``k`` of the ``fetch_k`` best hits of ``mode``, picked for
        similarity to the query and difference from each other, both by the dense vector (Qdrant's
        MMR; ``lambda_mult=1``: the dense order of the candidates, 0: diversity only). Hits come
        in pick order with their dense (cosine) score. The other arguments are :meth:`search`'s."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, found {type(query).__name__}. Fix: use search_mmr_encoded.")
        check_mmr(k, fetch_k, lambda_mult)
        outputs = tuple(dict.fromkeys((DENSE, *MODE_OUTPUTS[check_mode(mode, self.schema)])))
        encoded = await self._encode("queries", [query], outputs)
        args = (k, fetch_k, lambda_mult, mode, filter, prefetch_k, weights, rrf_k)
        return await StoreOperations.search_mmr_encoded(self, encoded, *args)

    async def search_mmr_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterLike = None,
    ) -> list[SearchResult]:
        """:meth:`search_mmr` over the ``fetch_k`` dense hits of a caller's vector."""
        encoded = dense_query(vector, self.schema.dense_dim)
        return await StoreOperations.search_mmr_encoded(self, encoded, k, fetch_k, lambda_mult, "dense", filter)

    async def search_mmr_encoded(
        self,
        query: M3Output,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        mode: Mode = DEFAULT_MODE,
        filter: FilterLike = None,
        prefetch_k: int | tuple[int, int] | None = None,
        weights: Sequence[float] | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> list[SearchResult]:
        """:meth:`search_mmr` with an already encoded query (its dense output and the mode's)."""
        k, fetch_k, lambda_mult = check_mmr(k, fetch_k, lambda_mult)
        if query.dense is None:
            raise ValueError("MMR needs the query's 'dense' output, which the encoded query lacks.")
        dense = np.asarray(query.dense[0], dtype=np.float32)
        if check_mode(mode, self.schema) == "m3":
            # m3 combines in the store, so its candidates reach the MMR query by id.
            found = await StoreOperations.search_encoded(self, query, "m3", fetch_k, filter, prefetch_k, weights, False, rrf_k)
            if not found:
                return []
            ids = tuple(to_point_id(r.id) for r in found)
            plan = QueryPlan(limit=k, query=MmrQuery(DENSE, dense, lambda_mult, len(ids)), point_ids=ids)
        else:
            max_tokens = max_colbert_rows(self.schema.colbert_dim) if self.schema.colbert_dim else None
            candidates = build_plan(
                mode, query, self.schema, k=fetch_k, prefetch_k=prefetch_k, rrf_k=rrf_k,
                weights=self.weights if weights is None else weights, filter=as_filter(filter),
                max_query_tokens=max_tokens,
            )  # fmt: skip
            plan = mmr_plan(candidates, dense, k=k, lambda_mult=lambda_mult)
        hits = await self._io(self.backend.query, plan, False)
        return to_search_results(hits, plan, query, self.schema, False, None)

    async def get(self, ids: Sequence[UserId], with_vectors: bool = False) -> list[StoredPoint]:
        """The stored points for ``ids``, in that order; ids not stored are simply absent."""
        pids = point_ids_of(ids)
        return to_stored_points(await self._io(self.backend.retrieve, pids, with_vectors), pids)

    async def scroll(
        self,
        filter: FilterLike = None,
        *,
        limit: int | None = 10,
        offset: UserId | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], PointId | None]:
        """One page of stored points, as Qdrant's ``scroll``: ``(points, next_offset)``.

        Points come in point-id order, at most ``limit`` of them, those matching ``filter``
        only (a filter node or a Mongo-style dict; ``None``: all). Pass ``next_offset`` back as
        ``offset=`` for the next page; it is ``None`` after the last page. It is a point id
        (an int or a UUID string), which ``offset=`` takes as any id. ``limit=None`` returns
        every matching point from ``offset`` on (fetched in pages), and ``None`` as offset.
        """
        flt, start = as_filter(filter), None if offset is None else to_point_id(offset)
        page_size = SCROLL_PAGE if limit is None else _check_limit(limit)
        points: list[StoredPoint] = []
        while True:
            hits, start = await self._io(self.backend.scroll, flt, page_size, start, with_vectors)
            points += to_stored_points(hits)
            if limit is not None or start is None:
                return points, start

    async def count(self, filter: FilterLike = None) -> int:
        """How many points match ``filter`` (all points for ``None``); exact."""
        return await self._io(self.backend.count, as_filter(filter))

    # ------------------------------------------------------------------------ maintenance
    async def delete(self, ids: Sequence[UserId]) -> None:
        """Delete these points; ids not stored are ignored."""
        await self._io(self.backend.delete, point_ids_of(ids))

    async def delete_where(self, filter: FilterLike) -> None:
        """Delete every point that matches ``filter`` (a filter node or a Mongo-style dict).

        ``None`` or an empty filter raises instead of deleting everything: call :meth:`clear`
        for that.
        """
        await self._io(self.backend.delete_where, required_filter(filter, "delete_where"))

    async def delete_by_doc_id(self, doc_id: str) -> None:
        """Delete every chunk of one source document (``doc_id`` is payload-indexed)."""
        await self._io(self.backend.delete_where, Condition("$doc_id", "eq", check_doc_id(doc_id)))

    async def clear(self) -> None:
        """Delete every point; the collection and its schema stay."""
        await self._io(self.backend.clear)

    async def optimize(self) -> None:
        """Build indexes now (Edge has no background optimizer; a no-op on a server)."""
        await self._io(self.backend.optimize)


def blocking(op: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> Callable[Concatenate[Any, P], R]:
    """The sync method for a :class:`StoreOperations` coroutine: runs it to its end at once.

    The sync store's hooks never suspend, so one ``send`` completes the coroutine and its
    result (or exception) comes back as from a plain call.
    """

    @functools.wraps(op)
    def run(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        steps = op(self, *args, **kwargs)
        try:
            steps.send(None)
        except StopIteration as done:
            return done.value
        steps.close()
        raise RuntimeError(f"{op.__name__}() suspended on a sync store; its I/O hooks must not await.")

    return run

