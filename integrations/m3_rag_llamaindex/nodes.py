"""LlamaIndex node <-> core-store record mapping (the payload layout in docs/architecture.md).

The payload keeps ``text``, ``metadata`` (exactly the node's metadata), ``id`` (the node id)
and ``doc_id`` (the ``ref_doc_id``) where every reader, LangChain included, finds them. What
only LlamaIndex needs to rebuild the node (node class, relationships, templates, excluded
keys) goes under ``extra["llama_index"]``, without the text, metadata or embedding so that
nothing is stored twice. A point written by another framework has no such entry and comes
back as a plain ``TextNode`` whose SOURCE relationship is its ``doc_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llama_index.core.schema import (
    BaseNode,
    Document,
    ImageNode,
    IndexNode,
    MetadataMode,
    Node,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)

__all__ = ["EXTRA_KEY", "NodeRecord", "node_to_record", "record_to_node"]

EXTRA_KEY = "llama_index"
# Fields that live elsewhere in the payload (text, metadata) or not at all (vectors).
_DROPPED = ("metadata", "embedding", "text_embedding", "text", "text_resource")
_NODE_CLASSES: dict[str, type[BaseNode]] = {
    cls.class_name(): cls for cls in (TextNode, Node, IndexNode, ImageNode, Document)
}


@dataclass(frozen=True)
class NodeRecord:
    """One node as the core store takes it."""

    id: str
    text: str  # stored as the payload ``text``
    embed_text: str  # what the model encodes (the node's EMBED-mode content, metadata included)
    metadata: dict[str, Any]
    doc_id: str | None
    extra: dict[str, Any]


def node_to_record(node: BaseNode) -> NodeRecord:
    """Split a node into the shared payload fields and the LlamaIndex-only rest."""
    rest = node.model_dump(mode="json")
    for key in _DROPPED:
        rest.pop(key, None)
    rest.pop("class_name", None)
    return NodeRecord(
        id=node.node_id,
        text=node.get_content(metadata_mode=MetadataMode.NONE),
        # VectorStoreIndex embeds this string; the store must encode the very same one so the
        # encoder cache serves the sparse and ColBERT outputs without a second forward pass.
        embed_text=node.get_content(metadata_mode=MetadataMode.EMBED),
        metadata=dict(node.metadata),
        doc_id=node.ref_doc_id,
        extra={EXTRA_KEY: {"class_name": node.class_name(), "node": rest}},
    )


def record_to_node(
    id: str | int,
    text: str,
    metadata: Mapping[str, Any] | None,
    doc_id: str | None,
    extra: Mapping[str, Any] | None,
) -> BaseNode:
    """Rebuild the node from a stored point (``SearchResult`` / ``StoredPoint`` fields).

    >>> node = record_to_node("n1", "some text", {"year": 2024}, "doc-7", None)
    >>> (node.node_id, node.text, node.metadata, node.ref_doc_id)
    ('n1', 'some text', {'year': 2024}, 'doc-7')
    """
    saved = (extra or {}).get(EXTRA_KEY)
    meta = dict(metadata or {})
    if saved is None:
        # Written by another framework: the shared fields are all there is.
        node: BaseNode = TextNode(id_=str(id), text=text, metadata=meta)
        if doc_id is not None:
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(doc_id))
        return node
    class_name = saved.get("class_name")
    cls = _NODE_CLASSES.get(class_name)
    if cls is None:
        raise ValueError(
            f"point {id!r} was stored as LlamaIndex node class {class_name!r}; this adapter can "
            f"rebuild {sorted(_NODE_CLASSES)}. Fix: re-ingest it as one of those node types."
        )
    node = cls.model_validate({**saved["node"], "metadata": meta})
    node.set_content(text)
    return node
