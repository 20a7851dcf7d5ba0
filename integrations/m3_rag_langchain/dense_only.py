"""Dense-only mode: any LangChain ``Embeddings`` as an m3 encoder with just the ``dense`` output.

The store then keeps only the dense vector, and the ``dense`` mode is the only search mode
(the others need BGE-M3's sparse and ColBERT outputs and raise a clear error).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from langchain_core.embeddings import Embeddings

from m3_rag.types import M3Output, OutputName, validate_outputs
from m3_rag.validation import as_list

__all__ = ["EmbeddingsEncoder"]

_DIM_PROBE = "dimension probe"


class EmbeddingsEncoder:
    """Wraps an ``Embeddings`` as an :class:`~m3_rag.types.Encoder` of the ``dense`` output.

    Vectors are L2-normalised so that the store's dot-product scores are cosine similarities,
    as with BGE-M3. ``dense_dim`` is taken from the argument or, if omitted, from embedding one
    probe query (a plain ``Embeddings`` has no config to read it from).
    """

    outputs: tuple[OutputName, ...] = ("dense",)
    colbert_dim: int | None = None
    vocab_size: int | None = None

    def __init__(self, embeddings: Embeddings, dense_dim: int | None = None) -> None:
        self.embeddings = embeddings
        self.dense_dim = dense_dim if dense_dim is not None else len(embeddings.embed_query(_DIM_PROBE))

    # show_progress: the Encoder protocol's; a plain Embeddings has no progress to show.
    def encode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] | str = ("dense",), show_progress: bool = False
    ) -> M3Output:
        texts = self._texts(texts, outputs)
        return self._output(self.embeddings.embed_documents(texts) if texts else [], len(texts))

    def encode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] | str = ("dense",), show_progress: bool = False
    ) -> M3Output:
        texts = self._texts(texts, outputs)
        return self._output([self.embeddings.embed_query(t) for t in texts], len(texts))

    # The wrapped model's own async path (e.g. a remote embedding API): m3_rag.types.async_encoder uses it.
    async def aencode_documents(
        self, texts: Sequence[str], *, outputs: Collection[str] | str = ("dense",), show_progress: bool = False
    ) -> M3Output:
        texts = self._texts(texts, outputs)
        return self._output(await self.embeddings.aembed_documents(texts) if texts else [], len(texts))

    async def aencode_queries(
        self, texts: Sequence[str], *, outputs: Collection[str] | str = ("dense",), show_progress: bool = False
    ) -> M3Output:
        texts = self._texts(texts, outputs)
        return self._output([await self.embeddings.aembed_query(t) for t in texts], len(texts))

    def _texts(self, texts: Sequence[str], outputs: Collection[str] | str) -> list[str]:
        """``texts`` as a list, once ``outputs`` is checked to ask for the dense output only."""
        extra = [name for name in validate_outputs(outputs) if name != "dense"]
        if extra:
            raise ValueError(
                f"{type(self.embeddings).__name__} is a dense-only embedding model; {extra} were requested. "
                "Fix: search with mode='dense', or use BGEM3Embeddings for sparse/ColBERT outputs."
            )
        return as_list(texts, "texts", "texts")

    def _output(self, vectors: list[list[float]], n: int) -> M3Output:
        dense: np.ndarray = (
            np.asarray(vectors, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, self.dense_dim), np.float32)
        )
        if dense.shape[1] != self.dense_dim:
            raise ValueError(
                f"{type(self.embeddings).__name__} returned {dense.shape[1]}-dim vectors, expected {self.dense_dim}. "
                "Fix: pass the model's true dense_dim (or omit it to probe it)."
            )
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        dense = dense / np.where(norms == 0, 1.0, norms)  # a zero vector stays zero: no direction to keep
        # Token counts are unknown for an external model; zeros mark "not counted".
        return M3Output(
            dense=dense,
            sparse=None,
            colbert=None,
            token_counts=np.zeros(n, dtype=np.int64),
            truncated=np.zeros(n, dtype=bool),
        )
