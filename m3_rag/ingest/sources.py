"""Finding and reading source documents: .txt/.md files, .jsonl records and BEIR corpus folders.

Every problem with the input (missing path, unreadable or non-UTF-8 file, malformed jsonl line,
a folder with nothing to index, a special file or an oversized file named explicitly) raises
:class:`IngestError` naming the file, what was found, what was expected and how to fix it, before
anything is written to a store. Which folder entries are read at all, and how (regular files
only, links not followed in folders, a byte limit per file), is :mod:`m3_rag.ingest.files`.
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from m3_rag.ingest.files import (
    DEFAULT_MAX_FILE_BYTES,
    IngestError,
    SkippedEntry,
    SkippedFileError,
    check_max_bytes,
    classify,
    read_bounded,
    stat_named,
    walk_folder,
)

__all__ = [
    "IngestError",
    "SkippedEntry",
    "SkippedFileError",
    "SourceDocument",
    "SourceFile",
    "TEXT_SUFFIXES",
    "JSONL_SUFFIXES",
    "RESERVED_METADATA",
    "DEFAULT_MAX_FILE_BYTES",
    "discover",
    "read_documents",
    "parse_documents",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
JSONL_SUFFIXES = (".jsonl",)
# Metadata keys the indexer sets itself; a record may not bring its own (it would be overwritten).
RESERVED_METADATA = ("source", "file", "record_id", "title", "chunk", "n_chunks")


@dataclass(frozen=True)
class SourceFile:
    """One file to index. ``path`` is absolute; it is the documents' ``doc_id`` in the store."""

    path: Path
    kind: str  # "text" or "jsonl"
    explicit: bool = False  # named on the command line: a problem reading it is an error, not a skip


@dataclass(frozen=True)
class SourceDocument:
    """One document: a whole text file or one jsonl record (BEIR: title + text)."""

    source: str  # absolute path of the file
    key: str  # unique per document: the path, or ``path#record_id`` for jsonl records
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def discover(
    paths: Sequence[str | os.PathLike], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[list[SourceFile], list[SkippedEntry]]:
    """The files to index under ``paths`` (sorted, de-duplicated) and the entries skipped.

    A folder is walked recursively for .txt/.md/.jsonl regular files; hidden entries, links,
    special files, files over ``max_file_bytes`` and other suffixes are skipped and reported
    (see :mod:`m3_rag.ingest.files`). A BEIR folder (``corpus.jsonl`` beside ``queries.jsonl``)
    contributes only its corpus. A path named explicitly is followed if it is a link, and must be
    a regular file with a supported suffix within the limit, or a folder: else IngestError.
    """
    check_max_bytes(max_file_bytes)
    if not paths:
        raise IngestError("no path given; expected at least one file or folder. Fix: m3-rag index PATH...")
    found: dict[Path, SourceFile] = {}
    skipped: dict[Path, SkippedEntry] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        st = stat_named(raw)
        if not stat.S_ISDIR(st.st_mode):
            found.setdefault(*_named_file(raw, path, st, max_file_bytes))
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            raise IngestError(f"cannot read folder {str(raw)!r} (permission denied). Fix: check its permissions.")
        files, other = _walk(path, max_file_bytes)
        if not files:
            raise IngestError(
                f"folder {str(raw)!r} holds no {'/'.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files to index "
                f"({_summary(other)}); expected at least one. Fix: pass a folder with documents."
            )
        for f in files:
            found.setdefault(f.path, f)
        skipped.update((e.path, e) for e in other)
    return sorted(found.values(), key=lambda f: str(f.path)), sorted(skipped.values(), key=lambda e: str(e.path))


def _named_file(raw: str | os.PathLike, path: Path, st: os.stat_result, max_bytes: int) -> tuple[Path, SourceFile]:
    problem = classify(path, st, max_bytes)
    if problem is not None:
        if os.path.islink(path):
            problem = replace(problem, detail=f"a symlink to {os.readlink(path)!r}, {problem.detail}")
        raise SkippedFileError(problem)
    kind = _kind(path)
    if kind is None:
        raise IngestError(
            f"{str(raw)!r} has suffix {path.suffix!r}; expected one of "
            f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)}. Fix: convert it, or index its folder."
        )
    real = path.resolve()
    return real, SourceFile(real, kind, explicit=True)


