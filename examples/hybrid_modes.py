"""Compare m3-rag's five retrieval modes on one labelled query set, offline, on Qdrant Edge.

    python examples/hybrid_modes.py                                  # m3-mini, the shipped demo notes
    python examples/hybrid_modes.py --beir ../shared/data/xquad/en --max-queries 100 --max-docs 240
    python examples/hybrid_modes.py --model BAAI/bge-m3 --beir path/to/scifact

Every query runs once in each mode (dense, sparse, hybrid = RRF of dense + sparse,
hybrid+rerank = ColBERT MaxSim over the dense + sparse candidates, m3 = BGE-M3's weighted
score with the model's own weights); the table shows MRR@10, nDCG@10 and Recall@k per mode, and
how many queries each mode answers at rank 1 that dense alone does not. The demo notes are
indexed in chunks; a note's rank is the rank of its best chunk. A BEIR folder is indexed one
document per point.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MODES = ("dense", "sparse", "hybrid", "hybrid+rerank", "m3")


@dataclass(frozen=True)
class QuerySet:
    name: str
    queries: list[tuple[str, str]]  # (query id, text)
    qrels: dict[str, set[str]]  # query id -> relevant document ids


@dataclass(frozen=True)
class ModeResult:
    mode: str
    mrr10: float
    ndcg10: float
    recall: float
    top1: set[str]  # query ids answered at rank 1
    ms_per_query: float


def index_demo_notes(store, encoder, model: str) -> QuerySet:
    from m3_rag.demo import DEMO_CHUNKING, DEMO_CORPUS, DEMO_QUERIES
    from m3_rag.ingest import plan_index, run_index

    run_index(store, plan_index([DEMO_CORPUS], encoder, DEMO_CHUNKING, model))
    queries = [(f"q{i}", q.text) for i, q in enumerate(DEMO_QUERIES)]
    return QuerySet("demo notes", queries, {f"q{i}": set(q.relevant) for i, q in enumerate(DEMO_QUERIES)})


def index_beir(store, folder: Path, max_queries: int, max_docs: int) -> QuerySet:
    from m3_rag.evaluation.beir import load_beir

    data = load_beir(folder, max_queries=max_queries, max_docs=max_docs, seed=0)
    limit = store.encoder.config.document_max_length
    long_docs = sum(len(ids) > limit for ids in store.encoder.tokenizer(data.doc_texts, verbose=False)["input_ids"])
    if long_docs:
        print(f"{long_docs} of {len(data.doc_texts)} documents are longer than {limit} tokens and are truncated")
    store.add_texts(data.doc_texts, ids=data.doc_ids, metadatas=[{"file": d} for d in data.doc_ids],
                    batch_size=32, show_progress=True)  # fmt: skip
    qrels = {q: set(r) for q, r in data.qrels.items()}
    return QuerySet(f"{data.name} ({len(data.doc_ids)} docs)", list(zip(data.query_ids, data.query_texts)), qrels)


def doc_ranking(hits) -> list[str]:
    """Documents in the order of their best chunk (``metadata.file`` names the document)."""
    seen: list[str] = []
    for hit in hits:
        doc = hit.metadata["file"]
        if doc not in seen:
            seen.append(doc)
    return seen


def score_mode(store, qs: QuerySet, mode: str, k: int) -> ModeResult:
    mrr = ndcg = recall = 0.0
    top1: set[str] = set()
    start = time.perf_counter()
    for qid, text in qs.queries:
        ranked = doc_ranking(store.search(text, mode=mode, k=max(k, 10) * 3))  # chunks -> documents
        relevant = qs.qrels[qid]
        first = next((i for i, d in enumerate(ranked[:10]) if d in relevant), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
        dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
        ndcg += dcg / ideal
        recall += len(set(ranked[:k]) & relevant) / len(relevant)
        if ranked and ranked[0] in relevant:
            top1.add(qid)
    n = len(qs.queries)
    seconds = time.perf_counter() - start
    return ModeResult(mode, mrr / n, ndcg / n, recall / n, top1, 1000 * seconds / n)


def format_table(results: Sequence[ModeResult], k: int, n_queries: int) -> str:
    dense = next(r for r in results if r.mode == "dense")
    lines = [f"{'mode':<14}{'MRR@10':>8}{'nDCG@10':>9}{f'R@{k}':>7}{'top-1':>7}{'+ vs dense':>11}{'ms/query':>10}"]
    for r in results:
        gain = len(r.top1 - dense.top1)
        lines.append(f"{r.mode:<14}{r.mrr10:>8.3f}{r.ndcg10:>9.3f}{r.recall:>7.3f}"
                     f"{len(r.top1):>4}/{n_queries:<2}{gain:>11}{r.ms_per_query:>10.1f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[ModeResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="m3-mini", help="hub id, local BGE-M3-layout folder, or 'm3-mini'")
    parser.add_argument("--device", default=None)
    parser.add_argument("--beir", type=Path, default=None, help="a BEIR folder instead of the demo notes")
    parser.add_argument("--max-queries", type=int, default=50)
    parser.add_argument("--max-docs", type=int, default=200)
    parser.add_argument("-k", type=int, default=5, help="recall cut-off")
    parser.add_argument("--doc-max-length", type=int, default=None,
                        help="document tokens read (default: the model's limit, 512 for m3-mini; longer documents are truncated)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from m3_rag import M3Encoder
    from m3_rag.store import M3Store

    lengths = {} if args.doc_max_length is None else {"document_max_length": args.doc_max_length}
    encoder = M3Encoder.from_pretrained(args.model, device=args.device, **lengths)
    with tempfile.TemporaryDirectory() as scratch, M3Store(encoder, path=Path(scratch) / "index") as store:
        if args.beir is None:
            qs = index_demo_notes(store, encoder, args.model)
        else:
            qs = index_beir(store, args.beir, args.max_queries, args.max_docs)
        store.optimize()
        for mode in MODES:  # warm-up: the first query of each mode pays one-time costs
            store.search(qs.queries[0][1], mode=mode, k=1)
        print(f"model {args.model}; {len(qs.queries)} queries on {qs.name}; {store.count()} points in Qdrant Edge")
        results = [score_mode(store, qs, mode, args.k) for mode in MODES]
    print(format_table(results, args.k, len(qs.queries)))
    if args.json is not None:
        rows = [{"mode": r.mode, "mrr@10": r.mrr10, "ndcg@10": r.ndcg10, f"recall@{args.k}": r.recall,
                 "top1": len(r.top1), "ms_per_query": r.ms_per_query} for r in results]  # fmt: skip
        args.json.write_text(json.dumps({"model": args.model, "data": qs.name, "queries": len(qs.queries), "modes": rows}, indent=2))
    return results


if __name__ == "__main__":
    main()
