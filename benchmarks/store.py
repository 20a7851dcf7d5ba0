"""Store benchmark: compact ColBERT storage on Qdrant Edge, synthetic BGE-M3-shaped points.

Points look like BGE-M3's: dense 1024 (L2-normalised), ~40 sparse terms from a 250k
vocabulary, 16-128 ColBERT tokens of 1024 dims; queries have 8-32 ColBERT tokens and 8
sparse terms. Runs, all in one process:

- the grid: every ``--pool-factors`` x ``--datatypes`` combination at each ``--edge-sizes``,
  passed to ``M3Store(..., colbert_pool_factor=f, colbert_datatype=dt)``, with the dense index
  of ``--grid-dense-quantization`` (default ``none``: m3-rag 0.1.0's float32-only HNSW, so the
  float16 / factor-1 row is today's store, the baseline of the ratios);
- ``--default-sizes``: Edge runs with the store's defaults (no options:
  ``m3_rag.store.schema.DEFAULT_COLBERT`` and ``DEFAULT_DENSE_QUANTIZATION``);
- ``--client-sizes``: qdrant-client local mode (store defaults; pure Python, a reference).

Each Edge run follows a user's flow: ``add_encoded`` in batches (timed, so the store's ColBERT
pooling is part of the ingest rate) -> ``optimize()`` -> ``close()`` -> a new ``M3Store`` on the
same path with no ColBERT options (it opens with the settings the collection recorded) -> then
disk and latency are measured, as a reopening user gets them. Reported per run: ingest
points/s, peak RSS while ingesting, ColBERT storage bytes per ORIGINAL token (the tokens the
encoder produced, before pooling: what a user pays per token of text) and per stored (pooled)
token, the whole shard's bytes per original token, and p50/p95 wall-clock latency of each
search mode (query encoding excluded: queries are pre-encoded, never pooled) with the p50 of
the process CPU time next to it (Edge searches on its own threads; on a shared machine wall
time exceeds CPU time by the wait for a core). Per size, each config's hybrid+rerank and m3
p50 and bytes per original token are also given as a ratio to the float16 / factor-1 config
of the same size (when the grid holds it). The load average before and after each run is
recorded.

    python benchmarks/store.py                                            # grid at 10k and 50k, client 10k
    python benchmarks/store.py --edge-sizes 2000 --client-sizes 0 --queries 10 --pool-factors 1 2 \
        --datatypes float16 turbo8                                        # quick
    python benchmarks/store.py --edge-sizes 50000 --default-sizes 200000 --json bench.json

Before each Edge run the free disk is compared with an estimate of the run's peak (ColBERT at
2 B per dim for float16, 4 for float32, about 1 for turbo8 and 0.5 for turbo4, divided by the
pool factor; dense, sparse and payload; doubled while ``optimize`` rewrites the segments) plus
``--disk-margin-gb``; a run that would not fit is skipped with the reason printed. Ctrl-C stops
cleanly: the run in progress is closed and its index removed, the finished runs are printed
and written (``--json``, which is rewritten after every run).

The ColBERT rerank dominates ``hybrid+rerank`` and ``m3``: it costs |candidates| x stored
document tokens x query tokens x dim multiply-adds (the default prefetch is max(k, 10) per
branch; a random synthetic query shares no candidates between its dense and sparse prefetch,
so the union is the worst case, 2 x prefetch). ``--prefetch-sweep`` times ``hybrid+rerank``
again at other prefetch sizes on the same index.

``--v010-m3`` also times ``m3`` as m3-rag 0.1.0 planned it (``m3@0.1.0-plan``: one Qdrant query, a
formula over three prefetches that each re-score the dense + sparse union by one vector, so the
union's dense and sparse searches run three times) on every Edge index, and reports each run's
``m3`` p50 as a ratio to the baseline's ``m3@0.1.0-plan`` too: what a user of 0.1.0's store had.

Before timing, every file of an Edge index is read once (``--no-warm-cache`` skips it): the
ColBERT vectors are mmapped from disk, and whichever mode runs first would otherwise pay the
page faults of reading them. The figures are those of an index that fits in the page cache.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from tqdm.auto import tqdm

from m3_rag.store import M3Store
from m3_rag.store.queries import MODES
from m3_rag.store.schema import COLBERT_DATATYPES, DEFAULT_COLBERT, DEFAULT_DENSE_QUANTIZATION
from m3_rag.types import M3Output, SparseVector

__all__ = ["SyntheticEncoder", "synthetic_batch", "RunSpec", "plan_runs", "estimate_bytes", "add_ratios", "build_parser", "main"]

#: Approximate stored bytes per ColBERT dimension (turbo8: 1028 B per 1024-dim token on Edge 0.9).
BYTES_PER_DIM = {"float32": 4.0, "float16": 2.0, "turbo8": 1.0, "turbo4": 0.5}
#: The reference every ratio divides by: the unquantized, unpooled storage.
BASELINE = ("float16", 1, "none")  # m3-rag 0.1.0's store: float16, unpooled, float32-only dense HNSW
#: The extra timed mode of ``--v010-m3``: m3 as m3-rag 0.1.0 ran it.
V010_M3 = "m3@0.1.0-plan"
#: Ratios reported per run against the baseline of the same size: name -> path in the run's dict.
RATIO_KEYS = {
    "hybrid+rerank_p50": ("latency", "hybrid+rerank", "p50_ms"),
    "m3_p50": ("latency", "m3", "p50_ms"),
    "colbert_storage_bytes_per_original_token": ("colbert_storage_bytes_per_token",),
    "disk_bytes_per_original_token": ("disk_bytes_per_original_token",),
    "ingest_points_per_s": ("ingest_points_per_s",),
}
#: Ratios whose run and baseline values come from different paths: name -> (run's path, baseline's path).
CROSS_RATIO_KEYS = {"m3_p50_vs_0.1.0_plan": (("latency", "m3", "p50_ms"), ("latency", V010_M3, "p50_ms"))}


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


@dataclass(frozen=True)
class RunSpec:
    """One run: a backend, a size, and the ColBERT options given to the store (None: its default)."""

    backend: str  # "edge" or "qdrant_client_local"
    points: int
    pool_factor: int | None = None
    datatype: str | None = None
    dense_quantization: str | None = None

    @property
    def requested(self) -> str:
        if self.pool_factor is None and self.datatype is None and self.dense_quantization is None:
            return "default"
        dense = f"-dense-{self.dense_quantization}" if self.dense_quantization not in (None, "none") else ""
        return f"f{self.pool_factor if self.pool_factor is not None else '?'}-{self.datatype or '?'}{dense}"


def plan_runs(args: argparse.Namespace) -> list[RunSpec]:
    """The grid at each Edge size (after the baseline with ``--with-baseline``), then the
    default-settings Edge runs, then the client runs."""
    runs = [RunSpec("edge", n, BASELINE[1], BASELINE[0], BASELINE[2]) for n in args.edge_sizes if args.with_baseline]
    runs += [
        RunSpec("edge", n, f, dt, args.grid_dense_quantization)
        for n in args.edge_sizes
        for f in dict.fromkeys(args.pool_factors)
        for dt in dict.fromkeys(args.datatypes)
    ]
    runs += [RunSpec("edge", n) for n in args.default_sizes]
    runs += [RunSpec("qdrant_client_local", n) for n in args.client_sizes if n > 0]
    return list(dict.fromkeys(runs))  # the baseline may also be a grid point


def estimate_bytes(n: int, args: argparse.Namespace, datatype: str | None = None, pool_factor: int | None = None) -> int:
    """Generous on-disk size of an Edge index of ``n`` synthetic points (30% over the vectors)."""
    datatype = datatype or DEFAULT_COLBERT.datatype
    pool_factor = pool_factor or DEFAULT_COLBERT.pool_factor
    avg_tokens = (args.min_tokens + args.max_tokens) / 2 / pool_factor
    colbert = avg_tokens * (args.colbert_dim * BYTES_PER_DIM[datatype] + 8)  # + a norm/offset per vector
    return int(n * (colbert + args.dense_dim * 4 + args.sparse_terms * 8 + 200) * 1.3)


def _disk_check(spec: RunSpec, args: argparse.Namespace, workdir: Path) -> str | None:
    """Why the run would not fit on the disk (None: it fits)."""
    need = estimate_bytes(spec.points, args, spec.datatype, spec.pool_factor)
    if args.optimize:
        need *= 2  # optimize writes the new segments before it drops the old ones
    margin = int(args.disk_margin_gb * 1e9)
    free = shutil.disk_usage(workdir).free
    if need + margin <= free:
        return None
    return (f"not enough free disk at {workdir}: {free / 1e9:.1f} GB free, the run needs about {need / 1e9:.2f} GB "
            f"plus a {args.disk_margin_gb:g} GB margin. Fix: pass --workdir on a bigger disk or a smaller size.")  # fmt: skip


def _disk_bytes(path: Path, only: str | None = None) -> int:
    total = 0
    for root, _, files in os.walk(path):
        if only and only not in root:
            continue
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except FileNotFoundError:  # a file the engine just replaced
                continue
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


def search_v010_m3(store: M3Store, query: M3Output, k: int, prefetch_k: int | None) -> list:
    """``m3`` as m3-rag 0.1.0 ran it on Qdrant Edge: one query, ``Σ w_i · $score[i]`` over three
    prefetches that re-score the dense + sparse union by the dense, sparse and ColBERT vector (the
    union searched three times). Same weights and candidates as today's ``m3`` plan."""
    import qdrant_edge as qe

    from m3_rag.store.backends.edge import _prefetch, _scoring
    from m3_rag.store.ingest import max_colbert_rows
    from m3_rag.store.queries import build_plan

    plan = build_plan("m3", query, store.schema, k=k, prefetch_k=prefetch_k, weights=store.weights,
                      max_query_tokens=max_colbert_rows(store.schema.colbert_dim))  # fmt: skip
    assert plan.combine is not None
    union = [_prefetch(p, None) for p in plan.prefetches]
    rescored = [qe.Prefetch(limit=plan.limit, query=_scoring(vq), prefetches=union)
                for vq in (plan.combine.dense, plan.combine.sparse, plan.query)]  # fmt: skip
    e = qe.Expression
    terms = [e.Mult([e.Constant(w), e.Variable(f"$score[{i}]")]) for i, w in enumerate(plan.combine.weights)]
    formula = qe.Formula(e.Sum(terms), defaults={f"$score[{i}]": 0.0 for i in range(3)})
    return store.backend.shard.query(qe.QueryRequest(limit=k, query=formula, prefetches=rescored, with_payload=True))  # type: ignore[attr-defined]


