"""Index files into an :class:`~m3_rag.store.M3Store`: idempotent and resumable.

Two phases. **Plan**: read and chunk every file first, so a bad file fails the run before
anything is written. **Write**: per file, decide from the store what is left to do:

- every chunk id ``<document key>:<chunk index>`` is deterministic, so re-running never duplicates;
- each chunk's ``extra["fingerprint"]`` hashes the file bytes, the chunking and the model: a file
  whose first chunk carries the current fingerprint and whose chunk count matches is skipped
  without encoding; a changed file (or new chunking/model) has its old chunks deleted first;
- a file interrupted half-way (same fingerprint, fewer chunks) resumes: ``skip_existing=True``
  encodes only the chunks not stored yet.

The doc_id of every chunk is the file's absolute path, so ``delete_by_doc_id(path)`` removes a file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from m3_rag.ingest.chunking import ChunkConfig, TokenChunker
from m3_rag.ingest.files import DEFAULT_MAX_FILE_BYTES, UNSUPPORTED_SUFFIX, SkippedEntry, SkippedFileError, read_bounded
from m3_rag.ingest.sources import IngestError, SourceFile, discover, parse_documents

__all__ = ["PlannedChunk", "FilePlan", "IndexPlan", "IndexReport", "plan_index", "run_index", "chunk_limit", "FINGERPRINT_KEY", "MODEL_KEY"]

FINGERPRINT_KEY = "fingerprint"
MODEL_KEY = "model"


@dataclass(frozen=True)
class PlannedChunk:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class FilePlan:
    source: str  # absolute path: the chunks' doc_id
    fingerprint: str
    chunks: tuple[PlannedChunk, ...]


@dataclass(frozen=True)
class IndexPlan:
    files: tuple[FilePlan, ...]
    skipped: tuple[SkippedEntry, ...]  # folder entries not indexed, each with its reason
    model: str  # the model name, kept in each chunk's extra (search warns on a mismatch)

    @property
    def n_chunks(self) -> int:
        return sum(len(f.chunks) for f in self.files)


@dataclass
class IndexReport:
    files: int = 0
    files_unchanged: int = 0
    files_replaced: int = 0
    files_empty: int = 0
    chunks_written: int = 0
    chunks_present: int = 0  # already stored (unchanged files and resumed ones)
    seconds: float = 0.0
    interrupted: bool = False
    skipped: list[SkippedEntry] = field(default_factory=list)

    @property
    def skipped_paths(self) -> list[Path]:
        """Skipped files with other suffixes (``index --json``'s ``skipped_files``, as before)."""
        return [e.path for e in self.skipped if e.reason == UNSUPPORTED_SUFFIX]

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_written / self.seconds if self.seconds > 0 else 0.0


def chunk_limit(encoder: Any) -> int:
    """The most tokens a chunk may hold for this encoder (its document length minus special tokens).

    The encoder's ``document_max_length`` is already capped at what the backbone reads
    (:func:`m3_rag.loading.backbone_max_length`), so no position arithmetic is repeated here.
    """
    limits = [int(encoder.config.document_max_length)]
    model_max = getattr(encoder.config, "model_max_length", None)
    if model_max:
        limits.append(int(model_max))
    specials = len(encoder.tokenizer("", add_special_tokens=True)["input_ids"])
    return min(limits) - specials


def plan_index(
    paths: Sequence[str | Path],
    encoder: Any,
    config: ChunkConfig,
    model_name: str,
    *,
    show_progress: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IndexPlan:
    """Read and chunk everything under ``paths``; raises :class:`IngestError` before any write.

    Each file is read at most ``max_file_bytes``; a walked file over it (or one that turned into a
    link or special file since the walk) is skipped and listed in ``plan.skipped``."""
    limit = chunk_limit(encoder)
    if config.chunk_tokens > limit:
        raise IngestError(
            f"chunk size {config.chunk_tokens} tokens is more than model {model_name!r} reads "
            f"({limit} tokens plus special tokens); expected at most {limit}. Fix: --chunk-tokens {limit} or less."
        )
    files, skipped = discover(paths, max_file_bytes=max_file_bytes)
    chunker = TokenChunker(encoder.tokenizer, config)
    plans = []
    for file in tqdm(files, desc="reading", unit="file", disable=not show_progress, leave=False):
        try:
            plans.append(_plan_file(file, chunker, model_name, max_file_bytes))
        except SkippedFileError as exc:
            if file.explicit:
                raise
            skipped.append(exc.entry)
    return IndexPlan(tuple(plans), tuple(sorted(skipped, key=lambda e: str(e.path))), model_name)


def _plan_file(file: SourceFile, chunker: TokenChunker, model_name: str, max_bytes: int) -> FilePlan:
    data = read_bounded(file.path, max_bytes)  # read once: the same bytes are parsed and hashed
    docs = list(parse_documents(file, data))
    fingerprint = _fingerprint(data, chunker.config, model_name)
    chunks: list[PlannedChunk] = []
    for doc, pieces in zip(docs, chunker.chunk_many([d.text for d in docs]), strict=True):
        for piece in pieces:
            meta = dict(doc.metadata, chunk=piece.index, n_chunks=len(pieces))
            chunks.append(PlannedChunk(f"{doc.key}:{piece.index}", piece.text, meta))
    return FilePlan(str(file.path), fingerprint, tuple(chunks))


def _fingerprint(data: bytes, config: ChunkConfig, model_name: str) -> str:
    h = hashlib.sha256(data)  # the same digest as hashing the file, so existing indexes stay valid
    h.update(f"\0{config.chunk_tokens}\0{config.overlap_tokens}\0{model_name}".encode())
    return h.hexdigest()


def run_index(
    store: Any,
    plan: IndexPlan,
    *,
    batch_size: int = 32,
    show_progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> IndexReport:
    """Write the plan into ``store`` (see the module doc). Ctrl-C stops it cleanly: what was
    written stays, and running it again resumes. ``on_batch(n_written)`` is called after each write."""
    report = IndexReport(files=len(plan.files), skipped=list(plan.skipped))
    todo = [f for f in plan.files if _prepare(store, f, report)]
    total = sum(len(f.chunks) for f in todo)
    start = time.perf_counter()
    bar = tqdm(total=total, desc="indexing", unit="chunk", disable=not show_progress, smoothing=0.1)
    # Batches span files (many small files still fill a forward pass); within a file chunks go
    # in order, so its chunk 0 (the fingerprint carrier) is always written first.
    items = [(chunk, file) for file in todo for chunk in file.chunks]
    try:
        for i in range(0, len(items), batch_size):
            batch = items[i : i + batch_size]
            before = _encoded(store)
            store.add_texts(
                [c.text for c, _ in batch],
                ids=[c.id for c, _ in batch],
                metadatas=[c.metadata for c, _ in batch],
                doc_ids=[f.source for _, f in batch],
                extras=[{FINGERPRINT_KEY: f.fingerprint, MODEL_KEY: plan.model} for _, f in batch],
                batch_size=batch_size,
                skip_existing=True,
            )
            after = _encoded(store)
            written = len(batch) if before is None or after is None else after - before
            report.chunks_written += written
            report.chunks_present += len(batch) - written
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(report.chunks_written)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
    return report


def _encoded(store: Any) -> int | None:
    stats = getattr(store.encoder, "stats", None)
    return getattr(stats, "texts_encoded", None)


def _prepare(store: Any, file: FilePlan, report: IndexReport) -> bool:
    """Decide whether ``file`` needs writing; delete its stale chunks if it changed."""
    if not file.chunks:
        report.files_empty += 1
        stale = store.count({"$doc_id": file.source})
        if stale:  # the file became blank: its old chunks must go
            store.delete_by_doc_id(file.source)
            report.files_replaced += 1
        return False
    stored = store.count({"$doc_id": file.source})
    if stored == 0:
        return True
    first = store.get([file.chunks[0].id])
    same = bool(first) and first[0].extra.get(FINGERPRINT_KEY) == file.fingerprint
    if same and stored == len(file.chunks):
        report.files_unchanged += 1
        report.chunks_present += stored
        return False
    if not same or stored > len(file.chunks):
        store.delete_by_doc_id(file.source)
        report.files_replaced += 1
    return True
