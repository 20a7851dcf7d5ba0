"""The fast ONNX path: transformer fusion (counted, never silently skipped), session settings, the int8
recipe's checks and the cache keys of both."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import test_encoder_parity as parity  # noqa: E402

from m3_rag.onnx import export, optimize, quantize  # noqa: E402

parity_texts = parity.parity_texts  # the parity tests' texts (three languages, "", unicode), shared


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-optimize-cache")


@pytest.fixture(scope="module")
def fused(tiny_checkpoint, onnx_cache):
    from m3_rag.onnx.runtime import load_onnx_encoder

    return load_onnx_encoder(tiny_checkpoint, onnx_cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def unfused(tiny_checkpoint, onnx_cache):
    from m3_rag.onnx.runtime import load_onnx_encoder

    return load_onnx_encoder(tiny_checkpoint, onnx_cache_dir=onnx_cache, fuse=False)


def _ops(encoder) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(encoder.backbone.folder / export.MODEL_FILE), load_external_data=False).graph.node]


def test_fp32_graph_is_fused(fused, tiny_encoder):
    layers = tiny_encoder.model.config.num_hidden_layers
    ops = _ops(fused)
    assert ops.count("Attention") == layers
    assert ops.count("SkipLayerNormalization") == 2 * layers
    assert ops.count("BiasGelu") == layers
    assert "Softmax" not in ops and "Erf" not in ops  # the unfused attention and GELU are gone
    metadata = optimize.read_fusion_metadata(fused.backbone.session)
    assert metadata is not None and metadata["fused"] is True
    assert metadata["counts"] == metadata["expected"] == {"Attention": layers, "SkipLayerNormalization": 2 * layers,
                                                          "Gelu": layers}  # fmt: skip


def test_fused_equals_unfused_and_torch(fused, unfused, tiny_encoder, parity_texts):
    assert "Attention" not in _ops(unfused) and "Softmax" in _ops(unfused)
    a, b, t = (e.encode_documents(parity_texts) for e in (fused, unfused, tiny_encoder))
    for x, y in ((a, b), (a, t)):
        assert np.abs(x.dense - y.dense).max() <= 1e-5
        for u, v in zip(x.colbert, y.colbert, strict=True):
            assert np.abs(u - v).max(initial=0.0) <= 1e-5
        for u, v in zip(x.sparse, y.sparse, strict=True):
            assert np.array_equal(u.indices, v.indices) and np.abs(u.values - v.values).max(initial=0.0) <= 1e-5


def test_failed_fusion_warns_at_export_and_at_every_load(unfused, tmp_path):
    from m3_rag.onnx.runtime import make_session

    settings = optimize.fusion_settings(unfused.backbone.config)
    settings["layers"] += 1  # the counts cannot match: as if the optimizer had missed a layer
    with pytest.warns(optimize.OnnxFusionWarning, match=r"did not fuse.*Attention 2 \(expected 3\)"):
        graph, metadata = optimize.fuse(unfused.backbone.folder / export.MODEL_FILE, settings)
    assert metadata["fused"] is False
    assert "Attention" not in [n.op_type for n in graph.graph.node]  # the unfused graph is kept, not a half-fused one
    export._save(graph, tmp_path)
    with pytest.warns(optimize.OnnxFusionWarning, match="is not fused"):
        session = make_session(tmp_path / export.MODEL_FILE)
    ids = np.array([[0, 5, 6, 2]], dtype=np.int64)
    out = session.run(["dense"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert np.allclose(out, unfused.backbone.session.run(["dense"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0])


def test_a_fused_graph_loads_without_warning(fused):
    from m3_rag.onnx.runtime import make_session

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_session(fused.backbone.folder / export.MODEL_FILE)


def test_session_threads_and_no_spinning(fused, monkeypatch):
    from m3_rag.onnx.runtime import THREADS_ENV, make_session, physical_cores

    options = fused.backbone.session.get_session_options()
    assert options.intra_op_num_threads == physical_cores() >= 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setenv(THREADS_ENV, "1")
    assert physical_cores() == 1
    assert make_session(fused.backbone.folder / export.MODEL_FILE).get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        physical_cores()


# ------------------------------------------------------------------ cache keys
def _key(tiny_checkpoint, tmp_path, precision="fp32", **kwargs) -> str:
    from m3_rag.loading import resolve_model
    from m3_rag.onnx import cache

    files = resolve_model(tiny_checkpoint)
    config = kwargs.pop("config", None)
    if config is None:
        from m3_rag.loading import load_tokenizer_and_config

        config = load_tokenizer_and_config(files.backbone_dir)[1]
    options = export.export_options(precision, files.pooling, config, **kwargs)
    return cache.cache_entry(tmp_path, cache.model_sources(files), options, prefix=precision).key


def test_cache_key_follows_fusion_and_quantisation_settings(tiny_checkpoint, tmp_path):
    import copy

    from m3_rag.loading import load_tokenizer_and_config, resolve_model

    config = load_tokenizer_and_config(resolve_model(tiny_checkpoint).backbone_dir)[1]
    base = _key(tiny_checkpoint, tmp_path, config=config)
    assert _key(tiny_checkpoint, tmp_path, config=config) == base
    assert _key(tiny_checkpoint, tmp_path, config=config, fuse=False) != base
    other = copy.deepcopy(config)
    other.num_attention_heads = 2  # the optimizer's num_heads: another fused graph
    assert _key(tiny_checkpoint, tmp_path, config=other) != base
    int8 = _key(tiny_checkpoint, tmp_path, "int8", config=config)
    recipe = quantize.default_recipe()
    assert _key(tiny_checkpoint, tmp_path, "int8", config=config, recipe=recipe) == int8  # the default, spelled out
    keys = {int8}
    for change in ({"smooth_alpha": None}, {"smooth_alpha": 0.75}, {"activations": "asym", "activation_bits": 7,
                   "weight_bits": 8}, {"weights": "int8", "weight_bits": 7}):  # fmt: skip
        keys.add(_key(tiny_checkpoint, tmp_path, "int8", config=config, recipe={**recipe, **change}))
    assert len(keys) == 5
    with pytest.raises(ValueError, match="precision 'int8'"):
        _key(tiny_checkpoint, tmp_path, "fp32", config=config, recipe=recipe)


def test_int8_export_starts_from_the_cached_fp32_graph(tiny_checkpoint, tmp_path, monkeypatch):
    from m3_rag.onnx.runtime import load_onnx_encoder

    traced = []
    real = export._trace
    monkeypatch.setattr(export, "_trace", lambda *a, **k: (traced.append(1), real(*a, **k))[1])
    load_onnx_encoder(tiny_checkpoint, onnx_cache_dir=tmp_path)
    int8 = load_onnx_encoder(tiny_checkpoint, precision="int8", onnx_cache_dir=tmp_path)
    assert len(traced) == 1  # the int8 export quantised the cached fused graph
    alone = load_onnx_encoder(tiny_checkpoint, precision="int8", onnx_cache_dir=tmp_path / "fresh")
    assert len(traced) == 2  # no fp32 graph cached there: traced from the weights
    texts = ["a short query", "a somewhat longer text about retrieval with three kinds of vectors"]
    assert np.abs(int8.encode(texts).dense - alone.encode(texts).dense).max() <= 1e-6  # same graph either way


# ------------------------------------------------------------------ the int8 recipe
def test_recipe_checks(monkeypatch):
    recipe = quantize.default_recipe()
    quantize.check_recipe(recipe)
    for bad in ({"activations": "per-tensor"}, {"activation_bits": 6}, {"weights": "uint8", "weight_bits": 7},
                {"smooth_alpha": 2.0}, {"method": "static"}):  # fmt: skip
        with pytest.raises(ValueError, match="int8 recipe"):
            quantize.check_recipe({**recipe, **bad})
    monkeypatch.setattr(quantize, "cpu_has_int8_dot", lambda: False)  # AVX2: u8 x s8 pairs add in int16
    no_vnni = quantize.default_recipe()
    assert (no_vnni["weights"], no_vnni["weight_bits"], no_vnni["activation_bits"]) == ("uint8", 8, 8)
    quantize.check_recipe(no_vnni)
    with pytest.raises(ValueError, match="saturates"):
        quantize.check_recipe({**recipe, "activation_bits": 8, "weight_bits": 8, "weights": "int8"})
    quantize.check_recipe({**recipe, "activations": "asym", "activation_bits": 7, "weight_bits": 8})
    quantize.check_recipe({**recipe, "weights": "uint8", "weight_bits": 8})  # the exact u8 x u8 kernel
    monkeypatch.setattr(quantize, "cpu_has_int8_dot", lambda: True)
    vnni = quantize.default_recipe()
    assert (vnni["weights"], vnni["weight_bits"], vnni["activation_bits"]) == ("int8", 8, 8)
    quantize.check_recipe({**recipe, "activation_bits": 8, "weight_bits": 8})


def test_calibration_is_deterministic_and_not_evaluation_data(tiny_encoder):
    texts = quantize.calibration_texts()
    assert texts == quantize.calibration_texts() and len(texts) >= 6
    a = quantize.calibration_batches(tiny_encoder.tokenizer, 512)
    b = quantize.calibration_batches(tiny_encoder.tokenizer, 512)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert all(ids.shape == mask.shape and mask[:, 0].all() for ids, mask in a)


def test_projection_kinds_and_overrides(fused, tiny_encoder):
    import onnx

    model = onnx.load(str(fused.backbone.folder / export.MODEL_FILE), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    kinds = [quantize.projection_kind(n) for n in model.graph.node
             if (n.op_type == "MatMul" and n.input[1] in inits and not n.name.startswith(quantize.HEAD_SCOPES))
             or n.op_type == "Attention"]  # fmt: skip
    layers = tiny_encoder.model.config.num_hidden_layers
    assert sorted(kinds) == sorted(["qkv", "attention_output", "ffn_in", "ffn_out"] * layers)
    recipe = quantize.default_recipe()
    quantize.check_recipe({**recipe, "overrides": {"ffn_out": {"activations": "asym", "weights": "uint8", "weight_bits": 8}}})
    for bad in ({"attention": {}}, {"ffn_in": {"smooth_alpha": 0.1}}, {"ffn_in": {"activation_bits": 4}}):
        with pytest.raises(ValueError, match="int8 recipe"):
            quantize.check_recipe({**recipe, "overrides": bad})
