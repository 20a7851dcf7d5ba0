"""Encoding throughput: m3-rag vs its peers, same checkpoint, same texts, one run.

The checkpoint is BGE-M3-shaped (24 layers, hidden 1024, 16 heads, FFN 4096, vocabulary
250002, 8194 positions) with random-normal weights: throughput does not depend on the values.
Its tokenizer is made as XLM-R's is, from a SentencePiece unigram model trained on the corpus
(``sentencepiece.bpe.model`` beside ``tokenizer.json``), so that peers which read the
SentencePiece file themselves tokenise as the Hugging Face tokenizer does. Every side loads
the same files. Texts are SciFact abstracts cut to three mixes:

    chunks   64-512 tokens     queries  8-32 tokens     long   1k-8k tokens

Sides (``--peers``, default all; a peer that is not installed or cannot run is reported, not fatal):

    m3-rag      M3Encoder, torch, float32 on CPU: the baseline every ratio is taken to
    onnx-fp32   M3Encoder backend="onnx" precision="fp32" (m3_rag.onnx; extra m3-rag[onnx]; CPU only)
    onnx-int8   M3Encoder backend="onnx" precision="int8"
    flag        FlagEmbedding's BGEM3FlagModel
    m3serve     m3serve's Engine: one request per text, all sent at once, so its queue sorts them by length
    lite-fp32   bge-m3-lite's BGEM3Embedder on its fused fp32 graph (onnxruntime, CPU only)
    lite-int8   bge-m3-lite on its int8 backbone (row-wise int8 + SmoothQuant, its ``quantize`` recipe)

bge-m3-lite reads an ONNX backbone, not a Hugging Face folder: the checkpoint is exported once
into ``<checkpoint>/peers/bge-m3-lite/`` (torch.onnx.export, then bge-m3-lite's own fuse and
quantize steps) with a ``.complete`` marker keyed by the checkpoint's files and the versions, so
later runs reuse it. Before timing, every side's dense vectors are compared with the baseline's on
a few texts (same weights: fp32 sides agree to float error) and bge-m3-lite's token ids with the
Hugging Face tokenizer's on every benchmark text.

For each mix it prints tokens/s of each side and its ratio to m3-rag torch fp32, with all three
outputs and with dense only (``--outputs``), the median latency of one 20-token query per side,
and (``--raw``) the bare backbone forward at L=512 as an upper bound. Sides are loaded and timed
one after the other (only the baseline stays loaded), so memory holds two models at most.

    python benchmarks/encode.py --device cpu --chunks 48 --queries 128 --long 0
    python benchmarks/encode.py --small --chunks 16 --queries 32 --long 2 --repeats 1
    python benchmarks/encode.py --prepare-only      # build and export once (24 layers: many minutes), time later
    python benchmarks/encode.py --device cuda   # H100-sized defaults; the CPU-only sides are skipped
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import inspect
import json
import random
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "m3-rag"

BASELINE = "m3-rag"
PEERS = ("onnx-fp32", "onnx-int8", "flag", "m3serve", "lite-fp32", "lite-int8")
SIDES = (BASELINE, *PEERS)
MODES = {"all": ("dense", "sparse", "colbert"), "dense": ("dense",)}
QUERY_TOKENS = 20  # the latency query: special tokens included
CPU_ONLY = {"onnx-fp32", "onnx-int8", "lite-fp32", "lite-int8"}
MAX_LENGTH = 8192  # documents, every side
QUERY_MAX_LENGTH = 512  # the latency query, every side
M3SERVE_TIMEOUT = 24 * 3600.0  # its embed() default is 60 s, less than a long text takes on a CPU

LITE_RECIPE = 1  # bump when the export below changes what it writes: part of the artefacts' key
LITE_DIR = ("peers", "bge-m3-lite")
LITE_ONNX_OPSET = 14
LITE_CHECK_TOLERANCE = 1e-3  # export check against torch (relative to the hidden states' scale)


class PeerUnavailable(Exception):
    """A side that cannot run here; the message says exactly why."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"default {CACHE}/bench-bge-m3-shape (-small with --small, bench-tiny with --tiny)")  # fmt: skip
    p.add_argument("--data", type=Path, default=DATA / "scifact" / "corpus.jsonl")
    p.add_argument("--chunks", type=int, default=None, help="number of 64-512-token texts")
    p.add_argument("--queries", type=int, default=None, help="number of 8-32-token texts")
    p.add_argument("--long", type=int, default=None, help="number of 1k-8k-token texts")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per side (median reported)")
    p.add_argument("--raw", action="store_true", help="also time the bare backbone forward at L=512")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="a 2-layer model of the same width (smoke test)")
    size.add_argument("--tiny", action="store_true", help="m3_rag.testing.TINY (hidden 32, 2 layers; for tests)")
    p.add_argument("--peers", default="all",
                   help=f"comma-separated peers to run besides m3-rag, from {','.join(PEERS)}; 'all' or 'none'")  # fmt: skip
    p.add_argument("--outputs", default="all,dense", help="comma-separated output modes to time: all, dense")
    p.add_argument("--latency-repeats", type=int, default=7, help="timed calls of the single-query latency (p50)")
    p.add_argument("--parity-texts", type=int, default=4, help="texts (16-128 tokens) the dense parity check encodes")
    p.add_argument("--lite-calibration", type=int, default=64,
                   help="bge-m3-lite int8: calibration texts for SmoothQuant, evenly spaced over its bundled set "
                        "(573 texts, about 45k tokens: too slow at 24 layers on 2 cores)")  # fmt: skip
    p.add_argument("--prepare-only", action="store_true",
                   help="build the checkpoint and the peers' exports, load each side once, then stop")  # fmt: skip
    args = p.parse_args(argv)
    args.peer_list = _parse_list(p, "--peers", args.peers, PEERS, {"all": list(PEERS), "none": []})
    args.modes = _parse_list(p, "--outputs", args.outputs, tuple(MODES), {})
    if not args.modes:
        p.error("--outputs names no mode")
    if args.checkpoint is None:
        name = "bench-tiny" if args.tiny else "bench-bge-m3-shape-small" if args.small else "bench-bge-m3-shape"
        args.checkpoint = CACHE / name
    return args


