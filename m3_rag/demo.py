"""``m3-rag demo``: index the shipped corpus into Qdrant Edge and compare the five modes, offline.

The corpus (``m3_rag/demo_corpus/``, six short Markdown notes about BGE-M3, Qdrant, the retrieval
modes, chunking, RAG frameworks and evaluation) goes through the same chunking and indexing code
as ``m3-rag index``. Each query has the note that answers it, so the table marks hits from the
expected note with ``*`` and the last line counts how often each mode ranks it first.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_CORPUS", "DEMO_QUERIES", "DEMO_CHUNKING", "LabelledQuery", "ModeRun", "run_demo", "search_all_modes", "format_table"]

DEMO_CORPUS = Path(__file__).resolve().parent / "demo_corpus"


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    relevant: tuple[str, ...]  # file names in DEMO_CORPUS that answer it


DEMO_QUERIES: tuple[LabelledQuery, ...] = (
    LabelledQuery("How is the ColBERT score of a passage computed?", ("retrieval_modes.md",)),
    LabelledQuery("Which model gives dense, sparse and multi-vector outputs in one pass?", ("bge_m3.md",)),
    LabelledQuery("Can two processes open the same local index folder?", ("qdrant_edge.md",)),
    LabelledQuery("What happens when I run the index command twice?", ("chunking.md",)),
    LabelledQuery("reciprocal rank fusion", ("retrieval_modes.md",)),
    LabelledQuery("What does nDCG at ten measure?", ("evaluation.md",)),
    LabelledQuery("How do I put retrieved documents into an LCEL chain prompt?", ("rag_frameworks.md",)),
    LabelledQuery("self-knowledge distillation", ("bge_m3.md", "evaluation.md")),
    LabelledQuery("Does the write-ahead log make writes durable?", ("qdrant_edge.md",)),
    LabelledQuery("overlapping token windows", ("chunking.md",)),
)
DEMO_SHOWN = 4  # queries the demo prints; the rest serve examples/hybrid_modes.py


def _chunking() -> Any:
    from m3_rag.ingest import ChunkConfig

    return ChunkConfig(chunk_tokens=96, overlap_tokens=16)


DEMO_CHUNKING = _chunking()


@dataclass(frozen=True)
class ModeRun:
    """One mode's hits for one query and how long the search took."""

    mode: str
    hits: list[Any]
    seconds: float


def search_all_modes(store: Any, query: str, k: int, modes: Sequence[str] | None = None) -> list[ModeRun]:
    from m3_rag.store import MODES

    runs = []
    for mode in modes or MODES:
        start = time.perf_counter()
        hits = store.search(query, mode=mode, k=k)
        runs.append(ModeRun(mode, hits, time.perf_counter() - start))
    return runs


def _cell(hit: Any, relevant: Sequence[str], width: int) -> str:
    name = str(hit.metadata.get("file", hit.doc_id or "?")).removesuffix(".md")
    mark = "*" if hit.metadata.get("file") in relevant else " "
    label = f"{name}#{hit.metadata.get('chunk', '?')}"
    score = f"{hit.score:.3f}"
    room = width - len(score) - 2
    if len(label) > room:
        label = label[: room - 1] + "…"
    return f"{mark}{label:<{room}} {score}"


def format_table(query: LabelledQuery | str, runs: Sequence[ModeRun], k: int, cell_width: int = 24) -> str:
    """Modes side by side: one column per mode, one row per rank; ``*`` marks the expected note."""
    relevant = query.relevant if isinstance(query, LabelledQuery) else ()
    text = query.text if isinstance(query, LabelledQuery) else query
    header = "rank " + " ".join(f"{r.mode:<{cell_width}}" for r in runs)
    lines = [f"query: {text}", header.rstrip(), "-" * len(header.rstrip())]
    for rank in range(k):
        cells = [_cell(r.hits[rank], relevant, cell_width) if rank < len(r.hits) else "" for r in runs]
        lines.append((f"{rank + 1:>4} " + " ".join(f"{c:<{cell_width}}" for c in cells)).rstrip())
    return "\n".join(lines)


def run_demo(
    model: Any,
    *,
    k: int = 3,
    path: Path | None = None,
    queries: Sequence[str] | None = None,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """Run the demo; returns, per mode, how many labelled queries ranked their note first."""
    from m3_rag.cli.resources import load_encoder, model_key
    from m3_rag.ingest import plan_index, run_index
    from m3_rag.loading import ModelNotFoundError
    from m3_rag.store import MODES, M3Store

    try:
        encoder = load_encoder(model)
    except ModelNotFoundError as exc:
        if model.name != "m3-mini":
            raise
        raise ModelNotFoundError(
            f"the demo runs on m3-mini, which is not available: {exc} Or pass another model with --model."
        ) from exc
    c = encoder.config
    runs_on = "" if c.backend == "torch" else f", {c.backend} {c.precision}"
    echo(f"model: {model.name} ({c.device}, {c.dtype}{runs_on})")
    with tempfile.TemporaryDirectory(prefix="m3-rag-demo-") as scratch:
        where = Path(path) if path is not None else Path(scratch) / "index"
        plan = plan_index([DEMO_CORPUS], encoder, DEMO_CHUNKING, model_key(model.name))
        with M3Store(encoder, path=where, collection="demo") as store:
            report = run_index(store, plan, batch_size=16, show_progress=show_progress)
            if report.interrupted:
                raise KeyboardInterrupt
            store.optimize()
            echo(
                f"indexed {len(plan.files)} notes as {plan.n_chunks} chunks into Qdrant Edge at {where} "
                f"in {report.seconds:.1f}s ({report.chunks_written} encoded, {report.chunks_present} already there)"
            )
            chosen = [LabelledQuery(q, ()) for q in queries] if queries else list(DEMO_QUERIES[:DEMO_SHOWN])
            top1 = {m: 0 for m in MODES}
            latency = {m: 0.0 for m in MODES}
            for query in chosen:
                runs = search_all_modes(store, query.text, k)
                echo("")
                echo(format_table(query, runs, k))
                for r in runs:
                    latency[r.mode] += r.seconds
                    if r.hits and r.hits[0].metadata.get("file") in query.relevant:
                        top1[r.mode] += 1
    echo("")
    echo("scores: dense = cosine, sparse = lexical dot product, hybrid = reciprocal rank fusion, "
         "hybrid+rerank = ColBERT MaxSim (mean over query tokens), m3 = weighted dense+sparse+ColBERT")  # fmt: skip
    echo("mean search time: " + ", ".join(f"{m} {1000 * latency[m] / len(chosen):.0f} ms" for m in MODES))
    if not queries:
        echo("* = hit from the note that answers the query; ranked first: "
             + ", ".join(f"{m} {top1[m]}/{len(chosen)}" for m in MODES))  # fmt: skip
    return top1
