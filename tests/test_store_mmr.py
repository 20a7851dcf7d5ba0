"""MMR, search by a caller's vector, and the async view of an open store, on both backends."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from qdrant_client import QdrantClient

from m3_rag.store import AsyncM3Store, M3Store
from test_store_helpers import FakeEncoder

BACKENDS = ["edge", "local"]
# Three near-duplicates of the query, then texts that share fewer of its words.
TEXTS = [
    "cats in the park",
    "the cats in the park",
    "cats in the park today",
    "cats chase birds",
    "a park bench at night",
    "dogs in the garden",
    "stock markets fell",
    "bread needs flour",
]
NEAR_DUPLICATES = {0, 1, 2}
QUERY = "cats in the park"
MODES = ["dense", "sparse", "hybrid", "hybrid+rerank", "m3"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    encoder = FakeEncoder()
    if request.param == "edge":
        s = M3Store(encoder, path=tmp_path / "index")
    else:
        s = M3Store(encoder, client=QdrantClient(":memory:"))
    s.add_texts(TEXTS, ids=list(range(len(TEXTS))), metadatas=[{"n": i} for i in range(len(TEXTS))])
    yield s
    s.close()


def _ids(hits) -> list:
    return [h.id for h in hits]


@pytest.mark.parametrize("mode", MODES)
def test_mmr_trades_near_duplicates_for_diversity(store, mode):
    plain = _ids(store.search(QUERY, mode=mode, k=3))
    diverse = _ids(store.search_mmr(QUERY, k=3, fetch_k=8, lambda_mult=0.2, mode=mode))
    assert set(plain) <= NEAR_DUPLICATES  # the plain top 3 are the three near-copies
    assert len(diverse) == 3 and len(set(diverse) & NEAR_DUPLICATES) == 1
    assert diverse != plain


def test_mmr_at_lambda_one_is_the_dense_order(store):
    plain = store.search(QUERY, mode="dense", k=5)
    mmr = store.search_mmr(QUERY, k=5, fetch_k=8, lambda_mult=1.0, mode="dense")
    assert _ids(mmr) == _ids(plain)
    # MMR hits carry their dense (cosine) score
    np.testing.assert_allclose([h.score for h in mmr], [h.score for h in plain], atol=1e-5)


@pytest.mark.parametrize("mode", ["hybrid+rerank", "m3"])
def test_mmr_picks_only_from_the_mode_s_filtered_candidates(store, mode):
    flt = {"n": {"$gte": 2}}
    candidates = set(_ids(store.search(QUERY, mode=mode, k=4, filter=flt)))
    picked = _ids(store.search_mmr(QUERY, k=2, fetch_k=4, lambda_mult=0.3, mode=mode, filter=flt))
    assert len(picked) == 2 and set(picked) <= candidates and all(i >= 2 for i in picked)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"k=0; expected a positive int"),
        ({"k": 5, "fetch_k": 3}, r"fetch_k=3; expected an int >= k=5.*Fix: raise fetch_k"),
        ({"lambda_mult": 1.5}, r"lambda_mult=1.5; expected a number in \[0, 1\].*Fix"),
        ({"lambda_mult": float("nan")}, r"lambda_mult=nan; expected a number in \[0, 1\]"),
        ({"lambda_mult": True}, r"lambda_mult=True; expected a number"),
    ],
)
def test_bad_mmr_arguments_raise_before_encoding(store, kwargs, message):
    before = store.encoder.texts_encoded
    with pytest.raises(ValueError, match=message):
        store.search_mmr(QUERY, **kwargs)
    assert store.encoder.texts_encoded == before


def test_search_by_vector_is_dense_search_with_that_vector(store):
    vector = store.encoder.encode_queries([QUERY]).dense[0]
    by_text = store.search(QUERY, mode="dense", k=4)
    by_vector = store.search_by_vector(vector.tolist(), k=4)
    assert _ids(by_vector) == _ids(by_text)
    np.testing.assert_allclose([h.score for h in by_vector], [h.score for h in by_text], atol=1e-5)
    mmr = store.search_mmr_by_vector(vector, k=3, fetch_k=8, lambda_mult=0.2, filter={"n": {"$lt": 7}})
    assert len(set(_ids(mmr)) & NEAR_DUPLICATES) == 1 and 7 not in _ids(mmr)


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ([0.1] * 3, r"shape \(3,\).*expected 16 numbers"),
        ([[0.1] * 16], r"shape \(1, 16\)"),
        ("not a vector", r"expected 16 numbers"),
        ([float("nan")] * 16, r"NaN or inf"),
    ],
)
def test_a_bad_query_vector_names_the_expected_size(store, vector, message):
    with pytest.raises(ValueError, match=message):
        store.search_by_vector(vector)


def test_the_async_view_shares_the_open_store(store):
    view = store.aio()
    assert isinstance(view, AsyncM3Store) and store.aio() is view

    async def use_it():
        await view.add_texts(["cats nap in the sun"], ids=[100])
        return (
            await view.count(),
            _ids(await view.search(QUERY, k=3)),
            _ids(await view.search_mmr(QUERY, k=3, fetch_k=8, lambda_mult=0.2)),
        )

    count, hits, mmr = asyncio.run(use_it())
    assert count == store.count() == len(TEXTS) + 1  # written through the view, seen by the store
    assert set(hits) == set(_ids(store.search(QUERY, k=3)))  # (the three tie on ColBERT)
    assert mmr == _ids(store.search_mmr(QUERY, k=3, fetch_k=8, lambda_mult=0.2))
