"""Exporting a BGE-M3-layout model to one ONNX graph (backbone + three heads), fp32 or int8.

:class:`M3Graph` is the module traced: the backbone (with eager attention, the pattern ONNX
Runtime's transformer optimizer fuses), then :mod:`m3_rag.heads`' functions, so the graph
computes what the torch backend computes. :func:`export_model` writes ``model.onnx`` +
``model.onnx.data`` (weights as external data, so that a model over 2 GB, the protobuf limit,
exports too) into a folder:

1. trace, gather the weights into one file, check the graph against the torch module on a
   padded batch of other lengths than the traced one;
2. fuse it (:mod:`.optimize`: one Attention, two SkipLayerNormalization and one BiasGelu per
   layer; checked by op counts, warned about and left unfused if the optimizer did not match)
   and check the fused graph against torch the same way;
3. int8 only: quantise it per token (:mod:`.quantize`), SmoothQuant statistics from the
   package's demo corpus, and check that it loads, runs and stays close to torch.
"""

from __future__ import annotations

import gc
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from m3_rag.heads import colbert_token_vectors, pool_dense, sparse_token_weights
from m3_rag.loading import ModelFiles, load_backbone, load_heads, load_tokenizer_and_config

__all__ = [
    "GRAPH_VERSION",
    "ATTENTION",
    "OPSET",
    "MODEL_FILE",
    "DATA_FILE",
    "FILES",
    "INPUTS",
    "OUTPUTS",
    "M3Graph",
    "export_options",
    "fp32_options",
    "export_model",
    "int8_reduce_range",
]

GRAPH_VERSION = 2  # bump when M3Graph or the export steps change what is written: it is part of the cache key
ATTENTION = "eager"  # traced attention: the explicit pattern the optimizer fuses (SDPA would stay one opaque op)
OPSET = 17  # LayerNormalization is one op from 17 on
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # the weights (external data: the graph file alone stays small)
FILES = (MODEL_FILE, DATA_FILE)
INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("dense", "sparse", "colbert", "last_hidden_state")
_CHECK_TOLERANCE = 1e-3  # export check: a traced shape or branch would be off by far more than float error
_INT8_MIN_COSINE = 0.9  # int8 export check: a broken rewrite gives unrelated vectors, int8 error stays far above this
_DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "length"},
    "attention_mask": {0: "batch", 1: "length"},
    "dense": {0: "batch"},
    "sparse": {0: "batch", 1: "length"},
    "colbert": {0: "batch", 1: "length_after_cls"},
    "last_hidden_state": {0: "batch", 1: "length"},
}


