"""RAG with LlamaIndex on BGE-M3 (dense, sparse, hybrid + ColBERT rerank), fully offline.

Documents go into a ``VectorStoreIndex`` backed by ``M3VectorStore`` (each chunk runs through
the model once: the index's embedding call and the store share an encoder cache). Each query
mode prints the retrieved nodes with their scores, then a query engine answers with
LlamaIndex's ``MockLLM`` standing in for an LLM, so no network or API key is needed. Swap
``MockLLM()`` for any real LLM.

    python examples/llamaindex_rag.py                        # the packaged offline model "m3-mini"
    python examples/llamaindex_rag.py --model BAAI/bge-m3    # real BGE-M3 (downloads once)
    python examples/llamaindex_rag.py --model ./checkpoint --path ./m3_index --query "..."
"""

from __future__ import annotations

import argparse
import tempfile

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM

from m3_rag import M3Encoder
from m3_rag_llamaindex import M3RerankPostprocessor, M3VectorStore

CORPUS = [
    ("qdrant.md", "Qdrant stores dense, sparse and multi-vectors per point and can fuse their rankings."),
    ("bge-m3.md", "BGE-M3 produces a dense vector, lexical weights and ColBERT vectors in one forward pass."),
    ("colbert.md", "ColBERT late interaction scores a document by the best match of every query token."),
    ("rrf.md", "Reciprocal rank fusion merges ranked lists by summing one over rank plus a constant."),
    ("paris.md", "Paris is the capital of France and lies on the Seine."),
    ("tea.md", "Green tea is brewed at about 80 degrees Celsius for two to three minutes."),
]
MODES = ("default", "sparse", "hybrid")  # dense, BGE-M3 lexical, dense+sparse -> ColBERT rerank


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3-mini", help="'m3-mini', a hub id or a local checkpoint directory")
    parser.add_argument("--query", default="How does ColBERT score a document?")
    parser.add_argument("--k", type=int, default=3, help="nodes to retrieve")
    parser.add_argument("--path", default=None, help="Qdrant Edge directory (default: a temporary one)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    encoder = M3Encoder.from_pretrained(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        store = M3VectorStore(encoder, args.path or tmp)
        index = VectorStoreIndex.from_documents(
            [Document(text=text, metadata={"source": source}, id_=source) for source, text in CORPUS],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=store.embed_model,  # shares the store's encoder cache: one pass per chunk
        )
        print(f"Indexed {store.client.count()} chunks with {encoder.stats.forward_passes} forward pass(es) "
              f"over {encoder.stats.texts_encoded} texts.")  # fmt: skip
        print(f"Query: {args.query}")
        for mode in MODES:
            print(f"\n{mode} (top {args.k}):")
            for hit in index.as_retriever(vector_store_query_mode=mode, similarity_top_k=args.k).retrieve(args.query):
                print(f"  {hit.score:.4f}  [{hit.node.metadata['source']}] {hit.node.text}")

        engine = index.as_query_engine(
            llm=MockLLM(max_tokens=24),
            vector_store_query_mode="hybrid",
            similarity_top_k=args.k,
            node_postprocessors=[M3RerankPostprocessor(store.encoder, score="m3", top_n=2)],
        )
        response = engine.query(args.query)
        print(f"\nAnswer (MockLLM, offline stand-in): {str(response).strip()!r}")
        print("Sources (m3 rerank score, retrieval score):")
        for hit in response.source_nodes:
            print(f"  {hit.score:.4f}  {hit.node.metadata['retrieval_score']:.4f}  [{hit.node.metadata['source']}]")
        store.close()


if __name__ == "__main__":
    main()
