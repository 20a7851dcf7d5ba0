"""Offline quickstart: index a few texts into an embedded Qdrant Edge store and query every mode.

    python examples/quickstart.py --model BAAI/bge-m3          # a real model (hub id or local folder)
    python examples/quickstart.py --random-model /tmp/m3-rand  # no model at hand: seeded random weights

With ``--random-model`` the weights are random, so the rankings mean nothing: what it shows
is the whole pipeline (one forward pass per batch -> three vectors in Qdrant Edge -> each
retrieval mode in one query), fully offline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

CORPUS = {
    "bge-m3": "BGE-M3 produces a dense vector, sparse lexical weights and ColBERT multi-vectors from one forward pass.",
    "dense": "Dense retrieval compares the normalised CLS embeddings of a query and a passage by cosine similarity.",
    "sparse": "Sparse lexical matching sums the products of the weights of the tokens a query and a passage share.",
    "colbert": "ColBERT late interaction takes, for every query token, its best match among the passage tokens.",
    "qdrant": "Qdrant stores named dense, sparse and multi-vectors per point and fuses them in one query.",
    "edge": "Qdrant Edge runs Qdrant's storage engine inside the Python process, on a local folder.",
    "rrf": "Reciprocal rank fusion merges ranked lists by summing one over the rank plus a constant.",
    "chunking": "Long documents are split into overlapping token windows before they are embedded.",
    "langchain": "A LangChain retriever returns Documents that an LCEL chain formats into a prompt.",
    "llamaindex": "LlamaIndex builds a VectorStoreIndex over nodes and retrieves them for a query engine.",
}
QUERIES = ["How does ColBERT score a passage?", "Which engine runs inside the process?", "How are ranked lists fused?"]
MODES = ("dense", "sparse", "hybrid", "hybrid+rerank", "m3")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="hub id, local BGE-M3-layout folder, or 'm3-mini'")
    source.add_argument("--random-model", type=Path, help="build (or reuse) a seeded random checkpoint here")
    parser.add_argument("--path", type=Path, default=None, help="store folder (default: a temporary one)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    from m3_rag import M3Encoder
    from m3_rag.store import M3Store

    model = args.model
    if args.random_model is not None:
        from m3_rag.testing import build_random_checkpoint

        if not (args.random_model / "sparse_linear.pt").exists():
            print(f"building a seeded random checkpoint in {args.random_model} (random weights: rankings are noise)")
            build_random_checkpoint(args.random_model, list(CORPUS.values()) * 20)
        model = str(args.random_model)
    encoder = M3Encoder.from_pretrained(model, device=args.device)
    print(f"encoder: {encoder!r}")

    with tempfile.TemporaryDirectory() as scratch:
        path = args.path or Path(scratch) / "m3_index"
        store = M3Store(encoder, path=path)
        start = time.perf_counter()
        store.add_texts(list(CORPUS.values()), ids=list(CORPUS), show_progress=True)
        print(f"indexed {store.count()} texts in {time.perf_counter() - start:.2f}s "
              f"({encoder.stats.forward_passes} forward pass(es)) into Qdrant Edge at {path}")  # fmt: skip
        width = max(len(m) for m in MODES)
        for query in QUERIES:
            print(f"\nquery: {query}")
            for mode in MODES:
                hits = store.search(query, mode=mode, k=3)
                ranked = ", ".join(f"{h.id} ({h.score:.3f})" for h in hits)
                print(f"  {mode:<{width}}  {ranked}")
        store.close()


if __name__ == "__main__":
    main()
