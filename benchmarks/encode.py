"""Encoding throughput: m3-rag vs FlagEmbedding's BGEM3FlagModel, same checkpoint, same texts, one run.

The checkpoint is BGE-M3-shaped (24 layers, hidden 1024, 16 heads, FFN 4096, vocabulary
250002, 8194 positions) with random-normal weights: throughput does not depend on the values.
Both sides load the same files. Texts are SciFact abstracts cut to three mixes:

    chunks   64-512 tokens     queries  8-32 tokens     long   1k-8k tokens

For each mix it prints tokens/s of each side and the ratio, with all three outputs and with
dense only, plus (``--raw``) the bare backbone forward at L=512 as an upper bound.

    python benchmarks/encode.py --device cpu --chunks 48 --queries 128 --long 0
    python benchmarks/encode.py --device cuda   # H100-sized defaults
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--checkpoint", type=Path, default=Path.home() / ".cache" / "m3-rag" / "bench-bge-m3-shape")
    p.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl")
    p.add_argument("--chunks", type=int, default=None, help="number of 64-512-token texts")
    p.add_argument("--queries", type=int, default=None, help="number of 8-32-token texts")
    p.add_argument("--long", type=int, default=None, help="number of 1k-8k-token texts")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per side (median reported)")
    p.add_argument("--raw", action="store_true", help="also time the bare backbone forward at L=512")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    p.add_argument("--small", action="store_true", help="a 2-layer model of the same width (smoke test)")
    return p.parse_args(argv)


def build_checkpoint(path: Path, corpus: list[str], small: bool) -> Path:
    from m3_rag.testing import BGE_M3_SHAPE, CheckpointSpec, build_random_checkpoint

    spec = BGE_M3_SHAPE if not small else CheckpointSpec(**{**BGE_M3_SHAPE.__dict__, "layers": 2})
    marker = path / ".complete"
    if marker.exists() and json.loads((path / "m3_spec.json").read_text())["random_checkpoint"] == spec.__dict__:
        return path
    print(f"building a BGE-M3-shaped random checkpoint in {path} ...", file=sys.stderr)
    build_random_checkpoint(path, corpus[:3000], spec, seed=0)
    marker.write_text("ok")
    return path


def make_texts(tokenizer, corpus: list[str], count: int, low: int, high: int, seed: int) -> list[str]:
    """Texts whose token counts are spread uniformly over [low, high], cut from the corpus."""
    rng = random.Random(seed)
    stream: list[int] = []
    for doc in corpus:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(stream) > count * high + high:
            break
    texts, pos = [], 0
    for _ in range(count):
        n = rng.randint(low, high) - 2
        if pos + n > len(stream):
            pos = 0
        texts.append(tokenizer.decode(stream[pos : pos + n]))
        pos += n
    return texts


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_flush_denormal(True)
    gpu = args.device.startswith("cuda")
    n_chunks = args.chunks if args.chunks is not None else (2048 if gpu else 48)
    n_queries = args.queries if args.queries is not None else (4096 if gpu else 128)
    n_long = args.long if args.long is not None else (64 if gpu else 0)

    corpus = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    corpus = [d["title"] + ". " + d["text"] for d in corpus]
    path = build_checkpoint(args.checkpoint, corpus, args.small)

    from FlagEmbedding import BGEM3FlagModel

    from m3_rag import M3Encoder

    ours = M3Encoder.from_pretrained(path, device=args.device)
    theirs = BGEM3FlagModel(str(path), use_fp16=gpu, devices=args.device)
    tok = ours.tokenizer

    mixes = {
        "chunks": make_texts(tok, corpus, n_chunks, 64, 512, seed=1),
        "queries": make_texts(tok, corpus, n_queries, 8, 32, seed=2),
        "long": make_texts(tok, corpus, n_long, 1024, 8192, seed=3),
    }
    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; dtype {ours.config.dtype}")
    results: dict = {"device": device_name, "mixes": {}}
    # Warm both sides up (kernel selection, allocator) on a few texts of each mix.
    for texts in mixes.values():
        if texts:
            ours.encode_documents(texts[:4])
            theirs.encode(texts[:4], max_length=8192, return_sparse=True, return_colbert_vecs=True)

    header = f"{'mix':8} {'outputs':8} {'texts':>6} {'tokens':>9} {'m3-rag tok/s':>13} {'FlagEmb tok/s':>14} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for mix, texts in mixes.items():
        if not texts:
            continue
        tokens = int(ours.encode_documents(texts, outputs=["dense"]).token_counts.sum())
        for label, sparse_colbert in (("all", True), ("dense", False)):
            outputs = ("dense", "sparse", "colbert") if sparse_colbert else ("dense",)
            t_ours = timed(lambda: ours.encode_documents(texts, outputs=outputs), args.repeats)
            t_theirs = timed(
                lambda: theirs.encode(texts, max_length=8192, return_dense=True,
                                      return_sparse=sparse_colbert, return_colbert_vecs=sparse_colbert),
                args.repeats,
            )  # fmt: skip
            row = {"texts": len(texts), "tokens": tokens, "m3_rag_tok_s": tokens / t_ours,
                   "flagembedding_tok_s": tokens / t_theirs, "ratio": t_theirs / t_ours}  # fmt: skip
            results["mixes"][f"{mix}/{label}"] = row
            print(f"{mix:8} {label:8} {len(texts):6d} {tokens:9d} {row['m3_rag_tok_s']:13.0f} "
                  f"{row['flagembedding_tok_s']:14.0f} {row['ratio']:6.2f}x", flush=True)  # fmt: skip

    if args.raw:
        batch = 64 if gpu else 4
        ids = torch.randint(5, len(tok), (batch, 512), device=ours.device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            t = timed(lambda: ours.model(input_ids=ids, attention_mask=mask), args.repeats)
        raw = batch * 512 / t
        results["raw_forward_tok_s_L512"] = raw
        chunk = results["mixes"].get("chunks/all")
        share = f" (m3-rag chunks/all = {chunk['m3_rag_tok_s'] / raw:.0%} of it)" if chunk else ""
        print(f"raw backbone forward, L=512, batch {batch}: {raw:.0f} tok/s{share}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
