"""M3VectorStore / M3Retriever with the tiny BGE-M3 checkpoint: modes, filters, ids, metadata, passes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from m3_rag.cache import CachedEncoder
from m3_rag.encoder import M3Encoder
from m3_rag.scoring import lexical_scores, maxsim_scores
from m3_rag.store import AsyncM3Store, M3Store
from m3_rag_langchain import BGEM3Embeddings, EmbeddingsEncoder, M3Retriever, M3VectorStore

TEXTS = [
    "The cat sat on the mat.",
    "Dogs chase cats in the garden.",
    "Quantum chromodynamics describes the strong force.",
    "Paris is the capital of France.",
    "Berlin ist die Hauptstadt Deutschlands.",
    "Green tea is brewed at eighty degrees.",
    "The mat was red and the cat was black.",
    "Rivers flow into the sea.",
]
METAS = [
    {"n": i, "lang": "de" if i == 4 else "en", "tags": {"parity": "even" if i % 2 == 0 else "odd", "even": i % 2 == 0}}
    for i in range(len(TEXTS))
]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]
MODES = ("dense", "sparse", "hybrid", "hybrid+rerank", "m3")


@pytest.fixture(params=["memory", "edge"])
def where(request, tmp_path) -> dict:
    return {"location": ":memory:"} if request.param == "memory" else {"path": str(tmp_path / "edge")}


# Every token stored as encoded, so scores compare with the encoder's (pooling: test_store_colbert).
EXACT = {"colbert_pool_factor": 1, "colbert_datatype": "float16"}


@pytest.fixture
def vs(tiny_encoder, where):
    store = M3VectorStore.from_texts(TEXTS, BGEM3Embeddings(encoder=tiny_encoder), METAS, ids=IDS, **where, **EXACT)
    yield store
    store.close()


# Dense cosine and ColBERT MaxSim of a text with itself are 1, the maximum; a lexical dot
# product has no such bound, so sparse-based modes are checked against the numbers instead.
@pytest.mark.parametrize("mode", ["dense", "hybrid+rerank"])
def test_exact_text_is_top(vs, mode):
    for i in (0, 3, 5):
        doc, score = vs.similarity_search_with_score(TEXTS[i], k=3, mode=mode)[0]
        assert doc == Document(id=IDS[i], page_content=TEXTS[i], metadata=METAS[i])
        assert np.isfinite(score)


def test_hybrid_rerank_equals_maxsim_over_candidates(vs, tiny_encoder):
    # With prefetch_k covering the corpus, every document is a candidate: the order must be
    # BGE-M3's MaxSim order, computed here independently of Qdrant.
    query = "Where did the cat sit on a mat?"
    q = tiny_encoder.encode_queries([query], outputs=("colbert",)).colbert[0]
    want = maxsim_scores(q, tiny_encoder.encode_documents(TEXTS, outputs=("colbert",)).colbert)
    order = np.argsort(-want, kind="stable")[:5]
    got = vs.similarity_search_with_score(query, k=5, mode="hybrid+rerank", prefetch_k=len(TEXTS))
    assert [d.id for d, _ in got] == [IDS[i] for i in order]
    np.testing.assert_allclose([s for _, s in got], want[order], rtol=1e-2, atol=1e-3)  # float16 on disk


def test_sparse_mode_equals_lexical_scores(vs, tiny_encoder):
    query = "the cat and the mat"
    q = tiny_encoder.encode_queries([query], outputs=("sparse",)).sparse[0]
    want = lexical_scores(q, tiny_encoder.encode_documents(TEXTS, outputs=("sparse",)).sparse)
    order = [i for i in np.argsort(-want, kind="stable")[:3] if want[i] > 0]
    assert len(order) >= 2
    got = vs.similarity_search_with_score(query, k=3, mode="sparse")
    assert [d.id for d, _ in got][: len(order)] == [IDS[i] for i in order]
    np.testing.assert_allclose([s for _, s in got][: len(order)], want[order], rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_adapter_returns_what_the_core_store_returns(vs, mode):
    query = "capital city of France"
    core = vs.store.search(query, mode=mode, k=4)
    got = vs.similarity_search_with_score(query, k=4, mode=mode)
    assert [(d.id, d.page_content, d.metadata) for d, _ in got] == [(h.id, h.text, h.metadata) for h in core]
    # Repeated searches may differ in the last float bits (summation order in the engine).
    np.testing.assert_allclose([s for _, s in got], [h.score for h in core], rtol=1e-6)


def test_m3_weights_default_to_the_core_stores(tiny_encoder):
    vs = M3VectorStore(BGEM3Embeddings(encoder=tiny_encoder), location=":memory:")
    assert vs.weights is None and vs.store.weights == tuple(tiny_encoder.config.default_weights)  # the model's
    vs.close()
    core = M3Store(tiny_encoder, location=":memory:", weights=(0.1, 0.6, 0.3))
    vs = M3VectorStore.from_store(core)
    vs.add_texts(TEXTS, ids=IDS)
    query = "capital city of France"
    for options, weights in (({}, (0.1, 0.6, 0.3)), ({"weights": (0.0, 0.0, 1.0)}, (0.0, 0.0, 1.0))):
        want = core.search(query, mode="m3", k=4, weights=weights)
        got = vs.similarity_search_with_score(query, k=4, mode="m3", **options)
        assert [d.id for d, _ in got] == [h.id for h in want]
        np.testing.assert_allclose([s for _, s in got], [h.score for h in want], rtol=1e-6)
    vs.close()


def test_metadata_is_exactly_the_users(vs):
    for doc in vs.similarity_search("cat", k=len(TEXTS)):
        i = IDS.index(doc.id)
        assert doc.metadata == METAS[i]  # nested dicts too, no store-internal keys
        assert doc.page_content == TEXTS[i]


def test_filters(vs):
    docs = vs.similarity_search("capital", k=8, filter={"lang": "de"})
    assert [d.id for d in docs] == ["doc-4"]
    docs = vs.similarity_search("cat", k=8, filter={"n": {"$gte": 5}, "tags.parity": "even"})
    assert sorted(d.id for d in docs) == ["doc-6"]
    docs = vs.similarity_search("cat", k=8, mode="dense", filter={"$or": [{"n": 1}, {"n": {"$in": [2, 3]}}]})
    assert sorted(d.id for d in docs) == ["doc-1", "doc-2", "doc-3"]
    with pytest.raises(ValueError, match="unknown filter operator"):
        vs.similarity_search("cat", filter={"n": {"$between": [1, 2]}})


def test_ids_get_delete(vs):
    got = vs.get_by_ids(["doc-3", "nope", "doc-1"])
    assert sorted(d.id for d in got) == ["doc-1", "doc-3"]
    assert {d.id: d.metadata for d in got} == {"doc-1": METAS[1], "doc-3": METAS[3]}
    assert vs.delete(["doc-3", "missing"]) is True
    assert vs.get_by_ids(["doc-3"]) == []
    assert vs.store.count() == len(TEXTS) - 1
    with pytest.raises(ValueError, match="delete\\(\\) needs ids"):
        vs.delete()
    assert vs.store.count() == len(TEXTS) - 1  # the bad call lost nothing
    vs.clear()
    assert vs.store.count() == 0


def test_add_documents_keeps_and_generates_ids(vs):
    docs = [Document(page_content="new one", metadata={"k": 1}, id="mine"), Document(page_content="new two")]
    ids = vs.add_documents(docs)
    assert ids[0] == "mine" and ids[1] and ids[1] != "mine"
    assert docs[1].id is None  # the caller's document is not mutated
    assert {d.id for d in vs.get_by_ids(ids)} == set(ids)
    with pytest.raises(ValueError, match="got 1 ids for 2 texts"):
        vs.add_texts(["a", "b"], ids=["x"])


async def test_async_matches_sync(vs):
    sync = vs.similarity_search_with_score("cat on a mat", k=3, filter={"lang": "en"})
    got = await vs.asimilarity_search_with_score("cat on a mat", k=3, filter={"lang": "en"})
    assert [d for d, _ in got] == [d for d, _ in sync]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in sync], rtol=1e-6)
    ids = await vs.aadd_texts(["async text"], [{"a": 1}], ids=["a1"])
    assert [d.page_content for d in await vs.aget_by_ids(ids)] == ["async text"]
    assert await vs.adelete(["a1"]) is True
    assert vs.get_by_ids(["a1"]) == []


def test_relevance_scores(vs):
    scored = vs.similarity_search_with_relevance_scores(TEXTS[2], k=3)
    assert scored[0][0].id == "doc-2"
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    raw = vs.similarity_search_with_score(TEXTS[2], k=3)
    np.testing.assert_allclose([s for _, s in scored], [min(1.0, (s + 1) / 2) for _, s in raw], rtol=1e-6)
    with pytest.raises(NotImplementedError, match="mode 'sparse' has no bounded score"):
        vs.similarity_search_with_relevance_scores(TEXTS[2], k=3, mode="sparse")


def test_unknown_search_option_raises(vs):
    with pytest.raises(TypeError, match="unknown search option"):
        vs.similarity_search("cat", k=2, fitler={"lang": "en"})


def test_as_retriever_passes_mode_and_filter(vs):
    retriever = vs.as_retriever(search_kwargs={"k": 3, "mode": "sparse", "filter": {"lang": "en"}})
    got = retriever.invoke(TEXTS[0])
    assert got == vs.similarity_search(TEXTS[0], k=3, mode="sparse", filter={"lang": "en"})
    assert got[0].id == "doc-0"


async def test_m3_retriever_per_call_options(vs):
    r = M3Retriever(vectorstore=vs, k=3)
    assert len(r.invoke("cat")) == 3
    assert len(r.invoke("cat", k=1)) == 1
    assert [d.id for d in r.invoke("Hauptstadt", filter={"lang": "de"})] == ["doc-4"]
    dense = r.invoke(TEXTS[1], mode="dense")
    assert dense == vs.similarity_search(TEXTS[1], k=3, mode="dense")
    assert await r.ainvoke(TEXTS[1], mode="dense") == dense
    scored = M3Retriever(vectorstore=vs, k=2, score_key="score").invoke(TEXTS[5])
    assert scored[0].id == "doc-5" and scored[0].metadata == {**METAS[5], "score": pytest.approx(1.0, abs=1e-2)}
    with pytest.raises(ValueError, match="k must be >= 1"):
        r.invoke("cat", k=0)


def test_one_forward_pass_per_ingested_batch(tiny_checkpoint):
    encoder = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    embeddings = BGEM3Embeddings(encoder=CachedEncoder(encoder))
    vs = M3VectorStore(embeddings, location=":memory:")
    vs.add_texts(TEXTS, METAS, batch_size=64)
    assert (encoder.stats.forward_passes, encoder.stats.texts_encoded) == (1, len(TEXTS))
    # The dense embeddings of the same texts come from the cache: no second pass.
    embeddings.embed_documents(TEXTS)
    assert encoder.stats.forward_passes == 1
    vs.add_texts([f"extra text number {i}" for i in range(6)], batch_size=3)
    assert (encoder.stats.forward_passes, encoder.stats.texts_encoded) == (3, len(TEXTS) + 6)
    vs.close()


def test_dense_only_mode(where):
    emb = DeterministicFakeEmbedding(size=6)
    vs = M3VectorStore.from_texts(TEXTS, emb, METAS, ids=IDS, **where)
    assert vs.mode == "dense"
    assert vs.similarity_search(TEXTS[3], k=1)[0].id == "doc-3"
    assert vs.similarity_search("x", k=8, filter={"lang": "de"})[0].id == "doc-4"
    for mode in ("sparse", "hybrid", "hybrid+rerank", "m3"):
        with pytest.raises(ValueError, match="dense"):
            vs.similarity_search("cat", mode=mode)
    vs.close()


def test_embeddings_encoder_contract():
    enc = EmbeddingsEncoder(DeterministicFakeEmbedding(size=5))
    assert enc.dense_dim == 5 and enc.outputs == ("dense",)
    out = enc.encode_documents(["a", "b", "c"])
    assert out.dense.shape == (3, 5) and out.sparse is None and out.colbert is None and len(out) == 3
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="dense-only"):
        enc.encode_queries(["a"], outputs=("dense", "sparse"))
    with pytest.raises(ValueError, match="returned 5-dim vectors, expected 7"):
        EmbeddingsEncoder(DeterministicFakeEmbedding(size=5), dense_dim=7).encode_documents(["a"])


async def test_async_calls_use_the_native_async_store(tiny_encoder):
    # Given an AsyncM3Store (as built for url=), async methods go to it, not to a thread over
    # the sync store: here each has its own in-memory database, so the routing is visible.
    sync_store = M3Store(tiny_encoder, location=":memory:")
    async_store = AsyncM3Store(tiny_encoder, location=":memory:")
    vs = M3VectorStore(BGEM3Embeddings(encoder=tiny_encoder), store=sync_store, async_store=async_store)
    ids = await vs.aadd_texts(TEXTS[:3], METAS[:3], ids=IDS[:3])
    assert await async_store.count() == 3 and sync_store.count() == 0
    assert [d.id for d in await vs.aget_by_ids(ids)] == IDS[:3]
    assert (await vs.asimilarity_search(TEXTS[1], k=1))[0].id == "doc-1"
    assert vs.similarity_search(TEXTS[1], k=1) == []
    await vs.adelete(["doc-0"])
    assert await async_store.count() == 2
    await vs.aclose()


def test_store_and_connection_options_conflict(tiny_encoder):
    store = M3Store(tiny_encoder, location=":memory:")
    with pytest.raises(ValueError, match="store= was given together with"):
        M3VectorStore(BGEM3Embeddings(encoder=tiny_encoder), store=store, location=":memory:")
    vs = M3VectorStore.from_store(store)
    vs.add_texts(["shared collection"], ids=["s1"])
    assert [p.text for p in store.get(["s1"])] == ["shared collection"]  # one collection, two APIs
    with pytest.raises(TypeError, match="expected a langchain_core Embeddings"):
        M3VectorStore(tiny_encoder, location=":memory:")
    store.close()


async def test_concurrent_async_calls_on_in_process_backend(vs):
    queries = [TEXTS[i] for i in (0, 2, 3, 5, 7)] * 2
    results = await asyncio.gather(*(vs.asimilarity_search(q, k=1, mode="dense") for q in queries))
    assert [r[0].page_content for r in results] == queries


async def test_from_documents_and_afrom_texts(tiny_encoder, where):
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    docs = [Document(page_content=t, metadata=m, id=i) for t, m, i in zip(TEXTS[:3], METAS[:3], IDS[:3])]
    vs = M3VectorStore.from_documents(docs, emb, **where)
    assert sorted(d.id for d in vs.get_by_ids(IDS[:3])) == IDS[:3]
    vs.close()
    avs = await M3VectorStore.afrom_texts(TEXTS[:2], emb, METAS[:2], ids=IDS[:2], location=":memory:")
    assert (await avs.asimilarity_search(TEXTS[1], k=1))[0] == docs[1]
    await avs.aclose()