def _parse_list(p: argparse.ArgumentParser, flag: str, value: str, allowed, aliases: dict) -> list[str]:
    if value.strip() in aliases:
        return list(aliases[value.strip()])
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        p.error(f"{flag}: unknown {', '.join(unknown)}; expected a comma-separated subset of {','.join(allowed)}")
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------------- checkpoint and texts
def checkpoint_spec(small: bool, tiny: bool = False):
    from m3_rag.testing import BGE_M3_SHAPE, TINY, CheckpointSpec

    if tiny:
        return TINY
    return BGE_M3_SHAPE if not small else CheckpointSpec(**{**BGE_M3_SHAPE.__dict__, "layers": 2})


def build_checkpoint(path: Path, corpus: list[str], small: bool, tiny: bool = False) -> Path:
    """The random checkpoint at ``path`` (SentencePiece tokenizer), built unless it is there with this spec."""
    from m3_rag.testing import build_random_checkpoint

    spec = checkpoint_spec(small, tiny)
    marker = path / ".complete"
    if marker.exists():
        meta = json.loads((path / "m3_spec.json").read_text())
        if meta["random_checkpoint"] == spec.__dict__ and meta.get("tokenizer") == "sentencepiece":
            return path
    print(f"building a BGE-M3-shaped random checkpoint in {path} ...", file=sys.stderr)
    marker.unlink(missing_ok=True)
    shutil.rmtree(path / "peers", ignore_errors=True)  # exports of the previous weights
    build_random_checkpoint(path, corpus[:3000], spec, seed=0, tokenizer="sentencepiece")
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
    return statistics.median(_times(fn, repeats))


def _times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


# ------------------------------------------------------------------------------------------------ sides
@dataclass
class Side:
    """One encoder under test: documents ``encode``, one ``query``, ``dense`` vectors for the parity check."""

    name: str
    label: str
    encode: Callable[[list[str], tuple[str, ...]], Any]
    query: Callable[[str, tuple[str, ...]], Any]
    dense: Callable[[list[str]], np.ndarray]
    close: Callable[[], None] = lambda: None
    modes: tuple[str, ...] = tuple(MODES)  # the output modes it can produce
    notes: list[str] = field(default_factory=list)
    tokenize: Callable[[list[str]], list[list[int]]] | None = None  # its own tokenizer, when it has one
    query_setup: Callable[[], None] = lambda: None  # called once before the latency runs


@dataclass
class Context:
    path: Path
    device: str
    gpu: bool
    args: argparse.Namespace
    hidden: int
    layers: int
    heads: int


def m3rag_side(ours) -> Side:
    return Side(
        name=BASELINE, label=f"m3-rag torch {str(ours.config.dtype).removeprefix('torch.').replace('float32', 'fp32')}",
        encode=lambda texts, outputs: ours.encode_documents(texts, outputs=outputs, max_length=MAX_LENGTH),
        query=lambda q, outputs: ours.encode_queries([q], outputs=outputs, max_length=QUERY_MAX_LENGTH),
        dense=lambda texts: ours.encode_documents(texts, outputs=["dense"], max_length=MAX_LENGTH).dense,
    )  # fmt: skip


def build_onnx_encoder(path: Path, precision: str):
    """Hook: m3-rag's own ONNX Runtime encoder (issue #18 item 1), cached beside the checkpoint.

    ``M3Encoder.from_pretrained(path, backend="onnx", precision=...)``; raises PeerUnavailable
    when this m3-rag has no such backend or its extra (m3-rag[onnx]) is not installed.
    """
    from m3_rag import M3Encoder

    params = inspect.signature(M3Encoder.from_pretrained).parameters
    if "backend" not in params or "precision" not in params:
        raise PeerUnavailable("M3Encoder.from_pretrained has no backend=/precision= in this m3-rag (issue #18 item 1)")
    kwargs: dict[str, Any] = {"backend": "onnx", "precision": precision}
    if "onnx_cache_dir" in params:
        kwargs["onnx_cache_dir"] = path / "peers" / "m3-rag-onnx"
    try:
        return M3Encoder.from_pretrained(path, **kwargs)
    except ImportError as exc:
        raise PeerUnavailable(f"m3-rag's onnx backend cannot be imported: {_why(exc)}") from exc