def _summary(skipped: Sequence[SkippedEntry]) -> str:
    if not skipped:
        return "it is empty"
    counts = Counter(e.reason for e in skipped)
    first = skipped[0]
    return (f"{len(skipped)} other file(s) skipped: " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
            + f"; e.g. {first.path.name}, {first.detail}")  # fmt: skip


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return None


def _walk(folder: Path, max_bytes: int) -> tuple[list[SourceFile], list[SkippedEntry]]:
    root = folder.resolve()
    corpus = root / "corpus.jsonl"
    if os.path.lexists(corpus) and os.path.lexists(root / "queries.jsonl"):
        # BEIR: queries/qrels are not documents; the corpus is checked like any walked entry.
        problem = classify(corpus, os.lstat(corpus), max_bytes)
        return ([], [problem]) if problem else ([SourceFile(corpus, "jsonl")], [])
    paths, skipped = walk_folder(root, max_bytes, TEXT_SUFFIXES + JSONL_SUFFIXES)
    return [SourceFile(p, _kind(p) or "text") for p in paths], skipped


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{str(path)!r} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
            f"expected UTF-8. Fix: convert it, e.g. iconv -t UTF-8."
        ) from exc


def read_documents(file: SourceFile, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[SourceDocument]:
    """The documents of one file (a text file is one document; a jsonl file one per record).

    Reads at most ``max_bytes`` (:func:`~m3_rag.ingest.files.read_bounded`)."""
    return parse_documents(file, read_bounded(file.path, max_bytes))


def parse_documents(file: SourceFile, data: bytes) -> Iterator[SourceDocument]:
    """The documents in ``data``, the bytes of ``file`` (read once by the caller, who also hashes them)."""
    source = str(file.path)
    base = {"source": source, "file": file.path.name}
    text = _decode(file.path, data)
    if file.kind == "text":
        yield SourceDocument(source, source, text, dict(base))
        return
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_record(file.path, lineno, line)
        record_id = _record_id(file.path, lineno, record)
        if record_id in seen:
            raise IngestError(
                f"{source}:{lineno}: record id {record_id!r} appears twice; expected unique ids "
                "(they make re-runs idempotent). Fix: give each record its own '_id'."
            )
        seen.add(record_id)
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise IngestError(f"{source}:{lineno}: 'title' is a {type(title).__name__}; expected a string.")
        body = record["text"]
        meta = dict(_user_metadata(file.path, lineno, record))
        meta.update(base, record_id=record_id)
        if title:
            meta["title"] = title
        # BEIR convention: the title is part of the indexed text.
        full = f"{title}\n\n{body}" if title and body else (title or body)
        yield SourceDocument(source, f"{source}#{record_id}", full, meta)


def _parse_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}). Fix: one JSON object per line.") from exc
    if not isinstance(record, dict):
        raise IngestError(f"{path}:{lineno}: found a JSON {type(record).__name__}; expected an object with a 'text' field.")
    if not isinstance(record.get("text"), str):
        found = "no 'text' field" if "text" not in record else f"'text' is a {type(record['text']).__name__}"
        raise IngestError(f"{path}:{lineno}: {found}; expected a string 'text' (BEIR: _id, title, text).")
    return record


def _record_id(path: Path, lineno: int, record: dict[str, Any]) -> str:
    for key in ("_id", "id"):
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise IngestError(f"{path}:{lineno}: {key!r} is {value!r}; expected a non-empty string or int.")
            return str(value)
    return f"line{lineno}"  # no id: the line number keeps re-runs of an unchanged file idempotent


def _user_metadata(path: Path, lineno: int, record: dict[str, Any]) -> dict[str, Any]:
    meta = record.get("metadata") or {}
    if not isinstance(meta, dict):
        raise IngestError(f"{path}:{lineno}: 'metadata' is a {type(meta).__name__}; expected an object.")
    clash = sorted(set(meta) & set(RESERVED_METADATA))
    if clash:
        raise IngestError(
            f"{path}:{lineno}: metadata keys {clash} are set by the indexer ({', '.join(RESERVED_METADATA)}); "
            "expected other names. Fix: rename them in the file."
        )
    return meta