def _search(store: M3Store, query: M3Output, mode: str, k: int, prefetch_k: int | None) -> list:
    if mode == V010_M3:
        return search_v010_m3(store, query, k, prefetch_k)
    return store.search_encoded(query, mode=mode, k=k, prefetch_k=prefetch_k)  # type: ignore[arg-type]


def _timed_modes(args: argparse.Namespace, edge: bool) -> list[str]:
    return list(args.modes) + ([V010_M3] if edge and args.v010_m3 else [])


def _timed(store: M3Store, encoded: list[M3Output], warmup: int, **search: object) -> dict[str, float]:
    times, cpu = [], []
    hits = None
    for i, q in enumerate(encoded):
        t0, c0 = time.perf_counter(), time.process_time()
        hits = _search(store, q, **search)  # type: ignore[arg-type]
        dt_, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= warmup:
            times.append(dt_)
            cpu.append(dc)
    assert hits, f"{search} returned nothing"
    return _percentiles(times, cpu)


def _stored_rows(tokens: np.ndarray, pool_factor: int, dim: int) -> np.ndarray:
    """How many ColBERT vectors the store keeps of documents of ``tokens`` tokens (its pooling rule)."""
    from m3_rag.pooling import pooled_rows
    from m3_rag.store.ingest import max_colbert_rows

    max_rows = max_colbert_rows(dim)
    return np.array([pooled_rows(int(t), pool_factor, max_rows) for t in tokens], dtype=np.int64)


