"""Numerical parity with the reference implementation, FlagEmbedding 1.4.2 ``BGEM3FlagModel``."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import XQUAD_LANGS, read_jsonl

TOL = 1e-5


@pytest.fixture(scope="module")
def parity_texts(data_dir) -> list[str]:
    texts: list[str] = []
    for lang in XQUAD_LANGS:  # every language, queries and a paragraph each
        queries = read_jsonl(data_dir / "xquad" / lang / "queries.jsonl")
        texts += [q["text"] for q in queries[:3]]
        texts.append(read_jsonl(data_dir / "xquad" / lang / "corpus.jsonl")[0]["text"])
    docs = read_jsonl(data_dir / "scifact" / "corpus.jsonl")
    texts += [d["title"] + " " + d["text"] for d in docs[:8]]
    long_doc = " ".join(d["text"] for d in docs[10:20])  # well over 512 tokens
    texts += [long_doc, "", "a", "  ", "Ünïcödé — ✓ 🚀"]
    return texts


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(tiny_checkpoint), use_fp16=False, devices="cpu")


def _ref_encode(reference, texts, max_length):
    return reference.encode(
        texts, batch_size=16, max_length=max_length, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )


def _assert_same(ref: dict, ours, n: int) -> None:
    assert ours.dense.shape == ref["dense_vecs"].shape
    assert np.abs(ours.dense - ref["dense_vecs"]).max() <= TOL
    assert len(ours.sparse) == len(ref["lexical_weights"]) == n
    for i, (theirs, mine) in enumerate(zip(ref["lexical_weights"], ours.sparse)):
        theirs = {int(k): float(v) for k, v in theirs.items()}
        assert set(mine.to_dict()) == set(theirs), f"text {i}: token id sets differ"
        for token, weight in mine.to_dict().items():
            assert abs(weight - theirs[token]) <= TOL, f"text {i} token {token}"
    for i, (theirs, mine) in enumerate(zip(ref["colbert_vecs"], ours.colbert)):
        assert mine.shape == theirs.shape, f"text {i}: colbert shape {mine.shape} vs {theirs.shape}"
        assert np.abs(mine - theirs).max(initial=0.0) <= TOL, f"text {i}"


def test_parity_corpus_is_big_enough(parity_texts, tiny_encoder):
    assert len(parity_texts) >= 50
    counts = tiny_encoder.encode_documents(parity_texts, outputs=["dense"]).token_counts
    assert counts.max() > 512


@pytest.mark.parametrize("max_length", [8192, 512, 64])
def test_encode_matches_flagembedding(tiny_encoder, reference, parity_texts, max_length):
    ours = tiny_encoder.encode(parity_texts, max_length=max_length)
    _assert_same(_ref_encode(reference, parity_texts, max_length), ours, len(parity_texts))
    if max_length < 8192:
        assert ours.num_truncated >= 1  # truncation is reported, never silent
        assert ours.token_counts.max() == max_length


def test_queries_and_documents_use_their_own_max_length(tiny_encoder, reference, parity_texts):
    long_doc = max(parity_texts, key=len)
    q = tiny_encoder.encode_queries([long_doc])
    d = tiny_encoder.encode_documents([long_doc])
    assert q.token_counts[0] == 512 and q.truncated[0]
    assert d.token_counts[0] > 512 and not d.truncated[0]
    _assert_same(_ref_encode(reference, [long_doc], 512), q, 1)


def test_empty_string_matches_flagembedding(tiny_encoder, reference):
    ours = tiny_encoder.encode_documents([""])
    ref = _ref_encode(reference, [""], 8192)
    _assert_same(ref, ours, 1)
    assert len(ours.sparse[0]) == 0  # only special tokens: nothing lexical
    assert ours.colbert[0].shape == (1, tiny_encoder.colbert_dim)  # the </s> token's vector


def test_compute_score_matches_flagembedding(tiny_encoder, reference, parity_texts):
    rng = random.Random(0)
    pairs = [(rng.choice(parity_texts[:36]), rng.choice(parity_texts)) for _ in range(20)]
    for weights in ([1.0, 1.0, 1.0], [0.4, 0.2, 0.4]):
        # batch_size=1: FlagEmbedding's compute_score lets padded passage rows (all-zero ColBERT
        # vectors) win the max when every real dot is negative, so its batched scores depend on
        # which texts share a batch. One pair per batch has no padding: the true score.
        ref = reference.compute_score(
            pairs, batch_size=1, max_query_length=512, max_passage_length=8192, weights_for_different_modes=weights
        )
        ours = tiny_encoder.compute_score(pairs, weights=weights)
        for key, mine in (("dense", ours.dense), ("sparse", ours.sparse), ("colbert", ours.colbert),
                          ("sparse+dense", ours.sparse_dense), ("colbert+sparse+dense", ours.colbert_sparse_dense)):  # fmt: skip
            assert np.abs(np.asarray(ref[key]) - mine).max() <= TOL, key


def test_results_do_not_depend_on_batching_or_order(tiny_checkpoint, tiny_encoder, parity_texts):
    from m3_rag import M3Encoder

    small_batches = M3Encoder.from_pretrained(tiny_checkpoint, device="cpu", batch_tokens=600)
    order = list(range(len(parity_texts)))
    random.Random(1).shuffle(order)
    before = tiny_encoder.stats.forward_passes
    base = tiny_encoder.encode_documents(parity_texts)
    base_passes = tiny_encoder.stats.forward_passes - before
    other = small_batches.encode_documents([parity_texts[i] for i in order])
    assert small_batches.stats.forward_passes > 2 * base_passes  # really batched differently
    for pos, i in enumerate(order):
        assert np.abs(other.dense[pos] - base.dense[i]).max() <= TOL
        assert other.sparse[pos].to_dict().keys() == base.sparse[i].to_dict().keys()
        assert np.abs(other.sparse[pos].values - base.sparse[i].values).max(initial=0.0) <= TOL
        assert np.abs(other.colbert[pos] - base.colbert[i]).max(initial=0.0) <= TOL
