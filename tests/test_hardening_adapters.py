"""Adapter argument checks and filter semantics, on Qdrant Edge and qdrant-client local mode.

- Every list argument given as a lone str (or bytes, dict, Document/node) raises TypeError
  naming the fix, and changes nothing: iterating it would act on each character.
- Every place a search mode enters refuses "" and unknown modes with the core's own check.
- LlamaIndex TEXT_MATCH / TEXT_MATCH_INSENSITIVE / CONTAINS / IS_EMPTY match what
  m3_rag_llamaindex.filters documents, and numbers pass through to the core unchanged.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from m3_rag.store.filters import Condition  # noqa: E402
from m3_rag.store.queries import MODES  # noqa: E402
from m3_rag_langchain import (  # noqa: E402
    BGEM3Embeddings,
    BGEM3SparseEmbeddings,
    EmbeddingsEncoder,
    M3Reranker,
    M3Retriever,
    M3VectorStore,
)
from m3_rag_llamaindex import M3RerankPostprocessor, to_core_filter  # noqa: E402
from m3_rag_llamaindex import M3Retriever as LlamaRetriever  # noqa: E402
from m3_rag_llamaindex import M3VectorStore as LlamaStore  # noqa: E402
from m3_rag_llamaindex.retriever import SEARCH_MODES  # noqa: E402

# "d1" read as a list is the ids "d" and "1": all three exist, so a wrong delete shows.
IDS = ["d", "1", "d1"]
TEXTS = ["first text", "second text", "third text"]
BARE = "Fix: pass \\['d1'\\]"
UNKNOWN_MODE = "unknown search mode '{}'; expected one of " + re.escape(str(MODES))


@pytest.fixture(params=["memory", "edge"])
def where(request, tmp_path) -> dict:
    return {"location": ":memory:"} if request.param == "memory" else {"path": str(tmp_path / "edge")}


@pytest.fixture
def lc(tiny_encoder, where):
    vs = M3VectorStore.from_texts(TEXTS, BGEM3Embeddings(encoder=tiny_encoder), ids=IDS, **where)
    yield vs
    vs.close()


def stored_ids(vs: M3VectorStore) -> list[str]:
    return sorted(d.id for d in vs.get_by_ids(IDS))


# ------------------------------------------------------------------ LangChain: list arguments
LC_SYNC_CALLS = {
    "add_texts(texts=str)": lambda vs: vs.add_texts("d1"),
    "add_texts(texts=bytes)": lambda vs: vs.add_texts(b"d1"),
    "add_texts(metadatas=dict)": lambda vs: vs.add_texts(["x"], {"d1": 1}),
    "add_texts(ids=str)": lambda vs: vs.add_texts(["x"], ids="d1"),
    "add_documents(str)": lambda vs: vs.add_documents("d1"),
    "add_documents(Document)": lambda vs: vs.add_documents(Document(page_content="x", id="d1")),
    "delete(str)": lambda vs: vs.delete("d1"),
    "delete(bytes)": lambda vs: vs.delete(b"d1"),
    "delete(ids=str)": lambda vs: vs.delete(ids="d1"),
    "get_by_ids(str)": lambda vs: vs.get_by_ids("d1"),
}
LC_ASYNC_CALLS = {
    "aadd_texts(texts=str)": lambda vs: vs.aadd_texts("d1"),
    "aadd_texts(ids=str)": lambda vs: vs.aadd_texts(["x"], ids="d1"),
    "aadd_documents(str)": lambda vs: vs.aadd_documents("d1"),
    "adelete(str)": lambda vs: vs.adelete("d1"),
    "aget_by_ids(str)": lambda vs: vs.aget_by_ids("d1"),
}
FOUND = "must be a list of .*; found a single (str|bytes|dict|Document)"


@pytest.mark.parametrize("call", list(LC_SYNC_CALLS), ids=list(LC_SYNC_CALLS))
def test_langchain_list_arguments_refuse_a_single_value(lc, call) -> None:
    with pytest.raises(TypeError, match=FOUND):
        LC_SYNC_CALLS[call](lc)
    assert stored_ids(lc) == sorted(IDS) and lc.store.count() == len(IDS)  # nothing written or deleted


@pytest.mark.parametrize("call", list(LC_ASYNC_CALLS), ids=list(LC_ASYNC_CALLS))
async def test_langchain_async_list_arguments_refuse_a_single_value(lc, call) -> None:
    with pytest.raises(TypeError, match=FOUND):
        await LC_ASYNC_CALLS[call](lc)
    assert stored_ids(lc) == sorted(IDS) and lc.store.count() == len(IDS)


def test_langchain_messages_name_the_fix(lc) -> None:
    with pytest.raises(TypeError, match=f"ids must be a list of ids; found a single str: 'd1'. {BARE}"):
        lc.delete("d1")
    with pytest.raises(TypeError, match="texts must be a list of texts; found a single str"):
        lc.add_texts("one string")
    # Other iterables still work.
    assert lc.delete(iter(["d"])) is True and stored_ids(lc) == ["1", "d1"]
    assert [d.id for d in lc.get_by_ids(("d1",))] == ["d1"]


async def test_langchain_constructors_check_before_opening_the_store(tiny_encoder, where) -> None:
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    with pytest.raises(TypeError, match="texts must be a list"):
        M3VectorStore.from_texts("d1", emb, **where)
    with pytest.raises(TypeError, match="ids must be a list"):
        M3VectorStore.from_texts(["x"], emb, ids="d1", **where)
    with pytest.raises(TypeError, match="documents must be a list"):
        M3VectorStore.from_documents("d1", emb, **where)
    with pytest.raises(TypeError, match="texts must be a list"):
        await M3VectorStore.afrom_texts("d1", emb, **where)
    with pytest.raises(TypeError, match="documents must be a list"):
        await M3VectorStore.afrom_documents("d1", emb, **where)
    # Nothing was left open: an Edge path is not locked and holds nothing.
    vs = M3VectorStore(emb, **where)
    assert vs.store.count() == 0
    vs.close()


def test_langchain_embeddings_and_reranker_refuse_a_single_text(tiny_encoder) -> None:
    calls = [
        lambda: BGEM3Embeddings(encoder=tiny_encoder).embed_documents("d1"),
        lambda: BGEM3SparseEmbeddings(encoder=tiny_encoder).embed_documents("d1"),
        lambda: EmbeddingsEncoder(DeterministicFakeEmbedding(size=4)).encode_documents("d1"),
        lambda: EmbeddingsEncoder(DeterministicFakeEmbedding(size=4)).encode_queries("d1"),
        lambda: M3Reranker(encoder=tiny_encoder).scores("query", "d1"),
        lambda: M3Reranker(encoder=tiny_encoder).compress_documents("d1", "query"),
        lambda: M3Reranker(encoder=tiny_encoder).compress_documents(Document(page_content="d1"), "query"),
    ]
    for call in calls:
        with pytest.raises(TypeError, match=FOUND):
            call()


# ----------------------------------------------------------------------- LangChain: modes
@pytest.mark.parametrize("mode", ["", "bogus", "Dense"])
def test_langchain_constructor_refuses_an_unknown_mode(tiny_encoder, where, mode) -> None:
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    with pytest.raises(ValueError, match=UNKNOWN_MODE.format(mode)):
        M3VectorStore(emb, mode=mode, **where)
    vs = M3VectorStore(emb, **where)  # the failed constructor left no lock behind
    assert vs.mode == "hybrid+rerank"
    vs.close()


def test_langchain_dense_only_store_refuses_other_modes_at_construction(where) -> None:
    with pytest.raises(ValueError, match="sparse"):
        M3VectorStore(DeterministicFakeEmbedding(size=4), mode="sparse", **where)


@pytest.mark.parametrize("mode", ["", "bogus"])
async def test_langchain_search_entry_points_refuse_an_unknown_mode(lc, mode) -> None:
    message = UNKNOWN_MODE.format(mode)
    for call in (
        lambda: lc.similarity_search("text", k=1, mode=mode),
        lambda: lc.similarity_search_with_score("text", k=1, mode=mode),
        # ValueError (unknown mode), not NotImplementedError (an unbounded mode's relevance).
        lambda: lc.similarity_search_with_relevance_scores("text", k=1, mode=mode),
        lambda: lc.as_retriever(search_kwargs={"k": 1, "mode": mode}),
        lambda: M3Retriever(vectorstore=lc, mode=mode),
        lambda: M3Retriever(vectorstore=lc).invoke("text", mode=mode),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message):
        await lc.asimilarity_search("text", k=1, mode=mode)
    with pytest.raises(ValueError, match=message):
        await M3Retriever(vectorstore=lc).ainvoke("text", mode=mode)


def test_langchain_mode_none_means_the_default(lc) -> None:
    want = lc.similarity_search(TEXTS[0], k=2, mode="hybrid+rerank")
    assert lc.similarity_search(TEXTS[0], k=2, mode=None) == want
    assert M3Retriever(vectorstore=lc, k=2).invoke(TEXTS[0], mode=None) == want


def test_langchain_reranker_refuses_an_unknown_score(tiny_encoder) -> None:
    for score in ("", "dense"):
        with pytest.raises(ValueError, match="'colbert' or 'm3'"):
            M3Reranker(encoder=tiny_encoder, score=score)


# ------------------------------------------------------------------------------ LlamaIndex
def open_llama(encoder, where: dict, **kwargs) -> LlamaStore:
    return LlamaStore(encoder, where.get("path"), location=where.get("location"), **kwargs)


@pytest.fixture
def li(tiny_encoder, where):
    store = open_llama(tiny_encoder, where)
    store.add([TextNode(id_=i, text=t) for i, t in zip(IDS, TEXTS)])
    yield store
    store.close()


def node_ids(store: LlamaStore) -> list[str]:
    return sorted(n.node_id for n in store.get_nodes(IDS))


LI_SYNC_CALLS = {
    "add(str)": lambda s: s.add("d1"),
    "add(node)": lambda s: s.add(TextNode(id_="d1", text="x")),
    "delete_nodes(str)": lambda s: s.delete_nodes("d1"),
    "delete_nodes(node_ids=bytes)": lambda s: s.delete_nodes(node_ids=b"d1"),
    "delete_nodes(str, filters)": lambda s: s.delete_nodes(
        "d1", MetadataFilters(filters=[MetadataFilter(key="k", value="v", operator="!=")])
    ),
    "get_nodes(str)": lambda s: s.get_nodes("d1"),
    "query(doc_ids=str)": lambda s: s.query(VectorStoreQuery(query_str="text", doc_ids="d1")),
    "query(node_ids=str)": lambda s: s.query(VectorStoreQuery(query_str="text", node_ids="d1")),
}
LI_ASYNC_CALLS = {
    "async_add(str)": lambda s: s.async_add("d1"),
    "adelete_nodes(str)": lambda s: s.adelete_nodes("d1"),
    "aget_nodes(str)": lambda s: s.aget_nodes("d1"),
    "aquery(node_ids=str)": lambda s: s.aquery(VectorStoreQuery(query_str="text", node_ids="d1")),
}
LI_FOUND = "must be a list of .*; found a single (str|bytes|TextNode)"


@pytest.mark.parametrize("call", list(LI_SYNC_CALLS), ids=list(LI_SYNC_CALLS))
def test_llamaindex_list_arguments_refuse_a_single_value(li, call) -> None:
    with pytest.raises(TypeError, match=LI_FOUND):
        LI_SYNC_CALLS[call](li)
    assert node_ids(li) == sorted(IDS) and li.client.count() == len(IDS)


@pytest.mark.parametrize("call", list(LI_ASYNC_CALLS), ids=list(LI_ASYNC_CALLS))
async def test_llamaindex_async_list_arguments_refuse_a_single_value(li, call) -> None:
    with pytest.raises(TypeError, match=LI_FOUND):
        await LI_ASYNC_CALLS[call](li)
    assert node_ids(li) == sorted(IDS) and li.client.count() == len(IDS)


def test_llamaindex_message_names_the_fix(li) -> None:
    with pytest.raises(TypeError, match=f"node_ids must be a list of node ids; found a single str: 'd1'. {BARE}"):
        li.delete_nodes("d1")
    li.delete_nodes(("d",))  # a tuple is a list of ids
    assert node_ids(li) == ["1", "d1"]


def test_llamaindex_retriever_uses_the_core_modes(li) -> None:
    assert SEARCH_MODES is MODES  # one list of modes, the core's
    for mode in ("", "bogus"):
        with pytest.raises(ValueError, match=UNKNOWN_MODE.format(mode)):
            LlamaRetriever(li, mode=mode)
        with pytest.raises(ValueError, match=UNKNOWN_MODE.format(mode)):
            LlamaRetriever(li).retrieve("text", mode=mode)
    with pytest.raises(ValueError, match="k=0"):
        LlamaRetriever(li).retrieve("text", k=0)  # 0 is not "unset"
    assert len(LlamaRetriever(li, k=2).retrieve("text", mode=None, k=None)) == 2


async def test_llamaindex_async_retrieve_refuses_an_unknown_mode(li) -> None:
    with pytest.raises(ValueError, match=UNKNOWN_MODE.format("")):
        await LlamaRetriever(li).aretrieve("text", mode="")


def test_llamaindex_hybrid_mode_and_rerank_score_are_checked(tiny_encoder) -> None:
    for bad in ("", "dense", "bogus"):
        with pytest.raises(ValueError, match="hybrid_mode"):
            LlamaStore(tiny_encoder, location=":memory:", hybrid_mode=bad)
    for bad in ("", "dense"):
        with pytest.raises(ValueError, match="'colbert' or 'm3'"):
            M3RerankPostprocessor(tiny_encoder, score=bad)


# ------------------------------------------------------------ LlamaIndex filter semantics
NOTES = {
    "n0": "Hello World",
    "n1": "say hello, world!",
    "n2": "world hello",
    "n3": "HELLO",
    "n4": "helloworld",
    "n5": "xhellox",
    "n6": "héllo",
    "n7": "hello-world",
}
TAGS = {"t0": "a", "t1": "ab", "t2": ["a", "b"], "t3": ["ab"], "t4": "A"}
EMPTY = {"e0": None, "e1": [], "e2": "", "e3": {}, "e4": [None], "e5": "x", "e6": ["x"]}  # plus "e7": no key


@pytest.fixture(scope="module", params=["memory", "edge"])
def semantics(request, tiny_encoder, tmp_path_factory):
    where = {"location": ":memory:"} if request.param == "memory" else {"path": tmp_path_factory.mktemp("sem")}
    store = open_llama(tiny_encoder, where)
    nodes = [TextNode(id_=i, text="n", metadata={"note": v}) for i, v in NOTES.items()]
    nodes += [TextNode(id_=i, text="t", metadata={"tags": v}) for i, v in TAGS.items()]
    nodes += [TextNode(id_=i, text="e", metadata={"f": v}) for i, v in EMPTY.items()]
    nodes += [TextNode(id_="e7", text="e", metadata={})]
    nodes += [TextNode(id_="s0", text="s", metadata={"score": 1.0})]
    nodes += [TextNode(id_="s1", text="s", metadata={"score": 2})]
    store.add(nodes)
    yield store
    store.close()


def matching(store: LlamaStore, key: str, value, op: str, prefix: str) -> list[str]:
    flt = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])
    return sorted(n.node_id for n in store.get_nodes(filters=flt) if n.node_id[0] == prefix)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("hello", ["n0", "n1", "n2", "n3", "n7"]),  # any case; punctuation separates words
        ("HeLLo", ["n0", "n1", "n2", "n3", "n7"]),
        ("ell", []),  # not a substring
        ("hello world", ["n0", "n1", "n2", "n7"]),  # every word, in any order: not a phrase
        ("world hello", ["n0", "n1", "n2", "n7"]),
        ("hello-world", ["n0", "n1", "n2", "n7"]),
        ("world!", ["n0", "n1", "n2", "n7"]),
        ("helloworld", ["n4"]),
        ("HÉLLO", ["n6"]),  # accents are kept, case is folded
    ],
)
def test_text_match_is_a_case_insensitive_word_match(semantics, value, want) -> None:
    assert matching(semantics, "note", value, FilterOperator.TEXT_MATCH, "n") == want
    assert matching(semantics, "note", value, FilterOperator.TEXT_MATCH_INSENSITIVE, "n") == want


@pytest.mark.parametrize(("value", "want"), [("a", ["t0", "t2"]), ("ab", ["t1", "t3"]), ("A", ["t4"]), ("b", ["t2"])])
def test_contains_is_exact_equality_with_the_field_or_an_element(semantics, value, want) -> None:
    # On a string field CONTAINS is ==, not a substring: "a" does not match "ab".
    assert matching(semantics, "tags", value, FilterOperator.CONTAINS, "t") == want


def test_is_empty_matches_missing_null_and_empty_list_only(semantics) -> None:
    assert matching(semantics, "f", None, FilterOperator.IS_EMPTY, "e") == ["e0", "e1", "e7"]
    not_empty = MetadataFilters(filters=[MetadataFilter(key="f", value=None, operator="is_empty")], condition="not")
    assert sorted(n.node_id for n in semantics.get_nodes(filters=not_empty) if n.node_id[0] == "e") == [
        "e2", "e3", "e4", "e5", "e6"
    ]  # fmt: skip


# ------------------------------------------------------------------------- numbers as numbers
def test_number_filters_pass_the_value_through_unchanged() -> None:
    for value in (1, 2.0):
        got = to_core_filter(MetadataFilters(filters=[MetadataFilter(key="score", value=value)]))
        assert got == Condition("score", "eq", value) and type(got.value) is type(value)
    got = to_core_filter(MetadataFilters(filters=[MetadataFilter(key="score", value=[1, 2], operator="in")]))
    assert got == Condition("score", "in", (1, 2)) and all(type(v) is int for v in got.value)


@pytest.mark.parametrize(
    ("value", "op", "want"),
    [(1, "==", ["s0"]), (2.0, "==", ["s1"]), ([1, 2], "in", ["s0", "s1"])],
    ids=["eq-int-vs-stored-float", "eq-float-vs-stored-int", "in-ints-vs-both"],
)
def test_llamaindex_number_filters_compare_numbers_as_numbers(semantics, value, op, want) -> None:
    # Stored: s0 {"score": 1.0}, s1 {"score": 2}. Needs the core's numeric eq/in.
    assert matching(semantics, "score", value, op, "s") == want
    flt = MetadataFilters(filters=[MetadataFilter(key="score", value=value, operator=op)])
    hits = semantics.query(VectorStoreQuery(query_str="s", similarity_top_k=10, filters=flt))
    assert sorted(hits.ids) == want
