"""Finding and reading source documents: .txt/.md files, .jsonl records and BEIR corpus folders.

Every problem with the input (missing path, unreadable or non-UTF-8 file, malformed jsonl line,
a folder with nothing to index) raises :class:`IngestError` naming the file, what was found,
what was expected and how to fix it, before anything is written to a store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IngestError",
    "SourceDocument",
    "SourceFile",
    "TEXT_SUFFIXES",
    "JSONL_SUFFIXES",
    "RESERVED_METADATA",
    "discover",
    "read_documents",
]

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
JSONL_SUFFIXES = (".jsonl",)
# Metadata keys the indexer sets itself; a record may not bring its own (it would be overwritten).
RESERVED_METADATA = ("source", "file", "record_id", "title", "chunk", "n_chunks")


class IngestError(ValueError):
    """A source path or file cannot be indexed as given."""


@dataclass(frozen=True)
class SourceFile:
    """One file to index. ``path`` is absolute; it is the documents' ``doc_id`` in the store."""

    path: Path
    kind: str  # "text" or "jsonl"


@dataclass(frozen=True)
class SourceDocument:
    """One document: a whole text file or one jsonl record (BEIR: title + text)."""

    source: str  # absolute path of the file
    key: str  # unique per document: the path, or ``path#record_id`` for jsonl records
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def discover(paths: Sequence[str | os.PathLike]) -> tuple[list[SourceFile], list[Path]]:
    """The files to index under ``paths`` (sorted, de-duplicated) and the files skipped.

    A folder is walked recursively (hidden entries skipped) for .txt/.md/.jsonl files; a BEIR
    folder (``corpus.jsonl`` beside ``queries.jsonl``) contributes only its corpus. A file
    named explicitly must have a supported suffix.
    """
    if not paths:
        raise IngestError("no path given; expected at least one file or folder. Fix: m3-rag index PATH...")
    found: dict[Path, SourceFile] = {}
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise IngestError(f"{str(raw)!r} does not exist; expected a file or folder to index. Fix: check the path.")
        if path.is_file():
            kind = _kind(path)
            if kind is None:
                raise IngestError(
                    f"{str(raw)!r} has suffix {path.suffix!r}; expected one of "
                    f"{', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)}. Fix: convert it, or index its folder."
                )
            found.setdefault(path.resolve(), SourceFile(path.resolve(), kind))
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            raise IngestError(f"cannot read folder {str(raw)!r} (permission denied). Fix: check its permissions.")
        files, other = _walk(path)
        if not files:
            raise IngestError(
                f"folder {str(raw)!r} holds no {'/'.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files "
                f"({len(other)} other file(s)); expected at least one. Fix: pass a folder with documents."
            )
        for f in files:
            found.setdefault(f.path, f)
        skipped += other
    return sorted(found.values(), key=lambda f: str(f.path)), sorted(set(skipped))


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return None


def _walk(folder: Path) -> tuple[list[SourceFile], list[Path]]:
    root = folder.resolve()
    if (root / "corpus.jsonl").is_file() and (root / "queries.jsonl").is_file():
        return [SourceFile(root / "corpus.jsonl", "jsonl")], []  # BEIR: queries/qrels are not documents
    files: list[SourceFile] = []
    other: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            kind = _kind(path)
            if kind is None:
                other.append(path)
            else:
                files.append(SourceFile(path, kind))
    return files, other


def _raise_walk_error(exc: OSError) -> None:
    raise IngestError(f"cannot read folder {exc.filename!r} ({exc.strerror}). Fix: check its permissions.")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {str(path)!r} ({exc.strerror or exc}). Fix: check that it is a readable file.") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{str(path)!r} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
            f"expected UTF-8. Fix: convert it, e.g. iconv -t UTF-8."
        ) from exc


def read_documents(file: SourceFile) -> Iterator[SourceDocument]:
    """The documents of one file (a text file is one document; a jsonl file one per record)."""
    source = str(file.path)
    base = {"source": source, "file": file.path.name}
    text = _read_text(file.path)
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
