"""LlamaIndex adapter pieces that need no store: import guard, node mapping, embedding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import (  # noqa: E402
    Document,
    ImageNode,
    IndexNode,
    MetadataMode,
    NodeRelationship,
    TextNode,
)

from m3_rag_llamaindex.embedding import BGEM3Embedding  # noqa: E402
from m3_rag_llamaindex.nodes import EXTRA_KEY, node_to_record, record_to_node  # noqa: E402


def test_missing_llama_index_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index'] = None\n"
        "sys.modules['llama_index.core'] = None\n"
        "try:\n"
        "    import m3_rag_llamaindex\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "m3-rag[llamaindex]"' in out


def _source_node() -> TextNode:
    doc = Document(text="the whole document", metadata={"lang": "en"}, id_="doc-1")
    node = TextNode(
        text="a chunk of it",
        metadata={"lang": "en", "year": 2021, "tags": ["a", "b"]},
        id_="node-1",
        excluded_embed_metadata_keys=["tags"],
        excluded_llm_metadata_keys=["year"],
        start_char_idx=4,
        end_char_idx=17,
    )
    node.relationships[NodeRelationship.SOURCE] = doc.as_related_node_info()
    return node


@pytest.mark.parametrize(
    "node",
    [
        _source_node(),
        Document(text="a document node", metadata={"k": 1}, id_="d"),
        IndexNode(text="points elsewhere", index_id="other-index", metadata={"k": 2}),
        ImageNode(text="caption", image="aGVsbG8=", metadata={"k": 3}),
    ],
    ids=["text", "document", "index", "image"],
)
def test_node_round_trips_through_the_payload(node) -> None:
    rec = node_to_record(node)
    assert rec.id == node.node_id
    assert rec.text == node.get_content(metadata_mode=MetadataMode.NONE)
    assert rec.embed_text == node.get_content(metadata_mode=MetadataMode.EMBED)
    assert rec.metadata == node.metadata
    assert rec.doc_id == node.ref_doc_id
    # Text, metadata and vectors are stored once, in the shared fields.
    saved = rec.extra[EXTRA_KEY]["node"]
    assert not {"text", "metadata", "embedding", "text_resource"} & set(saved)
    back = record_to_node(rec.id, rec.text, rec.metadata, rec.doc_id, rec.extra)
    assert type(back) is type(node)
    assert back.model_dump() == node.model_dump()


def test_record_from_another_framework_becomes_a_text_node() -> None:
    node = record_to_node(42, "plain text", {"source": "lc"}, "doc-9", {"langchain": {"x": 1}})
    assert type(node) is TextNode
    assert (node.node_id, node.text, node.metadata, node.ref_doc_id) == ("42", "plain text", {"source": "lc"}, "doc-9")
    assert record_to_node("n", "t", None, None, None).relationships == {}


def test_unknown_node_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="MysteryNode"):
        record_to_node("n", "t", {}, None, {EXTRA_KEY: {"class_name": "MysteryNode", "node": {}}})


def test_embedding_matches_the_encoder_and_runs_the_model_once(tiny_encoder) -> None:
    emb = BGEM3Embedding(tiny_encoder)
    texts = ["first passage about cats", "second passage about dogs", "third one"]
    before = tiny_encoder.stats.texts_encoded
    vecs = emb.get_text_embedding_batch(texts)
    assert tiny_encoder.stats.texts_encoded - before == len(texts)
    direct = tiny_encoder.encode_documents(texts, outputs=("dense",)).dense
    np.testing.assert_allclose(np.array(vecs), direct, rtol=1e-5, atol=1e-6)
    # The dense call cached all three outputs: asking for sparse + ColBERT runs nothing.
    before = tiny_encoder.stats.texts_encoded
    out = emb.encoder.encode_documents(texts)
    assert tiny_encoder.stats.texts_encoded == before
    assert len(out.sparse) == len(out.colbert) == len(texts)
    q = emb.get_query_embedding("cats")
    np.testing.assert_allclose(q, tiny_encoder.encode_queries(["cats"], outputs=("dense",)).dense[0], rtol=1e-5, atol=1e-6)
    assert len(q) == tiny_encoder.dense_dim


async def test_embedding_async_matches_sync(tiny_encoder) -> None:
    emb = BGEM3Embedding(tiny_encoder)
    assert await emb.aget_query_embedding("q") == emb.get_query_embedding("q")
    assert await emb.aget_text_embedding_batch(["a", "b"]) == emb.get_text_embedding_batch(["a", "b"])
