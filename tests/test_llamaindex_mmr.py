"""MMR and text_search through LlamaIndex (M3VectorStore query modes, M3Retriever's MMR), on
Qdrant Edge and on qdrant-client local mode, sync and async.

The corpus holds three near-duplicates of TEXTS[0]: with the tiny random model their dense
vectors are within ~0.02 cosine of the original's (far closer than any other passage), so a
query equal to TEXTS[0] has the four copies as its dense top 4, and MMR must pass them over.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from m3_rag_llamaindex import M3Retriever  # noqa: E402
from test_llamaindex_store import META, TEXTS, backend, build_index, doc_of, make_docs, open_store  # noqa: E402,F401

Q = TEXTS[0]
DUPS = [Q + " Indeed.", Q + " Really.", Q.replace("plant", "green plant")]
COPIES = {0, 8, 9, 10}  # doc numbers of TEXTS[0] and its near-duplicates
N = len(TEXTS) + len(DUPS)


def corpus() -> list[Document]:
    dups = [
        Document(text=t, metadata=dict(META[0]), id_=f"doc-{n}", excluded_embed_metadata_keys=list(META[0]))
        for n, t in enumerate(DUPS, start=len(TEXTS))
    ]
    return make_docs() + dups


@pytest.fixture(scope="module")
def index(tiny_encoder, backend, tmp_path_factory):  # noqa: F811
    store = open_store(tiny_encoder, backend, tmp_path_factory.mktemp("mmr"))
    yield build_index(store, corpus())
    store.close()


def ids(hits) -> list[str]:
    return [h.node.node_id for h in hits]


def mmr(index, k, **kwargs):
    return index.as_retriever(vector_store_query_mode="mmr", similarity_top_k=k, vector_store_kwargs=kwargs)


# ------------------------------------------------------------------------------------ MMR
def test_mmr_passes_over_near_duplicates(index) -> None:
    vs = index.vector_store
    dense = index.as_retriever(similarity_top_k=4).retrieve(Q)
    assert {doc_of(h) for h in dense} == COPIES
    hits = mmr(index, 4, mmr_threshold=0.2).retrieve(Q)
    assert len(hits) == 4 and doc_of(hits[0]) == 0  # the best match first
    assert len({doc_of(h) for h in hits} & COPIES) == 1  # then no other copy
    assert set(ids(hits)) != set(ids(dense))
    # Each node's similarity is its dense cosine with the query.
    cosine = {h.node.node_id: h.score for h in index.as_retriever(similarity_top_k=N).retrieve(Q)}
    assert [h.score for h in hits] == pytest.approx([cosine[i] for i in ids(hits)], abs=1e-4)
    assert hits[0].node.text == Q and hits[0].node.metadata == META[0]
    # The core store's MMR over LlamaIndex's default 4 x k dense candidates.
    core = vs.client.search_mmr(Q, k=4, fetch_k=16, lambda_mult=0.2, mode="dense")
    assert ids(hits) == [str(h.id) for h in core]
    assert [h.score for h in hits] == pytest.approx([h.score for h in core], abs=1e-6)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_mmr_threshold_one_is_dense_similarity(index, k) -> None:
    dense = index.as_retriever(similarity_top_k=k).retrieve(Q)
    for hits in (
        mmr(index, k, mmr_threshold=1.0).retrieve(Q),
        index.vector_store.query(VectorStoreQuery(query_str=Q, mode="mmr", similarity_top_k=k, mmr_threshold=1.0)),
    ):
        got = ids(hits) if isinstance(hits, list) else hits.ids
        scores = [h.score for h in hits] if isinstance(hits, list) else hits.similarities
        assert got == ids(dense)
        assert scores == pytest.approx([h.score for h in dense], abs=1e-4)


def test_mmr_candidates_follow_llamaindex_options(index) -> None:
    def run(**kwargs):
        return ids(mmr(index, 4, mmr_threshold=0.2, **kwargs).retrieve(Q))

    default = run()
    assert default == run(mmr_prefetch_k=16) == run(mmr_prefetch_factor=4.0)
    dense4 = ids(index.as_retriever(similarity_top_k=4).retrieve(Q))
    # Only the dense top 4 as candidates: MMR can only reorder them.
    for narrow in (run(mmr_prefetch_k=4), run(mmr_prefetch_factor=1.0)):
        assert sorted(narrow) == sorted(dense4) and narrow != default
    # The query's own mmr_threshold wins over the kwarg.
    query = VectorStoreQuery(query_str=Q, mode="mmr", similarity_top_k=4, mmr_threshold=0.2)
    assert index.vector_store.query(query, mmr_threshold=1.0).ids == default
    with pytest.raises(ValueError, match="expected one of them"):
        run(mmr_prefetch_k=8, mmr_prefetch_factor=2.0)
    with pytest.raises(ValueError, match="fetch_k=2"):
        run(mmr_prefetch_k=2)
    with pytest.raises(ValueError, match="lambda_mult=1.5"):
        mmr(index, 4, mmr_threshold=1.5).retrieve(Q)


def test_mmr_from_text_or_embedding_and_with_filters(index) -> None:
    vs = index.vector_store
    emb = vs.embed_model.get_query_embedding(Q)
    by_text = vs.query(VectorStoreQuery(query_str=Q, mode="mmr", similarity_top_k=4, mmr_threshold=0.2))
    by_vector = vs.query(VectorStoreQuery(query_embedding=emb, mode="mmr", similarity_top_k=4, mmr_threshold=0.2))
    assert by_text.ids == by_vector.ids == ids(mmr(index, 4, mmr_threshold=0.2).retrieve(Q))
    assert by_text.similarities == pytest.approx(by_vector.similarities, abs=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        vs.query(VectorStoreQuery(query_embedding=emb[:7], mode="mmr", similarity_top_k=2))
    # Filters and doc_ids restrict the candidates.
    not_bio = MetadataFilters(filters=[MetadataFilter(key="topic", value="biology", operator="!=")])
    hits = index.as_retriever(vector_store_query_mode="mmr", similarity_top_k=4, filters=not_bio).retrieve(Q)
    assert len(hits) == 4 and not {doc_of(h) for h in hits} & (COPIES | {6})
    some = ["doc-8", "doc-9", "doc-3"]
    hits = index.as_retriever(vector_store_query_mode="mmr", similarity_top_k=3, doc_ids=some).retrieve(Q)
    assert {doc_of(h) for h in hits} == {8, 9, 3}


# ----------------------------------------------------------------------------- text_search
def test_text_search_is_the_lexical_search(index) -> None:
    vs = index.vector_store
    for q, k in ((Q, 5), (TEXTS[3] + " " + TEXTS[5], 3), ("stone walls", 8), ("Medieval castles moats", 8)):
        hits = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=k).retrieve(q)
        core = vs.client.search(q, mode="sparse", k=k)
        assert hits and ids(hits) == [str(h.id) for h in core]
        assert [h.score for h in hits] == pytest.approx([h.score for h in core], abs=1e-6)
        assert ids(hits) == ids(index.as_retriever(vector_store_query_mode="sparse", similarity_top_k=k).retrieve(q))
    # Lexical: only the passages that share a token with the query, unlike dense search.
    lexical = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=N)
    hits = lexical.retrieve("Medieval castles moats")
    assert [doc_of(h) for h in hits] == [5]
    assert index.as_retriever(vector_store_query_mode="text_search").retrieve("castles moats") == []
    emb = vs.embed_model.get_query_embedding(Q)
    with pytest.raises(ValueError, match="'text_search' needs the query text.*found only an embedding"):
        vs.query(VectorStoreQuery(query_embedding=emb, mode="text_search"))


@pytest.mark.parametrize(
    ("mode", "instead"),
    [("semantic_hybrid", "'hybrid'"), ("svm", "'default'"), ("logistic_regression", "'default'"),
     ("linear_regression", "M3RerankPostprocessor")],
)  # fmt: skip
def test_other_modes_are_refused_with_what_to_use(index, mode, instead) -> None:
    with pytest.raises(ValueError, match=rf"'{mode}' is not supported.*Fix: use .*{instead}"):
        index.as_retriever(vector_store_query_mode=mode).retrieve(Q)


# ----------------------------------------------------------------------------------- async
ASYNC_CASES = [
    ("default", {}), ("sparse", {}), ("text_search", {}), ("hybrid", {}),
    ("mmr", {"mmr_threshold": 0.2}), ("mmr", {"mmr_threshold": 1.0, "mmr_prefetch_k": 5}),
]  # fmt: skip


async def test_async_agrees_with_sync(index) -> None:
    vs = index.vector_store
    assert vs.aclient is vs.client.aio()  # the in-process engine's async view
    for mode, kwargs in ASYNC_CASES:
        retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=4, vector_store_kwargs=kwargs)
        sync, other = retriever.retrieve(Q), await retriever.aretrieve(Q)
        assert ids(other) == ids(sync) and len(sync) >= 1, mode
        assert [h.score for h in other] == pytest.approx([h.score for h in sync], abs=1e-6), mode
        query = VectorStoreQuery(query_str=TEXTS[4], mode=mode, similarity_top_k=3)
        want, got = vs.query(query, **kwargs), await vs.aquery(query, **kwargs)
        assert got.ids == want.ids and got.similarities == pytest.approx(want.similarities, abs=1e-6), mode
        assert got.nodes[0].text == TEXTS[4] and got.nodes[0].metadata == META[4]
    with pytest.raises(ValueError, match="'text_search' needs the query text"):
        await vs.aquery(VectorStoreQuery(query_embedding=vs.embed_model.get_query_embedding(Q), mode="text_search"))


# ---------------------------------------------------------------------------- M3Retriever
def test_m3_retriever_mmr_is_the_core_mmr(index) -> None:
    vs = index.vector_store
    retriever = M3Retriever(vs, mode="dense", k=4, lambda_mult=0.2)
    hits = retriever.retrieve(Q)
    core = vs.client.search_mmr(Q, k=4, fetch_k=16, lambda_mult=0.2, mode="dense")
    assert ids(hits) == [str(h.id) for h in core] == ids(mmr(index, 4, mmr_threshold=0.2).retrieve(Q))
    assert [h.score for h in hits] == pytest.approx([h.score for h in core], abs=1e-6)
    # Per call: lambda_mult=1 is the dense order; the retriever's own settings stay.
    dense = M3Retriever(vs, mode="dense", k=4).retrieve(Q)
    assert ids(retriever.retrieve(Q, lambda_mult=1.0)) == ids(dense)
    assert ids(retriever.retrieve(Q)) == ids(hits)
    # MMR over another mode's candidates, with a given fetch_k.
    rerank = M3Retriever(vs, k=3, lambda_mult=0.3, fetch_k=8)
    core = vs.client.search_mmr(Q, k=3, fetch_k=8, lambda_mult=0.3, mode="hybrid+rerank")
    assert ids(rerank.retrieve(Q)) == [str(h.id) for h in core]
    assert ids(M3Retriever(vs, k=3).retrieve(Q, lambda_mult=0.3)) == [
        str(h.id) for h in vs.client.search_mmr(Q, k=3, fetch_k=12, lambda_mult=0.3)
    ]


async def test_m3_retriever_mmr_async_agrees_with_sync(index) -> None:
    vs = index.vector_store
    retriever = M3Retriever(vs, mode="m3", k=4, lambda_mult=0.2)
    for kwargs in ({}, {"mode": "dense"}, {"lambda_mult": 1.0, "k": 2}, {"mode": "sparse", "k": 3}):
        sync, other = retriever.retrieve(Q, **kwargs), await retriever.aretrieve(Q, **kwargs)
        assert ids(other) == ids(sync) and sync, kwargs
        assert [h.score for h in other] == pytest.approx([h.score for h in sync], abs=1e-6)


def test_m3_retriever_mmr_errors(index) -> None:
    vs = index.vector_store
    with pytest.raises(ValueError, match="pass lambda_mult too"):
        M3Retriever(vs, fetch_k=8)
    with pytest.raises(ValueError, match="lambda_mult=2"):
        M3Retriever(vs, lambda_mult=2)
    with pytest.raises(ValueError, match="fetch_k=2"):
        M3Retriever(vs, k=4, lambda_mult=0.5, fetch_k=2)
    with pytest.raises(ValueError, match="lambda_mult=-1"):
        M3Retriever(vs, k=4).retrieve(Q, lambda_mult=-1)
