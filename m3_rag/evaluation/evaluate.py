"""One call: encode a BEIR slice once, score every exhaustive mode and the store pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from m3_rag.evaluation.beir import BeirData
from m3_rag.evaluation.report import EvalReport, score_runs
from m3_rag.evaluation.runs import encode_corpus, exhaustive_runs, pipeline_runs

__all__ = ["evaluate"]


def evaluate(
    encoder,
    data: BeirData,
    *,
    model_name: str = "",
    weights: Sequence[float] | None = None,
    pipeline: bool = True,
    index_path: str | Path | None = None,
    prefetch_k: int | None = None,
    show_progress: bool = True,
) -> EvalReport:
    """Encode once, score every exhaustive mode (and the store pipeline), return the table."""
    w = tuple(float(x) for x in (weights if weights is not None else encoder.config.default_weights))
    if len(w) != 3:
        raise ValueError(f"weights has {len(w)} values, expected 3: (dense, sparse, colbert)")
    queries = encoder.encode_queries(data.query_texts)
    corpus = encode_corpus(encoder, data.doc_texts, show_progress=show_progress)
    runs = exhaustive_runs(queries, corpus, data, w, show_progress=show_progress)
    if pipeline:
        runs.update(pipeline_runs(encoder, queries, corpus, data, w, index_path=index_path,
                                  prefetch_k=prefetch_k, show_progress=show_progress))  # fmt: skip
    return EvalReport(data.name, model_name, len(data.query_ids), len(data.doc_ids), w, score_runs(runs, data.qrels))  # type: ignore[arg-type]
