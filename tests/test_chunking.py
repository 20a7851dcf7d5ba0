"""Token-aware chunking with the model's tokenizer (the tiny checkpoint's XLM-R-style tokenizer)."""

from __future__ import annotations

import pytest

from m3_rag.ingest import ChunkConfig, TokenChunker

TEXT = (
    "BGE-M3 produces a dense vector, sparse lexical weights and ColBERT multi-vectors from one forward pass. "
    "Qdrant stores named dense, sparse and multi-vectors per point and fuses them in one query.\n\n"
    "Reciprocal rank fusion merges ranked lists by summing one over the rank plus a constant. "
    "Long documents are split into overlapping token windows before they are embedded."
)


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return tiny_encoder.tokenizer


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("size,overlap", [(8, 0), (16, 4), (24, 8), (40, 39)])
def test_chunks_are_exact_slices_within_size_and_cover_the_text(tokenizer, size, overlap):
    chunks = TokenChunker(tokenizer, ChunkConfig(size, overlap)).chunk(TEXT)
    assert len(chunks) > 1
    covered = [False] * len(TEXT)
    for i, c in enumerate(chunks):
        assert c.index == i
        assert c.text == TEXT[c.start_char : c.end_char]
        assert 0 < c.n_tokens <= size
        assert n_tokens(tokenizer, c.text) <= size + 1  # re-tokenising a slice may merge one boundary piece
        for j in range(c.start_char, c.end_char):
            covered[j] = True
    missed = "".join(ch for ch, hit in zip(TEXT, covered) if not hit)
    assert missed.strip() == ""  # only whitespace between chunks is left out
    assert chunks[-1].end_char == len(TEXT.rstrip())


def test_overlap_repeats_text_and_zero_overlap_does_not(tokenizer):
    with_overlap = TokenChunker(tokenizer, ChunkConfig(16, 6)).chunk(TEXT)
    assert all(b.start_char < a.end_char for a, b in zip(with_overlap, with_overlap[1:]))
    without = TokenChunker(tokenizer, ChunkConfig(16, 0)).chunk(TEXT)
    assert all(b.start_char >= a.end_char for a, b in zip(without, without[1:]))
    assert len(with_overlap) > len(without)


def test_window_borders_fall_between_words(tokenizer):
    words = " ".join(f"word{i}alpha" for i in range(60))  # every word is several tokens long
    chunks = TokenChunker(tokenizer, ChunkConfig(20, 5)).chunk(words)
    assert len(chunks) > 2
    for c in chunks:
        assert c.start_char == 0 or words[c.start_char - 1] == " "
        assert c.end_char == len(words) or words[c.end_char] == " "


def test_short_text_is_one_chunk_and_blank_text_none(tokenizer):
    chunker = TokenChunker(tokenizer, ChunkConfig(256, 32))
    [only] = chunker.chunk("A short note.")
    assert only.text == "A short note." and only.index == 0
    assert chunker.chunk("") == [] and chunker.chunk("  \n\t ") == []
    assert [len(c) for c in chunker.chunk_many(["one two", "", "three"])] == [1, 0, 1]


def test_a_word_longer_than_the_window_is_cut(tokenizer):
    long_word = "x" * 400
    chunks = TokenChunker(tokenizer, ChunkConfig(8, 2)).chunk(long_word)
    assert len(chunks) > 1 and all(c.n_tokens <= 8 for c in chunks)
    assert "".join(c.text for c in chunks).replace("x", "") == ""


@pytest.mark.parametrize(
    "size,overlap,message",
    [(0, 0, "positive int"), (8, -1, ">= 0"), (8, 8, "overlap < size"), (8, 20, "overlap < size"), (True, 0, "positive")],
)
def test_bad_config_raises(size, overlap, message):
    with pytest.raises(ValueError, match=message):
        ChunkConfig(size, overlap)


def test_slow_tokenizer_is_refused(tiny_checkpoint):
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast tokenizer"):
        TokenChunker(Slow())
