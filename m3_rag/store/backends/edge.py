"""Qdrant Edge backend (``qdrant-edge-py``, pinned: its beta API changes between releases).

Qdrant's own engine in-process: one shard directory per collection at ``<path>/<collection>``,
server segment format, ColBERT float16 on disk, a write-ahead log that makes every returned
upsert durable. The WAL is locked, so a second opener of the same path gets
:class:`StoreLockedError`.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from m3_rag.store.backends.base import Hit, StorageFullError, StoreLockedError, refuse_vacuous_filter
from m3_rag.store.filters import Condition, FilterClauses, FilterNode, build_filter
from m3_rag.store.ids import PointId
from m3_rag.store.ingest import PointData
from m3_rag.store.names import edge_collection_dir
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

__all__ = ["EdgeBackend", "edge_config", "to_edge_filter", "DISK_MARGIN_BYTES", "SETTINGS_FILE", "WAL_FLUSH_BYTES"]

# Edge persists its config here (qdrant-edge-py 0.9.0); we read it to validate before loading.
_CONFIG_FILE = "edge_config.json"
#: Our record of the collection's ColBERT settings, beside Edge's own config (Edge keeps none).
SETTINGS_FILE = "m3_rag.json"
_NO_MODIFIER = getattr(qe.Modifier, "None")  # `None` is a Python keyword
_DATATYPES = {
    "float16": qe.VectorStorageDatatype.Float16, "float32": qe.VectorStorageDatatype.Float32,
    # qdrant-edge-py 0.9.0's type stub lacks Turbo4, which the compiled module has.
    "turbo8": qe.VectorStorageDatatype.Turbo8, "turbo4": qe.VectorStorageDatatype.Turbo4,  # type: ignore[attr-defined]
}  # fmt: skip


#: Free disk kept beyond each write's own size. The engine writes its WAL and segments through
#: memory-mapped files, and a mapped write to a full disk kills the process with SIGBUS (no
#: error to catch), so every write, reopen and optimize first checks that the disk has room
#: for it (estimated generously) plus this margin: a new 32 MiB WAL segment and index files.
DISK_MARGIN_BYTES = 64 * 2**20
#: The engine logs every upsert in its WAL, vectors as float32 (8x a turbo4 token), until a
#: flush: 200k default points left a 24 GB WAL beside 3.2 GB of segments. Flushing once this
#: much was logged since the last flush bounds the WAL, and so the disk an ingestion needs.
WAL_FLUSH_BYTES = 1 * 2**30


def _disk_free(path: Path) -> int:
    while not path.exists():  # the shard folder may not exist yet: ask about the nearest parent
        path = path.parent
    return shutil.disk_usage(path).free


def _allocated_bytes(folder: Path) -> int:
    return sum(f.lstat().st_blocks * 512 for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def _write_bytes(points: Sequence[PointData]) -> int:
    """A generous estimate of the disk one upsert takes: each point is written twice (WAL and
    segment), vectors as float32, the payload as JSON."""
    total = 0
    for p in points:
        floats = p.dense.size + (p.colbert.size if p.colbert is not None else 0)
        sparse = 8 * len(p.sparse.indices) if p.sparse is not None else 0
        total += 4 * floats + sparse + len(json.dumps(p.payload)) + 256
    return 2 * total


def edge_config(schema: StoreSchema) -> qe.EdgeConfig:
    # always_ram: HNSW walks the int8 copy in RAM; the float32 originals only rescore the hits.
    quantization = (
        qe.ScalarQuantizationConfig(qe.ScalarType.Int8, always_ram=True) if schema.dense_quantization == "int8" else None
    )
    vectors: dict[str, qe.EdgeVectorParams] = {
        DENSE: qe.EdgeVectorParams(size=schema.dense_dim, distance=qe.Distance.Cosine, quantization_config=quantization)
    }
    if schema.has_colbert:
        vectors[COLBERT] = qe.EdgeVectorParams(
            size=schema.colbert_size,
            distance=qe.Distance.Cosine,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            datatype=_DATATYPES[schema.colbert.datatype],
            # m=0: no HNSW graph; ColBERT only re-scores prefetched candidates.
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000),
            memory=qe.Memory.Cold,
        )
    sparse: dict[str, qe.EdgeSparseVectorParams] | None = (
        {SPARSE: qe.EdgeSparseVectorParams(modifier=_NO_MODIFIER)} if schema.has_sparse else None
    )
    return qe.EdgeConfig(vectors=vectors, sparse_vectors=sparse)


def _write_json_atomically(file: Path, data: dict[str, Any]) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, file)


def _read_config(config_file: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        found = None if isinstance(config, dict) else f"a JSON {type(config).__name__}"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        config, found = None, f"invalid JSON ({exc})"
    if found is not None:
        raise ValueError(
            f"{config_file} holds {found}; expected the JSON object Qdrant Edge wrote when it created this "
            "index. The folder is damaged or not an m3-rag index. Fix: restore it from a backup, or delete "
            "the folder and index again."
        )
    return config


def _found_specs(config: dict[str, Any]) -> dict[str, VectorSpec]:
    specs: dict[str, VectorSpec] = {}
    for name, v in (config.get("vectors") or {}).items():
        multi = v.get("multivector_config")
        specs[name] = VectorSpec(
            name,
            "multi" if multi else "dense",
            v.get("size"),
            str(v.get("distance", "")).lower(),
            multi.get("comparator") if multi else None,
        )
    for name, v in (config.get("sparse_vectors") or {}).items():
        specs[name] = VectorSpec(name, "sparse", modifier=(v or {}).get("modifier") or "none")
    return specs


class EdgeBackend:
    def __init__(self, path: str | Path, collection: str) -> None:
        self.root = Path(path)
        self.collection = collection
        self.shard_path = edge_collection_dir(self.root, collection)  # confined, before any file is touched
        self._shard: qe.EdgeShard | None = None
        self._logged_bytes = 0  # written to the WAL since the last flush (estimated)

    # ------------------------------------------------------------------------------ lifecycle
    def _require_space(self, need: int, what: str) -> None:
        free = _disk_free(self.shard_path)
        if free < need + DISK_MARGIN_BYTES:
            mb = 2**20
            raise StorageFullError(
                errno.ENOSPC,
                f"no space left for {what} at {self.shard_path}: {free / mb:.0f} MiB free, expected at least "
                f"{(need + DISK_MARGIN_BYTES) / mb:.0f} MiB ({need / mb:.1f} MiB for it plus a "
                f"{DISK_MARGIN_BYTES // mb} MiB margin; the engine maps its files, and a full disk would kill the process). "
                "Nothing of this call was written. Fix: free space and rerun: acknowledged points are kept.",
            )

    def open(self, schema: StoreSchema) -> StoreSchema:
        """Create or load the shard; returns ``schema`` with the collection's ColBERT settings."""
        config_file = self.shard_path / _CONFIG_FILE
        try:
            if config_file.exists():
                config = _read_config(config_file)
                check_schema(self.collection, _found_specs(config), schema)
                dense = (config.get("vectors") or {}).get(DENSE) or {}
                found = quantization_kind(dense.get("quantization_config") or config.get("quantization_config"))
                schema = schema.with_recorded_dense(self.collection, found)
                if schema.has_colbert:
                    schema = schema.with_recorded(self.collection, self._recorded(config))
                # Loading replays the WAL's unflushed tail into segments (after a crash, up to
                # the whole log: measured 37 MB for a 27 MB WAL), so room for the log's size.
                self._require_space(_allocated_bytes(self.shard_path / "wal"), "reopening the index")
                self._shard = qe.EdgeShard.load(str(self.shard_path))
            else:
                schema = schema.for_new_collection()
                self._require_space(0, "creating the index")
                self.shard_path.mkdir(parents=True, exist_ok=True)
                # The settings first: a shard never exists without them (a crash in between
                # leaves no edge_config.json, so the next open creates the shard again).
                _write_json_atomically(self.shard_path / SETTINGS_FILE, schema.colbert.to_json())
                self._shard = qe.EdgeShard.create(str(self.shard_path), edge_config(schema))
                self._shard.update(qe.UpdateOperation.create_field_index(DOC_ID_KEY, qe.PayloadSchemaType.Keyword))
        except Exception as exc:
            if "WouldBlock" in str(exc):  # the WAL file lock is taken
                raise StoreLockedError(
                    f"the Edge index at {self.shard_path} is already open (found its write-ahead log "
                    "locked by another process or store); expected to be its only opener. Fix: close "
                    "the other store (store.close()) or process first, or use a Qdrant server (url=...) "
                    "for access from several processes."
                ) from exc
            raise
        return schema

    def _recorded(self, config: dict[str, Any]) -> ColbertSettings:
        """The ColBERT settings the shard was created with: the datatype from Edge's own config,
        the pool factor from our settings file (absent: a 0.1.0 collection, unpooled)."""
        datatype = str(((config.get("vectors") or {}).get(COLBERT) or {}).get("datatype") or "float32").lower()
        pool_factor: object = LEGACY_POOL_FACTOR
        settings_file = self.shard_path / SETTINGS_FILE
        if settings_file.exists():
            pool_factor = _read_config(settings_file).get("colbert_pool_factor")
        try:
            return ColbertSettings.validated(datatype, pool_factor)
        except ValueError as exc:
            raise SchemaMismatchError(
                f"collection {self.collection!r} at {self.shard_path} records ColBERT settings m3-rag cannot use: "
                f"{exc} Fix: restore {SETTINGS_FILE} from a backup, or index into a new collection."
            ) from exc

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("this store is closed (or was never opened). Fix: create a new store.")
        return self._shard

    def close(self) -> None:
        if self._shard is not None:
            shard, self._shard = self._shard, None
            shard.flush()
            shard.close()

    def optimize(self) -> None:
        """Build the dense HNSW / sparse indexes now (Edge runs no background optimizer)."""
        # Optimizing rewrites segments into new ones before it drops the old.
        self._require_space(_allocated_bytes(self.shard_path / "segments"), "optimizing the index")
        self.shard.optimize()

    # --------------------------------------------------------------------------------- writes
    def upsert(self, points: Sequence[PointData]) -> None:
        if points:
            need = _write_bytes(points)
            self._require_space(need, f"writing {len(points)} points")
            self.shard.update(qe.UpdateOperation.upsert_points([_point(p) for p in points]))
            self._logged_bytes += need // 2  # _write_bytes counts the WAL and the segment
            if self._logged_bytes >= WAL_FLUSH_BYTES:
                self.shard.flush()  # persists the segments and truncates the WAL
                self._logged_bytes = 0

    def delete(self, point_ids: Sequence[PointId]) -> None:
        if point_ids:
            self.shard.update(qe.UpdateOperation.delete_points(list(point_ids)))

    def delete_where(self, filter: FilterNode) -> None:
        translated = to_edge_filter(filter)
        refuse_vacuous_filter(translated, "delete_where")
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(translated))

    def clear(self) -> None:
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(qe.Filter()))

    # ---------------------------------------------------------------------------------- reads
    def count(self, filter: FilterNode | None = None) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True, filter=_maybe_filter(filter))))

    def retrieve(self, point_ids: Sequence[PointId], with_vectors: bool = False) -> list[Hit]:
        if not point_ids:
            return []
        records = self.shard.retrieve(list(point_ids), with_payload=True, with_vector=with_vectors)
        return [_hit(r, 0.0, with_vectors) for r in records]

    def scroll(
        self, filter: FilterNode | None, limit: int, offset: PointId | None = None, with_vectors: bool = False
    ) -> tuple[list[Hit], PointId | None]:
        """One page in point-id order and the next page's first id (None after the last page)."""
        request = qe.ScrollRequest(
            offset=offset, limit=limit, filter=_maybe_filter(filter), with_payload=True, with_vector=with_vectors
        )
        records, next_offset = self.shard.scroll(request)
        if isinstance(next_offset, uuid.UUID):
            next_offset = str(next_offset)
        return [_hit(r, 0.0, with_vectors) for r in records], next_offset

    def query(self, plan: QueryPlan, with_vectors: bool | list[str] = False) -> list[Hit]:
        return [_hit(r, r.score, with_vectors) for r in self.shard.query(_request(plan, with_vectors, True))]

    def query_batch(self, plans: Sequence[QueryPlan]) -> list[list[Hit]]:
        # One call per plan: the engine is in-process, and its query_batch was slower here
        # (8.1 vs 3.6 ms for m3's two rescoring queries on 3k points).
        return [[_hit(r, r.score, False) for r in self.shard.query(_request(p, False, False))] for p in plans]


