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
from collections.abc import Collection, Sequence

import numpy as np

from m3_rag.types import ALL_OUTPUTS, M3Output, require_output, validate_outputs
from m3_rag.validation import check_texts

__all__ = ["CachedEncoder"]


class CachedEncoder:
    """Wraps an :class:`~m3_rag.M3Encoder` (or anything with its API) with an LRU cache of rows.

    Memory: each cached document keeps its ColBERT matrix ([tokens, D] float32), so
    ``max_items`` bounds it; the default suits batches of a few thousand chunks.
    """

    def __init__(self, encoder, max_items: int = 4096) -> None:
        if max_items < 1:
            raise ValueError(f"max_items is {max_items}; expected at least 1")
        self.encoder = encoder
        self.max_items = max_items
        self._rows: OrderedDict[tuple, M3Output] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # The sizes and counters of the wrapped encoder, so this is a drop-in replacement.
    @property
    def outputs(self):
        return getattr(self.encoder, "outputs", ALL_OUTPUTS)

    def __getattr__(self, name: str):
        if name in ("dense_dim", "colbert_dim", "vocab_size", "tokenizer", "config", "stats", "device"):
            return getattr(self.encoder, name)
        raise AttributeError(name)

    def encode_documents(self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS,
                         show_progress: bool = False, **kwargs) -> M3Output:  # fmt: skip
        return self._encode("documents", texts, outputs, show_progress, kwargs)

    def encode_queries(self, texts: Sequence[str], *, outputs: Collection[str] = ALL_OUTPUTS,
                       show_progress: bool = False, **kwargs) -> M3Output:  # fmt: skip
        return self._encode("queries", texts, outputs, show_progress, kwargs)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def _encode(self, kind: str, texts: Sequence[str], outputs, show_progress: bool, kwargs: dict) -> M3Output:
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
            method = getattr(self.encoder, f"encode_{kind}")
            fresh = method([k[2] for k in missing], outputs=self.outputs, show_progress=show_progress, **kwargs)
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
