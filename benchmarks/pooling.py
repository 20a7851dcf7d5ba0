"""Cost of ColBERT token pooling (m3_rag.pooling.pool_colbert) next to the encoder's, one run.

Batches are what the store pools after each encode: documents of 64-512 tokens, cut from
SciFact abstracts. At D=384 they are m3-mini's own ColBERT vectors and m3-mini's encode time of
the same texts (all three outputs, as the store asks) is timed too, so pooling is reported as a
fraction of encoding per document (target: at most 10%). At D=1024 the vectors are synthetic
(noisy copies of a few directions per document, like contextual token vectors) unless
``--bge-shape`` builds a 2-layer random checkpoint of BGE-M3's width, whose encode time is then
reported too (24 layers would take about 12 times as long).

One long document (``--long-tokens``, 8192: m3-mini's vectors of consecutive 512-token chunks,
and a synthetic D=1024 one) is pooled to ``pooled_rows(n, 2, max_rows=1023)`` rows; ``--windows``
sweeps the clustering window on it: time, memory of the distance tensors, and how much pooling
moves MaxSim scores of real queries (mean |pooled - full| / full over SciFact queries; the same
figure is given for the m3-mini batches).

    python benchmarks/pooling.py                          # CPU, defaults below
    python benchmarks/pooling.py --docs 8 --repeats 1 --windows 256 512   # quick
    python benchmarks/pooling.py --bge-shape              # + BGE-M3-width encoder (builds ~1 GB once)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from m3_rag.pooling import DEFAULT_WINDOW, pool_colbert, pooled_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import build_checkpoint, make_texts  # noqa: E402  (encode.py's text cutter and checkpoint builder)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--docs", type=int, default=32, help="documents per batch")
    p.add_argument("--factors", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--features", default="similarity_rows", choices=["similarity_rows", "embeddings"])
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--long-tokens", type=int, default=8192)
    p.add_argument("--max-rows", type=int, default=1023)
    p.add_argument("--windows", type=int, nargs="*", default=[128, 256, 512, 1024, 2048])
    p.add_argument("--queries", type=int, default=64, help="SciFact queries for the MaxSim check")
    p.add_argument("--bge-shape", action="store_true", help="also encode with a 2-layer BGE-M3-width random checkpoint")
    p.add_argument("--checkpoint", type=Path, default=Path.home() / ".cache" / "m3-rag" / "bench-bge-m3-2layer")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def timed(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def synthetic(lengths: list[int], dim: int, seed: int) -> list[torch.Tensor]:
    """Unit rows: per document, noisy copies of n/8 random directions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        centres = torch.randn(max(1, n // 8), dim, generator=g)
        x = centres[torch.randint(0, len(centres), (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g)
        out.append(torch.nn.functional.normalize(x, dim=-1))
    return out


def maxsim(query: torch.Tensor, doc: torch.Tensor) -> float:
    return float((query @ doc.T).max(dim=1).values.mean())


def distance_bytes(n: int, window: int) -> int:
    """Peak bytes of one document's distance tensors: float64 features and Gram plus float32 distances."""
    m = -(-n // window)
    longest = -(-n // m)
    padded = -(-longest // 64) * 64
    return m * padded * padded * (8 + 8 + 4)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    dev = args.device
    threads = torch.get_num_threads()
    device_name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU ({threads} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; features={args.features}", flush=True)
    results: dict = {"device": device_name, "features": args.features, "batches": [], "long": [], "windows": []}

    from m3_rag import M3Encoder

    corpus = [json.loads(line) for line in open(args.data / "corpus.jsonl", encoding="utf-8")]
    corpus = [d["title"] + ". " + d["text"] for d in corpus]
    mini = M3Encoder.from_pretrained("m3-mini", device=dev)
    queries = [json.loads(line)["text"] for line in open(args.data / "queries.jsonl", encoding="utf-8")][: args.queries]
    qvecs = [torch.as_tensor(q, device=dev) for q in mini.encode_queries(queries).colbert]
    texts = make_texts(mini.tokenizer, corpus, args.docs, 64, 512, seed=1)
    mini.encode_documents(texts[:2])  # warm-up
    t_mini = timed(lambda: mini.encode_documents(texts), args.repeats, dev)
    mini_vecs = [torch.as_tensor(c, device=dev) for c in mini.encode_documents(texts).colbert]
    lengths = [len(v) for v in mini_vecs]
    encoders = {mini.colbert_dim: ("m3-mini", t_mini, mini_vecs)}
    if args.bge_shape:
        wide = M3Encoder.from_pretrained(build_checkpoint(args.checkpoint, corpus, small=True), device=dev)
        wtexts = make_texts(wide.tokenizer, corpus, args.docs, 64, 512, seed=1)
        wide.encode_documents(wtexts[:2])
        t_wide = timed(lambda: wide.encode_documents(wtexts), args.repeats, dev)
        encoders[wide.colbert_dim] = ("BGE-M3 width, 2 layers", t_wide,
                                      [torch.as_tensor(c, device=dev) for c in wide.encode_documents(wtexts).colbert])
    else:
        encoders.setdefault(1024, ("synthetic", None, [v.to(dev) for v in synthetic(lengths, 1024, seed=2)]))

    print(f"\nbatches of {args.docs} documents, {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}); "
          f"window {DEFAULT_WINDOW}; median of {args.repeats}")
    head = (f"{'D':>5} {'vectors':24} {'f':>2} {'rows kept':>10} {'pool ms':>8} {'ms/doc':>7} {'encode ms/doc':>14} "
            f"{'pool/encode':>12} {'MaxSim change':>14}")
    print(head + "\n" + "-" * len(head))
    for dim, (name, t_enc, vecs) in sorted(encoders.items()):
        pool_colbert(vecs[:2], [pooled_rows(len(v), 2) for v in vecs[:2]])  # warm-up
        for f in args.factors:
            targets = [pooled_rows(len(v), f) for v in vecs]
            t = timed(lambda: pool_colbert(vecs, targets, features=args.features), args.repeats, dev)
            per_doc = t / len(vecs)
            moved = None
            if dim == mini.colbert_dim:  # m3-mini's queries against its documents, pooled or not
                pooled = pool_colbert(vecs, targets, features=args.features)
                full = torch.tensor([[maxsim(q, d) for d in vecs] for q in qvecs])
                pool = torch.tensor([[maxsim(q, d) for d in pooled] for q in qvecs])
                moved = float(((pool - full).abs() / full.abs()).mean())
            enc_doc = t_enc / len(vecs) if t_enc else None
            row = {"dim": dim, "vectors": name, "factor": f, "docs": len(vecs), "tokens": sum(len(v) for v in vecs),
                   "rows": sum(targets), "pool_s": t, "pool_ms_per_doc": per_doc * 1e3,
                   "encode_ms_per_doc": enc_doc * 1e3 if enc_doc else None,
                   "pool_over_encode": per_doc / enc_doc if enc_doc else None, "maxsim_change": moved}  # fmt: skip
            results["batches"].append(row)
            enc = f"{enc_doc * 1e3:14.1f} {per_doc / enc_doc:12.1%}" if enc_doc else f"{'-':>14} {'-':>12}"
            ms = f"{moved:14.2%}" if moved is not None else f"{'-':>14}"
            print(f"{dim:5d} {name:24} {f:2d} {sum(targets):10d} {t * 1e3:8.1f} {per_doc * 1e3:7.2f} {enc} {ms}", flush=True)

    # One long document: m3-mini vectors of consecutive chunks (D=384) and a synthetic D=1024 one.
    stream = make_texts(mini.tokenizer, corpus, -(-args.long_tokens // 510), 512, 512, seed=3)
    parts = mini.encode_documents(stream, show_progress=False).colbert
    long_docs = {
        mini.colbert_dim: torch.as_tensor(np.concatenate(parts)[: args.long_tokens], device=dev),
        1024: synthetic([args.long_tokens], 1024, seed=4)[0].to(dev),
    }
    target = pooled_rows(args.long_tokens, 2, args.max_rows)
    print(f"\none document of {args.long_tokens} tokens -> {target} rows (factor 2, max_rows {args.max_rows})")
    for dim, doc in long_docs.items():
        t = timed(lambda: pool_colbert([doc], [target], features=args.features), args.repeats, dev)
        results["long"].append({"dim": dim, "tokens": len(doc), "rows": target, "pool_s": t})
        print(f"  D={dim:4d}: {t * 1e3:8.1f} ms, distance tensors {distance_bytes(len(doc), DEFAULT_WINDOW) / 2**20:.0f} MiB")

    if args.windows:
        doc = long_docs[mini.colbert_dim]
        full = torch.tensor([maxsim(q, doc) for q in qvecs])
        print(f"\nwindow sweep on the D={mini.colbert_dim} long document ({len(qvecs)} queries; "
              "MaxSim change = mean |pooled - full| / full)")
        print(f"  {'window':>6} {'pool ms':>8} {'MiB':>7} {'MaxSim change':>14}")
        for window in tqdm(args.windows, desc="windows", leave=False, disable=None):  # a bar on a terminal only
            t = timed(lambda: pool_colbert([doc], [target], features=args.features, window=window), args.repeats, dev)
            pooled = pool_colbert([doc], [target], features=args.features, window=window)[0]
            moved = float(((torch.tensor([maxsim(q, pooled) for q in qvecs]) - full).abs() / full).mean())
            row = {"window": window, "pool_s": t, "mib": distance_bytes(len(doc), window) / 2**20, "maxsim_change": moved}
            results["windows"].append(row)
            tqdm.write(f"  {window:6d} {t * 1e3:8.1f} {row['mib']:7.0f} {moved:14.2%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
