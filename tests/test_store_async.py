"""AsyncM3Store: the same behaviour as M3Store, natively async on qdrant-client, off-loop on Edge."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from qdrant_client import AsyncQdrantClient

from m3_rag.store import AsyncM3Store, M3Store, SchemaMismatchError, StoreLockedError
from m3_rag.store.backends.client import AsyncClientBackend
from test_store_helpers import FakeEncoder

TEXTS = ["red apples in a bowl", "green pears on a tree", "blue cars on the road", "red cars in a garage"]
IDS = ["a", "b", 3, "d"]
META = [{"colour": "red"}, {"colour": "green"}, {"colour": "blue"}, {"colour": "red"}]


def make(kind: str, tmp_path, encoder) -> AsyncM3Store:
    if kind == "edge":
        return AsyncM3Store(encoder, path=tmp_path / "idx")
    return AsyncM3Store(encoder, location=":memory:")


@pytest.mark.parametrize("kind", ["edge", "memory"])
async def test_async_store_full_cycle(kind, tmp_path):
    async with make(kind, tmp_path, FakeEncoder()) as store:
        assert await store.add_texts(TEXTS, ids=IDS, metadatas=META, doc_ids=["x", "x", "y", "y"]) == IDS
        assert await store.count() == 4
        for mode in ("dense", "sparse", "hybrid", "hybrid+rerank", "m3"):
            hits = await store.search("red apples", mode=mode, k=2)
            assert hits[0].id == "a" and hits[0].metadata == {"colour": "red"}
        hits = await store.search("cars", k=4, filter={"colour": "red"}, with_mode_scores=True)
        assert {h.id for h in hits} <= {"a", "d"} and hits[0].id == "d"
        assert set(hits[0].mode_scores) == {"dense", "sparse", "colbert"}
        assert [p.id for p in await store.get(["d", "missing", 3])] == ["d", 3]
        await store.delete(["a"])
        await store.delete_by_doc_id("y")
        assert await store.count() == 1
        await store.clear()
        assert await store.count() == 0


@pytest.mark.parametrize("kind", ["edge", "memory"])
async def test_async_scroll_and_delete_where(kind, tmp_path):
    async with make(kind, tmp_path, FakeEncoder()) as store:
        await store.add_texts(TEXTS, ids=IDS, metadatas=META)
        page, next_offset = await store.scroll({"colour": "red"}, limit=1)
        rest, last = await store.scroll({"colour": "red"}, limit=1, offset=next_offset)
        assert last is None and {p.id for p in page + rest} == {"a", "d"}
        (point,), _ = await store.scroll({"colour": "blue"}, with_vectors=True)
        assert point.id == 3 and point.text == TEXTS[2] and point.dense is not None
        with pytest.raises(ValueError, match=r"call clear\(\)"):
            await store.delete_where({})
        await store.delete_where({"colour": {"$in": ["red", "green"]}})
        assert [p.id for p in (await store.scroll())[0]] == [3]


async def test_async_scroll_and_delete_where_await_the_async_client():
    store = AsyncM3Store(FakeEncoder(), location=":memory:")
    await store.add_texts(TEXTS, ids=IDS, metadatas=META)
    client, awaited = store.backend.client, []

    def spy(name):
        real = getattr(client, name)

        async def call(*args, **kwargs):
            awaited.append(name)
            return await real(*args, **kwargs)

        return call

    client.scroll, client.delete = spy("scroll"), spy("delete")
    assert len((await store.scroll(limit=10))[0]) == 4
    await store.delete_where({"colour": "red"})
    assert awaited == ["scroll", "delete"] and await store.count() == 2
    await store.close()


async def test_sync_store_runs_inside_an_event_loop(tmp_path):
    # The sync store never touches asyncio: usable from async code (e.g. a notebook) as is.
    store = M3Store(FakeEncoder(), location=":memory:")
    store.add_texts(TEXTS, ids=IDS)
    assert store.count() == 4 and store.search("red apples", k=1)[0].id == "a"
    store.close()


async def test_async_server_path_is_native_async_client():
    store = AsyncM3Store(FakeEncoder(), location=":memory:")
    assert isinstance(store.backend, AsyncClientBackend)
    assert isinstance(store.backend.client, AsyncQdrantClient)
    await store.add_texts(["x y"], ids=[1])
    assert await store.count() == 1
    await store.close()


async def test_async_edge_matches_sync_results(tmp_path):
    sync = M3Store(FakeEncoder(), path=tmp_path / "idx")
    sync.add_texts(TEXTS, ids=IDS, metadatas=META)
    expected = [(h.id, h.score) for h in sync.search("red cars", mode="m3", k=4)]
    sync.close()
    async with AsyncM3Store(FakeEncoder(), path=tmp_path / "idx") as store:
        got = [(h.id, h.score) for h in await store.search("red cars", mode="m3", k=4)]
        assert got == expected
        with pytest.raises(StoreLockedError):
            M3Store(FakeEncoder(), path=tmp_path / "idx")


async def test_async_schema_mismatch_raises_on_open(tmp_path):
    M3Store(FakeEncoder(dense_dim=16), path=tmp_path / "idx").close()
    store = AsyncM3Store(FakeEncoder(dense_dim=8), path=tmp_path / "idx")
    with pytest.raises(SchemaMismatchError, match="16-dim"):
        await store.count()
    await store.close()


async def test_edge_calls_do_not_block_the_event_loop(tmp_path):
    store = await AsyncM3Store(FakeEncoder(), path=tmp_path / "idx").open()
    sync_upsert = store.backend.sync.upsert
    threads: list[int] = []

    def slow_upsert(points):  # stands in for a slow disk: a blocking call of 0.3 s
        threads.append(threading.get_ident())
        time.sleep(0.3)
        sync_upsert(points)

    store.backend.sync.upsert = slow_upsert
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await store.add_texts(TEXTS, ids=IDS)
    task.cancel()
    assert threads and threading.get_ident() not in threads
    assert ticks >= 10  # the loop kept running while the Edge call blocked its worker thread
    assert await store.count() == 4
    await store.close()
