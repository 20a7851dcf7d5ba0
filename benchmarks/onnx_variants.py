"""The ONNX Runtime backend's fp32 and int8 variants side by side: fidelity to fp32 and speed vs torch.

    python benchmarks/onnx_variants.py                       # 2-layer checkpoint of BGE-M3 width
    python benchmarks/onnx_variants.py --layers 24 --fidelity-texts 8 --chunks 4 --queries 8 --variants ...
    python benchmarks/onnx_variants.py --checkpoint m3-mini  # a real model (the built-in m3-mini)

Every variant is an ``M3Encoder`` of the onnx backend (``m3_rag.onnx.runtime.load_onnx_encoder``
with an int8 ``recipe``, or ``fuse=False``), exported once into ``--onnx-cache`` (int8 variants
start from the cached fused fp32 graph). Measured in one run:

* fidelity against the fused fp32 graph on ``--fidelity-texts`` SciFact corpus documents and
  XQuAD paragraphs (de, zh; documents, never queries), all outputs: dense cosine (median, min),
  ColBERT cosine per token (median), sparse weighted Jaccard (median);
* batch independence: the largest dense difference between a text encoded alone and in the batch;
* speed: tok/s of ``encode_documents`` (``--chunks`` texts of 64-512 tokens) and ``encode_queries``
  (``--queries`` texts of 8-32 tokens), all outputs, and of one bare forward of a padded
  4 x 256 batch (``session.run`` / the torch module), as ratios to the torch fp32 backend. Sides are
  timed in interleaved rounds (median of ``--repeats``), so that a busy machine slows all alike.

Writes ``--json`` (default ``onnx_variants.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "m3-rag"


def _recipe(acts: str, a_bits: int, weights: str, w_bits: int, alpha: float | None, exact: tuple[str, ...] = ()) -> dict:
    """A per-token recipe; ``exact``: projections that use 8-bit activations and uint8 weights (u8 x u8 kernel)."""
    from m3_rag.onnx.quantize import default_recipe

    u8 = {"activations": "sym", "activation_bits": 8, "weights": "uint8", "weight_bits": 8}
    recipe = {**default_recipe(), "activations": acts, "activation_bits": a_bits, "weights": weights,
              "weight_bits": w_bits, "smooth_alpha": alpha}  # fmt: skip
    if exact:
        recipe["overrides"] = {kind: u8 for kind in exact}
    return recipe


def _default_with(alpha: float) -> dict:
    from m3_rag.onnx.quantize import default_recipe

    return {**default_recipe(), "smooth_alpha": alpha}


# name -> (precision, recipe factory or None, fuse)
VARIANTS: dict[str, tuple[str, Callable[[], dict] | None, bool]] = {
    "fp32-unfused": ("fp32", None, False),
    "fp32": ("fp32", None, True),
    "int8-default": ("int8", None, True),
    "int8-dynamic": ("int8", lambda: {"method": "dynamic", "reduce_range": True}, True),
    "int8-sym-a8w7": ("int8", lambda: _recipe("sym", 8, "int8", 7, None), True),
    "int8-sym-a8w7-sq": ("int8", lambda: _recipe("sym", 8, "int8", 7, 0.5), True),
    "int8-asym-a7w8": ("int8", lambda: _recipe("asym", 7, "int8", 8, None), True),
    "int8-asym-a7w8-sq": ("int8", lambda: _recipe("asym", 7, "int8", 8, 0.5), True),
    # the peer bge-m3-lite's scheme: asymmetric per-row uint8 activations, u8 x u8, SmoothQuant 0.5
    "int8-asym-a8w8u8-sq": ("int8", lambda: _recipe("asym", 8, "uint8", 8, 0.5), True),
    "int8-sym-a8w8u8-sq": ("int8", lambda: _recipe("sym", 8, "uint8", 8, 0.5), True),
    "int8-sym-a8w8u8": ("int8", lambda: _recipe("sym", 8, "uint8", 8, None), True),
    "int8-sym-a8w7-sq+u8ffn": ("int8", lambda: _recipe("sym", 8, "int8", 7, 0.5, ("ffn_in", "ffn_out")), True),
    "int8-sym-a8w7-sq+u8attn": ("int8", lambda: _recipe("sym", 8, "int8", 7, 0.5, ("qkv", "attention_output")), True),
    "int8-sym-a8w7-sq+u8ffnout": ("int8", lambda: _recipe("sym", 8, "int8", 7, 0.5, ("ffn_out",)), True),
    # GELU outputs are skewed ([-0.17, max]): asymmetric 8-bit activations there, still the fast u8 x s7 kernel
    "int8-sym-a8w7-sq+asymffnout": ("int8", lambda: {**_recipe("sym", 8, "int8", 7, 0.5), "overrides": {
        "ffn_out": {"activations": "asym", "activation_bits": 8}}}, True),  # fmt: skip
}
DEFAULT_VARIANTS = ["fp32-unfused", "fp32", "int8-default", "int8-dynamic", "int8-sym-a8w7", "int8-sym-a8w7-sq",
                    "int8-asym-a7w8-sq", "int8-sym-a8w7-sq+asymffnout", "int8-sym-a8w7-sq+u8ffn", "int8-sym-a8w8u8",
                    "int8-asym-a8w8u8-sq"]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a model folder or name (m3-mini); default: a random BGE-M3-width checkpoint of --layers "
                        f"layers in {CACHE}/variants-bge-m3-<layers>layer (built if missing)")  # fmt: skip
    p.add_argument("--layers", type=int, default=2, help="layers of the random checkpoint (24: BGE-M3's shape)")
    p.add_argument("--onnx-cache", type=Path, default=None, help="export cache (default <checkpoint>/onnx-variants)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    p.add_argument("--fidelity-texts", type=int, default=48, help="documents of the fidelity comparison")
    p.add_argument("--chunks", type=int, default=12, help="64-512-token texts timed with encode_documents")
    p.add_argument("--queries", type=int, default=32, help="8-32-token texts timed with encode_queries")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (median reported)")
    p.add_argument("--alone", type=int, default=4, help="texts also encoded alone (batch independence)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch side (speed ratios are then absent)")
    p.add_argument("--alphas", default="",
                   help="comma-separated SmoothQuant strengths: adds variants int8-default-sq<alpha> (the default "
                        "recipe with that alpha)")  # fmt: skip
    p.add_argument("--json", type=Path, default=Path("onnx_variants.json"))
    args = p.parse_args(argv)
    for text in filter(None, (a.strip() for a in args.alphas.split(","))):
        alpha = float(text)
        VARIANTS[f"int8-default-sq{alpha:g}"] = ("int8", lambda alpha=alpha: _default_with(alpha), True)
        args.variants += f",int8-default-sq{alpha:g}"
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; expected names from {', '.join(VARIANTS)}")
    return args


def checkpoint(args: argparse.Namespace) -> str:
    if args.checkpoint is not None:
        return str(args.checkpoint)
    from m3_rag.testing import BGE_M3_SHAPE, CheckpointSpec, build_random_checkpoint

    path = CACHE / f"variants-bge-m3-{args.layers}layer"
    if not (path / ".complete").exists():
        print(f"building a random {args.layers}-layer checkpoint of BGE-M3 width in {path} ...", file=sys.stderr)
        spec = CheckpointSpec(**{**BGE_M3_SHAPE.__dict__, "layers": args.layers})
        build_random_checkpoint(path, _corpus()[:3000], spec, seed=0)
        (path / ".complete").write_text("ok")
    return str(path)


def _corpus() -> list[str]:
    rows = [json.loads(line) for line in (DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8")]
    return [f"{r.get('title', '')}. {r['text']}".strip() for r in rows]


def fidelity_texts(count: int) -> list[str]:
    """SciFact documents and XQuAD paragraphs (de, zh), evenly spaced, deterministic: documents only."""
    docs = _corpus()
    texts = [docs[i] for i in range(0, len(docs), max(1, len(docs) // max(1, count * 2 // 3)))][: count * 2 // 3]
    for lang in ("de", "zh"):
        path = DATA / "xquad" / lang / "corpus.jsonl"
        if path.exists():
            rows = [json.loads(line)["text"] for line in path.open(encoding="utf-8")]
            want = (count - len(texts) + 1) // 2 if lang == "de" else count - len(texts)
            texts += [rows[i] for i in range(0, len(rows), max(1, len(rows) // max(1, want)))][:want]
    return texts[:count]


def sized_texts(tokenizer, count: int, low: int, high: int, seed: int) -> list[str]:
    """Texts of ``low``-``high`` tokens, cut from the SciFact corpus."""
    rng = random.Random(seed)
    stream: list[int] = []
    for doc in _corpus():
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        if len(stream) > count * high + high:
            break
    texts, pos = [], 0
    for _ in range(count):
        n = rng.randint(low, high) - 2
        texts.append(tokenizer.decode(stream[pos : pos + n]))
        pos += n
    return texts


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b).sum(axis=-1)


def _jaccard(x, y) -> float:
    dx, dy = x.to_dict(), y.to_dict()
    keys = set(dx) | set(dy)
    if not keys:
        return 1.0
    top = sum(min(dx.get(k, 0.0), dy.get(k, 0.0)) for k in keys)
    bottom = sum(max(dx.get(k, 0.0), dy.get(k, 0.0)) for k in keys)
    return float(top / bottom) if bottom > 0 else 1.0


def fidelity(enc, ref_out, texts: list[str], alone_count: int) -> dict:
    out = enc.encode_documents(texts)
    dense = (out.dense * ref_out.dense).sum(axis=1)
    colbert = np.concatenate([_cos_rows(a, b) for a, b in zip(out.colbert, ref_out.colbert, strict=True)])
    sparse = [_jaccard(a, b) for a, b in zip(out.sparse, ref_out.sparse, strict=True)]
    alone = max((float(np.abs(enc.encode_documents([t]).dense[0] - out.dense[i]).max())
                 for i, t in enumerate(texts[:alone_count])), default=0.0)  # fmt: skip
    return {
        "dense_cosine_median": float(np.median(dense)), "dense_cosine_min": float(dense.min()),
        "colbert_cosine_median": float(np.median(colbert)), "colbert_cosine_p05": float(np.percentile(colbert, 5)),
        "sparse_jaccard_median": float(np.median(sparse)), "alone_vs_batch_dense_max_diff": alone,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from m3_rag import M3Encoder
    from m3_rag.onnx.export import M3Graph
    from m3_rag.onnx.runtime import load_onnx_encoder, physical_cores

    ckpt = checkpoint(args)
    onnx_cache = args.onnx_cache or (Path(ckpt) / "onnx-variants" if Path(ckpt).is_dir() else CACHE / "onnx-variants")
    threads = physical_cores()
    torch.set_num_threads(threads)
    sides: dict[str, Any] = {}
    export_s: dict[str, float] = {}
    order = sorted(args.variant_list, key=lambda v: (VARIANTS[v][0] != "fp32", v))  # fp32 first: int8 starts from it
    if "fp32" not in order:
        order.insert(0, "fp32")  # the fidelity reference
    for name in order:
        precision, recipe, fuse = VARIANTS[name]
        t = time.perf_counter()
        print(f"loading {name} (exported on first use) ...", file=sys.stderr)
        sides[name] = load_onnx_encoder(ckpt, precision=precision, onnx_cache_dir=onnx_cache,  # type: ignore[arg-type]
                                        recipe=recipe() if recipe else None, fuse=fuse, threads=threads)  # fmt: skip
        export_s[name] = time.perf_counter() - t
    if not args.no_torch:
        sides["torch"] = M3Encoder.from_pretrained(ckpt, device="cpu", dtype="float32")
    tokenizer = sides["fp32"].tokenizer
    texts = fidelity_texts(args.fidelity_texts)
    ref = sides["fp32"].encode_documents(texts)
    results: dict[str, dict] = {name: {"export_or_load_s": round(export_s.get(name, 0.0), 1)} for name in sides}
    for name, enc in sides.items():
        results[name].update(fidelity(enc, ref, texts, args.alone))

    chunks = sized_texts(tokenizer, args.chunks, 64, 512, seed=1)
    queries = sized_texts(tokenizer, args.queries, 8, 32, seed=2)
    n_chunk = sum(len(tokenizer(t)["input_ids"]) for t in chunks)
    n_query = sum(len(tokenizer(t)["input_ids"]) for t in queries)
    raw_ids = torch.randint(5, min(int(sides["fp32"].vocab_size), 8000), (4, 256), generator=torch.Generator().manual_seed(0))
    raw_mask = torch.ones_like(raw_ids)
    jobs: dict[str, dict[str, Callable[[], Any]]] = {}
    for name, enc in sides.items():
        if name == "torch":  # the same function as the graph: backbone and the three heads
            module = M3Graph(enc.model, enc.colbert_linear, enc.sparse_linear, enc.config.pooling).eval()
            raw = lambda module=module: module(raw_ids, raw_mask)  # noqa: E731
        else:
            raw = lambda enc=enc: enc.backbone(raw_ids, raw_mask)  # noqa: E731
        jobs[name] = {
            "chunks": lambda enc=enc: enc.encode_documents(chunks),
            "queries": lambda enc=enc: enc.encode_queries(queries),
            "raw_forward_4x256": raw,
        }
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in j} for n, j in jobs.items()}
    with torch.inference_mode():
        for name in jobs:
            for fn in jobs[name].values():
                fn()  # warm-up
        for _ in range(args.repeats):
            for name, named in jobs.items():
                for kind, fn in named.items():
                    t = time.perf_counter()
                    fn()
                    times[name][kind].append(time.perf_counter() - t)
    tokens = {"chunks": n_chunk, "queries": n_query, "raw_forward_4x256": 4 * 256}
    for name in jobs:
        for kind, ts in times[name].items():
            results[name][f"{kind}_tok_s"] = round(tokens[kind] / statistics.median(ts), 1)
    if "torch" in results:
        for name in results:
            for kind in tokens:
                results[name][f"{kind}_vs_torch"] = round(results[name][f"{kind}_tok_s"] / results["torch"][f"{kind}_tok_s"], 3)
    report = {
        "checkpoint": ckpt, "layers": int(sides["fp32"].backbone.config.num_hidden_layers), "threads": threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "int8_dot": _int8_dot()},
        "texts": {"fidelity": len(texts), "chunks": len(chunks), "chunk_tokens": n_chunk, "queries": len(queries),
                  "query_tokens": n_query},
        "recipes": {n: _recipe_of(n) for n in sides if n in VARIANTS},
        "results": results,
        "note": "fidelity is against the fused fp32 ONNX graph; speed ratios are to the torch fp32 backend, same run",
    }  # fmt: skip
    args.json.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"wrote {args.json}", file=sys.stderr)
    return report


def _recipe_of(name: str) -> dict | None:
    from m3_rag.onnx.quantize import default_recipe

    precision, factory, _ = VARIANTS[name]
    return factory() if factory is not None else default_recipe() if precision == "int8" else None


def _int8_dot() -> bool:
    from m3_rag.onnx.quantize import cpu_has_int8_dot

    return cpu_has_int8_dot()


def format_table(report: dict) -> str:
    cols = [("dense cos med", "dense_cosine_median", "{:.5f}"), ("dense cos min", "dense_cosine_min", "{:.5f}"),
            ("colbert cos med", "colbert_cosine_median", "{:.5f}"), ("sparse jacc", "sparse_jaccard_median", "{:.4f}"),
            ("alone-vs-batch", "alone_vs_batch_dense_max_diff", "{:.1e}"), ("chunks tok/s", "chunks_tok_s", "{:.0f}"),
            ("x torch", "chunks_vs_torch", "{:.2f}"), ("queries tok/s", "queries_tok_s", "{:.0f}"),
            ("x torch", "queries_vs_torch", "{:.2f}"), ("raw 4x256 tok/s", "raw_forward_4x256_tok_s", "{:.0f}"),
            ("x torch", "raw_forward_4x256_vs_torch", "{:.2f}")]  # fmt: skip
    head = f"{report['checkpoint']} ({report['layers']} layers), {report['threads']} threads"
    lines = [head, "| variant | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in report["results"].items():
        cells = [fmt.format(row[key]) if key in row else "-" for _, key, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
