"""Helpers for the store tests (no tests here): a fast deterministic encoder with the M3Encoder API.

The store's behaviour does not depend on the vectors' meaning, so most tests use this
hash-seeded encoder; the score-parity tests use the real tiny checkpoint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Sequence
from types import SimpleNamespace

import numpy as np

from m3_rag.types import ALL_OUTPUTS, M3Output, SparseVector, validate_outputs

__all__ = ["FakeEncoder"]


def _rng(text: str, salt: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{salt}:{text}".encode()).digest()[:8], "little"))


class FakeEncoder:
    """Dense = mean of per-word random vectors (so texts sharing words are close), sparse =
    per-word weights keyed by a hashed token id, ColBERT = one row per word.

    No ``config`` unless ``default_weights`` is given: then ``config.default_weights`` is set,
    as an :class:`M3Encoder`'s model weights are."""

    def __init__(self, dense_dim: int = 16, colbert_dim: int | None = 8, outputs: Sequence[str] = ALL_OUTPUTS,
                 vocab: int = 5000, default_weights: Sequence[float] | None = None) -> None:  # fmt: skip
        if default_weights is not None:
            self.config = SimpleNamespace(default_weights=tuple(default_weights))
        self.dense_dim = dense_dim
        self.colbert_dim = colbert_dim
        self.outputs = tuple(outputs)
        self.vocab = vocab
        self.texts_encoded = 0

    def _words(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower()) or ["<empty>"]

    def _word_vec(self, word: str, dim: int, salt: str) -> np.ndarray:
        v = _rng(word, salt).normal(size=dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def _encode(self, texts: Sequence[str], outputs: Collection[str]) -> M3Output:
        wanted = validate_outputs(outputs)
        extra = [o for o in wanted if o not in self.outputs]
        if extra:
            raise ValueError(f"FakeEncoder has no {extra} output")
        texts = list(texts)
        self.texts_encoded += len(texts)
        dense = sparse = colbert = None
        if "dense" in wanted:
            rows = [np.mean([self._word_vec(w, self.dense_dim, "d") for w in self._words(t)], axis=0) for t in texts]
            dense = np.array([r / np.linalg.norm(r) for r in rows], dtype=np.float32).reshape(len(texts), self.dense_dim)
        if "sparse" in wanted:
            sparse = []
            for t in texts:
                weights: dict[int, float] = {}
                for w in self._words(t):
                    tid = int(hashlib.md5(w.encode()).hexdigest(), 16) % self.vocab
                    weights[tid] = max(weights.get(tid, 0.0), float(_rng(w, "s").uniform(0.05, 0.5)))
                sparse.append(SparseVector.from_dict(weights))
        if "colbert" in wanted:
            colbert = [np.stack([self._word_vec(w, self.colbert_dim, "c") for w in self._words(t)]) for t in texts]
        counts = np.array([len(self._words(t)) for t in texts], dtype=np.int64)
        return M3Output(dense, sparse, colbert, counts, np.zeros(len(texts), dtype=bool))

    def encode_documents(self, texts: Sequence[str], outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False) -> M3Output:
        return self._encode(texts, outputs)

    def encode_queries(self, texts: Sequence[str], outputs: Collection[str] = ALL_OUTPUTS, show_progress: bool = False) -> M3Output:
        return self._encode(texts, outputs)
