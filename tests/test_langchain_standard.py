"""LangChain's own standard suites for M3VectorStore and M3Retriever.

VectorStoreIntegrationTests (sync + async, get_by_ids) runs on both in-process backends (Qdrant
Edge on a temp path, qdrant-client ``:memory:``), each with the tiny BGE-M3 checkpoint (all
vectors, default mode hybrid+rerank) and in dense-only mode (the suite's DeterministicFakeEmbedding).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from m3_rag.store import AsyncM3Store, M3Store
from m3_rag_langchain import BGEM3Embeddings, M3Retriever, M3VectorStore
from m3_rag_langchain.vectorstore import encoder_for


class _Backend:
    """How each suite class builds its empty store; ``backend`` and ``bge_m3`` select the variant.

    ``native-async`` gives the vector store an :class:`AsyncM3Store` on ``AsyncQdrantClient``, as
    on the server path: the suite's async tests then run on the native async client (its own
    in-memory database), the sync tests on the sync one.
    """

    backend: str
    bge_m3: bool

    @pytest.fixture
    async def vectorstore(self, request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[M3VectorStore]:
        if self.bge_m3:
            embedding = BGEM3Embeddings(encoder=request.getfixturevalue("tiny_encoder"))
        else:
            embedding = self.get_embeddings()
        if self.backend == "native-async":
            encoder = encoder_for(embedding)
            store = M3VectorStore(
                embedding,
                store=M3Store(encoder, location=":memory:"),
                async_store=AsyncM3Store(encoder, location=":memory:"),
            )
        else:
            where = {"path": str(tmp_path / "edge")} if self.backend == "edge" else {"location": ":memory:"}
            store = M3VectorStore(embedding, **where)
        assert store.mode == ("hybrid+rerank" if self.bge_m3 else "dense")
        try:
            yield store
        finally:
            await store.aclose()

    @property
    def has_sync(self) -> bool:
        return True

    @property
    def has_async(self) -> bool:
        return True

    @property
    def has_get_by_ids(self) -> bool:
        return True


class TestEdgeBGEM3(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "edge", True


class TestMemoryBGEM3(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "memory", True


class TestNativeAsyncBGEM3(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "native-async", True


class TestEdgeDenseOnly(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "edge", False


class TestMemoryDenseOnly(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "memory", False


class TestNativeAsyncDenseOnly(_Backend, VectorStoreIntegrationTests):
    backend, bge_m3 = "native-async", False


RETRIEVER_TEXTS = [
    "BGE-M3 gives dense, sparse and ColBERT vectors.",
    "Qdrant fuses rankings with reciprocal rank fusion.",
    "ColBERT scores by late interaction.",
    "Paris is the capital of France.",
    "Green tea is brewed at eighty degrees.",
]


class TestM3Retriever(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _store(self, tiny_encoder) -> Iterator[None]:
        self._vs = M3VectorStore.from_texts(
            RETRIEVER_TEXTS, BGEM3Embeddings(encoder=tiny_encoder), location=":memory:"
        )
        yield
        self._vs.close()

    @property
    def retriever_constructor(self) -> type[M3Retriever]:
        return M3Retriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": self._vs, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "How does ColBERT score documents?"
