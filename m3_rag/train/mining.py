"""Hard negatives mined by a model: documents it ranks high for a training query that are not its positives.

BM25 negatives share words with the query; the passages a trained model confuses with the
positive are the ones its heads still need to separate (ANCE, and FlagEmbedding's
``hn_mine``). Each query is scored against a corpus with the model's ``all`` score; a sample of
ranks ``skip..skip+pool`` (the very top is skipped: unjudged relevant documents sit there) is
added to the row's negatives, positives and ``exclude_ids`` never.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import numpy as np

from m3_rag.evaluation.runs import encode_corpus, score_matrices
from m3_rag.scoring import combine_scores
from m3_rag.store.queries import check_weights, model_weights

__all__ = ["pick_negatives", "mine_negatives"]


def pick_negatives(
    ranked: Sequence[int],
    blocked: Collection[int],
    *,
    skip: int,
    pool: int,
    count: int,
    rng: random.Random,
) -> list[int]:
    """``count`` of the documents at ranks ``skip..skip+pool`` of ``ranked`` once ``blocked`` ones are dropped.

    >>> pick_negatives([5, 1, 4, 2, 3, 0], {1, 2}, skip=1, pool=2, count=2, rng=random.Random(0))
    [4, 3]
    """
    allowed = [d for d in ranked if d not in blocked][skip : skip + pool]
    return sorted(rng.sample(allowed, min(count, len(allowed))), key=allowed.index)


def mine_negatives(
    encoder,
    rows: Sequence[dict],
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    negatives: int = 7,
    skip: int = 10,
    pool: int = 50,
    exclude_ids: Collection[str] = (),
    seed: int = 0,
    show_progress: bool = True,
) -> list[dict]:
    """The rows with ``negatives`` mined documents appended to ``neg`` (and their ids to ``neg_ids``).

    A document is never mined for a row when it is one of the row's positives (by id in
    ``pos_ids`` or by text), already one of its negatives, or in ``exclude_ids`` (e.g. the
    relevant documents of held-out queries). ``weights``: (dense, sparse, colbert) of the
    ranking score, by default the model's own.
    """
    if len(doc_ids) != len(doc_texts):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(doc_texts)} texts; expected one id per text")
    if skip < 0 or pool < 1 or negatives < 1:
        raise ValueError(f"skip={skip}, pool={pool}, negatives={negatives}; expected skip >= 0, pool >= 1, negatives >= 1")
    scored = next((i for i, r in enumerate(rows) if "neg_scores" in r or "pos_scores" in r), None)
    if scored is not None:
        raise ValueError(f"row {scored + 1} has teacher scores; mined negatives would have none. "
                         "Mine rows without 'pos_scores'/'neg_scores', then score the new negatives with the teacher")  # fmt: skip
    if rows and not doc_ids:
        raise ValueError("the corpus has no documents; expected the documents to mine negatives from")
    w = check_weights(weights) if weights is not None else model_weights(encoder)
    if not rows:
        return []
    queries = encoder.encode_queries([r["query"] for r in rows])
    corpus = encode_corpus(encoder, list(doc_texts), show_progress=show_progress)
    single = score_matrices(queries, corpus, show_progress=show_progress)
    scores = combine_scores(single["dense"], single["sparse"], single["colbert"], weights=w)
    index_of_id = {str(d): i for i, d in enumerate(doc_ids)}
    index_of_text = {t: i for i, t in enumerate(doc_texts)}
    excluded = {index_of_id[str(d)] for d in exclude_ids if str(d) in index_of_id}
    rng = random.Random(seed)
    mined: list[dict] = []
    for qi, row in enumerate(rows):
        known = [*row.get("pos_ids", []), *row.get("neg_ids", [])]
        texts = [*row["pos"], *row.get("neg", [])]
        blocked = excluded | {index_of_id[str(d)] for d in known if str(d) in index_of_id}
        blocked |= {index_of_text[t] for t in texts if t in index_of_text}
        # Only the best skip + pool + |blocked| documents can be picked: no full sort needed.
        top = min(len(doc_ids), skip + pool + len(blocked))
        candidates = np.argpartition(-scores[qi], top - 1)[:top]
        ranked = candidates[np.argsort(-scores[qi, candidates], kind="stable")].tolist()
        picks = pick_negatives(ranked, blocked, skip=skip, pool=pool, count=negatives, rng=rng)
        out = dict(row)
        out["neg"] = [*row.get("neg", []), *(doc_texts[j] for j in picks)]
        if "neg_ids" in row or not row.get("neg"):  # ids stay aligned with the texts
            out["neg_ids"] = [*row.get("neg_ids", []), *(str(doc_ids[j]) for j in picks)]
        mined.append(out)
    return mined
