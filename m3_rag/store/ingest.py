"""Turning texts + encoder outputs into points, validated before anything is written.

ColBERT as stored: each document's token vectors are pooled (hierarchical token pooling,
:func:`m3_rag.pooling.pool_colbert`) by the collection's ``colbert_pool_factor``, and
adaptively further when that would still leave more than ``floor((2^20 - 1) / D)`` rows
(1023 at D=1024): a Qdrant server rejects a multivector of 2^20 floats or more. So a long
document keeps a representation of every one of its tokens, not only of its first 1023; a
document of fewer than ``2 * factor`` tokens is stored as encoded. Both backends apply the
same rule (Edge has no such limit, but one rule keeps scores alike everywhere). Scores
(MaxSim, ``with_mode_scores``, ``m3``) are exact for what is stored. Queries are never pooled.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from m3_rag.pooling import pool_colbert, pooled_rows
from m3_rag.store.ids import PointId, UserId, check_user_id, to_point_id
from m3_rag.store.payload import build_payload
from m3_rag.store.schema import StoreSchema
from m3_rag.types import M3Output, SparseVector

__all__ = [
    "MAX_MULTIVECTOR_FLOATS", "max_colbert_rows", "pool_documents", "PointData", "PointRow",
    "prepare_rows", "attach_vectors", "batched_inputs",
]  # fmt: skip

MAX_MULTIVECTOR_FLOATS = 2**20 - 1


def max_colbert_rows(dim: int) -> int:
    """Token vectors a stored multivector may keep.

    >>> max_colbert_rows(1024), max_colbert_rows(32)
    (1023, 32767)
    """
    return MAX_MULTIVECTOR_FLOATS // dim


def pool_documents(encoded: M3Output, schema: StoreSchema, device: Any = None) -> M3Output:
    """``encoded`` with each document's ColBERT vectors pooled as the collection stores them
    (the module docstring has the rule); batched, on ``device`` (the encoder's)."""
    if not schema.has_colbert or encoded.colbert is None:
        return encoded
    factor = schema.colbert.pool_factor
    max_rows = max_colbert_rows(schema.colbert_size)
    targets = [pooled_rows(c.shape[0], factor, max_rows) for c in encoded.colbert]
    if all(t == c.shape[0] for t, c in zip(targets, encoded.colbert, strict=True)):
        return encoded
    pooled = pool_colbert(encoded.colbert, targets, device=device)
    return replace(encoded, colbert=[p.detach().to("cpu", torch.float32).numpy() for p in pooled])


@dataclass(frozen=True, eq=False)
class PointData:
    """One point, backend-neutral."""

    id: PointId
    payload: dict[str, Any]
    dense: np.ndarray
    sparse: SparseVector | None = None
    colbert: np.ndarray | None = None


def _check_len(name: str, values: Sequence | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} texts; expected one per text.")


@dataclass(frozen=True, eq=False)
class PointRow:
    """One point's id and payload, validated; its vectors come from the encoder after."""

    id: PointId
    payload: dict[str, Any]


def prepare_rows(
    texts: Sequence[str],
    *,
    ids: Sequence[UserId],
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    doc_ids: Sequence[str | None] | None = None,
    extras: Sequence[Mapping[str, Any] | None] | None = None,
) -> list[PointRow]:
    """Validate a batch's texts, ids and payloads; raises before the encoder sees a text (a
    hostile text must fail here, with its index, not in the tokenizer) and before any write."""
    n = len(texts)
    _check_len("ids", ids, n)
    _check_len("metadatas", metadatas, n)
    _check_len("doc_ids", doc_ids, n)
    _check_len("extras", extras, n)
    rows = []
    for i in range(n):
        try:
            user_id = check_user_id(ids[i])
            payload = build_payload(
                texts[i],
                metadatas[i] if metadatas is not None else None,
                user_id,
                doc_ids[i] if doc_ids is not None else None,
                extras[i] if extras is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"text {i} of the batch: {exc}") from exc
        rows.append(PointRow(to_point_id(user_id), payload))
    return rows


def _finite_problem(encoded: M3Output, n: int) -> str | None:
    """Which text's vectors hold NaN/inf (a broken head), or None: such a vector stored makes
    every search that scores it return nothing."""
    for i in range(n):
        parts = {
            "dense": encoded.dense[i] if encoded.dense is not None else None,
            "sparse": encoded.sparse[i].values if encoded.sparse is not None else None,
            "colbert": encoded.colbert[i] if encoded.colbert is not None else None,
        }
        bad = [name for name, v in parts.items() if v is not None and not np.isfinite(v).all()]
        if bad:
            return f"text {i}'s {' and '.join(bad)} vectors contain NaN or inf"
    return None


def attach_vectors(rows: Sequence[PointRow], encoded: M3Output, schema: StoreSchema) -> list[PointData]:
    """The points of validated rows with their encoded vectors, checked (count, dims, finite)."""
    n = len(rows)
    if encoded.dense is None or encoded.dense.shape != (n, schema.dense_dim):
        found = None if encoded.dense is None else encoded.dense.shape
        raise ValueError(
            f"encoded dense vectors have shape {found}; expected ({n}, {schema.dense_dim}) for {n} texts. "
            "Fix: encode the same texts with the store's encoder (all its outputs)."
        )
    sparse = encoded.sparse if schema.has_sparse else None
    if schema.has_sparse and (sparse is None or len(sparse) != n):
        raise ValueError(f"the store holds sparse vectors; the encoded batch has {_count(encoded.sparse)} for {n} texts.")
    colbert = encoded.colbert if schema.has_colbert else None
    if schema.has_colbert:
        if colbert is None or len(colbert) != n:
            raise ValueError(f"the store holds colbert vectors; the encoded batch has {_count(encoded.colbert)} for {n} texts.")
        max_rows = max_colbert_rows(schema.colbert_size)
        for i, c in enumerate(colbert):
            if c.ndim != 2 or c.shape[1] != schema.colbert_dim or not 1 <= c.shape[0] <= max_rows:
                raise ValueError(
                    f"colbert vectors of text {i} have shape {c.shape}; expected (1 <= t <= {max_rows}, "
                    f"{schema.colbert_dim}). Fix: encode with the store's encoder and pool with pool_documents."
                )
    if (problem := _finite_problem(encoded, n)) is not None:
        raise ValueError(
            f"{problem}; expected finite values. Nothing was written. Fix: check the encoder's heads "
            "(a head file with NaN weights, or float16 overflow: try dtype='float32')."
        )
    return [
        PointData(
            id=row.id,
            payload=row.payload,
            dense=encoded.dense[i],
            sparse=sparse[i] if sparse is not None else None,
            colbert=colbert[i] if colbert is not None else None,
        )
        for i, row in enumerate(rows)
    ]


def _count(values: Sequence | None) -> int | None:
    return None if values is None else len(values)


_MISSING = object()


def batched_inputs(
    texts: Iterable[str],
    ids: Iterable[UserId] | None,
    metadatas: Iterable[Mapping[str, Any] | None] | None,
    doc_ids: Iterable[str | None] | None,
    extras: Iterable[Mapping[str, Any] | None] | None,
    batch_size: int,
) -> Iterator[tuple[list[str], list[UserId] | None, list | None, list | None, list | None]]:
    """Stream aligned batches (bounded memory); uneven lengths raise when they show up."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive int.")
    if isinstance(texts, str):
        raise TypeError("texts is a single str; expected a list (or iterable) of texts. Fix: pass [text].")
    columns = [texts, ids, metadatas, doc_ids, extras]
    names = ["texts", "ids", "metadatas", "doc_ids", "extras"]
    sized = {names[j]: len(c) for j, c in enumerate(columns) if c is not None and isinstance(c, Sized)}
    if len(set(sized.values())) > 1:
        # Lists are checked up front, so nothing is written from a mismatched call.
        raise ValueError(f"inputs have different lengths {sized}; expected one entry per text.")
    iters = [iter(c) if c is not None else iter(()) for c in columns]
    rows = _zip_checked(iters, columns, names)
    while True:
        chunk = list(itertools.islice(rows, batch_size))
        if not chunk:
            return
        cols = list(zip(*chunk, strict=True))
        given = [list(c) if columns[j] is not None else None for j, c in enumerate(cols)]
        yield list(cols[0]), given[1], given[2], given[3], given[4]


def _zip_checked(iters: list[Iterator], columns: list, names: list[str]) -> Iterator[tuple]:
    given = [j for j, c in enumerate(columns) if c is not None]
    for row in itertools.zip_longest(*(iters[j] for j in given), fillvalue=_MISSING):
        if any(v is _MISSING for v in row):
            short = [names[given[j]] for j, v in enumerate(row) if v is _MISSING]
            raise ValueError(f"{', '.join(short)} ran out before texts/the others; expected one entry per text.")
        full: list = [None] * 5
        for j, v in zip(given, row, strict=True):
            full[j] = v
        yield tuple(full)
