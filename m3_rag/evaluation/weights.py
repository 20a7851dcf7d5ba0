"""Choosing the (dense, sparse, colbert) mode weights a model ships with, on training queries.

The weights are picked by nDCG@10 of the ``all`` score on a grid over the simplex (the
combined score divides by the weights' sum, so only their ratios matter). Pick them on the
training split, never on the split you report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from m3_rag.evaluation.beir import BeirData
from m3_rag.evaluation.report import score_runs
from m3_rag.evaluation.runs import top_run
from m3_rag.scoring import combine_scores

__all__ = ["WeightChoice", "weight_grid", "select_weights"]


@dataclass(frozen=True)
class WeightChoice:
    weights: tuple[float, float, float]
    ndcg10: float
    tried: list[tuple[tuple[float, float, float], float]]  # every grid point and its nDCG@10


def weight_grid(step: float = 0.1, min_weight: float = 0.0) -> list[tuple[float, float, float]]:
    """All (dense, sparse, colbert) with the given step that sum to 1, each at least ``min_weight``.

    ``min_weight > 0`` keeps only points where every mode counts, so the chosen ``all`` is a
    real combination of the three and never collapses to a single mode or a pair.

    >>> len(weight_grid(0.5)), weight_grid(0.5)[:2]
    (6, [(0.0, 0.0, 1.0), (0.0, 0.5, 0.5)])
    >>> len(weight_grid(0.1)), len(weight_grid(0.1, min_weight=0.1)), min(min(w) for w in weight_grid(0.1, 0.1))
    (66, 36, 0.1)
    """
    if not 0 < step <= 1:
        raise ValueError(f"step is {step}, expected 0 < step <= 1")
    if not 0 <= min_weight <= 1 / 3:
        raise ValueError(f"min_weight is {min_weight}, expected 0 <= min_weight <= 1/3 (three weights sum to 1)")
    n = round(1 / step)
    grid = [(round(i / n, 6), round(j / n, 6), round((n - i - j) / n, 6)) for i in range(n + 1) for j in range(n + 1 - i)]
    grid = [w for w in grid if min(w) >= min_weight - 1e-9]
    if not grid:
        raise ValueError(f"no grid point of step {step} has every weight >= {min_weight}; lower min_weight or the step")
    return grid


def select_weights(scores: dict[str, np.ndarray], data: BeirData, *, step: float = 0.1, min_weight: float = 0.0,
                   grid: Sequence[tuple[float, float, float]] | None = None) -> WeightChoice:  # fmt: skip
    """The grid point whose ``all`` score has the best nDCG@10 on ``data`` (ties: first in grid order)."""
    tried: list[tuple[tuple[float, float, float], float]] = []
    for w in grid or weight_grid(step, min_weight):
        combined = combine_scores(scores["dense"], scores["sparse"], scores["colbert"], weights=w)
        run = top_run(combined, data.query_ids, data.doc_ids, k=10)
        (result,) = score_runs({"all": run}, data.qrels)
        tried.append(((w[0], w[1], w[2]), result.ndcg10))  # a tuple even if the grid holds lists
    best = max(tried, key=lambda t: t[1])
    return WeightChoice(best[0], best[1], tried)