def onnx_side(ctx: Context, precision: str) -> Side:
    enc = build_onnx_encoder(ctx.path, precision)
    side = m3rag_side(enc)
    side.name, side.label = f"onnx-{precision}", f"m3-rag onnx {precision}"
    folder = getattr(getattr(enc, "backbone", None), "folder", None)
    if folder is not None:
        side.notes.append(f"graph cached in {folder}")
    return side


def flag_side(ctx: Context) -> Side:
    try:
        from FlagEmbedding import BGEM3FlagModel
    except Exception as exc:  # ImportError, or its own imports failing against this transformers
        raise PeerUnavailable(f"FlagEmbedding cannot be imported: {_why(exc)}") from exc
    model = BGEM3FlagModel(str(ctx.path), use_fp16=ctx.gpu, devices=ctx.device)

    def run(texts: list[str], outputs: tuple[str, ...], max_length: int):
        full = "sparse" in outputs
        return model.encode(texts, max_length=max_length, return_dense=True, return_sparse=full,
                            return_colbert_vecs=full)  # fmt: skip

    return Side(
        name="flag", label=f"FlagEmbedding {_version('FlagEmbedding')}",
        encode=lambda texts, outputs: run(texts, outputs, MAX_LENGTH),
        query=lambda q, outputs: run([q], outputs, QUERY_MAX_LENGTH),
        dense=lambda texts: np.asarray(run(texts, MODES["dense"], MAX_LENGTH)["dense_vecs"], dtype=np.float32),
        notes=["BGEM3FlagModel.encode, default batch_size (texts padded to the longest of each batch)"],
    )  # fmt: skip


def m3serve_side(ctx: Context) -> Side:
    try:
        from m3serve import Engine
    except Exception as exc:
        raise PeerUnavailable(f"m3serve cannot be imported: {_why(exc)}") from exc
    loop = asyncio.new_event_loop()
    engine = Engine(model_name=str(ctx.path), device=ctx.device, use_fp16=ctx.gpu)
    loop.run_until_complete(engine.start())

    async def requests(texts: list[str], full: bool) -> list:
        return await asyncio.gather(
            *(engine.embed([t], return_sparse=full, return_colbert=full, timeout=M3SERVE_TIMEOUT) for t in texts)
        )

    def run(texts: list[str], outputs: tuple[str, ...]):
        return loop.run_until_complete(requests(texts, "sparse" in outputs))

    def query_setup() -> None:
        engine._batch_delay = 0.0  # its README's setting for one client: no coalescing wait

    def close() -> None:
        loop.run_until_complete(engine.stop())
        loop.close()

    def dense(texts: list[str]) -> np.ndarray:
        return np.asarray([r.dense[0] for r in run(texts, MODES["dense"])], dtype=np.float32)

    return Side(
        name="m3serve", label=f"m3serve {_version('m3serve')}", encode=run,
        query=lambda q, outputs: run([q], outputs), dense=dense, close=close, query_setup=query_setup,
        notes=["Engine defaults (max_batch_size 256, batch_delay 5 ms, 4 tokenizer threads); one embed() request "
               "per text, all sent at once: its queue sorts them by length into batches; outputs as Python lists",
               "latency: batch_delay 0 (its advice for a single client)",
               "max_length 8192 for every call (an Engine setting; the query has 20 tokens either way)"],
    )  # fmt: skip


def lite_side(ctx: Context, precision: str) -> Side:
    try:
        import bge_m3_lite  # noqa: F401
        from bge_m3_lite import embedder as lite_embedder
    except Exception as exc:
        raise PeerUnavailable(f"bge-m3-lite cannot be imported: {_why(exc)}") from exc
    artefacts = prepare_lite(ctx, {precision})
    done = artefacts["done"]
    step = done.get(precision, {})
    if "error" in step:
        raise PeerUnavailable(f"bge-m3-lite {precision} graph could not be built: {step['error']}")
    folder = ctx.path.joinpath(*LITE_DIR)
    notes = list(step.get("notes", []))
    width = lite_embedder.HIDDEN_SIZE
    if ctx.hidden != width:
        notes.append(f"bge-m3-lite hard-codes BGE-M3's width (embedder.HIDDEN_SIZE = {width}); set to {ctx.hidden} "
                     "while this side runs")  # fmt: skip
        lite_embedder.HIDDEN_SIZE = ctx.hidden
    try:
        with lite_files(folder):
            model = lite_embedder.BGEM3Embedder(model_path=folder / step["graph"], precision=precision, quiet=True)
    except BaseException:
        lite_embedder.HIDDEN_SIZE = width
        raise

    def close() -> None:
        model.close()
        lite_embedder.HIDDEN_SIZE = width

    notes.append(
        f"backbone {step['graph']}; tokenizer and heads from {folder} (its pinned Hub files bypassed, see prepare_lite)"
    )
    notes.append("BGEM3Embedder.encode defaults: batch_size 12, max_batch_tokens 16384, longest first")

    def run(texts: list[str], outputs: tuple[str, ...], max_length: int):
        full = "sparse" in outputs
        return model.encode(texts, max_length=max_length, return_dense=True, return_sparse=full,
                            return_colbert_vecs=full)  # fmt: skip

    return Side(
        name=f"lite-{precision}", label=f"bge-m3-lite {_version('bge-m3-lite')} {precision}",
        encode=lambda texts, outputs: run(texts, outputs, MAX_LENGTH),
        query=lambda q, outputs: run([q], outputs, QUERY_MAX_LENGTH),
        dense=lambda texts: run(texts, MODES["dense"], MAX_LENGTH)["dense_vecs"],
        close=close, notes=notes, tokenize=lambda texts: model.tokenize(texts, MAX_LENGTH),
    )  # fmt: skip


