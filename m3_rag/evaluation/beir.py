"""BEIR-layout folders: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``, optionally sliced."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BeirData", "load_beir", "doc_text", "read_corpus", "read_relevant_ids"]


@dataclass(frozen=True)
class BeirData:
    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance > 0}


def doc_text(doc: dict) -> str:
    """BEIR's usual document text: ``title + " " + text`` (just the text when there is no title)."""
    return f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise FileNotFoundError(f"qrels file {path} not found (found {found}); pass --split with one of those names")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header and header[0] != "query-id":
            raise ValueError(f"{path}: first line is {header}, expected the header 'query-id corpus-id score'")
        for row in reader:
            if len(row) < 3:
                continue
            q, d, s = row[0], row[1], int(row[2])
            if s > 0:
                qrels.setdefault(q, {})[d] = s
    return qrels


def read_corpus(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of a BEIR ``corpus.jsonl``, texts as :func:`doc_text` makes them."""
    docs = _read_jsonl(Path(path))
    return [str(d["_id"]) for d in docs], [doc_text(d) for d in docs]


def read_relevant_ids(path: str | Path) -> set[str]:
    """Every document a qrels tsv judges relevant (score > 0), whatever the query."""
    return {d for judged in _read_qrels(Path(path)).values() for d in judged}


def load_beir(
    folder: str | Path,
    split: str = "test",
    *,
    max_queries: int | None = None,
    max_docs: int | None = None,
    seed: int = 0,
) -> BeirData:
    """Queries that have judgements in ``split``, optionally a seeded sample of them, and the corpus.

    ``max_docs`` keeps every relevant document of the kept queries and fills up with a seeded
    sample of the others (so a small slice still has its answers, among distractors).
    """
    folder = Path(folder)
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = [q for q in _read_jsonl(folder / "queries.jsonl") if str(q["_id"]) in qrels]
    rng = random.Random(seed)
    if max_queries is not None and max_queries < len(queries):
        queries = sorted(rng.sample(queries, max_queries), key=lambda q: str(q["_id"]))
    kept = {str(q["_id"]) for q in queries}
    qrels = {q: r for q, r in qrels.items() if q in kept}
    docs = _read_jsonl(folder / "corpus.jsonl")
    if max_docs is not None and max_docs < len(docs):
        relevant = {d for r in qrels.values() for d in r}
        must = [d for d in docs if str(d["_id"]) in relevant]
        others = [d for d in docs if str(d["_id"]) not in relevant]
        fill = rng.sample(others, max(0, min(len(others), max_docs - len(must))))
        keep_ids = {str(d["_id"]) for d in must + fill}
        docs = [d for d in docs if str(d["_id"]) in keep_ids]
    return BeirData(
        name=f"{folder.name}/{split}",
        doc_ids=[str(d["_id"]) for d in docs],
        doc_texts=[doc_text(d) for d in docs],
        query_ids=[str(q["_id"]) for q in queries],
        query_texts=[q["text"] for q in queries],
        qrels=qrels,
    )


