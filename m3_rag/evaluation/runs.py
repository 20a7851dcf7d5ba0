"""Ranked runs per mode: exhaustive scoring of encoded queries against an encoded corpus, and the store pipeline.

Exhaustive modes score every query against every document (``dense``, ``sparse``, ``colbert``,
``dense+sparse``, ``all``; the combinations use :func:`m3_rag.scoring.combine_scores`). The
pipeline indexes the same encodings in Qdrant Edge through :class:`m3_rag.store.M3Store` and
runs its ``hybrid+rerank`` and ``m3`` searches, so the gap to exhaustive ``all`` is what the
index costs: the prefetch, and the store's compact ColBERT storage (token pooling by
``colbert_pool_factor``, quantization by ``colbert_datatype``). :func:`pipeline_grid_runs`
indexes the same encodings once per (pool factor, datatype) combination, so a grid of storage
settings costs one encode of the corpus; with more than one combination each mode is named
after its settings, ``m3@f2-turbo8`` (:func:`pipeline_mode_name`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from m3_rag.evaluation.beir import BeirData
from m3_rag.scoring import combine_scores
from m3_rag.types import M3Output, SparseVector, require_output

if TYPE_CHECKING:  # the store is imported only when a pipeline runs
    from m3_rag.store.queries import Mode

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
    "pipeline_grid",
    "pipeline_mode_name",
    "pipeline_collection",
    "pipeline_grid_runs",
]

EXHAUSTIVE_MODES = ("dense", "sparse", "colbert", "dense+sparse", "all")
PIPELINE_MODES: tuple[Mode, ...] = ("hybrid+rerank", "m3")
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
    q_sparse, d_sparse = require_output(queries.sparse, "sparse"), require_output(corpus.sparse, "sparse")
    vocab = 1 + max(
        max((int(v.indices.max()) for v in d_sparse if len(v)), default=0),
        max((int(v.indices.max()) for v in q_sparse if len(v)), default=0),
    )
    sparse = (_sparse_matrix(q_sparse, vocab) @ _sparse_matrix(d_sparse, vocab).T).toarray()
    q_colbert, d_colbert = require_output(queries.colbert, "colbert"), require_output(corpus.colbert, "colbert")
    return {
        "dense": (require_output(queries.dense, "dense") @ require_output(corpus.dense, "dense").T).astype(np.float32),
        "sparse": sparse.astype(np.float32),
        "colbert": _maxsim_all(q_colbert, d_colbert, show_progress=show_progress),
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


#: One grid point: (ColBERT pool factor, ColBERT datatype, dense quantization); None: the store's.
GridPoint = tuple[int | None, str | None, str | None]


def _listed(value: Any) -> list[Any]:
    return [value] if value is None or isinstance(value, (int, str)) else list(dict.fromkeys(value))


def pipeline_grid(
    pool_factors: int | Sequence[int] | None = None,
    datatypes: str | Sequence[str] | None = None,
    dense_quantizations: str | Sequence[str] | None = None,
) -> list[GridPoint]:
    """Every (pool factor, datatype, dense quantization) combination, validated, duplicates
    dropped; ``None`` (or an empty list) leaves that setting to the store (its default):
    ``[(None, None, None)]`` for no options."""
    from m3_rag.store.schema import COLBERT_DATATYPES, check_dense_quantization, check_pool_factor

    factors, types, denses = _listed(pool_factors), _listed(datatypes), _listed(dense_quantizations)
    for f in factors:
        if f is not None:
            check_pool_factor(f)
    for d in types:
        if d is not None and d not in COLBERT_DATATYPES:
            raise ValueError(f"colbert_datatype={d!r}; expected one of {COLBERT_DATATYPES}.")
    for q in denses:
        if q is not None:
            check_dense_quantization(q)
    return [(f, d, q) for f in factors or [None] for d in types or [None] for q in denses or [None]]


def pipeline_mode_name(mode: str, settings: Mapping[str, Any], with_dense: bool = False) -> str:
    """``m3@f2-turbo8`` (``m3@f2-turbo8-dense-int8`` ``with_dense``): a pipeline mode run on an
    index stored with ``settings`` (``colbert_pool_factor``, ``colbert_datatype``, ``dense_quantization``)."""
    name = f"{mode}@f{settings['colbert_pool_factor']}-{settings['colbert_datatype']}"
    return f"{name}-dense-{settings['dense_quantization']}" if with_dense else name


def pipeline_collection(pool_factor: int | None, datatype: str | None, dense_quantization: str | None = None) -> str:
    """The collection a combination is indexed into: ``m3`` with no options (as before), else
    one per options (``m3-f2-turbo8``, ``m3-f2-turbo8-dense-none``), so that a kept ``index_path``
    holds each grid point and an index is never reopened with settings it was not built with."""
    parts = ([f"f{pool_factor}"] if pool_factor is not None else []) + ([datatype] if datatype is not None else [])
    parts += [f"dense-{dense_quantization}"] if dense_quantization is not None else []
    return "-".join(["m3", *parts])


def _pipeline_index_runs(
    encoder,
    queries: M3Output,
    corpus: M3Output,
    data: BeirData,
    weights: Sequence[float],
    *,
    index_path: str | Path | None,
    modes: Sequence[Mode],
    prefetch_k: int | None,
    colbert_pool_factor: int | None,
    colbert_datatype: str | None,
    dense_quantization: str | None = None,
    show_progress: bool,
):
    """One index of the corpus with these storage options; its runs and the settings it used
    (``colbert_datatype``, ``colbert_pool_factor``, ``dense_quantization``)."""
    from m3_rag.store import M3Store

    collection = pipeline_collection(colbert_pool_factor, colbert_datatype, dense_quantization)
    with tempfile.TemporaryDirectory(prefix="m3-eval-") as tmp:
        path = Path(index_path) if index_path else Path(tmp) / "index"
        # colbert_datatype: the caller's str (pipeline_runs takes any); M3Store validates it.
        store = M3Store(encoder, path=path, collection=collection, colbert_pool_factor=colbert_pool_factor,
                        colbert_datatype=colbert_datatype, dense_quantization=dense_quantization)  # type: ignore[arg-type]  # fmt: skip
        try:
            settings = {**store.schema.colbert.to_json(), "dense_quantization": store.schema.dense_quantization}
            store.clear()
            desc = (f"index ({settings['colbert_datatype']}, pool factor {settings['colbert_pool_factor']}, "
                    f"dense {settings['dense_quantization']})")  # fmt: skip
            for start in tqdm(range(0, len(data.doc_ids), 512), desc=desc, disable=not show_progress):
                rows = range(start, min(start + 512, len(data.doc_ids)))
                part = corpus.select(rows)
                part = M3Output(part.dense, part.sparse, [c.astype(np.float32) for c in require_output(part.colbert, "colbert")],
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
    return runs, settings


def pipeline_runs(
    encoder,
    queries: M3Output,
    corpus: M3Output,
    data: BeirData,
    weights: Sequence[float],
    *,
    index_path: str | Path | None = None,
    modes: Sequence[Mode] = PIPELINE_MODES,
    prefetch_k: int | None = None,
    colbert_pool_factor: int | None = None,
    colbert_datatype: str | None = None,
    dense_quantization: str | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-100 runs of the store's search modes over a Qdrant Edge index of the same encodings.

    ``colbert_pool_factor`` / ``colbert_datatype`` / ``dense_quantization`` go to
    :class:`m3_rag.store.M3Store` (None: the store's defaults). The index is collection :func:`pipeline_collection` under ``index_path``
    (default: a temporary folder, removed afterwards); it is emptied first.
    """
    runs, _ = _pipeline_index_runs(
        encoder, queries, corpus, data, weights, index_path=index_path, modes=modes, prefetch_k=prefetch_k,
        colbert_pool_factor=colbert_pool_factor, colbert_datatype=colbert_datatype,
        dense_quantization=dense_quantization, show_progress=show_progress,
    )  # fmt: skip
    return runs


