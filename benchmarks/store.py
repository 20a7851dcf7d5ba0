"""Store benchmark: synthetic BGE-M3-shaped points on Qdrant Edge and qdrant-client local mode.

Points look like BGE-M3's: dense 1024 (L2-normalised), ~40 sparse terms from a 250k
vocabulary, 16-128 ColBERT tokens of 1024 dims; queries have 8-32 ColBERT tokens and 8
sparse terms. Reported per backend and size, all in one run: ingestion points/s, bytes on
disk per ColBERT token (Edge), peak RSS while ingesting, and p50/p95 wall-clock latency of
each search mode (query encoding excluded: queries are pre-encoded), with the p50 of the
process CPU time next to it (Edge runs its query on its own search threads; on a shared
machine wall time exceeds CPU time by the wait for a core). The load average before and
after each run is recorded.

    python benchmarks/store.py                                   # full: Edge 10k+50k, client 10k
    python benchmarks/store.py --edge-sizes 2000 --client-sizes 500 --client-queries 3   # quick
    python benchmarks/store.py --prefetch-sweep 10 20 30 --edge-float32-sizes 50000      # + trade-offs

The ColBERT rerank dominates ``hybrid+rerank`` and ``m3``: it costs |candidates| x document
tokens x query tokens x dim multiply-adds (the default prefetch is max(k, 10) per branch; a
random synthetic query shares no candidates between its dense and sparse prefetch, so the
union is the worst case, 2 x prefetch). ``--prefetch-sweep`` times ``hybrid+rerank`` again at
other prefetch sizes on the same index; ``--edge-float32-sizes`` adds Edge runs whose
collection stores ColBERT as float32 (``colbert_datatype="float32"``: twice the disk, a
faster MaxSim).

Before timing, every file of an Edge index is read once (``--no-warm-cache`` skips it): the
ColBERT vectors are mmapped from disk, and whichever mode runs first would otherwise pay the
page faults of reading them (a hybrid+rerank p50 of 63 ms wall / 34 ms CPU at 50k points, where
the next mode over the same candidates took 27 ms). The figures are those of an index that fits
in the page cache (50k points: 7.8 GB here, 23.5 GB RAM).

qdrant-client local mode is pure Python (a reference, not a production path): its
ColBERT rerank is slow, so it runs fewer queries (``--client-queries``) and no warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from tqdm.auto import tqdm

from m3_rag.store import M3Store
from m3_rag.store.backends.edge import EdgeBackend
from m3_rag.store.queries import MODES
from m3_rag.store.schema import schema_from_encoder
from m3_rag.types import M3Output, SparseVector

__all__ = ["SyntheticEncoder", "synthetic_batch", "main"]


class SyntheticEncoder:
    """Sizes only: the store reads dims from here; points come pre-encoded."""

    outputs = ("dense", "sparse", "colbert")

    def __init__(self, dense_dim: int, colbert_dim: int) -> None:
        self.dense_dim, self.colbert_dim = dense_dim, colbert_dim

    def encode_documents(self, *a, **k):  # pragma: no cover - the benchmark never encodes
        raise RuntimeError("the benchmark adds pre-encoded points")

    encode_queries = encode_documents


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _sparse(rng: np.random.Generator, vocab: int, terms: int) -> SparseVector:
    # Zipf-like token ids: frequent tokens are shared across texts, as in real text.
    ids = np.unique(np.minimum(rng.zipf(1.3, size=terms), vocab - 1).astype(np.int64) + rng.integers(0, 50, terms))
    ids = np.unique(np.concatenate([ids, rng.integers(0, vocab, terms // 2)]))[:terms]
    return SparseVector(np.sort(ids), rng.uniform(0.01, 0.4, ids.size).astype(np.float32))


def synthetic_batch(rng: np.random.Generator, n: int, args: argparse.Namespace, query: bool = False) -> M3Output:
    lo, hi = (8, 32) if query else (args.min_tokens, args.max_tokens)
    terms = 8 if query else args.sparse_terms
    tokens = rng.integers(lo, hi + 1, n)
    return M3Output(
        dense=_unit(rng.normal(size=(n, args.dense_dim))),
        sparse=[_sparse(rng, args.vocab, terms) for _ in range(n)],
        colbert=[_unit(rng.normal(size=(int(t), args.colbert_dim))) for t in tokens],
        token_counts=tokens.astype(np.int64),
        truncated=np.zeros(n, dtype=bool),
    )


def _disk_bytes(path: Path, only: str | None = None) -> int:
    total = 0
    for root, _, files in os.walk(path):
        if only and only not in root:
            continue
        for f in files:
            st = os.stat(os.path.join(root, f))
            total += st.st_blocks * 512  # allocated, not apparent, size
    return total


def _read_files(path: Path) -> int:
    """Read every file under ``path`` once (into the OS page cache); returns the bytes read."""
    total = 0
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return total


def _anon(proc: psutil.Process) -> int:
    info = proc.memory_info()
    return info.rss - getattr(info, "shared", 0)


def _percentiles(samples: list[float], cpu: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "cpu_p50_ms": round(float(np.percentile(np.array(cpu) * 1000, 50)), 3),
        "n": len(a),
    }


def _timed(store: M3Store, encoded: list[M3Output], warmup: int, **search: object) -> dict[str, float]:
    times, cpu = [], []
    hits = None
    for i, q in enumerate(encoded):
        t0, c0 = time.perf_counter(), time.process_time()
        hits = store.search_encoded(q, **search)  # type: ignore[arg-type]
        dt_, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= warmup:
            times.append(dt_)
            cpu.append(dc)
    assert hits, f"{search} returned nothing"
    return _percentiles(times, cpu)


def run_one(backend: str, n: int, args: argparse.Namespace, workdir: Path, datatype: str = "float16") -> dict:
    enc = SyntheticEncoder(args.dense_dim, args.colbert_dim)
    path = workdir / f"{backend}-{datatype}-{n}"
    load_before = os.getloadavg()
    if backend == "edge":
        if datatype != "float16":
            # Create the collection with this ColBERT datatype; the store then opens it as is.
            created = EdgeBackend(path, "m3")
            created.open(schema_from_encoder(enc, colbert_datatype=datatype))  # type: ignore[arg-type]
            created.close()
        store = M3Store(enc, path=path, collection="m3")
    else:
        store = M3Store(enc, location=":memory:")
    proc = psutil.Process()
    rss_start = peak = proc.memory_info().rss
    # RSS counts the touched pages of Edge's mmapped (on-disk, reclaimable) vector files too;
    # anonymous memory (rss - shared) is what ingestion itself holds.
    anon_start = anon_peak = _anon(proc)
    rng = np.random.default_rng(args.seed)
    tokens = 0
    ingest_s = 0.0
    for start in tqdm(range(0, n, args.batch_size), desc=f"{backend} {n} ingest", unit="batch", disable=args.quiet):
        m = min(args.batch_size, n - start)
        batch = synthetic_batch(rng, m, args)
        tokens += int(sum(c.shape[0] for c in batch.colbert))
        t0 = time.perf_counter()
        store.add_encoded([f"text {start + i}" for i in range(m)], batch, ids=list(range(start, start + m)))
        ingest_s += time.perf_counter() - t0
        peak = max(peak, proc.memory_info().rss)
        anon_peak = max(anon_peak, _anon(proc))
    result: dict = {
        "backend": backend,
        "points": n,
        "colbert_tokens": tokens,
        "ingest_points_per_s": round(n / ingest_s, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_growth_mb": round((peak - rss_start) / 2**20, 1),
        "anon_peak_mb": round(anon_peak / 2**20, 1),
        "anon_growth_mb": round((anon_peak - anon_start) / 2**20, 1),
        "colbert_datatype": datatype if backend == "edge" else "float16 (stored float32 in RAM by local mode)",
    }
    if backend == "edge":
        t0 = time.perf_counter()
        if args.optimize:
            store.optimize()
        result["optimize_s"] = round(time.perf_counter() - t0, 2) if args.optimize else None
        store.backend.shard.flush()
        result["disk_bytes"] = _disk_bytes(path)
        result["disk_bytes_per_colbert_token"] = round(result["disk_bytes"] / tokens, 1)
        result["colbert_storage_bytes_per_token"] = round(_disk_bytes(path, "vector_storage-colbert") / tokens, 1)
        result["page_cache"] = "warm" if args.warm_cache else "as left by ingestion"
        if args.warm_cache:
            t0 = time.perf_counter()
            _read_files(path)
            result["warm_cache_s"] = round(time.perf_counter() - t0, 2)
    queries = args.queries if backend == "edge" else args.client_queries
    warmup = args.warmup if backend == "edge" else 0
    qrng = np.random.default_rng(args.seed + 1)
    encoded = [synthetic_batch(qrng, 1, args, query=True) for _ in range(queries + warmup)]
    result["query_colbert_tokens_mean"] = round(float(np.mean([q.colbert[0].shape[0] for q in encoded])), 1)
    latency: dict = {}
    for mode in args.modes:
        latency[mode] = _timed(store, encoded, warmup, mode=mode, k=args.k, prefetch_k=args.prefetch_k)
    if backend == "edge" and "hybrid+rerank" in args.modes:
        for pk in args.prefetch_sweep:
            latency[f"hybrid+rerank@prefetch={pk}"] = _timed(store, encoded, warmup, mode="hybrid+rerank", k=args.k, prefetch_k=pk)
    result["latency"] = latency
    result["load_avg_before"] = [round(x, 2) for x in load_before]
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    return result


def _estimate_bytes(n: int, args: argparse.Namespace) -> int:
    avg_tokens = (args.min_tokens + args.max_tokens) / 2
    return int(n * (avg_tokens * args.colbert_dim * 2 + args.dense_dim * 4 + args.sparse_terms * 8 + 200) * 1.3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edge-sizes", type=int, nargs="*", default=[10_000, 50_000])
    ap.add_argument("--client-sizes", type=int, nargs="*", default=[10_000])
    ap.add_argument("--queries", type=int, default=50, help="timed queries per mode (Edge)")
    ap.add_argument("--client-queries", type=int, default=3, help="timed queries per mode (qdrant-client local)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--prefetch-k", type=int, default=None, help="candidates per prefetch (default: the store's)")
    ap.add_argument("--prefetch-sweep", type=int, nargs="*", default=[],
                    help="also time hybrid+rerank at these prefetch sizes (Edge runs)")
    ap.add_argument("--edge-float32-sizes", type=int, nargs="*", default=[],
                    help="extra Edge runs with ColBERT stored as float32 (colbert_datatype='float32')")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dense-dim", type=int, default=1024)
    ap.add_argument("--colbert-dim", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=250_002)
    ap.add_argument("--sparse-terms", type=int, default=40)
    ap.add_argument("--min-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--no-warm-cache", dest="warm_cache", action="store_false",
                    help="skip reading the Edge index files once before timing")
    ap.add_argument("--no-optimize", dest="optimize", action="store_false", help="skip Edge's index build")
    ap.add_argument("--workdir", type=Path, default=None, help="where Edge indexes go (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="m3-store-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    need_bytes = max(_estimate_bytes(max(args.edge_sizes, default=0), args),
                     2 * _estimate_bytes(max(args.edge_float32_sizes, default=0), args))
    free = shutil.disk_usage(workdir).free
    if need_bytes > free:
        print(f"not enough free disk at {workdir}: {free / 1e9:.1f} GB free, the largest Edge run needs about "
              f"{need_bytes / 1e9:.1f} GB. Fix: pass --workdir on a bigger disk or smaller --edge-sizes.",
              file=sys.stderr)  # fmt: skip
        return 2
    runs = (
        [("edge", n, "float16") for n in args.edge_sizes]
        + [("edge", n, "float32") for n in args.edge_float32_sizes]
        + [("qdrant_client_local", n, "float16") for n in args.client_sizes]
    )
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": sys.version.split()[0]},  # fmt: skip
        "runs": [],
    }
    print(json.dumps(results["machine"]), flush=True)
    for backend, n, datatype in runs:
        r = run_one("edge" if backend == "edge" else "client", n, args, workdir, datatype)
        r["backend"] = backend if datatype == "float16" else f"{backend}_{datatype}"
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
    _print_table(results["runs"])
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _print_table(runs: list[dict]) -> None:
    """Markdown: one row per run, then one row per (run, mode) latency."""
    print("\n| backend | points | ingest pts/s | disk B/ColBERT token | RSS peak MB (anon peak) | optimize s | load before -> after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in runs:
        disk = r.get("disk_bytes_per_colbert_token", "n/a")
        opt = r.get("optimize_s", "n/a")
        print(f"| {r['backend']} | {r['points']} | {r['ingest_points_per_s']} | {disk} | {r['rss_peak_mb']} ({r['anon_peak_mb']}) "
              f"| {opt} | {r['load_avg_before'][0]} -> {r['load_avg_after'][0]} |")  # fmt: skip
    print("\n| backend | points | mode | p50 ms | p95 ms | CPU p50 ms | queries |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in runs:
        for m, v in r["latency"].items():
            print(f"| {r['backend']} | {r['points']} | {m} | {v['p50_ms']:.2f} | {v['p95_ms']:.2f} | {v['cpu_p50_ms']:.2f} | {v['n']} |")


if __name__ == "__main__":
    raise SystemExit(main())
