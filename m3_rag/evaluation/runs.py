"""Ranked runs per mode: exhaustive scoring of encoded queries against an encoded corpus, and the store pipeline.

Exhaustive modes score every query against every document (``dense``, ``sparse``, ``colbert``,
``dense+sparse``, ``all``; the combinations use :func:`m3_rag.scoring.combine_scores`). The
pipeline indexes the same encodings in Qdrant Edge through :class:`m3_rag.store.M3Store` and
runs its ``hybrid+rerank`` and ``m3`` searches, so the gap to exhaustive ``all`` is what the
index costs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from m3_rag.evaluation.beir import BeirData
from m3_rag.scoring import combine_scores
from m3_rag.types import M3Output, SparseVector

__all__ = [
    "EXHAUSTIVE_MODES",
    "PIPELINE_MODES",
    "TOP_K",
    "encode_corpus",
    "score_matrices",
    "combined",
    "top_run",
    "exhaustive_runs",
    "pipeline_runs",
]

EXHAUSTIVE_MODES = ("dense", "sparse", "colbert", "dense+sparse", "all")
PIPELINE_MODES = ("hybrid+rerank", "m3")
TOP_K = 100


# ------------------------------------------------------------------------------ encoding


def encode_corpus(encoder, texts: Sequence[str], *, batch: int = 256, show_progress: bool = True) -> M3Output:
    """Encode documents in slices (ColBERT rows kept as float16 to halve the memory)."""
    dense, sparse, colbert, counts, truncated = [], [], [], [], []
    for start in tqdm(range(0, len(texts), batch), desc="encode corpus", disable=not show_progress):
        out = encoder.encode_documents(list(texts[start : start + batch]))
        dense.append(out.dense)
        sparse += out.sparse
        colbert += [c.astype(np.float16) for c in out.colbert]
        counts.append(out.token_counts)
        truncated.append(out.truncated)
    return M3Output(
        dense=np.concatenate(dense) if dense else np.zeros((0, encoder.dense_dim), np.float32),
        sparse=sparse,
        colbert=colbert,
        token_counts=np.concatenate(counts) if counts else np.zeros(0, np.int64),
        truncated=np.concatenate(truncated) if truncated else np.zeros(0, bool),
    )


def _sparse_matrix(vectors: Sequence[SparseVector], vocab: int):
    from scipy.sparse import csr_matrix

    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(v) for v in vectors])
    indices = np.concatenate([v.indices for v in vectors]) if vectors else np.zeros(0, np.int64)
    values = np.concatenate([v.values for v in vectors]) if vectors else np.zeros(0, np.float32)
    return csr_matrix((values, indices, indptr), shape=(len(vectors), vocab))


def _maxsim_all(queries: Sequence[np.ndarray], docs: Sequence[np.ndarray], *, pair_budget: int = 1 << 26,
                show_progress: bool = True) -> np.ndarray:  # fmt: skip
    """``[n_queries, n_docs]`` MaxSim (mean over query tokens of the best doc token), exhaustively.

    Documents go in chunks of about ``pair_budget / query tokens`` tokens, so the query x chunk
    similarity block (and its index for the per-document max) stays near ``pair_budget``
    entries however many queries there are (a fixed chunk size took 20 GB for 422 queries).
    """
    n_q, n_d = len(queries), len(docs)
    out = np.zeros((n_q, n_d), dtype=np.float32)
    q_all = torch.from_numpy(np.concatenate(queries).astype(np.float32))
    q_owner = torch.repeat_interleave(torch.arange(n_q), torch.tensor([len(q) for q in queries]))
    q_count = torch.tensor([len(q) for q in queries], dtype=torch.float32)
    lengths = [len(d) for d in docs]
    chunk_tokens = max(1, pair_budget // max(1, q_all.shape[0]))
    start = 0
    bar = tqdm(total=n_d, desc="colbert maxsim", disable=not show_progress)
    while start < n_d:
        stop, tokens = start, 0
        while stop < n_d and (tokens == 0 or tokens + lengths[stop] <= chunk_tokens):
            tokens += lengths[stop]
            stop += 1
        d = torch.from_numpy(np.concatenate(docs[start:stop]).astype(np.float32))
        sim = q_all @ d.T  # [all query tokens, chunk doc tokens]
        owner = torch.repeat_interleave(torch.arange(stop - start), torch.tensor(lengths[start:stop]))
        best = torch.full((q_all.shape[0], stop - start), -torch.inf)
        best = best.scatter_reduce(1, owner.expand(q_all.shape[0], -1), sim, reduce="amax", include_self=True)
        per_query = torch.zeros(n_q, stop - start).index_add_(0, q_owner, best)
        out[:, start:stop] = (per_query / q_count[:, None]).numpy()
        bar.update(stop - start)
        start = stop
    bar.close()
    return out


def _top(scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int = TOP_K) -> dict:
    k = min(k, scores.shape[1])
    run: dict[str, dict[str, float]] = {}
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    for qi, qid in enumerate(query_ids):
        run[qid] = {doc_ids[j]: float(scores[qi, j]) for j in top[qi]}
    return run


def score_matrices(queries: M3Output, corpus: M3Output, *, show_progress: bool = True) -> dict[str, np.ndarray]:
    """``[n_queries, n_docs]`` scores of the three single modes, exhaustively."""
    vocab = 1 + max(
        max((int(v.indices.max()) for v in corpus.sparse if len(v)), default=0),
        max((int(v.indices.max()) for v in queries.sparse if len(v)), default=0),
    )
    sparse = (_sparse_matrix(queries.sparse, vocab) @ _sparse_matrix(corpus.sparse, vocab).T).toarray()
    return {
        "dense": (queries.dense @ corpus.dense.T).astype(np.float32),
        "sparse": sparse.astype(np.float32),
        "colbert": _maxsim_all(queries.colbert, corpus.colbert, show_progress=show_progress),
    }


def combined(scores: dict[str, np.ndarray], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """The five exhaustive modes from the three single-mode score matrices."""
    d, s, c = scores["dense"], scores["sparse"], scores["colbert"]
    return {"dense": d, "sparse": s, "colbert": c, "dense+sparse": combine_scores(d, s, weights=weights),
            "all": combine_scores(d, s, c, weights=weights)}  # fmt: skip


def top_run(scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int = TOP_K) -> dict:
    """The ``k`` best documents of each query as a ranx-ready ``{qid: {doc_id: score}}``."""
    return _top(scores, query_ids, doc_ids, k)


def exhaustive_runs(
    queries: M3Output,
    corpus: M3Output,
    data: BeirData,
    weights: Sequence[float],
    *,
    scores: dict[str, np.ndarray] | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-100 runs of every exhaustive mode from already-encoded queries and corpus.

    ``scores``: the :func:`score_matrices` of these encodings when already computed (reused as is).
    """
    if scores is None:
        scores = score_matrices(queries, corpus, show_progress=show_progress)
    scores = combined(scores, weights)
    return {mode: _top(s, data.query_ids, data.doc_ids) for mode, s in scores.items()}