def pipeline_grid_runs(
    encoder,
    queries: M3Output,
    corpus: M3Output,
    data: BeirData,
    weights: Sequence[float],
    *,
    grid: Sequence[GridPoint] = ((None, None, None),),
    index_path: str | Path | None = None,
    modes: Sequence[Mode] = PIPELINE_MODES,
    prefetch_k: int | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, Any]]]:
    """:func:`pipeline_runs` once per (pool factor, datatype, dense quantization) of ``grid``
    (:func:`pipeline_grid`), on the same encodings (one index at a time; under ``index_path``
    each keeps its collection).

    Returns the runs and, per run name, ``{"mode", "colbert_datatype", "colbert_pool_factor",
    "dense_quantization"}`` (the settings the store used). One combination keeps the plain mode
    names (``m3``); several name each run :func:`pipeline_mode_name` (``m3@f2-turbo8``, with
    ``-dense-int8`` when the grid sets the dense quantization).
    """
    if not grid:
        raise ValueError("grid is empty; expected at least one (pool factor, datatype, dense), e.g. [(None, None, None)]")
    with_dense = any(q is not None for _, _, q in grid)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for pool_factor, datatype, dense in grid:
        got, used = _pipeline_index_runs(
            encoder, queries, corpus, data, weights, index_path=index_path, modes=modes, prefetch_k=prefetch_k,
            colbert_pool_factor=pool_factor, colbert_datatype=datatype, dense_quantization=dense,
            show_progress=show_progress,
        )  # fmt: skip
        for mode, run in got.items():
            name = mode if len(grid) == 1 else pipeline_mode_name(mode, used, with_dense)
            if name in runs:
                raise ValueError(f"two grid points ran with the same settings {used}; expected distinct ones")
            runs[name] = run
            settings[name] = {"mode": mode, **used}
    return runs, settings
