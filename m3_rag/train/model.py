"""The differentiable M3 forward used for training.

The inference encoder runs under ``no_grad``; training needs gradients, so the head math is
repeated here, kept identical to :class:`m3_rag.encoder.M3Encoder`:
dense = CLS or mean-pooled state, L2-normalised; sparse = ``ReLU(sparse_linear(h))``, max per
token id, special tokens (cls/eos/sep/pad/unk) dropped; ColBERT = ``colbert_linear(h[:, 1:])``
over the real tokens, rows L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from m3_rag.loading import COLBERT_HEAD, SPARSE_HEAD, load_heads

__all__ = ["HeadSpec", "M3Heads", "Reps", "head_outputs", "dense_scores", "sparse_scores", "colbert_scores"]


@dataclass(frozen=True)
class HeadSpec:
    """What the head math needs besides the weights."""

    pooling: str  # "cls" or "mean"
    vocab_size: int
    unused_token_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer, pooling: str, vocab_size: int) -> HeadSpec:
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling is {pooling!r}; expected 'cls' or 'mean'")
        special = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.sep_token_id,
                   tokenizer.pad_token_id, tokenizer.unk_token_id)  # fmt: skip
        size = max(vocab_size, len(tokenizer))
        return cls(pooling, size, tuple(sorted({i for i in special if i is not None})))


@dataclass(frozen=True)
class Reps:
    """A batch's three representations, differentiable."""

    dense: torch.Tensor  # [B, H]
    sparse: torch.Tensor  # [B, V] max weight per token id (0 where absent)
    colbert: torch.Tensor  # [B, L-1, D], rows normalised (zeros at padding)
    colbert_mask: torch.Tensor  # [B, L-1] bool


class M3Heads(nn.Module):
    """``colbert_linear`` ([D, H]) and ``sparse_linear`` ([1, H]) as BGE-M3 stores them."""

    def __init__(self, hidden_size: int, colbert_dim: int | None = None) -> None:
        super().__init__()
        self.colbert_linear = nn.Linear(hidden_size, colbert_dim or hidden_size)
        self.sparse_linear = nn.Linear(hidden_size, 1)

    @classmethod
    def fresh(
        cls,
        hidden_size: int,
        colbert_dim: int | None = None,
        *,
        colbert_init: str = "identity",
        sparse_bias: float = 0.1,
        seed: int = 0,
    ) -> M3Heads:
        """New heads for a backbone that has none.

        ``colbert_init="identity"`` starts ColBERT from the backbone's own token states (needs
        ``colbert_dim == hidden_size``), ``"random"`` uses PyTorch's default init as FlagEmbedding
        does. The sparse head starts at weight 0, bias ``sparse_bias``: every token gets the same
        positive weight (plain token overlap). A random init leaves most ReLU outputs at zero and
        the head never recovers (measured in issue 7).
        """
        torch.manual_seed(seed)
        heads = cls(hidden_size, colbert_dim)
        with torch.no_grad():
            if colbert_init == "identity":
                if heads.colbert_linear.out_features != hidden_size:
                    raise ValueError(
                        f"identity ColBERT init needs colbert_dim == hidden size {hidden_size}; "
                        f"found {heads.colbert_linear.out_features}. Fix: colbert_init='random'."
                    )
                heads.colbert_linear.weight.copy_(torch.eye(hidden_size))
                heads.colbert_linear.bias.zero_()
            elif colbert_init != "random":
                raise ValueError(f"colbert_init is {colbert_init!r}; expected 'identity' or 'random'")
            heads.sparse_linear.weight.zero_()
            heads.sparse_linear.bias.fill_(sparse_bias)
        return heads

    @classmethod
    def load(cls, heads_dir: Path, hidden_size: int) -> M3Heads:
        colbert, sparse = load_heads(Path(heads_dir), hidden_size)
        heads = cls(hidden_size, colbert.out_features)
        heads.colbert_linear.load_state_dict(colbert.state_dict())
        heads.sparse_linear.load_state_dict(sparse.state_dict())
        return heads

    def save(self, out_dir: Path) -> None:
        """Write ``colbert_linear.pt`` and ``sparse_linear.pt`` (plain float32 state dicts)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, layer in ((COLBERT_HEAD, self.colbert_linear), (SPARSE_HEAD, self.sparse_linear)):
            state = {k: v.detach().float().cpu().clone() for k, v in layer.state_dict().items()}
            torch.save(state, out_dir / name)


def head_outputs(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    heads: M3Heads,
    spec: HeadSpec,
    modes: tuple[str, ...] = ("dense", "sparse", "colbert"),
) -> Reps:
    """The representations in ``modes`` from last hidden states ``[B, L, H]`` (gradients flow).

    A mode left out is an empty tensor (ColBERT over every token is the costly part).
    """
    hidden = hidden.float()
    valid = attention_mask.bool()
    empty = hidden.new_zeros(0)
    if "dense" not in modes:
        dense = empty
    elif spec.pooling == "cls":
        dense = hidden[:, 0]
    else:
        w = valid.float().unsqueeze(-1)
        dense = (hidden * w).sum(1) / w.sum(1)
    if "dense" in modes:
        dense = F.normalize(dense, dim=-1)
    colbert_mask = valid[:, 1:]
    if "sparse" not in modes:
        sparse = empty
    else:
        sparse = _sparse(hidden, input_ids, valid, heads, spec)
    if "colbert" in modes:
        colbert = F.normalize(heads.colbert_linear(hidden[:, 1:]), dim=-1) * colbert_mask.unsqueeze(-1)
    else:
        colbert = empty
    return Reps(dense=dense, sparse=sparse, colbert=colbert, colbert_mask=colbert_mask)


def _sparse(hidden: torch.Tensor, input_ids: torch.Tensor, valid: torch.Tensor, heads: M3Heads, spec: HeadSpec):
    weights = torch.relu(heads.sparse_linear(hidden)).squeeze(-1)
    unused = torch.tensor(spec.unused_token_ids, device=input_ids.device, dtype=input_ids.dtype)
    keep = valid & ~torch.isin(input_ids, unused)
    weights = weights * keep
    sparse = torch.zeros(hidden.shape[0], spec.vocab_size, device=hidden.device, dtype=weights.dtype)
    # Weights are >= 0 and start from 0, so amax with the zeros is the max over a token's occurrences.
    return sparse.scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)


def dense_scores(q: Reps, p: Reps) -> torch.Tensor:
    return q.dense @ p.dense.T


def sparse_scores(q: Reps, p: Reps) -> torch.Tensor:
    return q.sparse @ p.sparse.T


def colbert_scores(q: Reps, p: Reps) -> torch.Tensor:
    """MaxSim over real tokens: for each query token the best passage token, averaged over query tokens."""
    sim = torch.einsum("qin,pjn->qipj", q.colbert, p.colbert)  # [Bq, Lq, Bp, Lp]
    sim = sim.masked_fill(~p.colbert_mask[None, None], torch.finfo(sim.dtype).min)
    best = sim.amax(-1)  # [Bq, Lq, Bp]
    best = best * q.colbert_mask.unsqueeze(-1)
    return best.sum(1) / q.colbert_mask.sum(1, keepdim=True)
