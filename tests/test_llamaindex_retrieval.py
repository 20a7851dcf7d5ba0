"""M3Retriever (core modes per call) and M3RerankPostprocessor, on the tiny checkpoint."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402

from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores  # noqa: E402
from m3_rag_llamaindex import M3RerankPostprocessor, M3Retriever, M3VectorStore  # noqa: E402
from test_llamaindex_store import META, TEXTS, build_index, doc_of  # noqa: E402

CORE_MODES = ("dense", "sparse", "hybrid", "hybrid+rerank", "m3")


@pytest.fixture(scope="module")
def store(tiny_encoder):
    vs = M3VectorStore(tiny_encoder, location=":memory:")
    build_index(vs)
    yield vs
    vs.close()


@pytest.mark.parametrize("mode", CORE_MODES)
def test_every_core_mode_finds_the_matching_node(store, mode) -> None:
    retriever = M3Retriever(store, mode=mode, k=3)
    for i, text in enumerate(TEXTS):
        hits = retriever.retrieve(text)
        assert doc_of(hits[0]) == i, (mode, text)
        assert hits[0].node.metadata == META[i]


def test_mode_k_and_filters_per_call(store) -> None:
    retriever = M3Retriever(store, mode="hybrid+rerank", k=2)
    q = TEXTS[2]
    default = retriever.retrieve(q)
    assert len(default) == 2
    dense = retriever.retrieve(q, mode="dense", k=5)
    assert len(dense) == 5
    # Dense scores are cosines; the same call through the core store agrees.
    core = store.client.search(q, mode="dense", k=5)
    assert [h.node.node_id for h in dense] == [str(h.id) for h in core]
    assert [h.score for h in dense] == pytest.approx([h.score for h in core])
    earth = MetadataFilters(filters=[MetadataFilter(key="topic", value="earth")])
    assert {doc_of(h) for h in retriever.retrieve(q, k=8, filters=earth)} == {2, 7}
    # The overrides were for those calls only.
    again = retriever.retrieve(q)
    assert [h.node.node_id for h in again] == [h.node.node_id for h in default]
    with pytest.raises(ValueError, match="unknown"):
        retriever.retrieve(q, mode="bm25")


def test_retriever_level_filters_and_weights(store) -> None:
    bio = MetadataFilters(filters=[MetadataFilter(key="topic", value="biology")])
    retriever = M3Retriever(store, mode="m3", k=8, filters=bio, weights=(1.0, 0.0, 0.0))
    hits = retriever.retrieve(TEXTS[6])
    assert {doc_of(h) for h in hits} == {0, 6}
    # Dense weight only: the m3 score is the dense score.
    dense = {h.node.node_id: h.score for h in retriever.retrieve(TEXTS[6], mode="dense")}
    for h in hits:
        assert h.score == pytest.approx(dense[h.node.node_id], abs=1e-4)


async def test_aretrieve_with_per_call_options_is_task_local(store) -> None:
    retriever = M3Retriever(store, k=3)
    dense, sparse = await asyncio.gather(
        retriever.aretrieve(TEXTS[1], mode="dense", k=1), retriever.aretrieve(TEXTS[4], mode="sparse", k=2)
    )
    assert len(dense) == 1 and doc_of(dense[0]) == 1
    assert 1 <= len(sparse) <= 2 and doc_of(sparse[0]) == 4
    assert len(await retriever.aretrieve(TEXTS[0])) == 3


def _nodes(scores=(0.9, 0.8, 0.7, 0.6)) -> list[NodeWithScore]:
    picks = (1, 3, 5, 6)
    return [
        NodeWithScore(node=TextNode(text=TEXTS[i], id_=f"n{i}", metadata=dict(META[i])), score=s)
        for i, s in zip(picks, scores)
    ]


def test_rerank_by_colbert_maxsim(tiny_encoder) -> None:
    nodes = _nodes()
    query = TEXTS[5] + " " + TEXTS[6]
    post = M3RerankPostprocessor(tiny_encoder, top_n=3)
    out = post.postprocess_nodes(nodes, query_str=query)
    q = tiny_encoder.encode_queries([query]).colbert[0]
    # Nodes are scored on their EMBED-mode content, as they were encoded at ingestion.
    docs = tiny_encoder.encode_documents([n.node.get_content(metadata_mode="embed") for n in nodes])
    want = maxsim_scores(q, docs.colbert)
    order = np.argsort(-want)[:3]
    assert [o.node.node_id for o in out] == [nodes[i].node.node_id for i in order]
    assert [o.score for o in out] == pytest.approx(want[order].tolist(), abs=1e-5)
    # The retrieval score is kept, on copies: the input nodes are untouched.
    for o, i in zip(out, order):
        assert o.node.metadata["retrieval_score"] == nodes[i].score
        assert "retrieval_score" in o.node.excluded_llm_metadata_keys
        assert "retrieval_score" not in nodes[i].node.metadata


def test_rerank_by_m3_weighted_score(tiny_encoder) -> None:
    nodes = _nodes()
    query = TEXTS[3]
    weights = (0.5, 0.3, 0.2)
    out = M3RerankPostprocessor(tiny_encoder, score="m3", weights=weights).postprocess_nodes(
        nodes, query_bundle=QueryBundle(query)
    )
    q = tiny_encoder.encode_queries([query])
    d = tiny_encoder.encode_documents([n.node.get_content(metadata_mode="embed") for n in nodes])
    want = combine_scores(
        dense_scores(q.dense[0], d.dense),
        lexical_scores(q.sparse[0], d.sparse),
        maxsim_scores(q.colbert[0], d.colbert),
        weights=weights,
    )
    got = {o.node.node_id: o.score for o in out}
    assert len(out) == len(nodes)
    for n, w in zip(nodes, want):
        assert got[n.node.node_id] == pytest.approx(float(w), abs=1e-5)
    assert [o.score for o in out] == sorted(got.values(), reverse=True)


class _ModelWeights:
    """An encoder whose model recommends other m3 weights (``config.default_weights``)."""

    def __init__(self, inner, weights):
        self.inner, self.config = inner, SimpleNamespace(default_weights=weights)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_rerank_m3_weights_default_to_the_models(tiny_encoder) -> None:
    nodes, query = _nodes(), TEXTS[3]
    for encoder, weights in ((tiny_encoder, tuple(tiny_encoder.config.default_weights)),
                             (_ModelWeights(tiny_encoder, (0.1, 0.6, 0.3)), (0.1, 0.6, 0.3))):  # fmt: skip
        default = M3RerankPostprocessor(encoder, score="m3").postprocess_nodes(nodes, query_str=query)
        explicit = M3RerankPostprocessor(tiny_encoder, score="m3", weights=weights)
        explicit = explicit.postprocess_nodes(nodes, query_str=query)
        assert [o.node.node_id for o in default] == [o.node.node_id for o in explicit]
        np.testing.assert_allclose([o.score for o in default], [o.score for o in explicit], atol=1e-6)


def test_rerank_errors(tiny_encoder) -> None:
    post = M3RerankPostprocessor(tiny_encoder)
    with pytest.raises(ValueError, match="needs the query"):
        post.postprocess_nodes(_nodes())
    assert post.postprocess_nodes([], query_str="x") == []
    with pytest.raises(ValueError, match="non-negative"):
        M3RerankPostprocessor(tiny_encoder, score="m3", weights=(1.0, -1.0, 0.0))


def test_rerank_after_retrieval_hits_the_cache(store, tiny_encoder) -> None:
    hits = M3Retriever(store, mode="dense", k=4).retrieve(TEXTS[7])
    before = tiny_encoder.stats.texts_encoded
    out = M3RerankPostprocessor(store.encoder, top_n=2).postprocess_nodes(hits, query_str=TEXTS[7])
    # Nodes and query were encoded at ingestion / retrieval through the same cache.
    assert tiny_encoder.stats.texts_encoded == before
    assert doc_of(out[0]) == 7 and len(out) == 2


async def test_aretrieve_on_the_native_async_store(tiny_encoder) -> None:
    from llama_index.core.node_parser import SentenceSplitter
    from test_llamaindex_store import make_docs

    from m3_rag.store import AsyncM3Store

    store = M3VectorStore(tiny_encoder, async_store=AsyncM3Store(tiny_encoder, location=":memory:"))
    await store.async_add(SentenceSplitter().get_nodes_from_documents(make_docs()))
    retriever = M3Retriever(store, k=2)
    for mode in CORE_MODES:
        hits = await retriever.aretrieve(TEXTS[5], mode=mode)
        assert doc_of(hits[0]) == 5 and len(hits) <= 2
    await store.aclose()
