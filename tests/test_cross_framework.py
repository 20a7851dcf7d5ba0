"""One collection, two frameworks: what LlamaIndex writes LangChain reads, and back.

Both adapters write the core store's payload layout (text, metadata, id, doc_id, extra), so
a collection needs no conversion to change framework: on disk (reopening a Qdrant Edge path
with the other adapter) or live (both adapters over one M3Store).
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("langchain_core")

from llama_index.core import Document as LIDocument  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402

import m3_rag_langchain as lc  # noqa: E402
import m3_rag_llamaindex as li  # noqa: E402
from m3_rag.cache import CachedEncoder  # noqa: E402
from m3_rag.store import M3Store  # noqa: E402

TEXTS = [
    "Photosynthesis converts sunlight into chemical energy inside plant leaves.",
    "The central bank raised interest rates to slow inflation.",
    "Volcanic eruptions release ash and sulfur dioxide into the atmosphere.",
    "Marathon runners train for months before the race.",
    "Quantum computers use qubits that can be entangled.",
]
META = [{"topic": t, "year": 2015 + i, "tags": [t[:3]]} for i, t in enumerate(["bio", "fin", "geo", "sport", "phys"])]


def li_index(store: li.M3VectorStore) -> VectorStoreIndex:
    docs = [
        LIDocument(text=t, metadata=dict(m), id_=f"doc-{i}", excluded_embed_metadata_keys=list(m))
        for i, (t, m) in enumerate(zip(TEXTS, META))
    ]
    return VectorStoreIndex.from_documents(
        docs, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=store.embed_model
    )


def lc_store(encoder, **kwargs) -> lc.M3VectorStore:
    return lc.M3VectorStore(lc.BGEM3Embeddings(encoder=encoder), **kwargs)


def test_llamaindex_writes_langchain_reads(tiny_encoder, tmp_path) -> None:
    path = tmp_path / "index"
    store = li.M3VectorStore(tiny_encoder, path)
    retriever = li_index(store).as_retriever(similarity_top_k=1)
    node_of = {i: retriever.retrieve(text)[0].node for i, text in enumerate(TEXTS)}
    assert [n.ref_doc_id for n in node_of.values()] == [f"doc-{i}" for i in range(len(TEXTS))]
    store.close()

    reader = lc_store(tiny_encoder, path=str(path))
    for mode in ("dense", "sparse", "hybrid+rerank", "m3"):
        for i, text in enumerate(TEXTS):
            doc = reader.similarity_search(text, k=1, mode=mode)[0]
            assert doc.page_content == text
            assert doc.metadata == META[i]  # exactly the user's metadata, no LlamaIndex internals
            assert doc.id == node_of[i].node_id
    got = reader.get_by_ids([node_of[2].node_id])
    assert [(d.page_content, d.metadata) for d in got] == [(TEXTS[2], META[2])]
    earth = reader.similarity_search(TEXTS[0], k=5, filter={"year": {"$gte": 2017}})
    assert sorted(d.metadata["year"] for d in earth) == [2017, 2018, 2019]
    reader.close()


def test_langchain_writes_llamaindex_reads(tiny_encoder, tmp_path) -> None:
    path = tmp_path / "index"
    writer = lc_store(tiny_encoder, path=str(path))
    ids = writer.add_texts(TEXTS, metadatas=[dict(m) for m in META], ids=[f"lc-{i}" for i in range(len(TEXTS))])
    writer.close()

    store = li.M3VectorStore(tiny_encoder, path)
    index = VectorStoreIndex.from_vector_store(store, embed_model=store.embed_model)
    for mode in ("default", "sparse", "hybrid"):
        retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=2)
        for i, text in enumerate(TEXTS):
            node = retriever.retrieve(text)[0].node
            assert (node.node_id, node.text, node.metadata) == (ids[i], text, META[i])
            assert node.ref_doc_id is None  # LangChain documents have no source document
    nodes = store.get_nodes(node_ids=ids[:2])
    assert [(n.node_id, n.text) for n in nodes] == [(ids[0], TEXTS[0]), (ids[1], TEXTS[1])]
    # A query engine works on the foreign collection too.
    from llama_index.core.llms import MockLLM

    response = index.as_query_engine(llm=MockLLM(), vector_store_query_mode="hybrid").query(TEXTS[3])
    assert response.source_nodes[0].node.node_id == ids[3]
    store.close()


def test_both_adapters_over_one_live_store(tiny_encoder) -> None:
    core = M3Store(CachedEncoder(tiny_encoder), location=":memory:")
    li_store = li.M3VectorStore(store=core)
    lc_vs = lc.M3VectorStore.from_store(core)
    li_index(li_store)
    lc_vs.add_texts(["Medieval castles were built with thick stone walls and moats."], metadatas=[{"topic": "hist"}], ids=["lc-castle"])
    assert core.count() == len(TEXTS) + 1

    index = VectorStoreIndex.from_vector_store(li_store, embed_model=li_store.embed_model)
    hit = index.as_retriever(vector_store_query_mode="hybrid").retrieve("Medieval castles were built with thick stone walls and moats.")[0]
    assert hit.node.node_id == "lc-castle" and hit.node.metadata == {"topic": "hist"}

    # A LlamaIndex document delete is seen by LangChain, and a LangChain delete by LlamaIndex.
    li_store.delete("doc-1")
    assert [d.page_content for d in lc_vs.similarity_search(TEXTS[1], k=10, mode="dense")].count(TEXTS[1]) == 0
    lc_vs.delete(["lc-castle"])
    assert li_store.get_nodes(node_ids=["lc-castle"]) == []
    assert core.count() == len(TEXTS) - 1
