"""Running the exported graph: an ONNX Runtime session behind the :class:`~m3_rag.M3Encoder` API.

:func:`load_onnx_encoder` is what ``M3Encoder.from_pretrained(..., backend="onnx")`` calls: it
reads the tokenizer, config and heads (not the backbone's weights, unless it has to export),
finds or builds the cached graph and returns an :class:`OnnxM3Encoder`, whose only difference
from the torch encoder is its forward pass.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from m3_rag.backends import Precision, check_backend
from m3_rag.devices import resolve_device
from m3_rag.encoder import M3Encoder, build_config
from m3_rag.heads import HeadOutputs, pool_dense
from m3_rag.loading import (
    DEFAULT_MODEL,
    ModelFiles,
    backbone_max_length,
    load_heads,
    load_tokenizer_and_config,
    resolve_model,
)
from m3_rag.model_folder import clip_text
from m3_rag.onnx import cache, export, optimize, require_extra
from m3_rag.validation import short_repr

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["THREADS_ENV", "BATCH_TOKENS", "OnnxBackbone", "OnnxM3Encoder", "load_onnx_encoder", "cached_graph", "physical_cores", "make_session"]

THREADS_ENV = "M3_RAG_ONNX_THREADS"  # intra-op threads of the sessions; default one per physical core
# Tokens per batch (default ``batch_tokens``): smaller than the torch CPU path's 8192, because ONNX Runtime
# runs each op over the whole batch and a [2048, 4096] FFN activation stays in the CPU's caches where a
# [8192, 4096] one does not (2-layer BGE-M3-width checkpoint, 24 SciFact texts, 2026-12-08: 1.23x torch
# at 2048 against 1.11x at 8192; torch itself gains <= 4% from smaller batches).
BATCH_TOKENS = 2048


class OnnxBackbone:
    """The exported graph in an ONNX Runtime session, with the backbone's Hugging Face ``config``.

    It stands where the torch encoder keeps its ``model``: ``backbone(input_ids=..., attention_mask=...)``
    runs the whole graph and returns every output as a CPU tensor. Sessions are thread-safe.
    """

    def __init__(self, session: Any, config: PretrainedConfig, folder: Path) -> None:
        self.session = session
        self.config = config
        self.folder = folder  # the cache folder the graph was loaded from

    def eval(self) -> OnnxBackbone:
        return self  # nothing to switch: the graph is an inference graph

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        feeds = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        return {n: torch.from_numpy(a) for n, a in zip(names, self.session.run(names, feeds), strict=True)}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run(input_ids, attention_mask, list(export.OUTPUTS))

    def __repr__(self) -> str:
        return f"OnnxBackbone({str(self.folder / export.MODEL_FILE)!r})"


class OnnxM3Encoder(M3Encoder):
    """An :class:`~m3_rag.M3Encoder` whose forward pass is one run of the exported graph (CPU)."""

    def __init__(self, backbone: OnnxBackbone, tokenizer, colbert_linear, sparse_linear, config) -> None:
        self.backbone = backbone
        # The base class reads only ``config`` and ``eval()`` of its model; the forward pass is overridden below.
        super().__init__(cast("PreTrainedModel", backbone), tokenizer, colbert_linear, sparse_linear, config)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, wanted: tuple[str, ...], mcls: bool) -> HeadOutputs:
        names = [name for name, need in (("last_hidden_state" if mcls else "dense", "dense" in wanted),
                                         ("sparse", "sparse" in wanted), ("colbert", "colbert" in wanted)) if need]  # fmt: skip
        out = self.backbone.run(input_ids, mask, names)

        def dense(valid: torch.Tensor, cls_positions: torch.Tensor | None) -> torch.Tensor:
            if cls_positions is None:
                return out["dense"]
            return pool_dense(out["last_hidden_state"], valid, cls_positions, self.config.pooling)

        # Position 0 (CLS) has no ColBERT vector in the graph, and ``rows`` never selects it.
        return HeadOutputs(dense=dense, token_weights=lambda: out["sparse"], colbert=lambda rows: out["colbert"][rows[:, 1:]])


def load_onnx_encoder(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    query_max_length: int | None = None,
    document_max_length: int | None = None,
    batch_tokens: int | None = None,
    mcls: bool = False,
    cache_dir: str | None = None,
    precision: Precision = "fp32",
    onnx_cache_dir: str | os.PathLike | None = None,
    recipe: dict | None = None,
    fuse: bool = True,
    threads: int | None = None,
) -> OnnxM3Encoder:
    """``M3Encoder.from_pretrained(..., backend="onnx")``: the same arguments, checked before anything is read.

    For experiments (benchmarks/onnx_variants.py): ``recipe`` (int8 only) overrides
    :func:`m3_rag.onnx.quantize.default_recipe`, ``fuse=False`` skips the transformer fusions (both
    are part of the cache key), ``threads`` sets the intra-op threads (default :func:`physical_cores`).
    """
    check_backend("onnx", precision)
    require_extra()
    dev = _check_device(device)
    _check_dtype(dtype)
    files = resolve_model(name_or_path, cache_dir=cache_dir)
    tokenizer, hf_config = load_tokenizer_and_config(files.backbone_dir)
    colbert, sparse = load_heads(files.heads_dir, int(hf_config.hidden_size))
    folder = cached_graph(files, precision, onnx_cache_dir, hf_config=hf_config, recipe=recipe, fuse=fuse)
    backbone = OnnxBackbone(make_session(folder / export.MODEL_FILE, threads), hf_config, folder)
    config = build_config(
        str(name_or_path), files, backbone_max_length(hf_config, tokenizer), device=dev, dtype=torch.float32,
        query_max_length=query_max_length, document_max_length=document_max_length,
        batch_tokens=BATCH_TOKENS if batch_tokens is None else batch_tokens, mcls=mcls, backend="onnx", precision=precision,
    )  # fmt: skip
    return OnnxM3Encoder(backbone, tokenizer, colbert, sparse, config)


def cached_graph(
    files: ModelFiles,
    precision: Precision,
    onnx_cache_dir: str | os.PathLike | None = None,
    *,
    hf_config: PretrainedConfig | None = None,
    recipe: dict | None = None,
    fuse: bool = True,
) -> Path:
    """The cache folder of ``files``' model exported at ``precision``; exported first if missing, stale or broken.

    An int8 export starts from the cached fp32 graph of the same model and options when there is a
    complete one (no second trace and fusion); otherwise it exports from the model's weights.
    """
    if hf_config is None:
        _, hf_config = load_tokenizer_and_config(files.backbone_dir)
    options = export.export_options(precision, files.pooling, hf_config, recipe, fuse=fuse)
    root = cache.default_cache_root() if onnx_cache_dir is None else Path(onnx_cache_dir)
    sources = cache.model_sources(files)
    entry = cache.cache_entry(root, sources, options, prefix=precision)
    fp32_graph = None
    if precision == "int8" and cache.check_entry(entry, export.FILES) is not None:
        fp32_entry = cache.cache_entry(root, sources, export.fp32_options(options), prefix="fp32")
        fp32_graph = fp32_entry.path if cache.check_entry(fp32_entry, export.FILES) is None else None

    def build(folder: Path) -> None:
        export.export_model(files, folder, options, fp32_graph=fp32_graph)

    return cache.open_entry(entry, export.FILES, build, about=files.name)


def physical_cores() -> int:
    """CPU cores this process may run on, one per physical core (SMT siblings share one): ``$M3_RAG_ONNX_THREADS`` if set.

    Read from Linux's /proc/cpuinfo and the affinity mask; elsewhere ``os.cpu_count()`` (which counts SMT threads).
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"${THREADS_ENV} is {short_repr(env)}; expected a positive number of threads. Fix: unset it.")
        return value
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        blocks = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")
    except OSError:
        blocks = []
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" not in fields or not fields["processor"].isdigit() or int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, len(cores) or len(allowed))


