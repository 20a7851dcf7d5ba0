"""The ONNX Runtime backend: ``M3Encoder.from_pretrained(..., backend="onnx", precision="fp32" | "int8")``.

The backbone and BGE-M3's three heads are exported as one ONNX graph (:mod:`.export`): inputs
``input_ids`` and ``attention_mask`` [B, L] int64; outputs ``dense`` [B, H] (normalised, the
model's pooling), ``sparse`` [B, L] (ReLU of the sparse head per token), ``colbert`` [B, L-1, D]
(the ColBERT head over the tokens after CLS, not normalised) and ``last_hidden_state`` [B, L, H]
(read only for multi-CLS pooling). One session run gives every output. Tokenisation and the
post-processing that cannot live in a graph of fixed shapes (max weight per token id, special
tokens dropped, ColBERT rows masked and normalised) are the torch backend's own code
(:mod:`m3_rag.heads`, :class:`m3_rag.encoder.M3Encoder`), so fp32 matches it within float error.

fp32 is the exported graph fused by ONNX Runtime's transformer optimizer (:mod:`.optimize`: the
model is traced with eager attention, then each layer becomes one ``Attention``, two
``SkipLayerNormalization`` and one ``BiasGelu``; the fused op counts are checked, and a graph the
optimizer could not fuse is kept unfused, exact but slower, with an ``OnnxFusionWarning`` at
export and at every load). Sessions use one intra-op thread per physical core
(``$M3_RAG_ONNX_THREADS`` overrides) and no spinning.

``int8`` (:mod:`.quantize`) quantises every weight MatMul of the backbone (the QKV projection
included) to 8-bit per-output-channel weights and 8-bit per-token dynamic activations, so a
text's output does not depend on the texts batched with it; SmoothQuant factors come from the
package's demo corpus. On x86 CPUs without VNNI the weights are stored as uint8 (ONNX Runtime's
u8 x s8 kernels there add pairs of products in int16, which would saturate; its u8 x u8 kernel
is exact). The embeddings, attention scores, LayerNorms, GELU and the heads stay float32.

The export runs once per model and options and is cached (:mod:`.cache`): in ``onnx_cache_dir``,
else ``$M3_RAG_ONNX_CACHE``, else ``~/.cache/m3-rag/onnx`` (``$XDG_CACHE_HOME`` respected), one
folder per key, a hash of the model's files (config, weights, heads, m3_config.json) and of the
export options (precision, opset, library versions, the optimizer's settings, the int8 recipe);
an int8 export starts from the cached fp32 graph of the same model when there is one. A folder is
written aside and renamed into place with a manifest of its files' hashes; a stale model gets a new key, and a partial or
corrupt folder is detected, reported as a warning and exported again.

Needs the extra ``m3-rag[onnx]`` (onnxruntime, onnx); without it, loading raises ImportError
naming it. Importing this package does not import them.
"""

from __future__ import annotations

__all__ = ["require_extra"]


def require_extra() -> None:
    """Import onnxruntime and onnx, or raise ImportError naming the extra that installs them."""
    from m3_rag.backends import ONNX_EXTRA

    missing = []
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    if missing:
        raise ImportError(
            f"backend='onnx' needs onnxruntime and onnx; not importable: {'; '.join(missing)}. "
            f'Fix: pip install "{ONNX_EXTRA}", or use backend="torch".'
        )
