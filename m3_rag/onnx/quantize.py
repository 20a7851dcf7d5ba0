"""int8 backbone: per-token dynamic activations, per-output-channel int8 weights, optional SmoothQuant.

ONNX Runtime's ``quantize_dynamic`` quantises activations per *tensor*: one scale for the whole
padded batch, so a text's int8 output depends on the texts it is batched with, and a single
outlier token coarsens every other token. Here every weight MatMul of the backbone (the fused
``Attention``'s QKV projection included) becomes::

    X2 = Reshape(X, [-1, K]) (* 1/s: SmoothQuant, optional)
    per row r:  scale_r = max|X2_r| / (2^(bits-1) - 1), zero point 2^(bits-1)  ("sym")
           or:  scale_r = (max - min) / (2^bits - 1), zero point z_r = -min / scale_r  ("asym")
    Q  = QuantizeLinear(X2, scale, zero_point, axis=0)                      uint8, per row
    Y  = MatMulIntegerToFloat(Q, Wq, scale, w_scale, zp)  (- scale_r * z_r * colsum(Wq) * w_scale for "asym")

with ``Wq`` int8 per output channel (``w_scale = max|W[:, n]| / (2^(bits-1) - 1)``). Each token
is quantised on its own, so its output does not depend on the batch (up to float summation
order); the scales are computed in the graph at run time (dynamic), the weights once.

Bit widths: ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2) multiply-add pairs
of products into int16 (``vpmaddubsw``), which saturates unless ``2 * max|a| * max|w| <= 32767``.
There, 8-bit activations with 8-bit weights need the weights stored as uint8 (zero point 128),
which runs the exact u8 x u8 kernel (about 1.5x fp32 MatMul speed on AVX2, against 2.5x for
u8 x s8 with 7-bit weights, whose error is about twice as large: see benchmarks/onnx_variants.py).
:func:`default_recipe` takes 8/8 bits everywhere, int8 weights where the kernels accumulate in
int32 (VNNI, ARM) and uint8 weights elsewhere; :func:`check_recipe` refuses a recipe that would
saturate on this CPU.

SmoothQuant (Xiao et al., 2022): ``X W = (X / s) (s W)`` with per-input-channel ``s_k =
max|X_k|^a / max|W_k|^(1-a)``, ``max|X_k|`` measured on calibration texts (the package's demo
corpus, deterministic); it moves activation outlier channels into the weights, where they are
quantised per output channel. The attention scores, softmax, LayerNorms, GELU, the embeddings
and the ColBERT and sparse heads stay float32.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HEAD_SCOPES",
    "PROJECTIONS",
    "projection_kind",
    "cpu_has_int8_dot",
    "default_recipe",
    "check_recipe",
    "quantizable_inputs",
    "calibration_texts",
    "calibration_batches",
    "activation_maxima",
    "quantize_graph",
]

HEAD_SCOPES = ("/colbert/", "/sparse/")  # node-name prefixes of the heads, which stay float32
_MS = "com.microsoft"
_INT16_MAX = 32767
_EPS = 1e-12  # smallest scale: a row of zeros quantises to zeros
_SMOOTH_CLIP = (1e-2, 1e2)  # bounds of the SmoothQuant factors, so that no channel is scaled to nothing
# The projections of a layer, by the node names the Hugging Face trace gives them (BERT and XLM-R alike);
# the fused Attention is the QKV projection. A recipe's "overrides" set other bits for some of them.
PROJECTIONS = ("qkv", "attention_output", "ffn_in", "ffn_out", "other")
_OVERRIDABLE = ("activations", "activation_bits", "weights", "weight_bits")


def projection_kind(node: Any) -> str:
    """Which projection of its layer a weight MatMul or fused Attention node is (see :data:`PROJECTIONS`)."""
    name = node.name or ""
    if node.op_type == "Attention" or "/attention/self/" in name:
        return "qkv"
    if "/attention/output/dense/" in name:
        return "attention_output"
    if "/intermediate/dense/" in name:
        return "ffn_in"
    if "/output/dense/" in name:
        return "ffn_out"
    return "other"


def cpu_has_int8_dot() -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels accumulate in int32 here (x86 with VNNI or AMX, and ARM);
    on other x86 CPUs (AVX2) they add pairs of products in int16, which can saturate."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False  # unknown x86 CPU: assume the int16 kernels (the safe bit widths work everywhere)
    return bool(re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags))


def default_recipe() -> dict:
    """The int8 recipe for this CPU (JSON-serialisable: it is part of the export cache key).

    8-bit symmetric per-token activations and 8-bit per-channel weights everywhere: with fewer bits
    (7-bit weights, the fast u8 x s8 kernel on AVX2) the dense cosine to fp32 of a 24-layer
    BGE-M3-shaped model falls to 0.998 and the sparse weights move visibly (benchmarks/onnx_variants.py).
    On CPUs whose u8 x s8 kernels accumulate in int32 the weights are int8; on x86 without VNNI they
    are stored as uint8 with zero point 128, for ONNX Runtime's exact u8 x u8 kernel there.
    """
    exact_s8 = cpu_has_int8_dot()
    return {
        "method": "per-token",
        "activations": "sym",  # per token, symmetric (zero point 128)
        "activation_bits": 8,
        "weights": "int8" if exact_s8 else "uint8",  # per output channel, symmetric
        "weight_bits": 8,
        "smooth_alpha": 0.5,
        "calibration": {"texts": "demo-corpus", "max_length": 512},
        "float32": ["embeddings", "attention scores", "layer norms", "gelu", "colbert", "sparse"],
    }


def check_recipe(recipe: dict) -> None:
    """ValueError if ``recipe`` is not one :func:`quantize_graph` can build, or would saturate on this CPU.

    ``{"method": "dynamic", "reduce_range": bool}`` is ONNX Runtime's ``quantize_dynamic`` (per-tensor
    activations, per-channel weights), kept as the baseline of benchmarks/onnx_variants.py.
    """
    if recipe.get("method") == "dynamic":
        if not isinstance(recipe.get("reduce_range"), bool) or set(recipe) != {"method", "reduce_range"}:
            raise ValueError(f"int8 recipe {recipe!r}: expected {{'method': 'dynamic', 'reduce_range': bool}}")
        return
    overrides = recipe.get("overrides", {})
    if not isinstance(overrides, dict) or not set(overrides) <= set(PROJECTIONS):
        raise ValueError(f"int8 recipe {recipe!r}: overrides must map some of {', '.join(PROJECTIONS)} to settings")
    for kind, change in overrides.items():
        if not isinstance(change, dict) or not set(change) <= set(_OVERRIDABLE):
            raise ValueError(f"int8 recipe {recipe!r}: overrides[{kind!r}] may set only {', '.join(_OVERRIDABLE)}")
        _check_one({**recipe, **change})
    _check_one(recipe)


def _check_one(recipe: dict) -> None:
    acts, a_bits = recipe.get("activations"), recipe.get("activation_bits")
    weights, w_bits = recipe.get("weights"), recipe.get("weight_bits")
    alpha = recipe.get("smooth_alpha")
    if recipe.get("method") != "per-token" or acts not in ("sym", "asym") or weights not in ("int8", "uint8"):
        raise ValueError(f"int8 recipe {recipe!r}: expected method 'per-token', activations 'sym' or 'asym', "
                         "weights 'int8' or 'uint8'")  # fmt: skip
    if a_bits not in (7, 8) or w_bits not in (7, 8) or (weights == "uint8" and w_bits != 8):
        raise ValueError(f"int8 recipe {recipe!r}: expected activation_bits and weight_bits 7 or 8 (8 for uint8 weights)")
    if alpha is not None and not (isinstance(alpha, float) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"int8 recipe {recipe!r}: smooth_alpha must be None or a float in [0, 1]")
    a_max = 2**a_bits - 1  # the largest stored uint8 activation (sym uses 1 .. 2^bits - 1)
    if weights == "int8" and not cpu_has_int8_dot() and 2 * a_max * (2 ** (w_bits - 1) - 1) > _INT16_MAX:
        raise ValueError(
            f"int8 recipe with {a_bits}-bit activations and {w_bits}-bit int8 weights saturates ONNX Runtime's "
            "int16 kernels on this CPU (x86 without VNNI). Fix: 7-bit weights or activations, or weights 'uint8'."
        )


def quantizable_inputs(model: Any) -> dict[str, str]:
    """node name -> activation input of every weight MatMul / fused Attention :func:`quantize_graph` rewrites."""
    inits = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if _is_weight_matmul(node, inits) or _is_fused_attention(node, inits):
            found[node.name or node.output[0]] = node.input[0]
    return found


def _is_weight_matmul(node: Any, inits: dict) -> bool:
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.name.startswith(HEAD_SCOPES):
        return False
    w = inits.get(node.input[1])
    return w is not None and len(w.dims) == 2 and w.data_type == 1  # FLOAT


def _is_fused_attention(node: Any, inits: dict) -> bool:
    if node.op_type != "Attention" or node.domain != _MS or node.input[1] not in inits:
        return False
    extra = [name for name in node.input[4:] if name]  # past state, attention bias: not in an encoder
    attrs = {a.name for a in node.attribute}
    return not extra and not ({"qkv_hidden_sizes", "unidirectional", "past_present_share_buffer"} & attrs)


# ------------------------------------------------------------------------------ calibration (SmoothQuant)
def calibration_texts() -> list[str]:
    """The demo corpus shipped in the package (six notes), whole and as their first paragraphs: real text,
    long and short, the same on every machine. Never evaluation data."""
    from m3_rag.demo import DEMO_CORPUS

    texts = []
    for path in sorted(DEMO_CORPUS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        texts.append(text)
        texts += paragraphs[:2]
    return texts


def calibration_batches(tokenizer: Any, max_length: int, batch_size: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """``calibration_texts()`` tokenised as the encoder does (special tokens, right padding), longest first."""
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in calibration_texts()]
    encoded.sort(key=len, reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start : start + batch_size]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        batches.append((ids, mask))
    return batches


def activation_maxima(
    model_path: Path, names: Sequence[str], batches: Sequence[tuple[np.ndarray, np.ndarray]], workdir: Path
) -> dict:
    """Per-channel ``max |x|`` over the real (unpadded) tokens of ``batches`` of each tensor in ``names``.

    The graph at ``model_path`` is run with those tensors as extra outputs: a copy of its graph is
    written into ``workdir`` (an empty folder of the caller's) beside a hard link to its weights
    (copied where links are not possible), so that the source folder (a published cache entry) is
    only read.
    """
    import shutil

    import onnx
    import onnxruntime

    probe = onnx.load(str(model_path), load_external_data=False)
    wanted = sorted(set(names))
    for name in wanted:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    workdir.mkdir(parents=True, exist_ok=True)
    for location in sorted(_external_locations(probe)):
        try:
            (workdir / location).hardlink_to(model_path.parent / location)
        except OSError:
            shutil.copyfile(model_path.parent / location, workdir / location)
    onnx.save_model(probe, str(workdir / model_path.name))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(
            str(workdir / model_path.name), sess_options=options, providers=["CPUExecutionProvider"]
        )
        return _run_maxima(session, wanted, batches)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _external_locations(model: Any) -> set[str]:
    """The external data files of ``model``'s initialisers: plain file names beside the graph, nothing else."""
    found = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                if Path(entry.value).name != entry.value or entry.value in ("", ".", ".."):
                    raise ValueError(f"external data location {entry.value!r}: expected a file name beside the graph")
                found.add(entry.value)
    return found


def _run_maxima(session: Any, wanted: list[str], batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    maxima: dict[str, np.ndarray] = {}
    for ids, mask in batches:
        outputs = session.run(wanted, {"input_ids": ids, "attention_mask": mask})
        valid = mask.reshape(-1).astype(bool)
        for name, out in zip(wanted, outputs, strict=True):
            rows = np.abs(np.asarray(out, dtype=np.float32).reshape(-1, out.shape[-1]))
            if rows.shape[0] == valid.shape[0]:
                rows = rows[valid]
            cur = rows.max(axis=0)
            maxima[name] = np.maximum(maxima[name], cur) if name in maxima else cur
    return maxima


# ------------------------------------------------------------------------------ the rewrite
class _Builder:
    """New nodes and initialisers, with unique names and shared scalar constants."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
        self.taken |= {i.name for i in graph.input}
        self.inits: list[Any] = []
        self.shared: dict[tuple, str] = {}

    def name(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def init(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, value: Any, dtype: Any) -> str:
        """A shared small constant (scalar or short vector)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.shared:
            self.shared[key] = self.init("int8/const", array)
        return self.shared[key]


def quantize_graph(model: Any, recipe: dict, maxima: dict | None = None) -> dict[str, int]:
    """Rewrite ``model`` (fp32 ModelProto, weights loaded) in place as ``recipe`` says; returns op counts.

    ``maxima`` (from :func:`activation_maxima`, keyed by activation tensor name) is needed when
    ``recipe["smooth_alpha"]`` is set.
    """
    from onnx import helper, numpy_helper

    check_recipe(recipe)
    alpha = recipe.get("smooth_alpha")
    if alpha is not None and maxima is None:
        raise ValueError("quantize_graph: smooth_alpha is set, so the activation maxima are needed")
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    b = _Builder(graph)
    nodes: list[Any] = []
    counts = {"MatMul": 0, "Attention": 0}
    for node in graph.node:
        prefix = f"int8/{node.name or node.output[0]}"
        settings = {**recipe, **recipe.get("overrides", {}).get(projection_kind(node), {})}
        if _is_weight_matmul(node, inits):
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            smooth = _smooth_factors(maxima, node.input[0], w, alpha)
            nodes += _quantized_matmul(b, prefix, node.input[0], w, node.output[0], settings, smooth)
            counts["MatMul"] += 1
        elif _is_fused_attention(node, inits):
            x, weight, bias, mask = (list(node.input) + ["", "", ""])[:4]
            w = numpy_helper.to_array(inits[weight]).astype(np.float32)
            smooth = _smooth_factors(maxima, x, w, alpha)
            qkv = b.name(f"{prefix}/qkv")
            nodes += _quantized_matmul(b, prefix, x, w, qkv, settings, smooth)
            q, k, v = b.name(f"{prefix}/q"), b.name(f"{prefix}/k"), b.name(f"{prefix}/v")
            nodes.append(helper.make_node("Split", [qkv], [q, k, v], axis=-1, name=b.name(f"{prefix}/Split")))
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            keep = {key: attrs[key] for key in ("num_heads", "mask_filter_value", "scale") if key in attrs}
            nodes.append(helper.make_node("MultiHeadAttention", [q, k, v, bias, mask], list(node.output[:1]),
                                          domain=_MS, name=b.name(f"{prefix}/MultiHeadAttention"), **keep))  # fmt: skip
            counts["Attention"] += 1
        else:
            nodes.append(node)
    used = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + b.inits)
    del graph.value_info[:]  # shapes and types of the rewritten tensors changed
    return counts


def _smooth_factors(maxima: dict | None, x: str, w: np.ndarray, alpha: float | None) -> np.ndarray | None:
    if alpha is None or maxima is None:
        return None
    if x not in maxima or maxima[x].shape != (w.shape[0],):
        raise ValueError(f"quantize_graph: no calibration maxima of {x!r} ({w.shape[0]} channels)")
    x_max = np.maximum(maxima[x].astype(np.float64), 1e-5)
    w_max = np.maximum(np.abs(w).max(axis=1).astype(np.float64), 1e-5)
    return np.clip(x_max**alpha / w_max ** (1.0 - alpha), *_SMOOTH_CLIP)


def _quantized_matmul(
    b: _Builder, p: str, x: str, w: np.ndarray, out: str, recipe: dict, smooth: np.ndarray | None
) -> list[Any]:
    """Nodes computing ``out = x @ w`` with per-token uint8 activations and per-channel int8 weights."""
    import onnx
    from onnx import helper

    mk = helper.make_node
    k, n = w.shape
    if smooth is not None:
        w = (w.astype(np.float64) * smooth[:, None]).astype(np.float32)
    w_levels = 2 ** (int(recipe["weight_bits"]) - 1) - 1
    w_scale = np.maximum(np.abs(w).max(axis=0) / w_levels, _EPS).astype(np.float32)
    w_q = np.clip(np.rint(w / w_scale), -w_levels, w_levels).astype(np.int8)
    mm_inputs_b: list[str]
    if recipe["weights"] == "uint8":  # zero point 128: ONNX Runtime's exact u8 x u8 kernel
        w_name = b.init(f"{p}/weight_u8", (w_q.astype(np.int16) + 128).astype(np.uint8))
        mm_inputs_b = [w_name]
        w_zp: list[str] = [b.init(f"{p}/weight_zero_point", np.full((n,), 128, dtype=np.uint8))]
    else:
        mm_inputs_b = [b.init(f"{p}/weight_s8", w_q)]
        w_zp = []
    w_scale_name = b.init(f"{p}/weight_scale", w_scale)
    t = {s: b.name(f"{p}/{s}") for s in ("x2d", "xs", "mx", "mn", "amax", "scale0", "scale", "scale1d", "zp", "zpf",
                                         "zp1df", "zp1d", "q", "y2d", "y0", "szp", "corr", "shape", "xshape", "nmn",
                                         "mx0", "mn0", "range", "negzp", "rows")}  # fmt: skip
    a_bits = int(recipe["activation_bits"])
    nodes = [mk("Reshape", [x, b.const([-1, k], np.int64)], [t["x2d"]])]
    xs = t["x2d"]
    if smooth is not None:
        nodes.append(mk("Mul", [xs, b.init(f"{p}/smooth_inverse", (1.0 / smooth).astype(np.float32))], [t["xs"]]))
        xs = t["xs"]
    nodes += [mk("ReduceMax", [xs], [t["mx"]], axes=[1], keepdims=1), mk("ReduceMin", [xs], [t["mn"]], axes=[1], keepdims=1)]
    eps = b.const(_EPS, np.float32)
    if recipe["activations"] == "sym":
        zero = 2 ** (a_bits - 1)  # stored values 1 .. 2^bits - 1
        nodes += [
            mk("Neg", [t["mn"]], [t["nmn"]]),
            mk("Max", [t["mx"], t["nmn"]], [t["amax"]]),
            mk("Mul", [t["amax"], b.const(1.0 / (zero - 1), np.float32)], [t["scale0"]]),
            mk("Max", [t["scale0"], eps], [t["scale"]]),  # [M, 1]
            mk("Reshape", [t["scale"], b.const([-1], np.int64)], [t["scale1d"]]),
            mk("Shape", [t["scale1d"]], [t["rows"]]),
            mk("ConstantOfShape", [t["rows"]], [t["zp1d"]],
               value=helper.make_tensor("zero", onnx.TensorProto.UINT8, [1], [zero])),  # fmt: skip
            mk("QuantizeLinear", [xs, t["scale1d"], t["zp1d"]], [t["q"]], axis=0),
            mk("MatMulIntegerToFloat", [t["q"], *mm_inputs_b, t["scale"], w_scale_name, b.const(zero, np.uint8), *w_zp],
               [t["y2d"]], domain=_MS),  # fmt: skip
        ]
    else:  # asymmetric: per-row zero point; MatMulIntegerToFloat takes a scalar one, so correct with colsum
        levels = 2**a_bits - 1
        colsum = (w_q.astype(np.int64).sum(axis=0) * w_scale.astype(np.float64)).astype(np.float32).reshape(1, n)
        nodes += [
            mk("Max", [t["mx"], b.const(0.0, np.float32)], [t["mx0"]]),  # the range holds 0: zero point in [0, levels]
            mk("Min", [t["mn"], b.const(0.0, np.float32)], [t["mn0"]]),
            mk("Sub", [t["mx0"], t["mn0"]], [t["range"]]),
            mk("Mul", [t["range"], b.const(1.0 / levels, np.float32)], [t["scale0"]]),
            mk("Max", [t["scale0"], eps], [t["scale"]]),  # [M, 1]
            mk("Div", [t["mn0"], t["scale"]], [t["negzp"]]),
            mk("Neg", [t["negzp"]], [t["zpf"]]),
            mk("Round", [t["zpf"]], [t["zp"]]),  # [M, 1], in [0, levels]
            mk("Reshape", [t["zp"], b.const([-1], np.int64)], [t["zp1df"]]),
            mk("Cast", [t["zp1df"]], [t["zp1d"]], to=onnx.TensorProto.UINT8),
            mk("Reshape", [t["scale"], b.const([-1], np.int64)], [t["scale1d"]]),
            mk("QuantizeLinear", [xs, t["scale1d"], t["zp1d"]], [t["q"]], axis=0),
            mk("MatMulIntegerToFloat", [t["q"], *mm_inputs_b, t["scale"], w_scale_name, b.const(0, np.uint8), *w_zp],
               [t["y0"]], domain=_MS),  # fmt: skip
            mk("Mul", [t["scale"], t["zp"]], [t["szp"]]),
            mk("Mul", [t["szp"], b.init(f"{p}/weight_colsum", colsum)], [t["corr"]]),
            mk("Sub", [t["y0"], t["corr"]], [t["y2d"]]),
        ]
    nodes += [
        mk("Shape", [x], [t["xshape"]], end=-1),
        mk("Concat", [t["xshape"], b.const([n], np.int64)], [t["shape"]], axis=0),
        mk("Reshape", [t["y2d"], t["shape"]], [out]),
    ]
    return nodes
