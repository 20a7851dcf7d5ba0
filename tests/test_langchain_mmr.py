"""M3VectorStore's MMR and search-by-vector methods (sync + async) on both in-process backends."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from m3_rag_langchain import BGEM3Embeddings, M3VectorStore

# Four near-duplicates of the query (d0-d3), then six unrelated texts.
TEXTS = [
    "The cat sat on the mat.",
    "The cat sat on the mat!",
    "the cat sat on the mat.",
    "The cat sat on a mat.",
    "Dogs chase cats in the garden.",
    "Quantum chromodynamics describes the strong force.",
    "Paris is the capital of France.",
    "Green tea is brewed at eighty degrees.",
    "Rivers flow into the sea.",
    "Berlin ist die Hauptstadt Deutschlands.",
]
IDS = [f"d{i}" for i in range(len(TEXTS))]
METAS = [{"n": i, "group": "dup" if i < 4 else "other"} for i in range(len(TEXTS))]
DUPES = set(IDS[:4])
QUERY = TEXTS[0]
QUERIES = [QUERY, "capital city of France", "strong force in physics", "tea and rivers"]
MMR_MODES = ("dense", "hybrid", "hybrid+rerank", "m3")  # sparse: only the texts sharing words are candidates


@pytest.fixture(params=["memory", "edge"])
def where(request, tmp_path) -> dict:
    return {"location": ":memory:"} if request.param == "memory" else {"path": str(tmp_path / "edge")}


@pytest.fixture
def vs(tiny_encoder, where):
    store = M3VectorStore.from_texts(TEXTS, BGEM3Embeddings(encoder=tiny_encoder), METAS, ids=IDS, **where)
    yield store
    store.close()


def _ids(docs) -> list[str]:
    return [d.id for d in docs]


@pytest.mark.parametrize("mode", MMR_MODES)
def test_mmr_skips_near_duplicates(vs, mode):
    top = vs.similarity_search(QUERY, k=4, mode=mode)
    assert set(_ids(top)) == DUPES  # plain similarity: the four near-duplicates
    for lambda_mult in (0.0, 0.3):
        picked = vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=10, lambda_mult=lambda_mult, mode=mode)
        assert len(picked) == 4 and len(set(_ids(picked))) == 4
        assert picked[0].id == "d0"  # the best hit is picked first
        assert set(_ids(picked)) & DUPES == {"d0"}  # ... and none of its near-duplicates after it
        assert picked != top
        for doc in picked:  # documents carry their stored text and metadata
            i = IDS.index(doc.id)
            assert (doc.page_content, doc.metadata) == (TEXTS[i], METAS[i])


def test_mmr_with_lambda_one_is_dense_similarity(vs):
    for query in QUERIES:
        for k in (1, 3, 6):
            mmr = vs.max_marginal_relevance_search(query, k=k, fetch_k=len(TEXTS), lambda_mult=1.0, mode="dense")
            assert mmr == vs.similarity_search(query, k=k, mode="dense")


def test_mmr_filter_and_default_mode(vs):
    picked = vs.max_marginal_relevance_search(QUERY, k=3, fetch_k=10, lambda_mult=0.0, filter={"group": "dup"})
    assert len(picked) == 3 and set(_ids(picked)) <= DUPES  # the filter bounds the candidates
    default = vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=10, lambda_mult=0.3)  # store mode: hybrid+rerank
    assert default == vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=10, lambda_mult=0.3, mode="hybrid+rerank")
    assert len(vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=4, lambda_mult=0.0)) == 4  # fetch_k == k


def test_mmr_argument_errors(vs):
    with pytest.raises(ValueError, match="fetch_k=2; expected an int >= k=4.*Fix: raise fetch_k"):
        vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=2)
    with pytest.raises(ValueError, match="lambda_mult=1.5; expected a number in \\[0, 1\\]"):
        vs.max_marginal_relevance_search(QUERY, lambda_mult=1.5)
    with pytest.raises(ValueError, match="unknown mode|expected one of|mode"):
        vs.max_marginal_relevance_search(QUERY, mode="bm25")
    with pytest.raises(TypeError, match="unknown search option"):
        vs.max_marginal_relevance_search(QUERY, lambda_mul=0.2)


async def test_async_mmr_matches_sync(vs):
    for mode in MMR_MODES:
        sync = vs.max_marginal_relevance_search(QUERY, k=4, fetch_k=10, lambda_mult=0.3, mode=mode)
        assert await vs.amax_marginal_relevance_search(QUERY, k=4, fetch_k=10, lambda_mult=0.3, mode=mode) == sync
    with pytest.raises(ValueError, match="fetch_k"):
        await vs.amax_marginal_relevance_search(QUERY, k=4, fetch_k=2)


async def test_as_retriever_mmr(vs):
    kwargs = {"k": 3, "fetch_k": 10, "lambda_mult": 0.2, "mode": "dense", "filter": {"n": {"$lte": 8}}}
    retriever = vs.as_retriever(search_type="mmr", search_kwargs=kwargs)
    got = retriever.invoke(QUERY)
    assert len(got) == 3
    assert got == vs.max_marginal_relevance_search(QUERY, **kwargs)
    assert set(_ids(got)) & DUPES == {"d0"} and "d9" not in _ids(got)
    assert await retriever.ainvoke(QUERY) == got
    assert len(vs.as_retriever(search_type="mmr", search_kwargs={"k": 2}).invoke(QUERY)) == 2
    with pytest.raises(ValueError, match="mode"):
        vs.as_retriever(search_type="mmr", search_kwargs={"mode": "bm25"})  # checked at construction


async def test_as_retriever_similarity_score_threshold(vs):
    retriever = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 4, "score_threshold": 0.999, "mode": "dense"}
    )
    got = retriever.invoke(TEXTS[6])
    assert _ids(got) == ["d6"]  # only the exact text is that close
    assert await retriever.ainvoke(TEXTS[6]) == got
    loose = vs.as_retriever(search_type="similarity_score_threshold", search_kwargs={"k": 4, "score_threshold": 0.0})
    assert len(loose.invoke(QUERY)) == 4


async def test_by_vector_equals_text_dense_search(vs):
    for query in QUERIES:
        vector = vs.embeddings.embed_query(query)
        want = vs.similarity_search_with_score(query, k=5, mode="dense")
        for got in (
            vs.similarity_search_with_score_by_vector(vector, k=5),
            await vs.asimilarity_search_with_score_by_vector(vector, k=5),
            vs.similarity_search_with_score_by_vector(np.asarray(vector), k=5, mode="dense"),
        ):
            assert [d for d, _ in got] == [d for d, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)
        docs = [d for d, _ in want]
        assert vs.similarity_search_by_vector(vector, k=5) == docs
        assert await vs.asimilarity_search_by_vector(vector, k=5) == docs
        flt = {"group": "other"}
        assert vs.similarity_search_by_vector(vector, k=3, filter=flt) == vs.similarity_search(
            query, k=3, mode="dense", filter=flt
        )


async def test_mmr_by_vector_equals_text_dense_mmr(vs):
    for query in QUERIES:
        vector = vs.embeddings.embed_query(query)
        for lambda_mult in (0.0, 0.3, 1.0):
            want = vs.max_marginal_relevance_search(query, k=4, fetch_k=10, lambda_mult=lambda_mult, mode="dense")
            got = vs.max_marginal_relevance_search_by_vector(vector, k=4, fetch_k=10, lambda_mult=lambda_mult)
            assert got == want
            assert await vs.amax_marginal_relevance_search_by_vector(vector, 4, 10, lambda_mult) == want
    vector = vs.embeddings.embed_query(QUERY)
    picked = vs.max_marginal_relevance_search_by_vector(vector, k=4, fetch_k=10, lambda_mult=0.0, filter={"n": {"$gte": 1}})
    assert "d0" not in _ids(picked) and len(set(_ids(picked)) & DUPES) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda vs, v, **kw: vs.similarity_search_by_vector(v, **kw),
        lambda vs, v, **kw: vs.similarity_search_with_score_by_vector(v, **kw),
        lambda vs, v, **kw: vs.max_marginal_relevance_search_by_vector(v, **kw),
    ],
    ids=["similarity", "with_score", "mmr"],
)
def test_by_vector_errors(vs, call):
    dim = vs.store.schema.dense_dim
    for bad in ([0.1] * (dim + 1), [0.1] * (dim - 1), [[0.1] * dim], "not a vector"):
        with pytest.raises(ValueError, match=f"expected {dim} numbers.*Fix: pass the embedding of the same model"):
            call(vs, bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        call(vs, [float("nan")] * dim)
    vector = vs.embeddings.embed_query(QUERY)
    for mode in ("sparse", "hybrid", "hybrid+rerank", "m3"):
        with pytest.raises(ValueError, match=f"a dense vector can only run mode 'dense'.*mode='{re.escape(mode)}'"):
            call(vs, vector, mode=mode)
    with pytest.raises(TypeError, match="unknown option.*for a search by vector"):
        call(vs, vector, prefetch_k=10)


async def test_async_by_vector_errors_name_the_text_method(vs):
    vector = vs.embeddings.embed_query(QUERY)
    with pytest.raises(ValueError, match="call max_marginal_relevance_search\\(query, mode='hybrid'\\)"):
        await vs.amax_marginal_relevance_search_by_vector(vector, mode="hybrid")
    with pytest.raises(ValueError, match="call similarity_search\\(query, mode='m3'\\)"):
        await vs.asimilarity_search_by_vector(vector, mode="m3")
    with pytest.raises(ValueError, match="Fix: pass the embedding"):
        await vs.asimilarity_search_with_score_by_vector(vector[:-1])


async def test_dense_only_store_by_vector_and_mmr(where):
    emb = DeterministicFakeEmbedding(size=8)
    vs = M3VectorStore.from_texts(TEXTS, emb, METAS, ids=IDS, **where)
    vector = emb.embed_query(TEXTS[5])  # not unit length: the collection's cosine normalises it
    assert vs.similarity_search_by_vector(vector, k=1)[0].id == "d5"
    assert vs.similarity_search_by_vector(vector, k=4) == vs.similarity_search(TEXTS[5], k=4)
    assert await vs.asimilarity_search_by_vector(vector, k=4) == vs.similarity_search(TEXTS[5], k=4)
    # A query that is no stored text: with lambda_mult=0.5 and the query equal to the first
    # pick, relevance and redundancy cancel and every candidate ties.
    query = "a query that is none of the texts"
    vector = emb.embed_query(query)
    for lambda_mult in (0.0, 0.3, 0.8):
        mmr = vs.max_marginal_relevance_search(query, k=3, fetch_k=10, lambda_mult=lambda_mult)
        assert len(mmr) == 3 and mmr[0] == vs.similarity_search(query, k=1)[0]
        assert vs.max_marginal_relevance_search_by_vector(vector, k=3, fetch_k=10, lambda_mult=lambda_mult) == mmr
        assert await vs.amax_marginal_relevance_search(query, k=3, fetch_k=10, lambda_mult=lambda_mult) == mmr
    with pytest.raises(ValueError, match="dense"):
        vs.max_marginal_relevance_search(query, mode="hybrid")
    await vs.aclose()


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("m3-store")]


async def test_async_calls_run_on_the_store_view_and_close_releases_it(tiny_encoder, tmp_path):
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    path = str(tmp_path / "edge")
    vs = M3VectorStore.from_texts(TEXTS, emb, METAS, ids=IDS, path=path)
    assert vs._aio is vs.store.aio()  # the core store's async view, shared with other adapters
    before = len(_store_threads())
    assert (await vs.asimilarity_search(QUERY, k=1, mode="dense"))[0].id == "d0"
    assert len(_store_threads()) == before + 1  # one worker thread
    await vs.aclose()
    assert len(_store_threads()) == before  # stopped with the store
    again = M3VectorStore(emb, path=path)  # the Edge path is free again, the data kept
    assert (await again.asimilarity_search(QUERY, k=1, mode="dense"))[0].id == "d0"
    again.close()
    assert len(_store_threads()) == before