def _request(plan: QueryPlan, with_vectors: bool | list[str], with_payload: bool) -> qe.QueryRequest:
    flt = _maybe_filter(plan.filter)
    if plan.point_ids is not None:
        only = qe.HasIdCondition(set(plan.point_ids))
        flt = qe.Filter(must=[only] if flt is None else [only, flt])
    return qe.QueryRequest(
        limit=plan.limit,
        query=_scoring(plan.query),
        prefetches=[_prefetch(p, flt) for p in plan.prefetches] or None,
        filter=flt,
        # Exact: no HNSW and no quantized copy, so the scores are the originals'.
        params=qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True)) if plan.exact else None,
        with_payload=with_payload,
        with_vector=with_vectors,
    )


# ---------------------------------------------------------------------------------- translation
def _point(p: PointData) -> qe.Point:
    vector: dict[str, Any] = {DENSE: p.dense.tolist()}
    if p.sparse is not None:
        vector[SPARSE] = qe.SparseVector(p.sparse.indices.tolist(), p.sparse.values.tolist())
    if p.colbert is not None:
        vector[COLBERT] = p.colbert.tolist()
    return qe.Point(p.id, vector, p.payload)


def _vector(q: VectorQuery) -> Any:
    if isinstance(q.vector, SparseVector):
        return qe.SparseVector(q.vector.indices.tolist(), q.vector.values.tolist())
    return q.vector.tolist()


