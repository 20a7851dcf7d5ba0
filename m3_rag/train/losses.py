"""BGE-M3's unified fine-tuning loss (InfoNCE per mode + self-knowledge distillation), pure functions.

Every function takes raw similarity scores ``[B, N]`` (query ``i`` against ``N`` passages) and
the column of each query's positive; nothing here knows about models or batches.

>>> import torch
>>> s = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
>>> round(float(info_nce(s / 0.02, torch.tensor([0, 1]))), 6)
0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossWeights", "M3Loss", "info_nce", "self_distill", "soft_info_nce", "m3_loss", "subset_loss"]


@dataclass(frozen=True)
class LossWeights:
    """The constants of BGE-M3's unified loss (FlagEmbedding's defaults)."""

    ensemble_sparse: float = 0.3  # s_ens = s_dense + 0.3 * s_sparse + s_colbert
    sparse: float = 0.1  # weight of the sparse InfoNCE and KD terms


@dataclass(frozen=True)
class M3Loss:
    """Every term of the unified loss; ``total`` is the one to minimise."""

    total: torch.Tensor
    dense: torch.Tensor
    sparse: torch.Tensor
    colbert: torch.Tensor
    ensemble: torch.Tensor
    kd_dense: torch.Tensor
    kd_sparse: torch.Tensor
    kd_colbert: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in self.__dataclass_fields__}


def info_nce(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row's softmax against its positive column (scores already / temperature)."""
    return F.cross_entropy(scores, targets)


def soft_info_nce(scores: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``-mean_i sum_j teacher_ij * log_softmax(scores)_ij``: InfoNCE against a soft target distribution."""
    return -(teacher * F.log_softmax(scores, dim=-1)).sum(-1).mean()


def self_distill(student: torch.Tensor, ensemble: torch.Tensor) -> torch.Tensor:
    """BGE-M3's self-knowledge distillation: the teacher is ``softmax(ensemble)``, not back-propagated."""
    return soft_info_nce(student, torch.softmax(ensemble.detach(), dim=-1))


def m3_loss(
    dense: torch.Tensor,
    sparse: torch.Tensor,
    colbert: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 0.02,
    weights: LossWeights = LossWeights(),
    teacher: torch.Tensor | None = None,
) -> M3Loss:
    """The unified loss on raw scores ``[B, N]``.

    ``L = (L_dense + L_ens + w·L_sparse + L_colbert)/4``,
    ``KD = (KD_dense + w·KD_sparse + KD_colbert)/3``, total ``(L + KD)/2`` with ``w = weights.sparse``.
    With ``teacher`` (a ``[B, N]`` target distribution from an external teacher) the InfoNCE terms
    use it as a soft target instead of the one-hot positive.
    """
    if not (dense.shape == sparse.shape == colbert.shape) or dense.ndim != 2:
        raise ValueError(
            f"score matrices must share one [B, N] shape; found dense {tuple(dense.shape)}, "
            f"sparse {tuple(sparse.shape)}, colbert {tuple(colbert.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature is {temperature}, expected a positive number (BGE-M3 uses 0.02)")
    d, s, c = dense / temperature, sparse / temperature, colbert / temperature
    ens = d + weights.ensemble_sparse * s + c

    def nce(x: torch.Tensor) -> torch.Tensor:
        return info_nce(x, targets) if teacher is None else soft_info_nce(x, teacher)

    l_dense, l_sparse, l_colbert, l_ens = nce(d), nce(s), nce(c), nce(ens)
    base = (l_dense + l_ens + weights.sparse * l_sparse + l_colbert) / 4
    kd_dense, kd_sparse, kd_colbert = self_distill(d, ens), self_distill(s, ens), self_distill(c, ens)
    kd = (kd_dense + weights.sparse * kd_sparse + kd_colbert) / 3
    return M3Loss(
        total=(base + kd) / 2,
        dense=l_dense,
        sparse=l_sparse,
        colbert=l_colbert,
        ensemble=l_ens,
        kd_dense=kd_dense,
        kd_sparse=kd_sparse,
        kd_colbert=kd_colbert,
    )


def subset_loss(
    scores: dict[str, torch.Tensor],
    targets: torch.Tensor,
    *,
    temperature: float = 0.02,
    teacher: torch.Tensor | None = None,
) -> M3Loss:
    """Mean InfoNCE of the given modes alone (no ensemble, no distillation); absent terms are 0.

    For training a subset of the heads, e.g. warming up a fresh sparse head before the unified loss.
    """
    if not scores or not set(scores) <= {"dense", "sparse", "colbert"}:
        raise ValueError(f"scores has modes {sorted(scores)}, expected a non-empty subset of dense, sparse, colbert")
    if temperature <= 0:
        raise ValueError(f"temperature is {temperature}, expected a positive number (BGE-M3 uses 0.02)")
    terms = {}
    for mode, s in scores.items():
        x = s / temperature
        terms[mode] = info_nce(x, targets) if teacher is None else soft_info_nce(x, teacher)
    zero = next(iter(terms.values())).new_zeros(())
    return M3Loss(
        total=sum(terms.values(), zero) / len(terms),
        dense=terms.get("dense", zero),
        sparse=terms.get("sparse", zero),
        colbert=terms.get("colbert", zero),
        ensemble=zero,
        kd_dense=zero,
        kd_sparse=zero,
        kd_colbert=zero,
    )