def _open(spec: RunSpec, path: Path, enc: SyntheticEncoder, *, reopen: bool = False) -> M3Store:
    if spec.backend != "edge":
        return M3Store(enc, location=":memory:", colbert_pool_factor=spec.pool_factor, colbert_datatype=spec.datatype)  # type: ignore[arg-type]
    if reopen:  # as a user reopens an index: no options, the collection's recorded ones
        return M3Store(enc, path=path, collection="m3")
    return M3Store(enc, path=path, collection="m3", colbert_pool_factor=spec.pool_factor, colbert_datatype=spec.datatype,  # type: ignore[arg-type]
                   dense_quantization=spec.dense_quantization)  # type: ignore[arg-type]  # fmt: skip


def run_one(spec: RunSpec, args: argparse.Namespace, workdir: Path, queries: list[M3Output], *, keep: bool = False) -> dict:
    """Ingest, (Edge: optimize, close, reopen,) measure; the index is removed afterwards, also on
    Ctrl-C, unless ``keep`` (``--interleave``: it is timed later, beside the others, then removed)."""
    enc = SyntheticEncoder(args.dense_dim, args.colbert_dim)
    edge = spec.backend == "edge"
    path = workdir / f"{spec.backend}-{spec.requested}-{spec.points}"
    load_before = os.getloadavg()
    store: M3Store | None = None
    try:
        store = _open(spec, path, enc)
        settings = store.schema.colbert
        proc = psutil.Process()
        rss_start = peak = proc.memory_info().rss
        # RSS counts the touched pages of Edge's mmapped (on-disk, reclaimable) vector files too;
        # anonymous memory (rss - shared) is what ingestion itself holds.
        anon_start = anon_peak = _anon(proc)
        rng = np.random.default_rng(args.seed)
        token_counts: list[np.ndarray] = []
        ingest_s = 0.0
        n = spec.points
        desc = f"{spec.backend} {n} {settings.datatype} f{settings.pool_factor} ingest"
        for start in tqdm(range(0, n, args.batch_size), desc=desc, unit="batch", disable=args.quiet):
            m = min(args.batch_size, n - start)
            batch = synthetic_batch(rng, m, args)
            token_counts.append(np.array([c.shape[0] for c in batch.colbert], dtype=np.int64))
            t0 = time.perf_counter()
            store.add_encoded([f"text {start + i}" for i in range(m)], batch, ids=list(range(start, start + m)))
            ingest_s += time.perf_counter() - t0
            peak = max(peak, proc.memory_info().rss)
            anon_peak = max(anon_peak, _anon(proc))
        tokens = np.concatenate(token_counts) if token_counts else np.zeros(0, np.int64)
        stored = _stored_rows(tokens, settings.pool_factor, args.colbert_dim)
        original_tokens, stored_tokens = int(tokens.sum()), int(stored.sum())
        result: dict = {
            "backend": spec.backend,
            "points": n,
            "requested": spec.requested,
            **settings.to_json(),
            "dense_quantization": store.schema.dense_quantization,
            "colbert_original_tokens": original_tokens,
            "colbert_stored_tokens": stored_tokens,
            "stored_per_original_token": round(stored_tokens / max(1, original_tokens), 4),
            "ingest_points_per_s": round(n / ingest_s, 1),
            "ingest_s": round(ingest_s, 2),
            "rss_peak_mb": round(peak / 2**20, 1),
            "rss_growth_mb": round((peak - rss_start) / 2**20, 1),
            "anon_peak_mb": round(anon_peak / 2**20, 1),
            "anon_growth_mb": round((anon_peak - anon_start) / 2**20, 1),
        }
        if edge:
            t0 = time.perf_counter()
            if args.optimize:
                store.optimize()
            result["optimize_s"] = round(time.perf_counter() - t0, 2) if args.optimize else None
            store.close()
            store = None
            t0 = time.perf_counter()
            store = _open(spec, path, enc, reopen=True)
            result["reopen_s"] = round(time.perf_counter() - t0, 2)
            if store.schema.colbert != settings:
                raise RuntimeError(f"reopened with {store.schema.colbert}, created with {settings}")
            result["disk_bytes"] = _disk_bytes(path)
            result["disk_bytes_per_original_token"] = round(result["disk_bytes"] / original_tokens, 1)
            colbert_bytes = _disk_bytes(path, "vector_storage-colbert")
            result["colbert_storage_bytes"] = colbert_bytes
            result["colbert_storage_bytes_per_token"] = round(colbert_bytes / original_tokens, 1)  # per ORIGINAL token
            result["colbert_storage_bytes_per_stored_token"] = round(colbert_bytes / stored_tokens, 1)
            result["page_cache"] = "warm" if args.warm_cache else "as left by reopening"
            if args.warm_cache:
                t0 = time.perf_counter()
                _read_files(path)
                result["warm_cache_s"] = round(time.perf_counter() - t0, 2)
        else:
            result["colbert_storage"] = "in RAM (qdrant-client local mode)"
        # The store keeps what its pooling rule says: checked on a few points read back.
        sample = sorted({0, n // 2, n - 1})
        got = {p.id: p.colbert.shape[0] for p in store.get(sample, with_vectors=True)}
        want = {i: int(stored[i]) for i in sample}
        result["stored_rows_check"] = "ok" if got == want else f"mismatch: read {got}, expected {want}"
        count = args.queries if edge else args.client_queries
        warmup = args.warmup if edge else 0
        encoded = queries[: count + warmup]
        result["query_colbert_tokens_mean"] = round(float(np.mean([q.colbert[0].shape[0] for q in encoded])), 1)
        result["load_avg_before"] = [round(x, 2) for x in load_before]
        if keep:
            result["index_path"] = str(path)
            return result
        latency: dict = {}
        for mode in _timed_modes(args, edge):
            latency[mode] = _timed(store, encoded, warmup, mode=mode, k=args.k, prefetch_k=args.prefetch_k)
        if edge and "hybrid+rerank" in args.modes:
            for pk in args.prefetch_sweep:
                latency[f"hybrid+rerank@prefetch={pk}"] = _timed(store, encoded, warmup, mode="hybrid+rerank", k=args.k, prefetch_k=pk)
        result["latency"] = latency
        result["anon_after_queries_mb"] = round(_anon(proc) / 2**20, 1)
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        return result
    finally:
        if store is not None:
            store.close()
        if not keep or sys.exc_info()[0] is not None:
            shutil.rmtree(path, ignore_errors=True)


def time_interleaved(runs: list[dict], args: argparse.Namespace, queries: list[M3Output]) -> None:
    """Time the kept Edge indexes of ``runs`` side by side: every query of every mode goes to each
    index in turn (the order rotating per query), so that the load of a shared machine falls on
    all of them alike; each run gets its ``latency`` from these samples. The indexes are removed."""
    enc = SyntheticEncoder(args.dense_dim, args.colbert_dim)
    stores: list[M3Store] = []
    try:
        for r in runs:
            path = Path(r["index_path"])
            stores.append(M3Store(enc, path=path, collection="m3"))
            if args.warm_cache:
                _read_files(path)
        encoded = queries[: args.queries + args.warmup]
        modes = _timed_modes(args, edge=True)
        samples: list[dict[str, tuple[list[float], list[float]]]] = [{m: ([], []) for m in modes} for _ in runs]
        for i, q in enumerate(encoded):
            for mode in modes:
                for j in range(len(stores)):
                    at = (i + j) % len(stores)
                    t0, c0 = time.perf_counter(), time.process_time()
                    hits = _search(stores[at], q, mode, args.k, args.prefetch_k)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    assert hits, f"{mode} returned nothing"
                    if i >= args.warmup:
                        samples[at][mode][0].append(wall)
                        samples[at][mode][1].append(cpu)
        for r, per_mode in zip(runs, samples, strict=True):
            r["latency"] = {m: _percentiles(w, c) for m, (w, c) in per_mode.items()}
            r["latency_timing"] = f"interleaved with {len(runs) - 1} other indexes, query by query"
            r["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for store in stores:
            store.close()
        for r in runs:
            shutil.rmtree(r.pop("index_path"), ignore_errors=True)


def _get(run: dict, keys: tuple[str, ...]) -> float | None:
    value: object = run
    for k in keys:
        if not isinstance(value, dict) or k not in value:
            return None
        value = value[k]
    return value if isinstance(value, (int, float)) else None


def add_ratios(runs: list[dict]) -> None:
    """``ratios_vs_float16_f1`` on every measured Edge run whose size has a :data:`BASELINE` run."""
    for run in runs:
        if run.get("skipped") or run["backend"] != "edge":
            continue
        base = next((b for b in runs if not b.get("skipped") and b["backend"] == "edge" and b["points"] == run["points"]
                     and (b["colbert_datatype"], b["colbert_pool_factor"], b.get("dense_quantization", "none")) == BASELINE),
                    None)  # fmt: skip
        if base is None:
            continue
        ratios = {}
        pairs = [(name, keys, keys) for name, keys in RATIO_KEYS.items()]
        pairs += [(name, run_keys, base_keys) for name, (run_keys, base_keys) in CROSS_RATIO_KEYS.items()]
        for name, run_keys, base_keys in pairs:
            a, b = _get(run, run_keys), _get(base, base_keys)
            if a is not None and b:
                ratios[name] = round(a / b, 3)
        run["ratios_vs_float16_f1"] = ratios


def _warm_pooling(args: argparse.Namespace) -> None:
    """Pool one small batch untimed: torch's first calls (allocator, kernels) would otherwise
    land in the ingest rate of whichever pooled run comes first."""
    from m3_rag.pooling import pool_colbert, pooled_rows

    batch = synthetic_batch(np.random.default_rng(args.seed + 2), 8, args)
    pool_colbert(batch.colbert, [pooled_rows(c.shape[0], 2) for c in batch.colbert])


def _write_json(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edge-sizes", type=int, nargs="*", default=[10_000, 50_000], help="sizes of the grid runs")
    ap.add_argument("--pool-factors", type=int, nargs="+", default=[1, 2, 3, 4],
                    help="ColBERT pool factors of the grid (colbert_pool_factor=)")
    ap.add_argument("--datatypes", nargs="+", default=["float16", "turbo8", "turbo4"], choices=list(COLBERT_DATATYPES),
                    help="ColBERT storage datatypes of the grid (colbert_datatype=)")
    ap.add_argument("--grid-dense-quantization", choices=["none", "int8"], default="none",
                    help="dense index of the grid runs (dense_quantization=; none: m3-rag 0.1.0's, the baseline)")
    ap.add_argument("--with-baseline", action="store_true",
                    help="also run the baseline (float16, factor 1, dense none) first at each --edge-sizes, "
                         "e.g. beside a grid of int8 dense indexes")
    ap.add_argument("--interleave", action="store_true",
                    help="keep every Edge index and time them side by side at the end, query by query "
                         "(fair ratios on a shared machine; needs the disk of all indexes at once)")
    ap.add_argument("--default-sizes", type=int, nargs="*", default=[],
                    help="Edge runs with the store's default ColBERT settings only (e.g. 200000)")
    ap.add_argument("--client-sizes", type=int, nargs="*", default=[10_000], help="qdrant-client local mode runs (0: none)")
    ap.add_argument("--queries", type=int, default=50, help="timed queries per mode (Edge)")
    ap.add_argument("--client-queries", type=int, default=3, help="timed queries per mode (qdrant-client local)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--v010-m3", action="store_true",
                    help=f"also time m3 as m3-rag 0.1.0 planned it ({V010_M3!r}: three re-scoring prefetches) on Edge")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--prefetch-k", type=int, default=None, help="candidates per prefetch (default: the store's)")
    ap.add_argument("--prefetch-sweep", type=int, nargs="*", default=[],
                    help="also time hybrid+rerank at these prefetch sizes (Edge runs)")
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
    ap.add_argument("--disk-margin-gb", type=float, default=2.0, help="free disk kept beyond a run's estimate")
    ap.add_argument("--json", "--out", dest="out", type=Path, default=None,
                    help="also write the results as JSON here (rewritten after every run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if min(args.pool_factors) < 1:
        ap.error(f"--pool-factors {args.pool_factors}: every factor must be an int >= 1")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="m3-store-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": sys.version.split()[0]},  # fmt: skip
        "defaults": {**DEFAULT_COLBERT.to_json(), "dense_quantization": DEFAULT_DENSE_QUANTIZATION},
        "runs": [],
        "interrupted": False,
    }
    print(json.dumps(results["machine"]), flush=True)
    # The same pre-encoded queries for every run (never pooled: the store pools documents only).
    qrng = np.random.default_rng(args.seed + 1)
    n_queries = max(args.queries + args.warmup, args.client_queries)
    queries = [synthetic_batch(qrng, 1, args, query=True) for _ in range(n_queries)]
    _warm_pooling(args)
    try:
        for spec in plan_runs(args):
            reason = _disk_check(spec, args, workdir) if spec.backend == "edge" else None
            if reason is not None:
                print(f"skipping {spec.backend} {spec.points} {spec.requested}: {reason}", file=sys.stderr, flush=True)
                r = {"backend": spec.backend, "points": spec.points, "requested": spec.requested, "skipped": reason}
            else:
                r = run_one(spec, args, workdir, queries, keep=args.interleave and spec.backend == "edge")
                print(json.dumps(r), flush=True)
            results["runs"].append(r)
            add_ratios(results["runs"])
            if args.out:
                _write_json(args.out, results)
        kept = [r for r in results["runs"] if "index_path" in r]
        if kept:
            time_interleaved(kept, args, queries)
    except KeyboardInterrupt:
        results["interrupted"] = True
        for r in results["runs"]:
            if "index_path" in r:
                shutil.rmtree(r.pop("index_path"), ignore_errors=True)
        print("\ninterrupted: the run in progress was stopped and its index removed; finished runs follow.",
              file=sys.stderr, flush=True)  # fmt: skip
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    add_ratios(results["runs"])
    _print_tables(results["runs"])
    if args.out:
        _write_json(args.out, results)
    return 130 if results["interrupted"] else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _config(r: dict) -> str:
    settings = f"{r['colbert_datatype']} f{r['colbert_pool_factor']} dense {r.get('dense_quantization', 'none')}"
    return f"{settings} (default)" if r.get("requested") == "default" else settings


def _print_tables(runs: list[dict]) -> None:
    """Markdown: one row per run, one per (run, mode) latency, the ratios, the skipped runs."""
    done = [r for r in runs if not r.get("skipped")]
    print("\n| backend | points | ColBERT | ingest pts/s | ColBERT B / orig. token | ColBERT B / stored token "
          "| disk B / orig. token | stored / orig. tokens | RSS peak MB (anon peak) | optimize s | load before -> after |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in done:
        na = "n/a"
        print(f"| {r['backend']} | {r['points']} | {_config(r)} | {r['ingest_points_per_s']} "
              f"| {r.get('colbert_storage_bytes_per_token', na)} | {r.get('colbert_storage_bytes_per_stored_token', na)} "
              f"| {r.get('disk_bytes_per_original_token', na)} | {r['stored_per_original_token']} "
              f"| {r['rss_peak_mb']} ({r['anon_peak_mb']}) | {r.get('optimize_s', na)} "
              f"| {r['load_avg_before'][0]} -> {r['load_avg_after'][0]} |")  # fmt: skip
    print("\n| backend | points | ColBERT | mode | p50 ms | p95 ms | CPU p50 ms | queries |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for r in done:
        for m, v in r.get("latency", {}).items():
            print(f"| {r['backend']} | {r['points']} | {_config(r)} | {m} | {v['p50_ms']:.2f} | {v['p95_ms']:.2f} "
                  f"| {v['cpu_p50_ms']:.2f} | {v['n']} |")  # fmt: skip
    with_ratios = [r for r in done if r.get("ratios_vs_float16_f1")]
    if with_ratios:
        names = list(RATIO_KEYS) + [n for n in CROSS_RATIO_KEYS if any(n in r["ratios_vs_float16_f1"] for r in with_ratios)]
        print("\nRatios to the float16 / factor-1 / dense-none run (m3-rag 0.1.0's store) of the same size:\n")
        print("| points | ColBERT | " + " | ".join(names) + " |")
        print("|---:|---|" + "---:|" * len(names))
        for r in with_ratios:
            values = [r["ratios_vs_float16_f1"].get(n) for n in names]
            print(f"| {r['points']} | {_config(r)} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
    for r in runs:
        if r.get("skipped"):
            print(f"\nskipped {r['backend']} {r['points']} {r['requested']}: {r['skipped']}")


if __name__ == "__main__":
    raise SystemExit(main())
