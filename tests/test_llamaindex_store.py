"""M3VectorStore through LlamaIndex's own entry points, on Qdrant Edge and on qdrant-client
local mode, with the tiny random BGE-M3 checkpoint.

The random model knows no semantics, but a query equal to a passage's text is that
passage's nearest neighbour in every mode (identical dense vector, full token overlap, every
query token matched exactly), so "expected nodes" are well defined.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.retrievers import VectorIndexRetriever  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from m3_rag.store import AsyncM3Store, M3Store  # noqa: E402
from m3_rag_llamaindex import M3VectorStore, UnsupportedFilterError  # noqa: E402

TEXTS = [
    "Photosynthesis converts sunlight into chemical energy inside plant leaves.",
    "The central bank raised interest rates to slow inflation.",
    "Volcanic eruptions release ash and sulfur dioxide into the atmosphere.",
    "Marathon runners train for months before the race.",
    "Quantum computers use qubits that can be entangled.",
    "Medieval castles were built with thick stone walls and moats.",
    "Honeybees communicate the location of flowers through a waggle dance.",
    "Glaciers carve valleys as they slowly move downhill.",
]
META = [
    {"topic": "biology", "year": 2015, "tags": ["plants", "energy"], "note": "green leaves"},
    {"topic": "finance", "year": 2016, "tags": ["money"], "note": "rates up"},
    {"topic": "earth", "year": 2017, "tags": ["energy", "air"], "note": "ash cloud"},
    {"topic": "sport", "year": 2018, "tags": [], "note": "long race"},
    {"topic": "physics", "year": 2019, "tags": ["energy", "computing"], "note": "cold qubits"},
    {"topic": "history", "year": 2020, "note": "stone walls"},
    {"topic": "biology", "year": 2021, "tags": ["insects", "plants"], "note": "waggle dance"},
    {"topic": "earth", "year": 2022, "tags": ["ice"], "note": "slow ice"},
]
MODES = ("default", "sparse", "hybrid")


def make_docs() -> list[Document]:
    # Metadata stays out of the embedded text so a query equal to a text matches it exactly.
    return [
        Document(text=t, metadata=dict(m), id_=f"doc-{i}", excluded_embed_metadata_keys=list(m))
        for i, (t, m) in enumerate(zip(TEXTS, META))
    ]


@pytest.fixture(scope="module", params=["edge", "memory"])
def backend(request):
    return request.param


def open_store(encoder, backend, tmp_path, **kwargs) -> M3VectorStore:
    # Every token stored as encoded, so scores compare with the encoder's (pooling: test_store_colbert).
    kwargs = {"colbert_pool_factor": 1, "colbert_datatype": "float16", **kwargs}
    if backend == "edge":
        return M3VectorStore(encoder, tmp_path / "index", **kwargs)
    return M3VectorStore(encoder, location=":memory:", **kwargs)


def build_index(store: M3VectorStore, docs=None) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        make_docs() if docs is None else docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=store.embed_model,
    )


@pytest.fixture
def vs(tiny_encoder, backend, tmp_path):
    store = open_store(tiny_encoder, backend, tmp_path)
    yield store
    store.close()


@pytest.fixture
def index(vs):
    return build_index(vs)


@pytest.fixture(scope="module")
def ro_index(tiny_encoder, backend, tmp_path_factory):
    """One index per backend for the tests that only read."""
    store = open_store(tiny_encoder, backend, tmp_path_factory.mktemp("ro"))
    yield build_index(store)
    store.close()


def doc_of(node_with_score) -> int:
    return int(node_with_score.node.ref_doc_id.split("-")[1])


# ------------------------------------------------------------------------------- retrieval
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_retrieves_the_matching_node(ro_index, mode) -> None:
    retriever = ro_index.as_retriever(vector_store_query_mode=mode, similarity_top_k=3)
    for i, text in enumerate(TEXTS):
        hits = retriever.retrieve(text)
        assert doc_of(hits[0]) == i, f"{mode}: {text!r} -> {[h.node.text for h in hits]}"
        assert hits[0].node.text == text and hits[0].node.metadata == META[i]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        # Sparse returns only passages sharing a token with the query, so up to k.
        assert len(hits) == 3 if mode != "sparse" else 1 <= len(hits) <= 3


def test_result_sizes_follow_llamaindex_parameters(ro_index) -> None:
    q = TEXTS[2]
    assert len(ro_index.as_retriever(similarity_top_k=5).retrieve(q)) == 5
    hybrid = ro_index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=2, hybrid_top_k=4, sparse_top_k=3)
    assert len(hybrid.retrieve(q)) == 4  # hybrid_top_k of the (2 dense + 3 sparse) union
    assert len(ro_index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=6).retrieve(q)) == 6
    dense = ro_index.as_retriever(similarity_top_k=8).retrieve(q)
    sparse = ro_index.as_retriever(vector_store_query_mode="sparse", sparse_top_k=2, similarity_top_k=8).retrieve(q)
    assert len(sparse) == 2 and len(dense) == 8


def test_hybrid_rerank_scores_are_colbert_maxsim(ro_index, tiny_encoder) -> None:
    from m3_rag.scoring import maxsim_scores

    hits = ro_index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=8).retrieve(TEXTS[4])
    q = tiny_encoder.encode_queries([TEXTS[4]]).colbert[0]
    docs = tiny_encoder.encode_documents([h.node.text for h in hits]).colbert
    # Edge keeps ColBERT in float16, hence the tolerance.
    np.testing.assert_allclose([h.score for h in hits], maxsim_scores(q, docs), atol=2e-3)


def test_alpha_weights_dense_against_sparse_in_m3_mode(tiny_encoder, backend, tmp_path) -> None:
    store = open_store(tiny_encoder, backend, tmp_path, hybrid_mode="m3", weights=(1.0, 1.0, 0.0))
    index = build_index(store)
    q = TEXTS[6]
    dense = {h.node.node_id: h.score for h in index.as_retriever(similarity_top_k=8).retrieve(q)}
    sparse = {h.node.node_id: h.score for h in index.as_retriever(vector_store_query_mode="sparse", similarity_top_k=8).retrieve(q)}
    for alpha in (1.0, 0.0, 0.25):
        hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=8, alpha=alpha).retrieve(q)
        assert len(hits) == 8
        for h in hits:
            want = alpha * dense[h.node.node_id] + (1 - alpha) * sparse.get(h.node.node_id, 0.0)
            assert h.score == pytest.approx(want, abs=1e-4), (alpha, h.node.text)
    store.close()


def test_m3_weights_default_to_the_core_stores(tiny_encoder) -> None:
    # Built on an encoder: the core store's weights are the model's.
    own = M3VectorStore(tiny_encoder, location=":memory:", hybrid_mode="m3")
    assert own.weights is None and own.client.weights == tuple(tiny_encoder.config.default_weights)
    own.close()
    # Given a core store: its weights, for plain hybrid queries and for alpha's ColBERT weight.
    core = M3Store(tiny_encoder, location=":memory:", weights=(0.1, 0.6, 0.3))
    store = M3VectorStore(store=core, hybrid_mode="m3")
    index = build_index(store)
    q = TEXTS[2]
    for alpha, weights in ((None, (0.1, 0.6, 0.3)), (0.25, (0.25, 0.75, 0.3))):
        hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=8, alpha=alpha).retrieve(q)
        want = {str(h.id): h.score for h in core.search(q, mode="m3", k=8, weights=weights)}
        assert {h.node.node_id: h.score for h in hits} == pytest.approx(want, abs=1e-5), alpha
    # The store's own weights win over the core store's.
    store.weights = (0.0, 0.0, 1.0)
    hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=8).retrieve(q)
    want = {str(h.id): h.score for h in core.search(q, mode="m3", k=8, weights=(0.0, 0.0, 1.0))}
    assert {h.node.node_id: h.score for h in hits} == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        M3VectorStore(store=core, weights=(1.0, -1.0, 0.0))
    store.close()


@pytest.mark.parametrize("hybrid_mode", ["hybrid", "m3"])
def test_other_hybrid_modes(tiny_encoder, tmp_path, hybrid_mode) -> None:
    store = open_store(tiny_encoder, "memory", tmp_path, hybrid_mode=hybrid_mode)
    retriever = build_index(store).as_retriever(vector_store_query_mode="hybrid", similarity_top_k=4)
    for i, text in enumerate(TEXTS):
        hits = retriever.retrieve(text)
        assert doc_of(hits[0]) == i and len(hits) == 4
    store.close()


def test_alpha_is_refused_where_it_does_not_apply(ro_index) -> None:
    with pytest.raises(ValueError, match="hybrid_mode='m3'"):
        ro_index.as_retriever(vector_store_query_mode="hybrid", alpha=0.5).retrieve(TEXTS[0])


def test_unsupported_query_mode_is_refused(ro_index) -> None:
    with pytest.raises(ValueError, match="'svm' is not supported.*Fix: use 'default'"):
        ro_index.as_retriever(vector_store_query_mode="svm").retrieve(TEXTS[0])


@pytest.mark.parametrize("mode", MODES)
def test_doc_ids_and_node_ids_restrict_every_mode(ro_index, mode) -> None:
    hits = ro_index.as_retriever(vector_store_query_mode=mode, similarity_top_k=8, doc_ids=["doc-1", "doc-3"]).retrieve(
        TEXTS[1] + " " + TEXTS[3]
    )
    assert {doc_of(h) for h in hits} == {1, 3}
    some = [h.node.node_id for h in ro_index.as_retriever(similarity_top_k=8).retrieve(TEXTS[0])][2:5]
    # as_retriever() fixes node_ids itself (empty: the store keeps the text), so build it directly.
    retriever = VectorIndexRetriever(ro_index, vector_store_query_mode=mode, similarity_top_k=8, node_ids=some)
    hits = retriever.retrieve(TEXTS[0])
    assert {h.node.node_id for h in hits} <= set(some) and hits


def test_query_engine_with_mock_llm(ro_index) -> None:
    engine = ro_index.as_query_engine(llm=MockLLM(), vector_store_query_mode="hybrid", similarity_top_k=2)
    response = engine.query(TEXTS[5])
    assert doc_of(response.source_nodes[0]) == 5
    # MockLLM echoes its prompt: the retrieved context reached the LLM.
    assert TEXTS[5] in str(response)


# -------------------------------------------------------------------------------- filters
def expected(pred) -> set[int]:
    return {i for i, m in enumerate(META) if pred(m)}


F = MetadataFilter
FILTER_CASES = [
    ("eq", [F(key="topic", value="earth")], "and", expected(lambda m: m["topic"] == "earth")),
    ("ne", [F(key="topic", value="earth", operator="!=")], "and", expected(lambda m: m["topic"] != "earth")),
    ("gt", [F(key="year", value=2019, operator=">")], "and", expected(lambda m: m["year"] > 2019)),
    ("gte-lt", [F(key="year", value=2016, operator=">="), F(key="year", value=2018, operator="<")], "and", {1, 2}),
    ("lte", [F(key="year", value=2016, operator="<=")], "and", {0, 1}),
    ("in", [F(key="topic", value=["sport", "history"], operator="in")], "and", {3, 5}),
    ("nin", [F(key="topic", value=["earth", "biology"], operator="nin")], "and", {1, 3, 4, 5}),
    ("any", [F(key="tags", value=["ice", "money"], operator="any")], "and", {1, 7}),
    ("all", [F(key="tags", value=["energy", "plants"], operator="all")], "and", {0}),
    ("contains", [F(key="tags", value="energy", operator="contains")], "and", {0, 2, 4}),
    ("text", [F(key="note", value="ice", operator="text_match")], "and", {7}),
    ("is_empty", [F(key="tags", value=None, operator="is_empty")], "and", {3, 5}),
    ("or", [F(key="topic", value="sport"), F(key="year", value=2021, operator=">=")], "or", {3, 6, 7}),
    ("not", [F(key="topic", value="earth"), F(key="topic", value="biology")], "not", {1, 3, 4, 5}),
]


@pytest.mark.parametrize(("name", "filters", "condition", "want"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
@pytest.mark.parametrize("mode", ["default", "hybrid"])
def test_filters(ro_index, mode, name, filters, condition, want) -> None:
    flt = MetadataFilters(filters=filters, condition=condition)
    hits = ro_index.as_retriever(vector_store_query_mode=mode, similarity_top_k=8, filters=flt).retrieve(TEXTS[0])
    assert {doc_of(h) for h in hits} == want


def test_nested_filters(ro_index) -> None:
    # biology or (earth and not after 2020)  ->  0, 6, 2
    flt = MetadataFilters(
        filters=[
            F(key="topic", value="biology"),
            MetadataFilters(
                filters=[
                    F(key="topic", value="earth"),
                    MetadataFilters(filters=[F(key="year", value=2020, operator=">")], condition="not"),
                ],
                condition="and",
            ),
        ],
        condition="or",
    )
    for mode in MODES:
        hits = ro_index.as_retriever(vector_store_query_mode=mode, similarity_top_k=8, filters=flt).retrieve(
            " ".join(TEXTS)
        )
        assert {doc_of(h) for h in hits} <= {0, 2, 6}
        if mode != "sparse":
            assert {doc_of(h) for h in hits} == {0, 2, 6}


def test_inexpressible_filter_raises(ro_index) -> None:
    flt = MetadataFilters(filters=[F(key="note", value=None)])
    with pytest.raises(UnsupportedFilterError, match="value None"):
        ro_index.as_retriever(filters=flt).retrieve(TEXTS[0])


# ----------------------------------------------------------------------- one forward pass
def test_one_forward_pass_per_node_at_ingestion(tiny_encoder, backend, tmp_path) -> None:
    store = open_store(tiny_encoder, backend, tmp_path)
    stats = tiny_encoder.stats
    texts0, passes0 = stats.texts_encoded, stats.forward_passes
    index = build_index(store)
    n_nodes = store.client.count()
    assert n_nodes == len(TEXTS)
    assert stats.texts_encoded - texts0 == n_nodes  # the store's add() re-encoded nothing
    # VectorStoreIndex embeds in batches of embed_batch_size; each is one encoder call
    # (the tiny model fits a batch in one pass).
    assert stats.forward_passes - passes0 == math.ceil(n_nodes / store.embed_model.embed_batch_size)
    assert store.encoder.hits >= n_nodes
    # A hybrid query: the retriever's dense call encodes the query once, the store reuses it.
    texts0 = stats.texts_encoded
    index.as_retriever(vector_store_query_mode="hybrid").retrieve("a brand new query")
    assert stats.texts_encoded - texts0 == 1
    store.close()


def test_a_foreign_embedding_is_refused_and_nothing_is_written(vs) -> None:
    node = TextNode(text=TEXTS[0], id_="n0")
    node.embedding = [0.1] * 7
    with pytest.raises(ValueError, match="7-dim"):
        vs.add([node])
    node.embedding = list(-np.asarray(vs.embed_model.get_text_embedding(TEXTS[0])))
    with pytest.raises(ValueError, match="another model"):
        vs.add([node])
    assert vs.client.count() == 0


# ------------------------------------------------------------------- writes and deletes
def long_docs() -> list[Document]:
    paras = [" ".join(TEXTS[i : i + 4]) for i in (0, 4)]
    return [Document(text=p + " " + p, id_=f"long-{i}", metadata={"k": i}) for i, p in enumerate(paras)]


def test_ingestion_pipeline_rerun_does_not_duplicate_and_delete_removes_a_document(vs) -> None:
    docstore = SimpleDocumentStore()

    def pipeline() -> IngestionPipeline:
        return IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0), vs.embed_model],
            docstore=docstore,
            vector_store=vs,
            docstore_strategy=DocstoreStrategy.UPSERTS,
        )

    docs = long_docs()
    texts0 = vs.encoder.stats.texts_encoded
    first = pipeline().run(documents=docs)
    # The pipeline's embedding step and the store's add(): each distinct chunk text is
    # encoded once (these documents repeat themselves, so some chunks share a text).
    distinct = {n.get_content(metadata_mode="embed") for n in first}
    assert vs.encoder.stats.texts_encoded - texts0 == len(distinct) < len(first)
    per_doc = {d.id_: vs.client.count({"$doc_id": d.id_}) for d in docs}
    assert all(n >= 2 for n in per_doc.values()), per_doc  # several nodes per document
    assert vs.client.count() == len(first) == sum(per_doc.values())

    texts0 = vs.encoder.stats.texts_encoded
    assert pipeline().run(documents=long_docs()) == []  # unchanged: skipped, nothing encoded
    assert vs.encoder.stats.texts_encoded == texts0
    assert vs.client.count() == len(first)

    changed = long_docs()
    changed[0] = Document(text=TEXTS[0], id_="long-0", metadata={"k": 0})
    pipeline().run(documents=changed)  # upsert: the old nodes of long-0 go
    assert vs.client.count({"$doc_id": "long-0"}) == 1
    assert vs.client.count({"$doc_id": "long-1"}) == per_doc["long-1"]

    vs.delete("long-1")
    assert vs.client.count({"$doc_id": "long-1"}) == 0
    assert vs.client.count() == 1


def test_index_delete_ref_doc_removes_all_its_nodes(vs) -> None:
    index = VectorStoreIndex.from_documents(
        long_docs(),
        storage_context=StorageContext.from_defaults(vector_store=vs),
        embed_model=vs.embed_model,
        transformations=[SentenceSplitter(chunk_size=40, chunk_overlap=0)],
    )
    before = vs.client.count({"$doc_id": "long-0"})
    assert before >= 2
    index.delete_ref_doc("long-0")
    assert vs.client.count({"$doc_id": "long-0"}) == 0
    hits = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=10).retrieve(TEXTS[0])
    assert hits and all(h.node.ref_doc_id == "long-1" for h in hits)


def test_get_delete_nodes_and_clear(vs, index) -> None:
    ids = [h.node.node_id for h in index.as_retriever(similarity_top_k=8).retrieve(TEXTS[0])]
    got = vs.get_nodes(node_ids=ids[:3] + ["not-stored"])
    assert [n.node_id for n in got] == ids[:3]
    vs.delete_nodes(node_ids=ids[:2])
    assert vs.client.count() == 6
    assert vs.get_nodes(node_ids=ids[:2]) == []
    with pytest.raises(ValueError, match="no node_ids"):
        vs.delete_nodes()
    assert vs.client.count() == 6  # a refused delete deletes nothing
    vs.clear()
    assert vs.client.count() == 0
    assert index.as_retriever().retrieve(TEXTS[0]) == []


def _docs(nodes) -> list[str]:
    return sorted(n.ref_doc_id for n in nodes)


def test_get_and_delete_nodes_by_filters_and_node_ids(vs, index) -> None:
    earth = MetadataFilters(filters=[F(key="topic", value="earth")])
    everything = MetadataFilters(filters=[F(key="year", value=0, operator=">")])
    node_of = {n.ref_doc_id: n.node_id for n in vs.get_nodes(filters=everything)}
    assert len(node_of) == len(TEXTS)
    got = vs.get_nodes(filters=earth)
    assert _docs(got) == ["doc-2", "doc-7"] and all(n.metadata == META[int(n.ref_doc_id[4:])] for n in got)
    # node_ids and filters: a node must match both; the order is node_ids'.
    asked = [node_of["doc-7"], node_of["doc-0"], node_of["doc-2"]]
    assert [n.ref_doc_id for n in vs.get_nodes(node_ids=asked, filters=earth)] == ["doc-7", "doc-2"]
    assert vs.get_nodes(node_ids=[], filters=earth) == []
    sport_or_recent = MetadataFilters(
        filters=[F(key="topic", value="sport"), F(key="year", value=2021, operator=">=")], condition="or"
    )
    assert _docs(vs.get_nodes(filters=sport_or_recent)) == ["doc-3", "doc-6", "doc-7"]

    vs.delete_nodes(node_ids=[node_of["doc-0"], node_of["doc-2"]], filters=earth)  # doc-0 is not earth: kept
    assert vs.client.count() == len(TEXTS) - 1 and _docs(vs.get_nodes(filters=earth)) == ["doc-7"]
    vs.delete_nodes(filters=sport_or_recent)
    assert _docs(vs.get_nodes(filters=everything)) == ["doc-0", "doc-1", "doc-4", "doc-5"]
    for nothing in ({}, {"filters": MetadataFilters(filters=[])}):
        with pytest.raises(ValueError, match=r"call clear\(\)"):
            vs.delete_nodes(**nothing)
    assert vs.client.count() == 4  # a refused delete deletes nothing


def test_reopening_the_edge_path_finds_everything(tiny_encoder, tmp_path) -> None:
    store = M3VectorStore(tiny_encoder, tmp_path / "index")
    index = build_index(store)
    before = {h.node.node_id: h.node for h in index.as_retriever(similarity_top_k=8).retrieve(TEXTS[0])}
    store.close()

    again = M3VectorStore(tiny_encoder, tmp_path / "index")
    index = VectorStoreIndex.from_vector_store(again, embed_model=again.embed_model)
    for mode in MODES:
        for i, text in enumerate(TEXTS):
            assert doc_of(index.as_retriever(vector_store_query_mode=mode).retrieve(text)[0]) == i
    nodes = again.get_nodes(node_ids=list(before))
    assert [n.model_dump() for n in nodes] == [before[i].model_dump() for i in before]
    again.close()


# ------------------------------------------------------------------------------- async
async def _exercise_async(store: M3VectorStore) -> None:
    index = VectorStoreIndex(
        nodes=[], storage_context=StorageContext.from_defaults(vector_store=store), embed_model=store.embed_model
    )
    nodes = SentenceSplitter().get_nodes_from_documents(make_docs())
    for n in nodes:
        n.embedding = await store.embed_model.aget_text_embedding(n.get_content(metadata_mode="embed"))
    ids = await store.async_add(nodes)
    assert len(ids) == len(TEXTS)
    for mode in MODES:
        hits = await index.as_retriever(vector_store_query_mode=mode, similarity_top_k=2).aretrieve(TEXTS[3])
        assert doc_of(hits[0]) == 3
    result = await store.aquery(VectorStoreQuery(query_str=TEXTS[1], mode="sparse", similarity_top_k=1))
    assert result.nodes[0].ref_doc_id == "doc-1" and result.ids == [result.nodes[0].node_id]
    for mode in ("text_search", "mmr"):
        query = VectorStoreQuery(query_str=TEXTS[6], mode=mode, similarity_top_k=3)
        result = await store.aquery(query, mmr_threshold=0.3)
        assert result.nodes[0].ref_doc_id == "doc-6" and len(result.ids) >= 1, mode
    got = await store.aget_nodes(node_ids=ids[:2])
    assert [n.node_id for n in got] == ids[:2]
    await store.adelete("doc-0")
    await store.adelete_nodes(node_ids=[ids[1]])
    assert await store.aget_nodes(node_ids=ids[:3]) == [n for n in await store.aget_nodes(node_ids=[ids[2]])]
    earth = MetadataFilters(filters=[F(key="topic", value="earth")])
    assert {n.node_id for n in await store.aget_nodes(filters=earth)} == {ids[2], ids[7]}
    got = await store.aget_nodes(node_ids=[ids[7], ids[3], ids[2]], filters=earth)
    assert [n.node_id for n in got] == [ids[7], ids[2]]
    await store.adelete_nodes(node_ids=[ids[3], ids[7]], filters=earth)  # ids[3] is sport: kept
    assert [n.node_id for n in await store.aget_nodes(node_ids=[ids[3], ids[7], ids[2]])] == [ids[3], ids[2]]
    await store.adelete_nodes(filters=earth)
    assert await store.aget_nodes(filters=earth) == []
    with pytest.raises(ValueError, match=r"call clear\(\)"):
        await store.adelete_nodes()
    await store.aclear()
    assert await store.aget_nodes(node_ids=ids) == []


async def test_async_methods_on_in_process_engines(tiny_encoder, backend, tmp_path) -> None:
    store = open_store(tiny_encoder, backend, tmp_path)
    assert store.aclient is store.client.aio()  # Edge / local mode: the one engine, on a worker thread
    await _exercise_async(store)
    store.close()


async def test_concurrent_async_calls_on_in_process_engines(tiny_encoder, backend, tmp_path) -> None:
    import asyncio

    store = open_store(tiny_encoder, backend, tmp_path)
    nodes = SentenceSplitter().get_nodes_from_documents(make_docs())
    # Writes and reads at once: the engine takes them one at a time on the store's worker.
    await asyncio.gather(*(store.async_add([n]) for n in nodes))
    queries = [VectorStoreQuery(query_str=t, mode=m, similarity_top_k=1) for t in TEXTS for m in MODES]
    results = await asyncio.gather(*(store.aquery(q) for q in queries))
    for q, r in zip(queries, results):
        assert r.nodes[0].text == q.query_str, q.mode
    store.close()


async def test_async_methods_on_the_native_async_store(tiny_encoder) -> None:
    store = M3VectorStore(tiny_encoder, async_store=AsyncM3Store(tiny_encoder, location=":memory:"))
    assert store.aclient is not None
    await _exercise_async(store)
    with pytest.raises(RuntimeError, match="async_store= only"):
        store.query(VectorStoreQuery(query_str="x"))
    await store.aclose()


def test_constructor_errors(tiny_encoder, tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        M3VectorStore(tiny_encoder)
    with pytest.raises(ValueError, match="no encoder"):
        M3VectorStore(path=tmp_path / "x")
    core = M3Store(tiny_encoder, location=":memory:")
    with pytest.raises(ValueError, match="one or the other"):
        M3VectorStore(store=core, path=tmp_path / "y")
    wrapped = M3VectorStore(store=core)
    assert wrapped.client is core
