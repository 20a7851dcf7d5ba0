"""One call: encode a BEIR slice once, score every exhaustive mode and the store pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from m3_rag.evaluation.beir import BeirData
from m3_rag.evaluation.report import EvalReport, score_runs
from m3_rag.evaluation.runs import encode_corpus, exhaustive_runs, pipeline_grid, pipeline_grid_runs, score_matrices
from m3_rag.store.queries import check_weights, model_weights

__all__ = ["evaluate"]


def evaluate(
    encoder,
    data: BeirData,
    *,
    model_name: str = "",
    weights: Sequence[float] | None = None,
    select_weights: bool = False,
    weight_step: float = 0.1,
    min_weight: float = 0.1,
    pipeline: bool = True,
    index_path: str | Path | None = None,
    prefetch_k: int | None = None,
    colbert_pool_factor: int | Sequence[int] | None = None,
    colbert_datatype: str | Sequence[str] | None = None,
    dense_quantization: str | Sequence[str] | None = None,
    exhaustive: bool = True,
    show_progress: bool = True,
) -> EvalReport:
    """Encode once, score every exhaustive mode (and the store pipeline), return the table.

    ``exhaustive=False`` skips the exhaustive modes (and their MaxSim pass over the corpus):
    they do not change with the pipeline's storage settings, so a grid of those can leave them out.

    With ``select_weights`` the (dense, sparse, colbert) weights are chosen on ``data`` itself
    (:func:`m3_rag.evaluation.weights.select_weights`, grid step ``weight_step``, every weight
    at least ``min_weight``) from the same encodings and score matrices the table is built
    from: the corpus is encoded, and ColBERT's MaxSim computed, once. Use it on a TRAINING split.
    """
    if select_weights and weights is not None:
        raise ValueError("both weights and select_weights given; expected one (fixed weights, or choose them)")
    if not (exhaustive or pipeline):
        raise ValueError("exhaustive=False and pipeline=False leave nothing to score; expected at least one of them")
    if select_weights and not exhaustive:
        raise ValueError("select_weights chooses on the exhaustive scores; expected exhaustive=True with it")
    # Fixed weights are checked before the (long) encode: bad ones fail at once.
    grid = pipeline_grid(colbert_pool_factor, colbert_datatype, dense_quantization)  # bad storage options fail here too
    fixed = None if select_weights else (check_weights(weights) if weights is not None else model_weights(encoder))
    queries = encoder.encode_queries(data.query_texts)
    corpus = encode_corpus(encoder, data.doc_texts, show_progress=show_progress)
    # The exhaustive modes do not depend on the storage settings: a grid of pipelines can skip them.
    scores = score_matrices(queries, corpus, show_progress=show_progress) if exhaustive else None
    choice = None
    if fixed is None:  # select_weights (exhaustive, checked above)
        from m3_rag.evaluation.weights import select_weights as choose

        assert scores is not None
        choice = choose(scores, data, step=weight_step, min_weight=min_weight)
        w = choice.weights
    else:
        w = fixed
    runs = exhaustive_runs(queries, corpus, data, w, scores=scores, show_progress=show_progress) if scores is not None else {}
    pipeline_colbert: dict = {}
    if pipeline:
        found, pipeline_colbert = pipeline_grid_runs(encoder, queries, corpus, data, w, grid=grid, index_path=index_path,
                                                     prefetch_k=prefetch_k, show_progress=show_progress)  # fmt: skip
        runs.update(found)
    config = getattr(encoder, "config", None)  # M3Encoder's records its backend; other encoders count as torch fp32
    return EvalReport(data.name, model_name, len(data.query_ids), len(data.doc_ids), w,
                      score_runs(runs, data.qrels), weight_choice=choice, pipeline_colbert=pipeline_colbert,
                      backend=str(getattr(config, "backend", "torch")),
                      precision=str(getattr(config, "precision", "fp32")))  # fmt: skip