def make_side(name: str, ctx: Context) -> Side:
    if name in CPU_ONLY and ctx.gpu:
        what = (
            "m3-rag's onnx backend" if name.startswith("onnx") else "bge-m3-lite (onnxruntime's CPUExecutionProvider)"
        )
        raise PeerUnavailable(f"{what} runs on the CPU only; this run is on {ctx.device}")
    if name == "onnx-fp32":
        return onnx_side(ctx, "fp32")
    if name == "onnx-int8":
        return onnx_side(ctx, "int8")
    if name == "flag":
        return flag_side(ctx)
    if name == "m3serve":
        return m3serve_side(ctx)
    if name == "lite-fp32":
        return lite_side(ctx, "fp32")
    if name == "lite-int8":
        return lite_side(ctx, "int8")
    raise ValueError(name)


# ------------------------------------------------------------------------- bge-m3-lite's layout (export)
@contextlib.contextmanager
def lite_files(folder: Path) -> Iterator[None]:
    """Make BGEM3Embedder read its tokenizer and heads from ``folder``.

    It takes any backbone (``model_path``), but always resolves ``sentencepiece.bpe.model``,
    ``colbert_linear.pt`` and ``sparse_linear.pt`` through ``hub.ensure_files``, which checks each
    against BAAI/bge-m3's pinned size and SHA-256, deletes a file that differs and downloads the
    original: another model's files cannot stay in its cache dir. While constructing, its
    ``hub.ensure_files`` returns the files in ``folder`` instead.
    """
    from bge_m3_lite import hub

    real = hub.ensure_files

    def ensure_files(files=hub.ALL_FILES, cache_dir=None, *, quiet=False) -> dict[str, Path]:
        found = {f.name: folder / f.name for f in files}
        missing = [str(p) for p in found.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"bge-m3-lite files missing from the export: {', '.join(missing)}")
        return found

    hub.ensure_files = ensure_files  # type: ignore[assignment]
    try:
        yield
    finally:
        hub.ensure_files = real  # type: ignore[assignment]


def _fingerprint(path: Path) -> dict:
    """What the export depends on: the checkpoint's files (hash of small ones, size and mtime of all)."""
    from m3_rag.testing import SENTENCEPIECE_FILE

    out = {}
    for name in ("config.json", "model.safetensors", "colbert_linear.pt", "sparse_linear.pt", SENTENCEPIECE_FILE):
        f = path / name
        if not f.is_file():
            continue
        st = f.stat()
        entry: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if st.st_size < 64 << 20:
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
        out[name] = entry
    return out


