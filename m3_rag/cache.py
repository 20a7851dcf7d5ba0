"""A per-text cache in front of an encoder, so that one text costs one forward pass.

Frameworks ask for the representations of a text in separate calls: LlamaIndex's
``VectorStoreIndex`` embeds nodes (dense) and then hands them to the vector store, which
needs sparse and ColBERT too; a stock LangChain hybrid store calls its dense and its sparse
embedding class one after the other. A :class:`CachedEncoder` always computes all of the
encoder's outputs on a miss and keeps them, so the second call is a lookup.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np

from m3_rag.types import ALL_OUTPUTS, Encoder, M3Output, OutputName, check_encoder, require_output, validate_outputs
from m3_rag.validation import check_texts

__all__ = ["CachedEncoder"]


class CachedEncoder:
    """Wraps an :class:`~m3_rag.types.Encoder` (e.g. an :class:`~m3_rag.M3Encoder`) with an LRU
    cache of rows; it is an ``Encoder`` itself.

    Memory: each cached document keeps its ColBERT matrix ([tokens, D] float32), so
    ``max_items`` bounds it; the default suits batches of a few thousand chunks.
    """

    def __init__(self, encoder: Encoder, max_items: int = 4096) -> None:
        if max_items < 1:
            raise ValueError(f"max_items is {max_items}; expected at least 1")
        self.encoder = check_encoder(encoder, "CachedEncoder")
        self.max_items = max_items
        self._rows: OrderedDict[tuple, M3Output] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # The wrapped encoder's outputs and sizes (the Encoder protocol) ...
    @property
    def outputs(self) -> tuple[OutputName, ...]:
        return self.encoder.outputs

    @property
    def dense_dim(self) -> int:
        return self.encoder.dense_dim

    @property
    def colbert_dim(self) -> int | None:
        return self.encoder.colbert_dim

    # ... and the M3Encoder extras it has, so that this is a drop-in replacement.
    def __getattr__(self, name: str) -> Any:
        if name in ("vocab_size", "tokenizer", "config", "stats", "device"):
            return getattr(self.encoder, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def encode_documents(self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS,
                         show_progress: bool = False, **kwargs) -> M3Output:  # fmt: skip
        return self._encode("documents", self.encoder.encode_documents, texts, outputs, show_progress, kwargs)

    def encode_queries(self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS,
                       show_progress: bool = False, **kwargs) -> M3Output:  # fmt: skip
        return self._encode("queries", self.encoder.encode_queries, texts, outputs, show_progress, kwargs)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def _encode(self, kind: str, encode: Callable[..., M3Output], texts: Sequence[str], outputs: Collection[str],
                show_progress: bool, kwargs: dict[str, Any]) -> M3Output:  # fmt: skip
        wanted = validate_outputs(outputs)
        texts = check_texts(texts)  # before hashing: a bare str would be cached per character
        options = tuple(sorted(kwargs.items()))
        keys = [(kind, options, t) for t in texts]
        with self._lock:
            found = {k: self._rows[k] for k in keys if k in self._rows}
            for k in found:
                self._rows.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        self.hits += len(keys) - sum(1 for k in keys if k not in found)
        self.misses += len(missing)
        if missing:
            fresh = encode([k[2] for k in missing], outputs=self.outputs, show_progress=show_progress, **kwargs)
            with self._lock:
                for row, key in enumerate(missing):
                    found[key] = fresh.select([row])
                    self._rows[key] = found[key]
                    self._rows.move_to_end(key)
                while len(self._rows) > self.max_items:
                    self._rows.popitem(last=False)
        return _stack([found[k] for k in keys], wanted, self.encoder.dense_dim)


def _stack(rows: list[M3Output], wanted: tuple[str, ...], dense_dim: int) -> M3Output:
    def need(name: str) -> bool:
        if name not in wanted:
            return False
        if rows and getattr(rows[0], name) is None:
            raise ValueError(f"output {name!r} was requested but this encoder does not produce it")
        return True

    return M3Output(
        dense=(np.concatenate([r.dense for r in rows]) if rows else np.zeros((0, dense_dim), np.float32))
        if need("dense") else None,
        sparse=[require_output(r.sparse, "sparse")[0] for r in rows] if need("sparse") else None,
        colbert=[require_output(r.colbert, "colbert")[0] for r in rows] if need("colbert") else None,
        token_counts=np.concatenate([r.token_counts for r in rows]) if rows else np.zeros(0, np.int64),
        truncated=np.concatenate([r.truncated for r in rows]) if rows else np.zeros(0, bool),
    )  # fmt: skip