def pipeline_runs(
    encoder,
    queries: M3Output,
    corpus: M3Output,
    data: BeirData,
    weights: Sequence[float],
    *,
    index_path: str | Path | None = None,
    modes: Sequence[str] = PIPELINE_MODES,
    prefetch_k: int | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-100 runs of the store's search modes over a Qdrant Edge index of the same encodings."""
    from m3_rag.store import M3Store

    with tempfile.TemporaryDirectory(prefix="m3-eval-") as tmp:
        path = Path(index_path) if index_path else Path(tmp) / "index"
        store = M3Store(encoder, path=path)
        try:
            store.clear()
            for start in tqdm(range(0, len(data.doc_ids), 512), desc="index", disable=not show_progress):
                rows = range(start, min(start + 512, len(data.doc_ids)))
                part = corpus.select(rows)
                part = M3Output(part.dense, part.sparse, [c.astype(np.float32) for c in part.colbert],
                                part.token_counts, part.truncated)  # fmt: skip
                store.add_encoded([data.doc_texts[i] for i in rows], part, ids=[data.doc_ids[i] for i in rows])
            runs: dict[str, dict[str, dict[str, float]]] = {m: {} for m in modes}
            for qi, qid in enumerate(tqdm(data.query_ids, desc="search", disable=not show_progress)):
                one = queries.select([qi])
                for mode in modes:
                    hits = store.search_encoded(one, mode=mode, k=TOP_K, prefetch_k=prefetch_k, weights=weights)
                    runs[mode][qid] = {str(h.id): float(h.score) for h in hits}
        finally:
            store.close()
    return runs


