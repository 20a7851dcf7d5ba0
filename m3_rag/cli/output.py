"""How search hits and index reports look: a readable listing, or JSON (``--json``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["display_source", "snippet", "format_hits", "hits_to_json", "relative", "format_skipped", "SKIPPED_SHOWN"]

_MODE_NAMES = ("dense", "sparse", "colbert")
SKIPPED_SHOWN = 10  # skipped entries listed in the human index report (--json lists all)
# Entries that may be a mistake or an attack come first; the usual ones (other suffixes) last.
_SKIP_ORDER = ("special_file", "symlink", "too_large", "folder_loop", "hidden", "unsupported_suffix")


def display_source(metadata: dict[str, Any], doc_id: str | None) -> str:
    """The hit's file relative to the working directory when inside it, plus ``#record`` for jsonl."""
    source = metadata.get("source") or doc_id or "?"
    try:
        rel = os.path.relpath(source)
        if not rel.startswith(".."):
            source = rel
    except ValueError:  # another drive (Windows)
        pass
    record = metadata.get("record_id")
    return f"{source}#{record}" if record is not None else str(source)


def snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 1)].rstrip() + "…"


def format_hits(hits: Sequence[Any], *, snippet_chars: int = 200) -> str:
    if not hits:
        return "no results"
    lines = []
    for rank, hit in enumerate(hits, start=1):
        where = display_source(hit.metadata, hit.doc_id)
        if "chunk" in hit.metadata and "n_chunks" in hit.metadata:
            where += f"  chunk {hit.metadata['chunk'] + 1}/{hit.metadata['n_chunks']}"
        scores = ""
        if hit.mode_scores:
            scores = "  " + "  ".join(f"{m} {hit.mode_scores[m]:.4f}" for m in _MODE_NAMES if m in hit.mode_scores)
        lines.append(f"{rank:>2}. {hit.score:.4f}  {where}{scores}")
        lines.append(f"    {snippet(hit.text, snippet_chars)}")
    return "\n".join(lines)


def hits_to_json(hits: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "rank": rank,
            "id": hit.id,
            "score": hit.score,
            "mode_scores": hit.mode_scores,
            "source": hit.metadata.get("source"),
            "doc_id": hit.doc_id,
            "metadata": hit.metadata,
            "text": hit.text,
        }
        for rank, hit in enumerate(hits, start=1)
    ]


def relative(path: Path | str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def format_skipped(entries: Sequence[Any], *, limit: int = SKIPPED_SHOWN) -> list[str]:
    """A count per reason, then at most ``limit`` entries (``path: detail``), the unusual first."""
    if not entries:
        return []
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.reason] = counts.get(e.reason, 0) + 1
    rank = {r: i for i, r in enumerate(_SKIP_ORDER)}
    ordered = sorted(entries, key=lambda e: (rank.get(e.reason, -1), str(e.path)))
    lines = [f"skipped {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: "
             + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(counts.items(), key=lambda kv: rank.get(kv[0], -1)))]  # fmt: skip
    lines += [f"  {relative(e.path)}: {e.detail}" for e in ordered[:limit]]
    if len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more (--json lists them all)")
    return lines
