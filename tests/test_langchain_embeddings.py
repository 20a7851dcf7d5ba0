"""BGEM3Embeddings / BGEM3SparseEmbeddings: LangChain's standard embedding suites and their own behaviour."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from langchain_qdrant import QdrantVectorStore, RetrievalMode
from langchain_qdrant.sparse_embeddings import SparseVector
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from m3_rag.cache import CachedEncoder
from m3_rag_langchain import BGEM3Embeddings, BGEM3SparseEmbeddings

TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force.", "Paris is in France."]


class TestBGEM3EmbeddingsUnit(EmbeddingsUnitTests):
    @pytest.fixture(autouse=True)
    def _checkpoint(self, tiny_checkpoint):
        self._path = str(tiny_checkpoint)

    @property
    def embeddings_class(self) -> type[BGEM3Embeddings]:
        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        # Loading by path exercises the model_name route (the encoder behind a cache).
        return {"model_name": self._path, "device": "cpu"}


class TestBGEM3EmbeddingsIntegration(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _encoder(self, tiny_encoder):
        self._enc = tiny_encoder

    @property
    def embeddings_class(self) -> type[BGEM3Embeddings]:
        return BGEM3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"encoder": self._enc}


def test_dense_matches_encoder(tiny_encoder):
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    docs = np.array(emb.embed_documents(TEXTS))
    np.testing.assert_allclose(docs, tiny_encoder.encode_documents(TEXTS, outputs=("dense",)).dense, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    query = emb.embed_query(TEXTS[1])
    np.testing.assert_allclose(query, tiny_encoder.encode_queries([TEXTS[1]], outputs=("dense",)).dense[0], rtol=1e-6)
    assert all(type(x) is float for x in query)
    assert emb.embed_documents([]) == []


async def test_dense_async_equals_sync(tiny_encoder):
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    assert await emb.aembed_documents(TEXTS) == emb.embed_documents(TEXTS)
    assert await emb.aembed_query("cat") == emb.embed_query("cat")


def test_sparse_matches_encoder(tiny_encoder):
    sp = BGEM3SparseEmbeddings(encoder=tiny_encoder)
    got = sp.embed_documents(TEXTS)
    want = tiny_encoder.encode_documents(TEXTS, outputs=("sparse",)).sparse
    assert all(isinstance(v, SparseVector) for v in got)
    for g, w in zip(got, want):
        assert g.indices == w.indices.tolist()
        np.testing.assert_allclose(g.values, w.values, rtol=1e-6)
        assert all(v > 0 for v in g.values)
    assert len(got[0].indices) > 0
    q = sp.embed_query(TEXTS[0])
    assert q.indices == tiny_encoder.encode_queries([TEXTS[0]], outputs=("sparse",)).sparse[0].indices.tolist()
    assert sp.embed_documents([]) == []


async def test_sparse_async_equals_sync(tiny_encoder):
    sp = BGEM3SparseEmbeddings(encoder=tiny_encoder)
    assert await sp.aembed_documents(TEXTS) == sp.embed_documents(TEXTS)
    assert await sp.aembed_query("cat") == sp.embed_query("cat")


def test_works_in_stock_qdrant_hybrid_store(tiny_encoder):
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    store = QdrantVectorStore.from_texts(
        TEXTS,
        embedding=emb,
        sparse_embedding=BGEM3SparseEmbeddings(encoder=tiny_encoder),
        retrieval_mode=RetrievalMode.HYBRID,
        location=":memory:",
        collection_name="stock",
    )
    # A query equal to a document has dense cosine 1 and the largest lexical overlap with it.
    for text in TEXTS:
        assert store.similarity_search(text, k=1)[0].page_content == text


def _passes(encoder) -> tuple[int, int]:
    return encoder.stats.forward_passes, encoder.stats.texts_encoded


def test_shared_encoder_runs_the_model_once(tiny_checkpoint):
    dense = BGEM3Embeddings(model_name=str(tiny_checkpoint), device="cpu")
    assert isinstance(dense.encoder, CachedEncoder)  # loading by name puts the cache in front
    sparse = BGEM3SparseEmbeddings(encoder=dense.encoder)
    p0, t0 = _passes(dense.encoder)
    dense.embed_documents(TEXTS)
    assert _passes(dense.encoder) == (p0 + 1, t0 + len(TEXTS))
    sparse.embed_documents(TEXTS)
    assert _passes(dense.encoder) == (p0 + 1, t0 + len(TEXTS))
    # Only the new text runs the model.
    sparse.embed_documents([*TEXTS, "A new sentence."])
    assert _passes(dense.encoder) == (p0 + 2, t0 + len(TEXTS) + 1)


def test_unshared_bare_encoder_runs_twice(tiny_encoder):
    # The contrast: without the cache each embedding class runs its own forward pass.
    p0, t0 = _passes(tiny_encoder)
    BGEM3Embeddings(encoder=tiny_encoder).embed_documents(TEXTS)
    BGEM3SparseEmbeddings(encoder=tiny_encoder).embed_documents(TEXTS)
    assert _passes(tiny_encoder) == (p0 + 2, t0 + 2 * len(TEXTS))


def test_encoder_and_model_name_conflict(tiny_encoder):
    with pytest.raises(ValueError, match="both encoder= and model_name="):
        BGEM3Embeddings(encoder=tiny_encoder, model_name="BAAI/bge-m3")
    with pytest.raises(TypeError, match="has no outputs, .*encode_documents; expected an m3_rag Encoder"):
        BGEM3SparseEmbeddings(encoder=object())


def test_missing_langchain_names_the_extra():
    # A fresh interpreter where langchain_core cannot be imported.
    code = "import sys; sys.modules['langchain_core'] = None; import m3_rag_langchain"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert 'pip install "m3-rag[langchain]"' in proc.stderr
