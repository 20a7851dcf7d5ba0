"""Fusing the exported fp32 graph with ONNX Runtime's transformer optimizer, and checking that it fused.

The export traces the backbone with eager attention (the explicit MatMul / Softmax pattern the
optimizer recognises; SDPA would be one opaque op), then
``onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`` (XLM-R is BERT-shaped)
rewrites each layer into one ``Attention``, two ``SkipLayerNormalization`` (residual + bias +
LayerNorm) and one ``BiasGelu`` contrib op. The fused ops compute the same function in fewer
passes over memory; their float error is far below the backends' 1e-5 parity bar.

``Attention`` rather than ``MultiHeadAttention`` (the optimizer's ``use_multi_head_attention``):
with a padding mask, ONNX Runtime 1.31's CPU ``MultiHeadAttention`` runs the same unfused
attention (its tiled kernel needs no mask) after an extra bias pass: identical outputs, 0-5%
slower on a 2-layer BGE-M3-width model (2026-12-08, 2-core AVX-512 CPU).

:func:`fuse` counts the fused ops against the model's layer count: a graph where fusion did not
happen (a transformers or onnxruntime version whose patterns differ) is never used silently.
It is kept (it is exact, only slower), its counts are written into the graph's metadata, and an
:class:`OnnxFusionWarning` is raised at export and again at every load of that cached graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FUSION_METADATA",
    "OnnxFusionWarning",
    "fusion_settings",
    "fuse",
    "expected_counts",
    "fusion_problem",
    "read_fusion_metadata",
]

FUSION_METADATA = "m3_rag.fusion"  # key of the graph's metadata_props entry: the fused op counts (JSON)
_GELU_OPS = ("BiasGelu", "Gelu", "FastGelu")
_SKIP_LN_OPS = ("SkipLayerNormalization",)
_MS_DOMAIN = "com.microsoft"


class OnnxFusionWarning(UserWarning):
    """The transformer optimizer did not fuse the graph as expected; the unfused (exact, slower) graph is used."""


def fusion_settings(hf_config: Any) -> dict:
    """What the optimizer is run with (part of the export cache key): from the backbone's Hugging Face config."""
    import onnxruntime

    return {
        "optimizer": "onnxruntime.transformers.optimizer.optimize_model",
        "onnxruntime": onnxruntime.__version__,
        "model_type": "bert",
        "num_heads": int(hf_config.num_attention_heads),
        "hidden_size": int(hf_config.hidden_size),
        "layers": int(hf_config.num_hidden_layers),
        "attention_mask": "raw",  # the 2-D 0/1 mask, not sequence lengths: correct for any padding side
        "embed_layer_norm": False,  # its fused embedding op assumes BERT's position ids, not XLM-R's
        "gelu_approximation": False,  # exact erf GELU, as the model
        "opt_level": 0,  # only the fusions here; the session applies ORT's own optimisations at load
    }


def expected_counts(settings: dict) -> dict[str, int]:
    """The fused op counts of a fully fused graph of ``settings["layers"]`` layers."""
    layers = int(settings["layers"])
    return {"Attention": layers, "SkipLayerNormalization": 2 * layers, "Gelu": layers}


def _counts(graph: Any) -> dict[str, int]:
    ops = [n.op_type for n in graph.node if n.domain == _MS_DOMAIN]
    return {
        "Attention": ops.count("Attention"),
        "SkipLayerNormalization": sum(ops.count(op) for op in _SKIP_LN_OPS),
        "Gelu": sum(ops.count(op) for op in _GELU_OPS),
    }


def fusion_problem(counts: dict[str, int], settings: dict) -> str | None:
    """None if ``counts`` are those of a fully fused graph; else what is missing."""
    want = expected_counts(settings)
    wrong = [f"{op} {counts.get(op, 0)} (expected {n})" for op, n in want.items() if counts.get(op, 0) != n]
    return "; ".join(wrong) or None


def fuse(source: Path, settings: dict) -> tuple[Any, dict]:
    """``(graph, metadata)``: the fp32 graph at ``source`` fused as ``settings`` say, weights loaded.

    ``metadata`` holds the fused op counts and ``"fused"``; when fusion is incomplete, the
    original graph is returned (with the counts it would have had) and OnnxFusionWarning raised.
    """
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.use_raw_attention_mask(settings["attention_mask"] == "raw")
    options.enable_embed_layer_norm = bool(settings["embed_layer_norm"])
    options.enable_gelu_approximation = bool(settings["gelu_approximation"])
    with _quiet_optimizer():
        fused = optimizer.optimize_model(
            str(source), model_type=settings["model_type"], num_heads=settings["num_heads"],
            hidden_size=settings["hidden_size"], optimization_options=options, opt_level=settings["opt_level"],
            use_gpu=False,
        ).model  # fmt: skip
    counts = _counts(fused.graph)
    problem = fusion_problem(counts, settings)
    metadata = {"fused": problem is None, "counts": counts, "expected": expected_counts(settings)}
    if problem is not None:
        warnings.warn(
            f"ONNX Runtime's transformer optimizer did not fuse this model's graph ({problem}); expected one "
            "Attention, two SkipLayerNormalization and one Gelu per layer. The unfused graph is used: same outputs, "
            "slower. Fix: report it with your transformers and onnxruntime versions.",
            OnnxFusionWarning,
            stacklevel=3,
        )
        del fused
        fused = onnx.load(str(source), load_external_data=True)
    if not any(o.domain == _MS_DOMAIN for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid(_MS_DOMAIN, 1))
    _set_metadata(fused, metadata)
    return fused, metadata


def _set_metadata(model: Any, metadata: dict) -> None:
    for entry in list(model.metadata_props):
        if entry.key == FUSION_METADATA:
            model.metadata_props.remove(entry)
    entry = model.metadata_props.add()
    entry.key, entry.value = FUSION_METADATA, json.dumps(metadata, sort_keys=True)


def read_fusion_metadata(session: Any) -> dict | None:
    """The fusion metadata of a session's graph (None for a graph written before fusion existed)."""
    raw = session.get_modelmeta().custom_metadata_map.get(FUSION_METADATA)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """The optimizer logs every pattern it tried at INFO/WARNING; keep errors only."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime.transformers", "fusion_base", "onnx_model")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