def _scoring(query: Any) -> Any:
    if isinstance(query, VectorQuery):
        return qe.Query.Nearest(_vector(query), using=query.using)
    if isinstance(query, RrfFusion):
        return qe.Fusion.Rrf(k=query.k)
    if isinstance(query, MmrQuery):
        return qe.Mmr(query.vector.tolist(), query.lambda_mult, query.candidates, using=query.using)
    raise TypeError(f"unsupported query {query!r}")


def _prefetch(p: Prefetch, flt: qe.Filter | None) -> qe.Prefetch:
    # The filter goes on every stage so no stage can fill its limit with excluded points.
    return qe.Prefetch(
        limit=p.limit,
        query=_scoring(p.query) if p.query is not None else None,
        prefetches=[_prefetch(c, flt) for c in p.prefetches] or None,
        filter=flt,
    )


def _hit(record: Any, score: float, with_vectors: bool | list[str]) -> Hit:
    pid = record.id
    point_id: PointId = str(pid) if isinstance(pid, uuid.UUID) else pid
    vectors: dict[str, Any] = {}
    if with_vectors and record.vector:
        for name, v in record.vector.items():
            if name == SPARSE:
                vectors[name] = SparseVector(np.asarray(v.indices, np.int64), np.asarray(v.values, np.float32))
            else:
                vectors[name] = np.asarray(v, dtype=np.float32)
    return Hit(point_id, float(score), dict(record.payload or {}), vectors)


