"""The ONNX Runtime backend: fp32 equals the torch backend and FlagEmbedding, int8 stays close to fp32."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import test_encoder_parity as parity  # noqa: E402

TOL = parity.TOL
parity_texts, reference = parity.parity_texts, parity.reference  # the parity tests' fixtures, shared

INT8_MIN_DENSE_COSINE = 0.98  # loose, on random tiny weights (measured ~0.999); real fidelity: m3-mini, BGE-M3 shape


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_fp32(tiny_checkpoint, onnx_cache):
    from m3_rag import M3Encoder

    return M3Encoder.from_pretrained(tiny_checkpoint, backend="onnx", onnx_cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def onnx_int8(tiny_checkpoint, onnx_cache):
    from m3_rag import M3Encoder

    return M3Encoder.from_pretrained(tiny_checkpoint, backend="onnx", precision="int8", onnx_cache_dir=onnx_cache)


def _max_diff(a, b) -> float:
    """Largest absolute difference between two M3Outputs, all three outputs; the sparse token sets must agree."""
    worst = float(np.abs(a.dense - b.dense).max())
    for i, (x, y) in enumerate(zip(a.sparse, b.sparse, strict=True)):
        assert np.array_equal(x.indices, y.indices), f"text {i}: sparse token ids differ"
        worst = max(worst, float(np.abs(x.values - y.values).max(initial=0.0)))
    for i, (x, y) in enumerate(zip(a.colbert, b.colbert, strict=True)):
        assert x.shape == y.shape, f"text {i}: colbert {x.shape} vs {y.shape}"
        worst = max(worst, float(np.abs(x - y).max(initial=0.0)))
    return worst


def test_config_and_sizes(onnx_fp32, tiny_encoder):
    c = onnx_fp32.config
    assert (c.backend, c.precision, c.device, c.dtype) == ("onnx", "fp32", "cpu", "float32")
    assert (onnx_fp32.dense_dim, onnx_fp32.colbert_dim, onnx_fp32.vocab_size) == (
        tiny_encoder.dense_dim, tiny_encoder.colbert_dim, tiny_encoder.vocab_size)  # fmt: skip
    assert onnx_fp32.model_max_length == tiny_encoder.model_max_length
    assert "backend='onnx'" in repr(onnx_fp32)


def test_batch_budget_default_is_the_onnx_one_and_an_explicit_one_is_kept(onnx_fp32, tiny_checkpoint, onnx_cache):
    from m3_rag import M3Encoder
    from m3_rag.encoder import DEFAULT_BUDGET
    from m3_rag.onnx.runtime import BATCH_TOKENS

    assert onnx_fp32.config.batch_tokens == BATCH_TOKENS < DEFAULT_BUDGET["cpu"]
    chosen = M3Encoder.from_pretrained(tiny_checkpoint, backend="onnx", onnx_cache_dir=onnx_cache, batch_tokens=512)
    assert chosen.config.batch_tokens == 512


@pytest.mark.parametrize("max_length", [8192, 64])
@pytest.mark.parametrize("mcls", [False, True])
def test_fp32_equals_torch(onnx_fp32, tiny_encoder, parity_texts, max_length, mcls):
    ours = onnx_fp32.encode(parity_texts, max_length=max_length, mcls=mcls)
    torch_out = tiny_encoder.encode(parity_texts, max_length=max_length, mcls=mcls)
    assert _max_diff(ours, torch_out) <= TOL
    assert np.array_equal(ours.token_counts, torch_out.token_counts)
    assert np.array_equal(ours.truncated, torch_out.truncated)


def test_fp32_matches_flagembedding(onnx_fp32, reference, parity_texts):
    # 512 keeps FlagEmbedding's own run short; 8192 is covered by equality with the torch backend above,
    # which the parity tests hold to FlagEmbedding at every length.
    ours = onnx_fp32.encode(parity_texts, max_length=512)
    parity._assert_same(parity._ref_encode(reference, parity_texts, 512), ours, len(parity_texts))


def test_fp32_one_output_and_one_pass_per_batch(onnx_fp32, tiny_encoder, parity_texts):
    lengths = [len(onnx_fp32.tokenizer(t)["input_ids"]) for t in parity_texts]
    texts = [t for t, n in zip(parity_texts, lengths, strict=True) if n <= 64][:6]
    assert len(texts) == 6 and 6 * 64 <= onnx_fp32.config.batch_tokens
    before = onnx_fp32.stats.forward_passes
    dense = onnx_fp32.encode_documents(texts, outputs=["dense"])
    assert onnx_fp32.stats.forward_passes == before + 1  # six short texts, one batch: one run of the graph
    assert dense.sparse is None and dense.colbert is None
    assert np.abs(dense.dense - tiny_encoder.encode_documents(texts, outputs=["dense"]).dense).max() <= TOL
    sparse = onnx_fp32.encode_queries(texts, outputs=["sparse"])
    assert sparse.dense is None and len(sparse.sparse) == len(texts)


def test_fp32_compute_score_equals_torch(onnx_fp32, tiny_encoder, parity_texts):
    pairs = list(zip(parity_texts[:5], parity_texts[30:35], strict=True))
    ours, theirs = onnx_fp32.compute_score(pairs), tiny_encoder.compute_score(pairs)
    for key in ("dense", "sparse", "colbert", "sparse_dense", "colbert_sparse_dense"):
        assert np.abs(getattr(ours, key) - getattr(theirs, key)).max() <= TOL, key


def test_int8_runs_and_stays_close_to_fp32(onnx_int8, onnx_fp32, parity_texts):
    assert onnx_int8.config.precision == "int8"
    texts = parity_texts[:12] + parity_texts[-4:]  # queries and paragraphs in three languages, "", unicode
    q, f = onnx_int8.encode_documents(texts), onnx_fp32.encode_documents(texts)
    assert q.dense.shape == f.dense.shape and q.dense.dtype == np.float32
    assert np.allclose(np.linalg.norm(q.dense, axis=1), 1.0, atol=1e-5)
    cosine = (q.dense * f.dense).sum(axis=1)
    assert cosine.min() >= INT8_MIN_DENSE_COSINE, cosine
    for x, y in zip(q.colbert, f.colbert, strict=True):
        assert x.shape == y.shape and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    for x in q.sparse:
        assert (x.values > 0).all() and len(np.unique(x.indices)) == len(x.indices)
    assert np.array_equal(q.token_counts, f.token_counts)


def test_int8_graph_is_quantised(onnx_int8, tiny_encoder):
    import onnx

    from m3_rag.onnx.export import MODEL_FILE

    nodes = onnx.load(str(onnx_int8.backbone.folder / MODEL_FILE), load_external_data=False).graph.node
    ops = [n.op_type for n in nodes]
    layers = tiny_encoder.model.config.num_hidden_layers
    # Per layer: the QKV, attention output and two FFN projections, per-token activations (QuantizeLinear per row).
    assert ops.count("MatMulIntegerToFloat") == 4 * layers
    assert ops.count("QuantizeLinear") == 4 * layers and "DynamicQuantizeLinear" not in ops
    assert ops.count("MultiHeadAttention") == layers and "Attention" not in ops
    # The heads stay float32.
    head_ops = sorted(n.op_type for n in nodes if n.name.startswith(("/colbert/", "/sparse/")) and "MatMul" in n.op_type)
    assert head_ops == ["MatMul", "MatMul"]


INT8_BATCH_TOL = 1e-5  # per-token scales: a text's int8 output does not depend on its batch (float summation order only)


def test_int8_is_batch_independent(onnx_int8, parity_texts):
    texts = parity_texts[:12] + parity_texts[-4:]
    batch = onnx_int8.encode_documents(texts)
    for i in (0, 5, 13):  # a short query, a paragraph, a long text: alone vs with the others (padded)
        alone = onnx_int8.encode_documents([texts[i]])
        assert np.abs(alone.dense[0] - batch.dense[i]).max() <= INT8_BATCH_TOL
        assert np.abs(alone.colbert[0] - batch.colbert[i]).max(initial=0.0) <= INT8_BATCH_TOL
        assert np.array_equal(alone.sparse[0].indices, batch.sparse[i].indices)
