"""Edge's write-ahead log stays bounded while a long ingestion runs (it holds float32 copies)."""

from __future__ import annotations

import pytest

import m3_rag.store.backends.edge as edge
from m3_rag.store import M3Store
from test_store_helpers import FakeEncoder

WORDS = [f"w{i}" for i in range(400)]


def _wal_bytes_after_ingest(tmp_path, name: str) -> int:
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(30)) for i in range(900)]
    store = M3Store(FakeEncoder(colbert_dim=1024), path=tmp_path / name, colbert_pool_factor=1, colbert_datatype="float16")
    try:
        store.add_texts(texts, ids=list(range(len(texts))), batch_size=50)
        wal = store.backend.shard_path / "wal"
        return edge._allocated_bytes(wal)
    finally:
        store.close()


def test_a_long_ingestion_flushes_so_the_wal_stays_bounded(tmp_path, monkeypatch):
    # 900 points x 30 tokens x 1024 floats: ~110 MB logged as float32
    monkeypatch.setattr(edge, "WAL_FLUSH_BYTES", 2**60)
    unbounded = _wal_bytes_after_ingest(tmp_path, "never")
    monkeypatch.setattr(edge, "WAL_FLUSH_BYTES", 8 * 2**20)
    bounded = _wal_bytes_after_ingest(tmp_path, "flushed")
    assert unbounded > 100 * 2**20
    assert bounded < unbounded / 2, (bounded, unbounded)


@pytest.mark.parametrize("flush_bytes", [8 * 2**20])
def test_flushed_points_are_all_there_after_reopen(tmp_path, monkeypatch, flush_bytes):
    monkeypatch.setattr(edge, "WAL_FLUSH_BYTES", flush_bytes)
    _wal_bytes_after_ingest(tmp_path, "idx")
    with M3Store(FakeEncoder(colbert_dim=1024), path=tmp_path / "idx") as store:
        assert store.count() == 900
        assert [p.id for p in store.get([0, 899])] == [0, 899]
