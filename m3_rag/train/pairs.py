"""Self-supervised training pairs from a BEIR corpus: title -> abstract, with lexical hard negatives.

A document's title is the query, its text (without the title) the positive; negatives are
other documents' texts that a TF-IDF ranking of the title puts near the top (ranks
``skip..skip+pool``, skipping the very top where near-duplicates would be false negatives).
Hard lexical negatives are what teaches a sparse head IDF-like weighting: passages that share
common words with the query must score below the one that shares its rare words.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["title_pairs", "write_jsonl"]


def title_pairs(
    corpus_jsonl: str | Path,
    tokenizer,
    *,
    negatives: int = 7,
    skip: int = 2,
    pool: int = 30,
    seed: int = 0,
    min_title_tokens: int = 3,
    limit: int | None = None,
) -> list[dict]:
    """Rows ``{"query": title, "pos": [text], "neg": [...], "pos_ids": [id]}`` for documents with a title."""
    docs = [json.loads(line) for line in open(corpus_jsonl, encoding="utf-8") if line.strip()]
    docs = [d for d in docs if d.get("title", "").strip() and d.get("text", "").strip()]
    rng = random.Random(seed)
    if limit is not None:
        docs = rng.sample(docs, min(limit, len(docs)))
    texts = [d["text"].strip() for d in docs]
    doc_tokens = [set(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]
    df = Counter(t for toks in doc_tokens for t in toks)
    n = len(docs)
    idf = {t: math.log((n + 1) / (c + 0.5)) for t, c in df.items()}
    postings: dict[int, list[int]] = {}
    for i, toks in enumerate(doc_tokens):
        for t in toks:
            postings.setdefault(t, []).append(i)
    titles = tokenizer([d["title"] for d in docs], add_special_tokens=False, truncation=False)["input_ids"]
    rows: list[dict] = []
    for i, (d, title_ids) in enumerate(zip(docs, titles, strict=True)):
        q = set(title_ids)
        if len(q) < min_title_tokens:
            continue
        score = np.zeros(n, dtype=np.float32)
        for t in q:
            for j in postings.get(t, ()):
                score[j] += idf[t]
        score[i] = -np.inf
        ranked = np.argsort(-score, kind="stable")[skip : skip + pool]
        picks = rng.sample(list(ranked), min(negatives, len(ranked)))
        rows.append({
            "query": d["title"].strip(),
            "pos": [texts[i]],
            "neg": [texts[j] for j in picks],
            "pos_ids": [d["_id"]],
            "neg_ids": [docs[j]["_id"] for j in picks],
        })  # fmt: skip
    return rows


def write_jsonl(rows: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
