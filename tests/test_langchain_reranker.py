"""M3Reranker: ColBERT MaxSim / m3-score ordering, top_n, metadata copies, ContextualCompressionRetriever."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from m3_rag.cache import CachedEncoder
from m3_rag.encoder import M3Encoder
from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores
from m3_rag_langchain import BGEM3Embeddings, M3Reranker, M3VectorStore

TEXTS = [
    "The cat sat on the mat.",
    "Dogs chase cats in the garden.",
    "Quantum chromodynamics describes the strong force.",
    "Paris is the capital of France.",
    "The mat was red and the cat was black.",
]
QUERY = "Where did the cat sit?"


def _docs() -> list[Document]:
    return [Document(page_content=t, metadata={"n": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]


def test_order_equals_maxsim_order(tiny_encoder):
    q = tiny_encoder.encode_queries([QUERY], outputs=("colbert",)).colbert[0]
    want = maxsim_scores(q, tiny_encoder.encode_documents(TEXTS, outputs=("colbert",)).colbert)
    order = list(np.argsort(-want, kind="stable"))
    assert order != list(range(len(TEXTS)))  # the input order is not already the answer

    out = M3Reranker(encoder=tiny_encoder, top_n=None).compress_documents(_docs(), QUERY)
    assert [d.id for d in out] == [f"d{i}" for i in order]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in out], want[order], rtol=1e-5)
    assert [d.metadata["n"] for d in out] == order  # the user's metadata is kept


def test_m3_score_is_weighted_combination(tiny_encoder):
    weights = (0.4, 0.2, 0.4)
    q = tiny_encoder.encode_queries([QUERY])
    d = tiny_encoder.encode_documents(TEXTS)
    want = combine_scores(
        dense_scores(q.dense[0], d.dense),
        lexical_scores(q.sparse[0], d.sparse),
        maxsim_scores(q.colbert[0], d.colbert),
        weights,
    )
    out = M3Reranker(encoder=tiny_encoder, score="m3", weights=weights, top_n=2).compress_documents(_docs(), QUERY)
    order = np.argsort(-want, kind="stable")[:2]
    assert [d.id for d in out] == [f"d{i}" for i in order]
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in out], want[order], rtol=1e-5)


class _ModelWeights:
    """An encoder whose model recommends other m3 weights (``config.default_weights``)."""

    def __init__(self, inner, weights):
        self.inner, self.config = inner, SimpleNamespace(default_weights=weights)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_m3_weights_default_to_the_models(tiny_encoder):
    q = tiny_encoder.encode_queries([QUERY])
    d = tiny_encoder.encode_documents(TEXTS)
    parts = (dense_scores(q.dense[0], d.dense), lexical_scores(q.sparse[0], d.sparse),
             maxsim_scores(q.colbert[0], d.colbert))  # fmt: skip
    for encoder, weights in ((tiny_encoder, tuple(tiny_encoder.config.default_weights)),
                             (_ModelWeights(tiny_encoder, (0.1, 0.6, 0.3)), (0.1, 0.6, 0.3))):  # fmt: skip
        reranker = M3Reranker(encoder=encoder, score="m3", top_n=None)
        assert reranker.weights is None
        np.testing.assert_allclose(reranker.scores(QUERY, TEXTS), combine_scores(*parts, weights), rtol=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        M3Reranker(encoder=tiny_encoder, score="m3", weights=(1.0, -1.0, 0.0))


def test_top_n_and_inputs_untouched(tiny_encoder):
    docs = _docs()
    out = M3Reranker(encoder=tiny_encoder, top_n=2).compress_documents(docs, QUERY)
    assert len(out) == 2
    assert docs == _docs()  # inputs keep their metadata: the score is written into copies
    assert all(set(d.metadata) == {"n", "relevance_score"} for d in out)
    assert M3Reranker(encoder=tiny_encoder).compress_documents([], QUERY) == []
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        M3Reranker(encoder=tiny_encoder, top_n=0)


async def test_async_equals_sync(tiny_encoder):
    rr = M3Reranker(encoder=tiny_encoder, top_n=3)
    assert await rr.acompress_documents(_docs(), QUERY) == rr.compress_documents(_docs(), QUERY)


async def test_contextual_compression_retriever(tiny_encoder):
    store = InMemoryVectorStore(BGEM3Embeddings(encoder=tiny_encoder))
    store.add_documents(_docs())
    base = store.as_retriever(search_kwargs={"k": 4})
    reranker = M3Reranker(encoder=tiny_encoder, top_n=2)
    retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)

    got = retriever.invoke(QUERY)
    want = reranker.compress_documents(base.invoke(QUERY), QUERY)
    assert len(got) == 2
    assert got == list(want)
    assert got[0].metadata["relevance_score"] >= got[1].metadata["relevance_score"]
    assert await retriever.ainvoke(QUERY) == got


def test_retrieve_and_rerank_reuse_cached_encodings(tiny_checkpoint):
    # One CachedEncoder behind the store and the reranker: ingestion runs the model once, and a
    # retrieve+rerank runs it once more, for the query only (the documents' ColBERT vectors and
    # the query's come from the cache).
    encoder = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    cached = CachedEncoder(encoder)
    vs = M3VectorStore.from_texts(TEXTS, BGEM3Embeddings(encoder=cached), location=":memory:")
    assert encoder.stats.forward_passes == 1
    retriever = ContextualCompressionRetriever(
        base_compressor=M3Reranker(encoder=cached, top_n=2), base_retriever=vs.as_retriever(search_kwargs={"k": 4})
    )
    got = retriever.invoke(QUERY)
    assert len(got) == 2 and got[0].metadata["relevance_score"] >= got[1].metadata["relevance_score"]
    assert (encoder.stats.forward_passes, encoder.stats.texts_encoded) == (2, len(TEXTS) + 1)
    vs.close()
