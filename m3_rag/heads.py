"""BGE-M3's three heads over the backbone's last hidden states, shared by every backend.

The torch backend runs these functions after its forward pass; the ONNX export
(:mod:`m3_rag.onnx.export`) traces the same functions into its graph, and the post-processing
in :mod:`m3_rag.encoder` reads either through :class:`HeadOutputs`. One copy of the math is
what keeps the backends equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["HeadOutputs", "pool_dense", "sparse_token_weights", "colbert_token_vectors"]


@dataclass(frozen=True)
class HeadOutputs:
    """What one forward pass of a batch hands the shared post-processing, computed on demand.

    ``dense(valid, cls_positions)``: L2-normalised dense vectors [B, H] (``cls_positions``: the
    multi-CLS positions, or None for the model's own pooling). ``token_weights()``: ReLU'd
    sparse weights per token [B, L]. ``colbert(rows)``: ColBERT vectors [n, D], not normalised,
    of the tokens where the bool mask ``rows`` [B, L] is set (never position 0, the CLS).
    """

    dense: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    token_weights: Callable[[], torch.Tensor]
    colbert: Callable[[torch.Tensor], torch.Tensor]


def pool_dense(hidden: torch.Tensor, valid: torch.Tensor, cls_positions: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """The normalised dense vector: the CLS state, the mean over ``valid`` tokens, or the mean over ``cls_positions``."""
    if cls_positions is not None:
        weights = cls_positions.float()
    elif pooling == "cls":
        return F.normalize(hidden[:, 0].float(), dim=-1)
    else:
        weights = valid.float()
    pooled = (hidden.float() * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True)
    return F.normalize(pooled, dim=-1)


def sparse_token_weights(sparse_linear: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Each token's lexical weight [B, L]: ReLU of the sparse head (padding and special tokens are dropped later)."""
    return torch.relu(sparse_linear(hidden.float())).squeeze(-1)


def colbert_token_vectors(colbert_linear: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The ColBERT head over token states (``[..., H]`` to ``[..., D]``), before normalisation."""
    return colbert_linear(hidden.float())
