"""Encoder behaviour beyond parity: inputs, errors, loading, MCLS, threads, the cache."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_rag import M3Encoder, M3Output, ModelNotFoundError
from m3_rag.cache import CachedEncoder

TEXTS = ["the cell divides", "mitochondria make energy", "", "Qdrant stores vectors on disk"]


def test_sizes_come_from_the_config(tiny_encoder):
    assert tiny_encoder.dense_dim == 32
    assert tiny_encoder.colbert_dim == 32
    assert tiny_encoder.vocab_size == 8000
    assert tiny_encoder.outputs == ("dense", "sparse", "colbert")


def test_outputs_are_typed_and_normalised(tiny_encoder):
    out = tiny_encoder.encode_documents(TEXTS)
    assert isinstance(out, M3Output) and len(out) == len(TEXTS)
    assert out.dense.dtype == np.float32 and out.dense.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, atol=1e-5)
    for text, sv, cb in zip(TEXTS, out.sparse, out.colbert):
        assert sv.indices.dtype == np.int64 and np.all(np.diff(sv.indices) > 0)
        assert np.all(sv.values > 0)
        assert cb.shape == (out.token_counts[TEXTS.index(text)] - 1, 32)
        np.testing.assert_allclose(np.linalg.norm(cb, axis=1), 1.0, atol=1e-5)
    # different inputs give clearly different outputs (the tiny model is not degenerate)
    sims = out.dense @ out.dense.T
    assert sims[np.triu_indices(4, 1)].max() < 0.98


def test_only_requested_outputs_are_computed(tiny_encoder):
    out = tiny_encoder.encode_queries(TEXTS, outputs=["sparse"])
    assert out.dense is None and out.colbert is None and len(out.sparse) == 4
    full = tiny_encoder.encode_queries(TEXTS)
    assert [s.to_dict() for s in out.sparse] == [s.to_dict() for s in full.sparse]


def test_one_forward_pass_for_all_three_outputs(tiny_checkpoint):
    enc = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    enc.encode_documents(TEXTS)
    assert enc.stats.forward_passes == 1 and enc.stats.texts_encoded == 4


def test_empty_list_gives_empty_output(tiny_encoder):
    out = tiny_encoder.encode_documents([])
    assert len(out) == 0 and out.dense.shape == (0, 32) and out.sparse == [] and out.colbert == []


@pytest.mark.parametrize("bad, index", [(["ok", None], 1), ([3], 0), (["a", "b", b"bytes"], 2)])
def test_non_strings_raise_type_error_naming_the_index(tiny_encoder, bad, index):
    with pytest.raises(TypeError, match=rf"texts\[{index}\]"):
        tiny_encoder.encode_documents(bad)


def test_a_bare_string_is_rejected(tiny_encoder):
    with pytest.raises(TypeError, match="single string"):
        tiny_encoder.encode_queries("not a list")


@pytest.mark.parametrize("outputs", [["lexical"], [], ["dense", "multi"]])
def test_unknown_or_no_output_raises(tiny_encoder, outputs):
    with pytest.raises(ValueError, match="expected"):
        tiny_encoder.encode_queries(["x"], outputs=outputs)


@pytest.mark.parametrize("length", [-1, 0, 1, 2.5])
def test_bad_max_length_raises(tiny_encoder, length):
    with pytest.raises(ValueError, match="max_length"):
        tiny_encoder.encode_queries(["x"], max_length=length)


def test_truncation_is_counted(tiny_checkpoint):
    enc = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu", query_max_length=8)
    out = enc.encode_queries(["one two three four five six seven eight nine ten", "short"])
    assert out.truncated.tolist() == [True, False] and out.token_counts[0] == 8
    assert enc.stats.texts_truncated == 1


def test_mcls_pools_the_inserted_cls_states(tiny_encoder):
    long_text = " ".join(["protein folding and cell signalling"] * 120)
    plain = tiny_encoder.encode_documents([long_text])
    multi = tiny_encoder.encode_documents([long_text], mcls=True)
    n_cls = (multi.token_counts[0] - 1) // 256 + 1
    assert n_cls >= 2
    assert multi.token_counts[0] == plain.token_counts[0] + n_cls - 1
    # the inserted CLS states are pooled into dense, never emitted as ColBERT tokens
    assert multi.colbert[0].shape[0] == plain.colbert[0].shape[0]
    assert not np.allclose(multi.dense, plain.dense)
    short = tiny_encoder.encode_documents(["short text"], mcls=True)
    np.testing.assert_allclose(short.dense, tiny_encoder.encode_documents(["short text"]).dense, atol=1e-6)


def test_thread_safe_shared_encoder(tiny_encoder):
    texts = [f"document number {i} about topic {i % 7}" for i in range(40)]
    expected = tiny_encoder.encode_documents(texts).dense
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: tiny_encoder.encode_documents([t]).dense[0], texts))
    np.testing.assert_allclose(np.stack(results), expected, atol=1e-5)


# ------------------------------------------------------------------------------------- loading
class ArbitraryObject:
    """Stands for any pickled object a malicious head file could carry."""


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".complete"))
    return dst


def test_missing_head_file_is_an_error_naming_it(tiny_checkpoint, tmp_path):
    model = _copy(tiny_checkpoint, tmp_path / "m")
    (model / "sparse_linear.pt").unlink()
    with pytest.raises(FileNotFoundError, match="sparse_linear.pt"):
        M3Encoder.from_pretrained(model, device="cpu")


def test_head_with_wrong_shape_is_an_error(tiny_checkpoint, tmp_path):
    model = _copy(tiny_checkpoint, tmp_path / "m")
    torch.save({"weight": torch.zeros(32, 16), "bias": torch.zeros(32)}, model / "colbert_linear.pt")
    with pytest.raises(ValueError, match=r"weight \[32, 16\].*hidden size 32"):
        M3Encoder.from_pretrained(model, device="cpu")


def test_head_that_is_not_a_state_dict_is_an_error(tiny_checkpoint, tmp_path):
    model = _copy(tiny_checkpoint, tmp_path / "m")
    torch.save({"w": torch.zeros(1, 32)}, model / "sparse_linear.pt")
    with pytest.raises(ValueError, match="'weight' and 'bias'"):
        M3Encoder.from_pretrained(model, device="cpu")


def test_pickled_head_is_refused(tiny_checkpoint, tmp_path):
    model = _copy(tiny_checkpoint, tmp_path / "m")
    torch.save({"weight": ArbitraryObject(), "bias": torch.zeros(1)}, model / "sparse_linear.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        M3Encoder.from_pretrained(model, device="cpu")


def test_unreachable_hub_model_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="local-dir"):
        M3Encoder.from_pretrained("BAAI/bge-m3-not-cached-here")


def test_missing_local_path_is_an_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        M3Encoder.from_pretrained(tmp_path / "nope")


def test_unknown_dtype_raises(tiny_checkpoint):
    with pytest.raises(ValueError, match="dtype"):
        M3Encoder.from_pretrained(tiny_checkpoint, device="cpu", dtype="int8")


# --------------------------------------------------------------------------------------- cache
def test_cached_encoder_runs_the_model_once_per_text(tiny_checkpoint):
    enc = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    cached = CachedEncoder(enc)
    dense = cached.encode_documents(TEXTS, outputs=["dense"])
    rest = cached.encode_documents(TEXTS, outputs=["sparse", "colbert"])
    assert enc.stats.texts_encoded == len(TEXTS) and enc.stats.forward_passes == 1
    direct = enc.encode_documents(TEXTS)
    np.testing.assert_array_equal(dense.dense, direct.dense)
    assert [s.to_dict() for s in rest.sparse] == [s.to_dict() for s in direct.sparse]
    # queries are cached apart from documents (different max length)
    cached.encode_queries(TEXTS[:1])
    assert enc.stats.texts_encoded == len(TEXTS) * 2 + 1


def test_cached_encoder_evicts_least_recently_used(tiny_encoder):
    cached = CachedEncoder(tiny_encoder, max_items=2)
    cached.encode_documents(TEXTS)
    assert len(cached) == 2
    assert cached.dense_dim == tiny_encoder.dense_dim
