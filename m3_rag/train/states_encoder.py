"""The encoder API over cached backbone states: evaluate heads without re-running the backbone.

Evaluating trained heads needs every document's backbone states, which do not change while
only the heads train. :class:`StateCachedEncoder` keeps them in a :class:`StateStore` and
applies the heads with the training forward (:func:`m3_rag.train.model.head_outputs`, the
same math as :class:`m3_rag.encoder.M3Encoder`), so choosing weights or comparing heads costs
seconds instead of a corpus encode. States are float16: scores differ from the encoder's in
the third or fourth decimal.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import torch

from m3_rag.backends import Backend, Precision, check_backend
from m3_rag.loading import load_backbone, resolve_model
from m3_rag.train.model import HeadSpec, M3Heads, head_outputs
from m3_rag.train.states import StateStore
from m3_rag.types import ALL_OUTPUTS, Encoder, M3Output, OutputName, SparseVector, validate_outputs

__all__ = ["StateCachedEncoder", "open_encoder"]


@dataclass(frozen=True)
class _Config:
    default_weights: tuple[float, float, float]
    pooling: str


class StateCachedEncoder:
    """``encode_queries``/``encode_documents`` like :class:`M3Encoder`, from cached backbone states
    (an :class:`~m3_rag.types.Encoder`; progress bars are the constructor's ``show_progress``)."""

    outputs: tuple[OutputName, ...] = ALL_OUTPUTS

    def __init__(
        self,
        model: str | Path,
        cache_dir: str | Path,
        *,
        query_max_length: int = 512,
        document_max_length: int = 512,
        batch: int = 64,
        show_progress: bool = True,
    ) -> None:
        files = resolve_model(model)
        self.backbone, self.tokenizer = load_backbone(files.backbone_dir, dtype=torch.float32)
        self.backbone.eval()
        hidden = int(self.backbone.config.hidden_size)
        self.heads = M3Heads.load(files.heads_dir, hidden).eval()
        self.spec = HeadSpec.from_tokenizer(self.tokenizer, files.pooling, int(self.backbone.config.vocab_size))
        self.config = _Config(files.weights, files.pooling)
        self.dense_dim = hidden
        self.colbert_dim = int(self.heads.colbert_linear.out_features)
        self.vocab_size = self.spec.vocab_size
        self._stores = {
            "query": StateStore(cache_dir, files.backbone_dir, query_max_length),
            "document": StateStore(cache_dir, files.backbone_dir, document_max_length),
        }
        self._batch = batch
        self._progress = show_progress

    def encode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False, **_: object
    ) -> M3Output:
        return self._encode(list(texts), "query", validate_outputs(outputs))

    def encode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False, **_: object
    ) -> M3Output:
        return self._encode(list(texts), "document", validate_outputs(outputs))

    @torch.inference_mode()
    def _encode(self, texts: list[str], kind: str, wanted: tuple[str, ...]) -> M3Output:
        cache = self._stores[kind].get(self.backbone, self.tokenizer, texts, show_progress=self._progress,
                                       desc=f"{kind} states")  # fmt: skip
        lengths = cache.lengths().numpy()
        dense, sparse, colbert = [], [], []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(texts), self._batch):
            rows = list(range(start, min(start + self._batch, len(texts))))
            hidden, ids, mask = cache.batch(rows, pad)
            reps = head_outputs(hidden, ids, mask, self.heads, self.spec)
            dense.append(reps.dense.numpy())
            for b in range(len(rows)):
                nz = torch.nonzero(reps.sparse[b]).squeeze(-1)
                sparse.append(SparseVector(nz.numpy().astype(np.int64), reps.sparse[b, nz].numpy().astype(np.float32)))
                colbert.append(reps.colbert[b][reps.colbert_mask[b]].numpy())
        return M3Output(
            dense=np.concatenate(dense) if "dense" in wanted and dense else None,
            sparse=sparse if "sparse" in wanted else None,
            colbert=colbert if "colbert" in wanted else None,
            token_counts=lengths.astype(np.int64),
            truncated=np.zeros(len(texts), dtype=bool),  # not tracked for cached states
        )


class _Lengths(TypedDict, total=False):
    query_max_length: int
    document_max_length: int


def check_state_cache_backend(state_cache: str | Path | None, backend: str, precision: str) -> None:
    """ValueError unless ``backend``/``precision`` are valid and, with a state cache, torch fp32 (the
    cached states are the torch backbone's); nothing is read."""
    check_backend(backend, precision)
    if state_cache is not None and (backend, precision) != ("torch", "fp32"):
        raise ValueError(
            f"state_cache holds the torch backbone's states, found backend {backend!r} with precision {precision!r}; "
            "expected torch fp32. Fix: drop the state cache to encode with that backend, or keep the defaults."
        )


def open_encoder(
    model: str | Path,
    *,
    state_cache: str | Path | None = None,
    device: str | None = None,
    show_progress: bool = True,
    backend: Backend = "torch",
    precision: Precision = "fp32",
    **lengths: Unpack[_Lengths],
) -> Encoder:
    """The encoder a command scores with: heads over cached states when ``state_cache`` is given
    (``device`` unused: the heads run on the CPU), else :class:`m3_rag.encoder.M3Encoder` on
    ``backend`` at ``precision`` (cached states are the torch backbone's: torch fp32 only).
    ``lengths``: ``query_max_length`` / ``document_max_length``; absent ones are the encoder's own
    defaults (M3Encoder: 512 / 8192, capped to what the model can read; cached states: 512 / 512)."""
    check_state_cache_backend(state_cache, backend, precision)
    if state_cache is not None:
        return StateCachedEncoder(model, state_cache, show_progress=show_progress, **lengths)
    from m3_rag import M3Encoder

    return M3Encoder.from_pretrained(model, device=device, backend=backend, precision=precision, **lengths)