class _EdgeFilterParts(FilterClauses):
    """Qdrant Edge's filter classes, for the shared walk :func:`~m3_rag.store.filters.build_filter`."""

    filter_class = qe.Filter

    def refuse(self, condition: Condition) -> None:
        op, v = condition.op, condition.value
        if (op in ("eq", "ne") and isinstance(v, bool)) or (op in ("in", "nin") and any(isinstance(x, bool) for x in v)):
            # qdrant-edge-py 0.9.0 turns a boolean match value into the integer 1, which then
            # matches nothing: refuse rather than return a silently empty result.
            raise ValueError(
                f"filter on {condition.key!r} compares with a boolean ({v!r}); Qdrant Edge 0.9.0 cannot match "
                f"booleans (it reads True as 1). Fix: store the flag as a string or an int and filter on that, "
                f"or use a Qdrant server (url=...) or location=':memory:'."
            )

    def match_value(self, key: str, value: str | int | bool) -> qe.FieldCondition:
        return qe.FieldCondition(key, match=qe.MatchValue(value))

    def match_any(self, key: str, values: list[str]) -> qe.FieldCondition:
        return qe.FieldCondition(key, match=qe.MatchAny(values))

    def match_text(self, key: str, text: str) -> qe.FieldCondition:
        return qe.FieldCondition(key, match=qe.MatchText(text))

    def range_float(self, key: str, bounds: dict[str, float]) -> qe.FieldCondition:
        return qe.FieldCondition(key, range=qe.RangeFloat(**bounds))

    def range_datetime(self, key: str, bounds: dict[str, dt.date]) -> qe.FieldCondition:
        # Edge takes datetimes as RFC 3339 text.
        return qe.FieldCondition(key, range=qe.RangeDateTime(**{op: v.isoformat() for op, v in bounds.items()}))

    def is_empty(self, key: str) -> qe.IsEmptyCondition:
        return qe.IsEmptyCondition(key)


_FILTER_PARTS = _EdgeFilterParts()


def _maybe_filter(node: FilterNode | None) -> qe.Filter | None:
    return None if node is None else to_edge_filter(node)


def to_edge_filter(node: FilterNode) -> qe.Filter:
    return build_filter(node, _FILTER_PARTS)
