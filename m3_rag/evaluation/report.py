"""Scores per mode (nDCG@10, Recall@100 from ``ranx``) and the table they print as."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3_rag.evaluation.weights import WeightChoice

__all__ = ["ModeScore", "EvalReport", "METRICS", "score_runs"]

METRICS = ("ndcg@10", "recall@100")


@dataclass(frozen=True)
class ModeScore:
    mode: str
    ndcg10: float
    recall100: float
    # nDCG@10 of each query: two runs on the same queries compare by a paired test, which needs them.
    per_query_ndcg10: dict[str, float] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class EvalReport:
    dataset: str
    model: str
    n_queries: int
    n_docs: int
    weights: tuple[float, float, float]
    scores: list[ModeScore] = field(default_factory=list)
    weight_choice: WeightChoice | None = None  # set when the weights were selected on this data
    # Per pipeline mode, how its index stored ColBERT: {"mode", "colbert_datatype", "colbert_pool_factor"}.
    pipeline_colbert: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How the encoder ran (its config's backend and precision): an fp32 and an int8 report differ here.
    backend: str = "torch"
    precision: str = "fp32"

    def score(self, mode: str) -> ModeScore:
        for s in self.scores:
            if s.mode == mode:
                return s
        raise KeyError(f"mode {mode!r} was not evaluated; evaluated: {[s.mode for s in self.scores]}")

    def to_table(self) -> str:
        """A Markdown table, one row per mode."""
        lines = [
            f"{self.dataset}: {self.n_queries} queries, {self.n_docs} docs, model {self.model}"
            f"{'' if (self.backend, self.precision) == ('torch', 'fp32') else f' ({self.backend} {self.precision})'}, "
            f"weights (dense, sparse, colbert) = {self.weights}"
            + (" (selected on this split)" if self.weight_choice is not None else ""),
            "",
        ]
        if not self.pipeline_colbert:
            lines += ["| mode | nDCG@10 | Recall@100 |", "|---|---:|---:|"]
            lines += [f"| {s.mode} | {s.ndcg10:.4f} | {s.recall100:.4f} |" for s in self.scores]
            return "\n".join(lines)
        lines += ["| mode | nDCG@10 | Recall@100 | ColBERT stored |", "|---|---:|---:|---|"]
        for s in self.scores:
            c = self.pipeline_colbert.get(s.mode)
            stored = (f"{c['colbert_datatype']}, pool factor {c['colbert_pool_factor']}, dense {c.get('dense_quantization', 'none')}"
                      if c else "float16, not pooled (exhaustive)")  # fmt: skip
            lines.append(f"| {s.mode} | {s.ndcg10:.4f} | {s.recall100:.4f} | {stored} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "model": self.model, "backend": self.backend, "precision": self.precision,
            "n_queries": self.n_queries, "n_docs": self.n_docs,
            "weights": list(self.weights),
            "weights_selected_here": self.weight_choice is not None,
            "scores": {s.mode: {"ndcg@10": s.ndcg10, "recall@100": s.recall100} for s in self.scores},
            "per_query_ndcg@10": {s.mode: s.per_query_ndcg10 for s in self.scores},
            "pipeline_colbert": self.pipeline_colbert,
        }  # fmt: skip


def score_runs(runs: dict[str, dict[str, dict[str, float]]], qrels: dict[str, dict[str, int]]) -> list[ModeScore]:
    """nDCG@10 and Recall@100 of each run with ranx (queries without hits count as 0)."""
    try:
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate
    except ImportError as exc:
        raise ImportError('evaluation needs the ranx metrics library. Fix: pip install "m3-rag[eval]"') from exc

    ranx_qrels = Qrels(qrels)
    out = []
    for mode, run in runs.items():
        full = {q: (run.get(q) or {"__none__": 0.0}) for q in qrels}  # ranx needs every query present
        ranx_run = Run(full)
        metrics = ranx_evaluate(ranx_qrels, ranx_run, list(METRICS), make_comparable=True)
        per_query = {q: float(v) for q, v in ranx_run.scores["ndcg@10"].items()}
        out.append(ModeScore(mode, float(metrics["ndcg@10"]), float(metrics["recall@100"]), per_query))
    return out


