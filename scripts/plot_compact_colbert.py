"""Plot the compact-ColBERT trade-off: quality and latency against ColBERT bytes per original token.

    python scripts/plot_compact_colbert.py bench.json eval.json [more.json ...] -o docs/compact-colbert.png
        [--latency-min-points 10000] [--dense-quantization int8|none|all]

Inputs (told apart by their contents, any number of each):

- benchmark reports, ``python benchmarks/store.py ... --json bench.json``: per Edge run its
  ColBERT datatype and pool factor, ``colbert_storage_bytes_per_token`` (ColBERT bytes on disk
  per ORIGINAL token, before pooling) and p50 latency per mode;
- eval reports, ``m3-rag eval ... --pool-factor 1,2,3 --colbert-datatype float16,turbo8,turbo4
  --json eval.json``: nDCG@10 per pipeline mode and, in ``pipeline_colbert``, the storage
  settings each mode ran on.

Panel (a): the change of nDCG@10, in points (x 100), of the pipeline ``m3`` and
``hybrid+rerank`` modes against the same report's float16 unpooled setting (factor 1), against
ColBERT bytes per original token (log x), one labelled marker per (dataset, mode, setting), with
the ±0.5-point band; so datasets of different levels share one axis. The bytes of a setting come
from the benchmark's largest Edge run with that datatype and factor (a small index's bytes include
the engine's preallocated files), and a setting no benchmark run measured is left out (with a
note), as is a report without its float16 factor-1 baseline.
Panel (b): p50 latency of ``hybrid+rerank`` and ``m3`` against the same bytes, per benchmark size
of at least ``--latency-min-points`` points (small runs measure bytes, not latency at scale).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

PIPELINE_MODES = ("m3", "hybrid+rerank")
MARKERS = {"m3": "o", "hybrid+rerank": "s"}

__all__ = ["load_reports", "storage_bytes", "quality_points", "latency_points", "plot", "main"]


def load_reports(paths: Sequence[Path]) -> tuple[list[dict], list[dict]]:
    """(benchmark reports, eval reports) from JSON files; anything else raises SystemExit."""
    bench, evals = [], []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: cannot read a JSON report ({exc}).") from exc
        if isinstance(data, dict) and isinstance(data.get("runs"), list):
            bench.append({**data, "_path": str(path)})
        elif isinstance(data, dict) and isinstance(data.get("scores"), dict):
            evals.append({**data, "_path": str(path)})
        else:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise SystemExit(f"{path}: neither a benchmarks/store.py --json report (with 'runs') nor an m3-rag eval "
                             f"--json report (with 'scores'); found {keys}.")  # fmt: skip
    return bench, evals


def _edge_runs(bench: Sequence[dict]) -> list[dict]:
    return [r for b in bench for r in b["runs"] if r.get("backend") == "edge" and not r.get("skipped")
            and r.get("colbert_storage_bytes_per_token")]  # fmt: skip


def storage_bytes(bench: Sequence[dict]) -> dict[tuple[str, int], float]:
    """(datatype, pool factor) -> ColBERT bytes per original token, from the largest Edge run of each."""
    best: dict[tuple[str, int], tuple[int, float]] = {}
    for r in _edge_runs(bench):
        key = (r["colbert_datatype"], int(r["colbert_pool_factor"]))
        if key not in best or r["points"] > best[key][0]:
            best[key] = (r["points"], float(r["colbert_storage_bytes_per_token"]))
    return {k: v for k, (_, v) in best.items()}


def quality_points(
    evals: Sequence[dict], sizes: dict[tuple[str, int], float], dense: str | None = None
) -> tuple[list[dict], list[str]]:
    """Panel (a)'s points, ``{series, mode, datatype, factor, bytes, ndcg}``, and notes on what was left out.

    With ``dense``, only settings whose dense index is ``dense`` (a report from before the dense option
    counts as ``none``); each is compared with float16 unpooled on a ``none`` dense index (m3-rag 0.1.0's store)
    where the report has it."""
    points, notes = [], []
    several = len(evals) > 1
    for report in evals:
        settings = report.get("pipeline_colbert") or {}
        if not settings:
            notes.append(f"{report['_path']}: no pipeline_colbert (an eval report from before compact ColBERT, "
                         "or --no-pipeline); left out")  # fmt: skip
        for name, s in settings.items():
            if s.get("mode") not in PIPELINE_MODES or name not in report["scores"]:
                continue
            if dense is not None and s.get("dense_quantization", "none") != dense:
                continue
            key = (s["colbert_datatype"], int(s["colbert_pool_factor"]))
            if key not in sizes:
                notes.append(f"{report['_path']}: {name} ({key[0]}, factor {key[1]}) has no benchmark run; left out")
                continue
            baseline = _baseline(report, s["mode"])
            if baseline is None:
                notes.append(f"{report['_path']}: {s['mode']} has no float16 factor-1 setting to compare with; left out")
                continue
            series = f"{report.get('dataset', '?')} {s['mode']}" if several else s["mode"]
            ndcg = float(report["scores"][name]["ndcg@10"])
            points.append({"series": series, "mode": s["mode"], "datatype": key[0], "factor": key[1],
                           "bytes": sizes[key], "ndcg": ndcg, "delta_points": 100 * (ndcg - baseline)})  # fmt: skip
    return points, list(dict.fromkeys(notes))


def _baseline(report: dict, mode: str) -> float | None:
    """nDCG@10 of ``mode`` on float16, factor 1, in the same report, on a ``none`` dense index if there
    is one (None if it was not run)."""
    found = []
    for name, s in (report.get("pipeline_colbert") or {}).items():
        same = s.get("mode") == mode and s.get("colbert_datatype") == "float16" and int(s.get("colbert_pool_factor", 0)) == 1
        if same and name in report["scores"]:
            found.append((s.get("dense_quantization", "none") != "none", float(report["scores"][name]["ndcg@10"])))
    return min(found)[1] if found else None


def latency_points(bench: Sequence[dict], min_points: int = 0) -> list[dict]:
    """Panel (b)'s points, ``{size, mode, datatype, factor, bytes, p50}``, of runs of ``min_points`` or more."""
    points = []
    for r in _edge_runs(bench):
        if r["points"] < min_points:
            continue
        size = f"{r['points']:,} pts" + (" (defaults)" if r.get("requested") == "default" else "")
        for mode in PIPELINE_MODES:
            lat = (r.get("latency") or {}).get(mode)
            if lat:
                points.append({"size": size, "points": r["points"], "mode": mode, "datatype": r["colbert_datatype"],
                               "factor": int(r["colbert_pool_factor"]), "bytes": float(r["colbert_storage_bytes_per_token"]),
                               "p50": float(lat["p50_ms"]), "dense": r.get("dense_quantization", "none")})  # fmt: skip
    return points


def _label(p: dict) -> str:
    return f"{p['datatype']} f{p['factor']}" + (" +int8 dense" if p.get("dense") == "int8" else "")


def plot(bench: Sequence[dict], evals: Sequence[dict], output: Path, latency_min_points: int = 0,
         dense: str | None = None) -> list[str]:
    """Write the two-panel PNG; returns notes on what was left out."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit("matplotlib is not installed. Fix: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sizes = storage_bytes(bench)
    quality, notes = quality_points(evals, sizes, dense)
    latency = latency_points(bench, latency_min_points)
    fig, (ax_q, ax_l) = plt.subplots(1, 2, figsize=(13, 5.2))

    ax_q.axhspan(-0.5, 0.5, color="grey", alpha=0.15, label="within 0.5 points")
    ax_q.axhline(0.0, color="grey", linewidth=0.8)
    for series in dict.fromkeys(p["series"] for p in quality):
        pts = sorted((p for p in quality if p["series"] == series), key=lambda p: p["bytes"])
        ax_q.plot([p["bytes"] for p in pts], [p["delta_points"] for p in pts], marker=MARKERS[pts[0]["mode"]],
                  linestyle="none", label=series)  # fmt: skip
        for p in pts:
            ax_q.annotate(_label(p), (p["bytes"], p["delta_points"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    ax_q.set_xscale("log")
    ax_q.set_xlabel("ColBERT bytes on disk per original token (log)")
    ax_q.set_ylabel("nDCG@10 change vs float16 unpooled, points")
    title = ", ".join(dict.fromkeys(f"{r.get('dataset', '?')} ({r.get('n_queries', '?')} q)" for r in evals))
    ax_q.set_title(f"(a) quality: {title}" if title else "(a) quality: no eval report given", fontsize=9)
    if quality:
        ax_q.legend(fontsize=7)

    ordered = sorted(dict.fromkeys(p["size"] for p in latency), key=lambda s: next(p["points"] for p in latency if p["size"] == s))
    for i, size in enumerate(ordered):  # a colour per size, a marker per mode
        for mode in PIPELINE_MODES:
            pts = [p for p in latency if p["size"] == size and p["mode"] == mode]
            if not pts:
                continue
            ax_l.scatter([p["bytes"] for p in pts], [p["p50"] for p in pts], marker=MARKERS[mode], color=f"C{i % 10}",
                         facecolors="none" if mode == "hybrid+rerank" else None, label=f"{mode}, {size}")  # fmt: skip
            for p in pts:
                ax_l.annotate(_label(p), (p["bytes"], p["p50"]), textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax_l.set_xscale("log")
    ax_l.set_xlabel("ColBERT bytes on disk per original token (log)")
    ax_l.set_ylabel("p50 latency, ms")
    machines = ", ".join(dict.fromkeys(f"{b.get('machine', {}).get('cpus', '?')} CPUs" for b in bench))
    ax_l.set_title(f"(b) search latency, Qdrant Edge ({machines})" if bench else "(b) latency: no benchmark report given")
    if latency:
        ax_l.legend(fontsize=7)

    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for ax in (ax_q, ax_l):
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)
    return notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path, help="benchmarks/store.py --json and m3-rag eval --json reports")
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/compact-colbert.png"), help="the PNG to write")
    ap.add_argument("--latency-min-points", type=int, default=10_000,
                    help="panel (b) shows benchmark runs of at least this many points")  # fmt: skip
    ap.add_argument("--dense-quantization", choices=["int8", "none", "all"], default="int8",
                    help="panel (a) shows the settings on this dense index (int8: the default), each against float16 "
                         "unpooled on a 'none' dense index (m3-rag 0.1.0's store)")  # fmt: skip
    args = ap.parse_args(argv)
    bench, evals = load_reports(args.reports)
    if not bench:
        print("note: no benchmark report given: panel (a) has no bytes to place its points at, panel (b) is empty",
              file=sys.stderr)  # fmt: skip
    dense = None if args.dense_quantization == "all" else args.dense_quantization
    for note in plot(bench, evals, args.output, args.latency_min_points, dense):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