class M3Graph(torch.nn.Module):
    """The backbone and BGE-M3's three heads as one module: ``(input_ids, attention_mask) -> OUTPUTS``."""

    def __init__(self, model: torch.nn.Module, colbert: torch.nn.Module, sparse: torch.nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.colbert, self.sparse, self.pooling = model, colbert, sparse, pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        dense = pool_dense(hidden, attention_mask.bool(), None, self.pooling)
        sparse = sparse_token_weights(self.sparse, hidden)
        colbert = colbert_token_vectors(self.colbert, hidden[:, 1:])
        return dense, sparse, colbert, hidden.float()


def int8_reduce_range() -> bool:
    """Whether int8 weights use 7 bits here: x86 CPUs without VNNI, whose u8 x s8 kernels add pairs of
    products in int16 (see :mod:`.quantize`)."""
    from m3_rag.onnx.quantize import cpu_has_int8_dot

    return not cpu_has_int8_dot()


def export_options(precision: str, pooling: str, hf_config: Any, recipe: dict | None = None, *, fuse: bool = True) -> dict:
    """What decides the exported files besides the model's own: part of the cache key and the manifest.

    ``hf_config`` (the backbone's Hugging Face config) sets the optimizer's heads and hidden size;
    ``recipe`` overrides the int8 recipe (:func:`.quantize.default_recipe`, checked) and ``fuse=False``
    skips the fusion, both for experiments (benchmarks/onnx_variants.py).
    """
    import onnx
    import transformers

    from m3_rag.onnx import optimize, quantize

    options: dict = {
        "graph": GRAPH_VERSION,
        "opset": OPSET,
        "precision": precision,
        "pooling": pooling,
        "attention": ATTENTION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "fusion": optimize.fusion_settings(hf_config) if fuse else None,
    }
    if precision == "int8":
        options["quantization"] = dict(recipe) if recipe is not None else quantize.default_recipe()
        quantize.check_recipe(options["quantization"])
    elif recipe is not None:
        raise ValueError(f"an int8 recipe was given for precision {precision!r}; expected precision 'int8'")
    return options


def fp32_options(options: dict) -> dict:
    """The options of the fp32 export that an export with ``options`` starts from (int8: before quantisation)."""
    return {**{k: v for k, v in options.items() if k != "quantization"}, "precision": "fp32"}


def export_model(files: ModelFiles, folder: Path, options: dict, *, fp32_graph: Path | None = None) -> None:
    """Write :data:`FILES` of ``files``' model exported with ``options`` (see :func:`export_options`) into ``folder``.

    ``fp32_graph`` (int8 only): the folder of a complete export with :func:`fp32_options` of ``options``
    (the cached fp32 graph), which is then quantised without tracing the model again.
    """
    from m3_rag.onnx import optimize

    if options["precision"] == "int8" and fp32_graph is not None:
        tokenizer, hf_config = load_tokenizer_and_config(files.backbone_dir)
        check = _batch((11, 3, 6), _special_ids(tokenizer), int(hf_config.vocab_size), seed=1)
        expected = _run(fp32_graph / MODEL_FILE, check)
        _quantize(fp32_graph, folder, options["quantization"], tokenizer)
        _check_int8(expected, folder / MODEL_FILE, check)
        return
    model, tokenizer = load_backbone(files.backbone_dir, dtype=torch.float32)
    _use_attention(model, options["attention"])
    colbert, sparse = load_heads(files.heads_dir, model.config.hidden_size)
    graph = M3Graph(model.eval(), colbert.eval(), sparse.eval(), options["pooling"]).eval()
    special = _special_ids(tokenizer)
    vocab = int(model.config.vocab_size)
    check = _batch((11, 3, 6), special, vocab, seed=1)  # other lengths and padding than the traced batch
    with torch.inference_mode():
        expected = [t.numpy() for t in graph(*check)]
    fp32 = folder if options["precision"] == "fp32" else folder / "fp32"
    fp32.mkdir(exist_ok=True)
    _trace(graph, _batch((7, 4), special, vocab, seed=0), fp32 / "traced", options["opset"])
    del graph, model, colbert, sparse
    gc.collect()  # the torch weights go before the graph's are loaded: peak memory about twice the model
    if options["fusion"] is None:
        _gather_weights(fp32 / "traced", fp32)
    else:
        _gather_weights(fp32 / "traced", fp32 / "unfused")
        _check_against(expected, fp32 / "unfused" / MODEL_FILE, check)
        fused, _ = optimize.fuse(fp32 / "unfused" / MODEL_FILE, options["fusion"])
        _save(fused, fp32)
        del fused
        gc.collect()
        shutil.rmtree(fp32 / "unfused")
    _check_against(expected, fp32 / MODEL_FILE, check)
    if options["precision"] == "int8":
        _quantize(fp32, folder, options["quantization"], tokenizer)
        shutil.rmtree(fp32)
        _check_int8(expected, folder / MODEL_FILE, check)


def _special_ids(tokenizer: Any) -> dict:
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return {"cls": tokenizer.cls_token_id, "eos": eos, "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0}


def _use_attention(model: torch.nn.Module, implementation: str) -> None:
    """Trace ``model`` with ``implementation`` attention (transformers >= 4.48 switch at run time; older set it at load)."""
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(implementation)
    else:
        setattr(model.config, "_attn_implementation", implementation)  # noqa: B010 (a private attribute of the config)


def _save(model: Any, folder: Path) -> None:
    import onnx

    folder.mkdir(exist_ok=True)
    onnx.save_model(model, str(folder / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)  # fmt: skip


def _batch(lengths: tuple[int, ...], special: dict, vocab: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of texts of ``lengths`` tokens: CLS, random ordinary ids, EOS."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.full((len(lengths), longest), special["pad"], dtype=torch.long)
    mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    low = min(max(special.values()) + 1, vocab - 1)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(low, vocab, (n,), generator=generator)
        ids[row, 0], ids[row, n - 1] = special["cls"], special["eos"]
        mask[row, :n] = 1
    return ids, mask


def _trace(graph: M3Graph, batch: tuple[torch.Tensor, torch.Tensor], folder: Path, opset: int) -> None:
    folder.mkdir()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one (which needs onnxscript);
        # its tracer warnings are about shape checks that are constant for an encoder.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, batch, str(folder / MODEL_FILE), dynamo=False, input_names=list(INPUTS),
            output_names=list(OUTPUTS), dynamic_axes=_DYNAMIC_AXES, opset_version=opset, do_constant_folding=True,
        )  # fmt: skip


def _gather_weights(traced: Path, folder: Path) -> None:
    """``traced``'s graph into ``folder`` with every weight in DATA_FILE (over 2 GB the exporter writes one file per tensor)."""
    import onnx

    proto = onnx.load(str(traced / MODEL_FILE), load_external_data=True)
    shutil.rmtree(traced)
    _save(proto, folder)


def _quantize(source: Path, folder: Path, recipe: dict, tokenizer: Any) -> None:
    """``source``'s fused fp32 graph quantised as ``recipe`` says into ``folder`` (SmoothQuant maxima measured on it first)."""
    import onnx

    from m3_rag.onnx import quantize

    if recipe["method"] == "dynamic":
        _quantize_dynamic(source, folder, recipe)
        return
    model = onnx.load(str(source / MODEL_FILE), load_external_data=False)
    maxima = None
    if recipe.get("smooth_alpha") is not None:
        batches = quantize.calibration_batches(tokenizer, int(recipe["calibration"]["max_length"]))
        names = list(quantize.quantizable_inputs(model).values())
        maxima = quantize.activation_maxima(source / MODEL_FILE, names, batches, folder / "calibration")
    model = onnx.load(str(source / MODEL_FILE), load_external_data=True)
    counts = quantize.quantize_graph(model, recipe, maxima)
    if not counts["MatMul"] and not counts["Attention"]:
        raise RuntimeError(f"int8 export: no weight MatMul or Attention found to quantise in {source / MODEL_FILE}")
    _save(model, folder)


def _quantize_dynamic(source: Path, folder: Path, recipe: dict) -> None:
    """ONNX Runtime's ``quantize_dynamic`` (per-tensor activations): the baseline the per-token recipe replaces."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from m3_rag.onnx.quantize import HEAD_SCOPES

    nodes = onnx.load(str(source / MODEL_FILE), load_external_data=False).graph.node
    heads = [n.name for n in nodes if n.name.startswith(HEAD_SCOPES)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is for static quantisation of CNNs
    try:
        quantize_dynamic(
            source / MODEL_FILE, folder / MODEL_FILE, op_types_to_quantize=["MatMul", "Attention"], per_channel=True,
            reduce_range=bool(recipe["reduce_range"]), weight_type=QuantType.QInt8, nodes_to_exclude=heads,
            use_external_data_format=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    finally:
        root.setLevel(level)
    if not (folder / DATA_FILE).is_file():  # the quantiser names it after the graph file; check that it still does
        raise RuntimeError(f"onnxruntime's quantize_dynamic wrote no {DATA_FILE} into {folder}")


def _run(path: Path, batch: tuple[torch.Tensor, torch.Tensor]) -> list:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    ids, mask = batch
    return session.run(list(OUTPUTS), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})


def _check_against(expected: list, path: Path, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The exported graph gives the torch module's outputs (``expected``) on ``batch``, which it was not traced with."""
    found = _run(path, batch)
    valid = batch[1].bool().numpy()
    rows = {"dense": slice(None), "sparse": valid, "colbert": valid[:, 1:], "last_hidden_state": valid}
    for name, want, got in zip(OUTPUTS, expected, found, strict=True):
        if want.shape != got.shape:
            raise RuntimeError(f"ONNX export check: output {name} has shape {got.shape}, torch gives {want.shape}")
        scale = max(1.0, float(abs(want[rows[name]]).max(initial=0.0)))
        diff = float(abs(want[rows[name]] - got[rows[name]]).max(initial=0.0))
        if not diff <= _CHECK_TOLERANCE * scale:
            raise RuntimeError(
                f"ONNX export check: output {name} differs from torch's by {diff:.3g} on a padded batch of other "
                f"lengths than the traced one (expected <= {_CHECK_TOLERANCE * scale:.3g}); the traced graph is wrong. "
                "Fix: report it with your torch and transformers versions, and use backend='torch' meanwhile."
            )


def _check_int8(expected: list, path: Path, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The int8 graph loads, runs and gives dense vectors close to torch's fp32 ones (a broken rewrite would not)."""
    found = dict(zip(OUTPUTS, _run(path, batch), strict=True))
    want = dict(zip(OUTPUTS, expected, strict=True))
    for name in OUTPUTS:
        if found[name].shape != want[name].shape:
            raise RuntimeError(f"int8 export check: output {name} has shape {found[name].shape}, torch gives {want[name].shape}")
    cosine = (found["dense"] * want["dense"]).sum(axis=1)
    if not cosine.min() >= _INT8_MIN_COSINE:
        raise RuntimeError(
            f"int8 export check: dense cosine to the fp32 torch output is {cosine.min():.3f} (expected >= "
            f"{_INT8_MIN_COSINE}); the quantised graph is wrong. Fix: report it with your onnxruntime version, and "
            "use precision='fp32' meanwhile."
        )