def make_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of the graph at ``path``: all graph optimisations on, ``threads`` intra-op
    threads (default :func:`physical_cores`), no spinning (idle worker threads would burn a core between runs)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = physical_cores() if threads is None else threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about fusions it chose not to apply
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...) for a bad file
        raise RuntimeError(
            f"onnxruntime cannot load {path} ({type(exc).__name__}: {clip_text(exc, 200)}); expected the graph the "
            f"export wrote. Fix: delete {path.parent} to export it again."
        ) from exc
    _warn_if_unfused(session, path)
    return session


def _warn_if_unfused(session: Any, path: Path) -> None:
    """The export warned once; a cached unfused graph is reported at every load too, never used silently."""
    metadata = optimize.read_fusion_metadata(session)
    if metadata is not None and metadata.get("fused") is False:
        warnings.warn(
            f"the cached ONNX graph {path} is not fused (fused ops {metadata.get('counts')}, expected "
            f"{metadata.get('expected')}): same outputs, slower. Fix: report it with your transformers and "
            "onnxruntime versions.",
            optimize.OnnxFusionWarning,
            stacklevel=4,
        )


def _check_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = resolve_device(device)
    if dev.type != "cpu":
        raise ValueError(
            f"device is {short_repr(str(dev))}, but backend 'onnx' runs on the CPU; expected 'cpu' or no device. "
            f"Fix: omit device (or pass 'cpu'), or use backend='torch' on {dev.type}."
        )
    return dev


def _check_dtype(dtype: str | torch.dtype | None) -> None:
    if dtype is None or dtype in ("float32", "fp32", torch.float32):
        return
    raise ValueError(
        f"dtype is {short_repr(dtype)}, but backend 'onnx' computes in float32; expected float32 or no dtype. "
        "Fix: omit dtype; for a faster CPU backbone pass precision='int8' instead."
    )
