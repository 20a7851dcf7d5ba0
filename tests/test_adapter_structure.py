"""The adapters stay thin: the core owns async encoding, the connection rules and reranking.

- No adapter runs its own thread pool, executor or string-dispatched async call.
- Both vector stores take the core's ``Connection`` (``connection=``) and leave the "exactly one
  of path / location / url / client" rule, and its message, to it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from llama_index.core.schema import TextNode  # noqa: E402

from m3_rag.store import Connection, M3Store  # noqa: E402
from m3_rag_langchain import BGEM3Embeddings  # noqa: E402
from m3_rag_langchain import M3VectorStore as LangChainStore  # noqa: E402
from m3_rag_llamaindex import M3VectorStore as LlamaStore  # noqa: E402

INTEGRATIONS = Path(__file__).resolve().parents[1] / "integrations"
# The Connection's own message for two places at once.
TWO_PLACES = re.escape("pass exactly one of path= (Qdrant Edge, embedded)") + r".*found \['path', 'location'\]"


def test_adapters_run_no_threads_of_their_own() -> None:
    banned = re.compile(r"to_thread|run_in_executor|ThreadPool|Executor|_arun|import threading")
    found = [
        f"{path.relative_to(INTEGRATIONS)}:{n}: {line.strip()}"
        for path in sorted(INTEGRATIONS.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if banned.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("kind", ["memory", "edge"])
def test_stores_take_a_connection(tiny_encoder, tmp_path, kind) -> None:
    connection = Connection(location=":memory:") if kind == "memory" else Connection(path=tmp_path / "edge")
    lc = LangChainStore(BGEM3Embeddings(encoder=tiny_encoder), connection=connection)
    assert lc.store.connection is connection
    lc.add_texts(["a cat on a mat"], ids=["c1"])
    assert [d.id for d in lc.similarity_search("cat", k=1, mode="dense")] == ["c1"]
    lc.close()
    li = LlamaStore(tiny_encoder, connection=connection)  # the Edge path is free again: same data
    assert li.client.connection is connection
    li.add([TextNode(id_="n1", text="a dog in the fog")])
    assert li.client.count() == (1 if kind == "memory" else 2)
    li.close()


def test_connection_rules_are_the_cores(tiny_encoder, tmp_path) -> None:
    emb = BGEM3Embeddings(encoder=tiny_encoder)
    with pytest.raises(ValueError, match=TWO_PLACES):
        LangChainStore(emb, path=str(tmp_path / "a"), location=":memory:")
    with pytest.raises(ValueError, match=TWO_PLACES):
        LlamaStore(tiny_encoder, tmp_path / "b", location=":memory:")
    for build in (lambda: LangChainStore(emb), lambda: LlamaStore(tiny_encoder)):
        with pytest.raises(ValueError, match=r"pass exactly one of path=.*found none"):
            build()
    memory = Connection(location=":memory:")
    with pytest.raises(ValueError, match=r"connection= was given together with \['path'\]"):
        LangChainStore(emb, connection=memory, path=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"connection= was given together with \['path'\]"):
        LlamaStore(tiny_encoder, tmp_path / "d", connection=memory)
    # Options that do not apply to the place are the Connection's error too.
    with pytest.raises(ValueError, match="api_key given with path="):
        LangChainStore(emb, path=str(tmp_path / "e"), api_key="secret")
    with pytest.raises(ValueError, match="api_key given with path="):
        LlamaStore(tiny_encoder, tmp_path / "f", api_key="secret")
    # A ready store excludes a connection.
    core = M3Store(tiny_encoder, connection=memory)
    with pytest.raises(ValueError, match=r"store= was given together with \['connection'\]"):
        LangChainStore(emb, store=core, connection=memory)
    with pytest.raises(ValueError, match=r"store=/async_store= and \['connection'\]; expected one or the other"):
        LlamaStore(store=core, connection=memory)
    # Nothing was left open: every Edge path can be opened now.
    for name in "abcdef":
        M3Store(tiny_encoder, tmp_path / name).close()
    core.close()