def prepare_lite(ctx: Context, wanted: set[str]) -> dict:
    """Export the checkpoint into bge-m3-lite's layout in ``<checkpoint>/peers/bge-m3-lite/`` (once).

    Files, as bge-m3-lite's cache dir holds them for BAAI/bge-m3:

        sentencepiece.bpe.model       the checkpoint's own (its tokenizer is converted from it)
        colbert_linear.pt, sparse_linear.pt  the checkpoint's heads (torch.save dicts; it reads them torch-free)
        model.onnx + model.onnx_data  the backbone: inputs input_ids, attention_mask [B, L] int64, output
                                      token_embeddings [B, L, H] (the last hidden state), weights external
        model_fused.onnx (+ _data)    fp32: its ``fuse`` step (ORT BERT fusions, attention in 256-row chunks);
                                      the tensors it shares with model.onnx_data are read from there
        model_int8.onnx (+ _data)     int8: its ``quantize`` step (row-wise int8 + SmoothQuant, from the
                                      unchunked fused graph), calibrated on ``--lite-calibration`` of its texts

    ``.complete`` records the key (checkpoint files, versions, recipe) and each finished step;
    a different key starts the folder over, a missing step is built.
    """
    import bge_m3_lite

    from m3_rag.testing import SENTENCEPIECE_FILE

    try:  # the export (torch.onnx) and its fuse/quantize steps (its "quant" extra) need onnx
        import onnx  # noqa: F401
        import onnxruntime
        from onnxruntime.transformers import optimizer  # noqa: F401
    except ImportError as exc:
        raise PeerUnavailable(f"exporting for bge-m3-lite needs onnx and onnxruntime: {_why(exc)}") from exc
    if not (ctx.path / SENTENCEPIECE_FILE).is_file():
        raise PeerUnavailable(
            f"bge-m3-lite's tokenizer reads a SentencePiece model ({SENTENCEPIECE_FILE}), and {ctx.path} has only a "
            "Hugging Face tokenizer; build the checkpoint with build_random_checkpoint(..., tokenizer='sentencepiece') "
            "(this benchmark's own checkpoints are)"
        )  # fmt: skip
    folder = ctx.path.joinpath(*LITE_DIR)
    marker = folder / ".complete"
    key = {"recipe": LITE_RECIPE, "bge_m3_lite": bge_m3_lite.__version__, "onnxruntime": onnxruntime.__version__,
           "torch": torch.__version__, "opset": LITE_ONNX_OPSET, "checkpoint": _fingerprint(ctx.path)}  # fmt: skip
    state: dict = {}
    if marker.is_file():
        with contextlib.suppress(ValueError):
            state = json.loads(marker.read_text())
    if state.get("key") != key:
        if folder.exists():
            print(f"bge-m3-lite export in {folder} is stale or partial: exporting again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        state = {"key": key, "done": {}}
    done = state["done"]

    def save() -> None:
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(marker)

    if "base" not in done:
        start = time.perf_counter()
        print(f"bge-m3-lite: exporting the backbone to {folder}/model.onnx ...", file=sys.stderr)
        for name in (SENTENCEPIECE_FILE, "colbert_linear.pt", "sparse_linear.pt"):
            shutil.copyfile(ctx.path / name, folder / name)
        diff = export_lite_backbone(ctx.path, folder)
        done["base"] = {"seconds": round(time.perf_counter() - start, 1), "check_max_abs_diff": diff}
        save()
    if "fp32" in wanted and "fp32" not in done:
        start = time.perf_counter()
        print("bge-m3-lite: fusing the fp32 graph (its fuse step) ...", file=sys.stderr)
        try:
            how = lite_fuse(folder / "model.onnx", "model_fused", ctx, chunked=True)
            done["fp32"] = {"graph": "model_fused.onnx", "notes": [f"fused by {how}"]}
        except Exception as exc:  # its fusion patterns not found: it runs the raw export (same outputs, slower)
            done["fp32"] = {"graph": "model.onnx", "notes": [f"fusion failed ({_why(exc)}); raw export"]}
        done["fp32"]["seconds"] = round(time.perf_counter() - start, 1)
        save()
    if "int8" in wanted and "int8" not in done:
        start = time.perf_counter()
        print("bge-m3-lite: quantising to int8 (its quantize step) ...", file=sys.stderr)
        try:
            done["int8"] = lite_quantize(folder, ctx)
        except Exception as exc:
            done["int8"] = {"error": _why(exc)}
        done["int8"]["seconds"] = round(time.perf_counter() - start, 1)
        save()
    return state


class _Backbone(torch.nn.Module):
    """input_ids, attention_mask -> token_embeddings: the signature of the Hub's BAAI/bge-m3 onnx/model.onnx."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


def _padded_batch(lengths: tuple[int, ...], vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.ones((len(lengths), max(lengths)), dtype=torch.long)  # <pad> = 1
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=generator)
        ids[row, 0], ids[row, n - 1] = 0, 2
        mask[row, :n] = 1
    return ids, mask


def export_lite_backbone(checkpoint: Path, folder: Path) -> float:
    """model.onnx + model.onnx_data (all weights in one external file, as the Hub's export and its fuse step
    expect); returns the max abs difference from torch on a padded batch of other lengths than the traced one."""
    import onnx
    import onnxruntime
    from transformers import AutoModel

    # Eager attention: the graph ONNX Runtime's BERT fusions (bge-m3-lite's fuse step) recognise.
    model = AutoModel.from_pretrained(checkpoint, attn_implementation="eager", add_pooling_layer=False).eval()
    graph = _Backbone(model).eval()
    vocab = int(model.config.vocab_size)
    traced = folder / "traced"
    shutil.rmtree(traced, ignore_errors=True)
    traced.mkdir()
    axes = {"batch": 0, "sequence": 1}
    dynamic = {name: {v: k for k, v in axes.items()} for name in ("input_ids", "attention_mask", "token_embeddings")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(
            graph, _padded_batch((7, 4), vocab, seed=0), str(traced / "model.onnx"), dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"], dynamic_axes=dynamic,
            opset_version=LITE_ONNX_OPSET, do_constant_folding=True,
        )  # fmt: skip
    # Over 2 GB the exporter writes a file per tensor: gather them into model.onnx_data.
    proto = onnx.load(str(traced / "model.onnx"), load_external_data=True)
    shutil.rmtree(traced)
    onnx.save_model(proto, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=1024)  # fmt: skip
    del proto
    gc.collect()
    ids, mask = _padded_batch((11, 3, 6), vocab, seed=1)
    with torch.inference_mode():
        want = graph(ids, mask).numpy()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    got = session.run(["token_embeddings"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    valid = mask.bool().numpy()
    diff = float(np.abs(want[valid] - got[valid]).max())
    scale = max(1.0, float(np.abs(want[valid]).max()))
    if not diff <= LITE_CHECK_TOLERANCE * scale:
        raise RuntimeError(f"ONNX export of the backbone differs from torch by {diff:.3g} on a padded batch")
    return diff


def lite_fuse(model_in: Path, basename: str, ctx: Context, *, chunked: bool) -> str:
    """bge-m3-lite's ``fuse`` (ORT BERT fusions, then attention in query chunks unless ``chunked`` is False).

    Its ``fuse`` hard-codes BGE-M3's shape (16 heads, hidden 1024, and exactly 24 fused Attention
    nodes); for another shape the same steps run here from its helpers with the checkpoint's numbers.
    Returns which ran.
    """
    from bge_m3_lite import fuse as lite

    chunk = lite.ATTENTION_CHUNK if chunked else 0
    if (ctx.layers, ctx.hidden, ctx.heads) == (24, lite.HIDDEN_SIZE, lite.NUM_HEADS):
        lite.fuse(model_in, attention_chunk=chunk, basename=basename)
        return "bge_m3_lite.fuse.fuse"
    _fuse_other_shape(model_in, basename, chunk, ctx)
    return (f"bge_m3_lite.fuse's steps for {ctx.layers} layers, hidden {ctx.hidden}, {ctx.heads} heads "
            "(its fuse() accepts only BGE-M3's 24 x 1024 x 16)")  # fmt: skip


def _fuse_other_shape(model_in: Path, basename: str, chunk: int, ctx: Context) -> None:
    import onnx
    from bge_m3_lite.fuse import SHARED_DATA, _chunk_attention
    from bge_m3_lite.quantize import sha256, write_external_data
    from onnx.external_data_helper import ExternalDataInfo
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    original = onnx.load(str(model_in), load_external_data=False)
    shared: dict[bytes, tuple[str, int, int]] = {}
    with open(model_in.parent / SHARED_DATA, "rb") as fh:
        for tensor in original.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = ExternalDataInfo(tensor)
            if info.location != SHARED_DATA:
                continue
            offset, length = int(info.offset or 0), int(info.length or 0)
            fh.seek(offset)
            shared[hashlib.sha1(fh.read(length)).digest()] = (SHARED_DATA, offset, length)
    fused = optimizer.optimize_model(str(model_in), model_type="bert", num_heads=ctx.heads, hidden_size=ctx.hidden,
                                     optimization_options=FusionOptions("bert"), opt_level=0, use_gpu=False)  # fmt: skip
    stats = fused.get_fused_operator_statistics()
    if stats.get("Attention", 0) != ctx.layers:
        raise RuntimeError(f"attention fusion failed: {stats}")
    model = fused.model
    model.producer_name = "bge-m3-lite"
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.add(domain="com.microsoft", version=1)
    if chunk > 0:
        _chunk_attention(model, chunk)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = "bge_m3_lite.source_sha256", sha256(model_in)
    write_external_data(model, model_in.parent / f"{basename}.onnx_data", shared=shared)
    onnx.save_model(model, str(model_in.parent / f"{basename}.onnx"))


def lite_quantize(folder: Path, ctx: Context) -> dict:
    """bge-m3-lite's ``quantize`` with its defaults (``bge-m3-lite quantize``: rowwise, SmoothQuant alpha 0.5,
    attention chunk 256, tail rows), from the unchunked fused graph, as it does from its own fused graph."""
    from bge_m3_lite.quantize import QuantConfig, load_calibration_texts, quantize

    from m3_rag.testing import SENTENCEPIECE_FILE

    base = ".fused-unchunked"
    how = lite_fuse(folder / "model.onnx", base, ctx, chunked=False)
    texts = load_calibration_texts()
    n = max(1, min(ctx.args.lite_calibration, len(texts)))
    subset = [texts[round(i * len(texts) / n)] for i in range(n)]
    try:
        quantize(folder / f"{base}.onnx", folder / "model_int8.onnx", QuantConfig(),
                 tokenizer_path=folder / SENTENCEPIECE_FILE, calibration_texts=subset)  # fmt: skip
    finally:
        for suffix in (".onnx", ".onnx_data"):
            (folder / f"{base}{suffix}").unlink(missing_ok=True)
    return {"graph": "model_int8.onnx",
            "notes": [f"unchunked fused graph by {how}",
                      f"quantize(QuantConfig()) calibrated on {n} of its {len(texts)} bundled texts, evenly spaced"]}  # fmt: skip


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_flush_denormal(True)
    gpu = args.device.startswith("cuda")
    n_chunks = args.chunks if args.chunks is not None else (2048 if gpu else 48)
    n_queries = args.queries if args.queries is not None else (4096 if gpu else 128)
    n_long = args.long if args.long is not None else (64 if gpu else 0)

    corpus = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    corpus = [d["title"] + ". " + d["text"] for d in corpus]
    path = build_checkpoint(args.checkpoint, corpus, args.small, args.tiny)
    spec = checkpoint_spec(args.small, args.tiny)

    from m3_rag import M3Encoder

    ours = M3Encoder.from_pretrained(path, device=args.device)
    tok = ours.tokenizer
    baseline = m3rag_side(ours)
    ctx = Context(path=path, device=args.device, gpu=gpu, args=args, hidden=spec.hidden, layers=spec.layers,
                  heads=spec.heads)  # fmt: skip

    mixes = {
        "chunks": make_texts(tok, corpus, n_chunks, 64, 512, seed=1),
        "queries": make_texts(tok, corpus, n_queries, 8, 32, seed=2),
        "long": make_texts(tok, corpus, n_long, 1024, 8192, seed=3),
    }
    query = make_texts(tok, corpus, 1, QUERY_TOKENS, QUERY_TOKENS, seed=4)[0]
    parity_texts = make_texts(tok, corpus, args.parity_texts, 16, 128, seed=5)

    def count(texts: list[str]) -> int:
        return sum(len(ids) for ids in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]) if texts else 0

    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; torch {torch.__version__}; dtype {ours.config.dtype}")
    print(
        f"checkpoint: {path} ({spec.layers} layers, hidden {spec.hidden}, {spec.heads} heads, vocabulary {spec.vocab_size})"
    )
    results: dict = {
        "device": device_name, "torch": torch.__version__, "checkpoint": {"path": str(path), **spec.__dict__},
        "baseline": BASELINE, "query_tokens": count([query]), "sides": {}, "mixes": {}, "latency_ms_p50": {},
        "parity": {}, "tokenization": {},
    }  # fmt: skip
    for mix, texts in mixes.items():
        if texts:
            results["mixes"].update({f"{mix}/{mode}": {"texts": len(texts), "tokens": count(texts), "sides": {}}
                                     for mode in args.modes})  # fmt: skip
    base_dense = baseline.dense(parity_texts)
    all_texts = [t for texts in mixes.values() for t in texts] + [query] + parity_texts
    hf_ids = tok(all_texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    steps = (1 + len(args.peer_list)) * (len(results["mixes"]) + len(args.modes))
    bar = tqdm(total=steps, desc="timing", unit="run", file=sys.stderr, disable=None)
    for name in (BASELINE, *args.peer_list):
        entry: dict = {"status": "ran"}
        results["sides"][name] = entry
        start = time.perf_counter()
        try:
            side = baseline if name == BASELINE else make_side(name, ctx)
        except PeerUnavailable as exc:
            entry.update(status="skipped", reason=str(exc))
            bar.update(len(results["mixes"]) + len(args.modes))
            continue
        except Exception as exc:  # a peer that breaks on this machine: say why, go on with the others
            entry.update(status="failed", reason=f"loading failed: {_why(exc)}")
            bar.update(len(results["mixes"]) + len(args.modes))
            continue
        entry.update(label=side.label, load_s=round(time.perf_counter() - start, 2), notes=side.notes)
        try:
            measure_side(side, name, mixes, query, args, results, parity_texts, base_dense, all_texts, hf_ids, bar)
        except Exception as exc:
            entry.update(status="failed", reason=f"failed while running: {_why(exc)}")
        finally:
            if side is not baseline:
                side.close()
                del side
                gc.collect()
    bar.close()

    if args.raw and not args.prepare_only:
        batch = 64 if gpu else 4
        ids = torch.randint(5, len(tok), (batch, 512), device=ours.device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            t = timed(lambda: ours.model(input_ids=ids, attention_mask=mask), args.repeats)
        results["raw_forward_tok_s_L512"] = batch * 512 / t
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def measure_side(side: Side, name: str, mixes: dict, query: str, args, results: dict, parity_texts: list[str],
                 base_dense: np.ndarray, all_texts: list[str], hf_ids: list[list[int]], bar) -> None:  # fmt: skip
    """Parity, tokenisation, throughput per mix and mode, then the single-query latency of one side."""
    if side.tokenize is not None:
        own = side.tokenize(all_texts)
        same = [a == list(b) for a, b in zip(hf_ids, own, strict=True)]
        record: dict = {"texts": len(same), "same_ids": int(sum(same)),
                        "same_token_count": int(sum(len(a) == len(b) for a, b in zip(hf_ids, own, strict=True)))}  # fmt: skip
        if not all(same):
            i = same.index(False)
            k = next((j for j, (x, y) in enumerate(zip(hf_ids[i], own[i], strict=False)) if x != y), None)
            record["first_difference"] = {"text": i, "position": k, "hf": hf_ids[i][k : k + 4] if k is not None else [],
                                          "own": list(own[i][k : k + 4]) if k is not None else []}  # fmt: skip
        results["tokenization"][name] = record
    if name != BASELINE:
        dense = np.asarray(side.dense(parity_texts), dtype=np.float32)
        cos = (dense * base_dense).sum(axis=1) / (
            np.linalg.norm(dense, axis=1) * np.linalg.norm(base_dense, axis=1) + 1e-12
        )
        results["parity"][name] = {"texts": len(parity_texts), "dense_max_abs_diff": float(np.abs(dense - base_dense).max()),
                                   "dense_cos_min": float(cos.min()), "dense_cos_median": float(np.median(cos))}  # fmt: skip
    if args.prepare_only:
        bar.update(len(results["mixes"]) + len(args.modes))
        return
    for texts in mixes.values():  # warm-up: kernel selection, allocator, lazy initialisation
        if texts:
            side.encode(texts[:2], MODES["all"] if "all" in side.modes else MODES["dense"])
    for key, row in results["mixes"].items():
        mix, mode = key.split("/")
        bar.set_postfix_str(f"{name} {key}")
        if mode not in side.modes:
            row["sides"][name] = {"status": "n/a", "reason": f"{name} cannot produce outputs '{mode}'"}
        else:
            texts = mixes[mix]
            seconds = timed(lambda texts=texts, mode=mode: side.encode(texts, MODES[mode]), args.repeats)
            row["sides"][name] = {"tok_s": row["tokens"] / seconds, "seconds": seconds}
        bar.update(1)
    side.query_setup()
    for mode in args.modes:
        bar.set_postfix_str(f"{name} latency/{mode}")
        if mode in side.modes:
            for _ in range(2):
                side.query(query, MODES[mode])
            times = _times(lambda mode=mode: side.query(query, MODES[mode]), max(1, args.latency_repeats))
            results["latency_ms_p50"].setdefault(mode, {})[name] = 1000 * statistics.median(times)
        bar.update(1)


def report(results: dict, args) -> None:
    """Fill the ratios and the compatibility keys, then print the tables."""
    sides = [n for n, e in results["sides"].items() if e["status"] == "ran"]
    for row in results["mixes"].values():
        base = row["sides"].get(BASELINE, {}).get("tok_s")
        for cell in row["sides"].values():
            if "tok_s" in cell and base:
                cell["vs_m3_rag"] = cell["tok_s"] / base
        if base:  # the keys this benchmark wrote before it had peers
            row["m3_rag_tok_s"] = base
            flag = row["sides"].get("flag", {}).get("tok_s")
            if flag:
                row["flagembedding_tok_s"] = flag
                row["ratio"] = base / flag  # m3-rag over FlagEmbedding, as before
    print("sides: " + "; ".join(f"{n} = {results['sides'][n]['label']}" for n in sides))
    for name, entry in results["sides"].items():
        if entry["status"] != "ran":
            print(f"not run: {name}: {entry['status']}: {entry['reason']}")
    for name, entry in results["sides"].items():
        if entry["status"] == "ran":
            for note in entry.get("notes", []):
                print(f"note: {name}: {note}")
    for name, rec in results["tokenization"].items():
        extra = f"; first difference {rec['first_difference']}" if "first_difference" in rec else ""
        print(f"tokenisation: {name} vs the Hugging Face tokenizer: same ids on {rec['same_ids']}/{rec['texts']} texts, "
              f"same token count on {rec['same_token_count']}{extra}")  # fmt: skip
    for name, rec in results["parity"].items():
        print(f"parity: {name} dense vs {BASELINE} on {rec['texts']} texts: max |diff| {rec['dense_max_abs_diff']:.2e}, "
              f"cosine min {rec['dense_cos_min']:.6f} median {rec['dense_cos_median']:.6f}")  # fmt: skip
    if args.prepare_only or not sides:
        return
    width = 16
    print(f"\ntokens/s (ratio to {results['sides'][BASELINE].get('label', BASELINE)})")
    header = f"{'mix':8} {'outputs':7} {'texts':>5} {'tokens':>7} " + " ".join(f"{n:>{width}}" for n in sides)
    print(header)
    print("-" * len(header))
    for key, row in results["mixes"].items():
        mix, mode = key.split("/")
        cells = []
        for n in sides:
            cell = row["sides"].get(n, {})
            cells.append(f"{cell['tok_s']:9.0f} {cell['vs_m3_rag']:5.2f}x" if "vs_m3_rag" in cell
                         else f"{cell['tok_s']:9.0f}       " if "tok_s" in cell else f"{'n/a':>{width}}")  # fmt: skip
        print(f"{mix:8} {mode:7} {row['texts']:5d} {row['tokens']:7d} " + " ".join(f"{c:>{width}}" for c in cells))
    if results["latency_ms_p50"]:
        print(f"\nquery latency p50, one {results['query_tokens']}-token query, ms ({args.latency_repeats} calls)")
        print(f"{'outputs':7} " + " ".join(f"{n:>{width}}" for n in sides))
        for mode, by_side in results["latency_ms_p50"].items():
            print(
                f"{mode:7} "
                + " ".join(f"{by_side[n]:{width}.1f}" if n in by_side else f"{'n/a':>{width}}" for n in sides)
            )
    if "raw_forward_tok_s_L512" in results:
        raw = results["raw_forward_tok_s_L512"]
        chunk = results["mixes"].get("chunks/all", {}).get("m3_rag_tok_s")
        share = f" (m3-rag chunks/all = {chunk / raw:.0%} of it)" if chunk else ""
        print(f"raw backbone forward (m3-rag torch), L=512: {raw:.0f} tok/s{share}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
