""":class:`M3Store`: BGE-M3 texts in one Qdrant collection, searched in one round trip per query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from m3_rag.store.backends.base import Backend
from m3_rag.store.core import backend_location, new_ids, point_ids_of, query_outputs, to_search_results, to_stored_points
from m3_rag.store.filters import Condition, FilterLike, as_filter
from m3_rag.store.ids import UserId, to_point_id
from m3_rag.store.ingest import batched_inputs, max_colbert_rows, prepare_points
from m3_rag.store.queries import DEFAULT_MODE, DEFAULT_RRF_K, DEFAULT_WEIGHTS, build_plan
from m3_rag.store.results import SearchResult, StoredPoint
from m3_rag.store.schema import StoreSchema, schema_from_encoder
from m3_rag.types import M3Output

__all__ = ["M3Store", "DEFAULT_COLLECTION"]

DEFAULT_COLLECTION = "m3"


class M3Store:
    """A BGE-M3 index on Qdrant: Edge (``path=``), a server (``url=``) or local mode (``location=":memory:"``).

    The collection is created on first use (sized from ``encoder.dense_dim``/``colbert_dim``)
    or validated if it exists. See ``docs/architecture.md`` (Store) for the whole API.
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
        self.backend: Backend = _make_backend(
            path, location, url, client, collection, api_key, prefer_grpc, shard_number, replication_factor, client_kwargs
        )
        self.backend.open(self.schema)

    # --------------------------------------------------------------------------------- writes
    def add_texts(
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
        total = len(texts) if hasattr(texts, "__len__") else None  # type: ignore[arg-type]
        added: list[UserId] = []
        with tqdm(total=total, disable=not show_progress, unit="text", desc="indexing") as bar:
            for b_texts, b_ids, b_meta, b_docs, b_extra in batched_inputs(texts, ids, metadatas, doc_ids, extras, batch_size):
                b_ids = b_ids if b_ids is not None else new_ids(len(b_texts))
                rows = list(range(len(b_texts)))
                if skip_existing:
                    stored = {str(h.point_id) for h in self.backend.retrieve(point_ids_of(b_ids))}
                    rows = [i for i in rows if str(to_point_id(b_ids[i])) not in stored]
                if rows:
                    pick = (lambda col: None if col is None else [col[i] for i in rows])  # noqa: E731
                    sub_texts = pick(b_texts)
                    encoded = self.encoder.encode_documents(sub_texts, outputs=self.schema.outputs)
                    self.add_encoded(sub_texts, encoded, pick(b_ids), pick(b_meta), pick(b_docs), pick(b_extra))
                added.extend(b_ids)
                bar.update(len(b_texts))
        return added

    def add_encoded(
        self,
        texts: Sequence[str],
        encoded: M3Output,
        ids: Sequence[UserId] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        doc_ids: Sequence[str | None] | None = None,
        extras: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[UserId]:
        """Upsert texts already encoded (e.g. by a framework's embedding class); one write."""
        ids = list(ids) if ids is not None else new_ids(len(texts))
        points = prepare_points(
            list(texts), encoded, self.schema, ids=ids, metadatas=metadatas, doc_ids=doc_ids, extras=extras
        )
        self.backend.upsert(points)
        return ids

    # ---------------------------------------------------------------------------------- reads
    def search(
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
        """Encode the query (only the outputs the mode needs) and run one ``query_points``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, found {type(query).__name__}. Fix: use search_encoded for vectors.")
        encoded = self.encoder.encode_queries([query], outputs=query_outputs(mode, self.schema, with_mode_scores))
        return self.search_encoded(encoded, mode, k, filter, prefetch_k, weights, with_mode_scores, rrf_k)

    def search_encoded(
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
        hits = self.backend.query(plan, with_vectors=with_mode_scores)
        return to_search_results(hits, plan, query, self.schema, with_mode_scores, max_tokens)

    def get(self, ids: Sequence[UserId], with_vectors: bool = False) -> list[StoredPoint]:
        """The stored points for ``ids``, in that order; ids not stored are simply absent."""
        pids = point_ids_of(ids)
        return to_stored_points(self.backend.retrieve(pids, with_vectors), pids)

    def count(self, filter: FilterLike = None) -> int:
        return self.backend.count(as_filter(filter))

    # ---------------------------------------------------------------------------- maintenance
    def delete(self, ids: Sequence[UserId]) -> None:
        self.backend.delete(point_ids_of(ids))

    def delete_by_doc_id(self, doc_id: str) -> None:
        """Delete every chunk of one source document (``doc_id`` is payload-indexed)."""
        self.backend.delete_where(Condition("$doc_id", "eq", _doc_id(doc_id)))

    def clear(self) -> None:
        """Delete every point; the collection and its schema stay."""
        self.backend.clear()

    def optimize(self) -> None:
        """Build indexes now (Edge has no background optimizer; a no-op on a server)."""
        self.backend.optimize()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> M3Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"M3Store(collection={self.collection!r}, backend={type(self.backend).__name__}, outputs={self.schema.outputs})"


def _doc_id(doc_id: str) -> str:
    if not isinstance(doc_id, str):
        raise TypeError(f"doc_id {doc_id!r} is a {type(doc_id).__name__}; expected a str. Fix: pass str(doc_id).")
    return doc_id


def _make_backend(
    path: Any, location: Any, url: Any, client: Any, collection: str, api_key: Any, prefer_grpc: bool,
    shard_number: Any, replication_factor: Any, client_kwargs: dict[str, Any],
) -> Backend:  # fmt: skip
    kind = backend_location(path, location, url, client)
    if kind == "path":
        from m3_rag.store.backends.edge import EdgeBackend

        return EdgeBackend(path, collection)
    from qdrant_client import QdrantClient

    from m3_rag.store.backends.client import ClientBackend, ServerOptions

    if kind == "client":
        if not isinstance(client, QdrantClient):
            raise TypeError(f"client= takes a qdrant_client.QdrantClient, found {type(client).__name__}.")
        qc = client
    elif kind == "location":
        qc = QdrantClient(location=location, **client_kwargs)
    else:
        qc = QdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc, **client_kwargs)
    return ClientBackend(qc, collection, ServerOptions(shard_number, replication_factor))
