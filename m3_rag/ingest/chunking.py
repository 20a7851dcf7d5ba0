"""Token-aware chunking with the model's own tokenizer.

Windows of ``chunk_tokens`` tokens overlapping by ``overlap_tokens``, measured with the
tokenizer the encoder uses, so a chunk never exceeds what the model reads. A window end (and
start) moves back to a word boundary when one is near, so chunks do not cut words in half.
Chunk texts are exact slices of the source text (character offsets from the fast tokenizer).

>>> cfg = ChunkConfig(chunk_tokens=4, overlap_tokens=1)
>>> cfg.stride
3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChunkConfig", "Chunk", "TokenChunker", "DEFAULT_CHUNK_TOKENS", "DEFAULT_OVERLAP_TOKENS"]

DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP_TOKENS = 32


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk size and overlap in tokens (special tokens not counted)."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        if isinstance(self.chunk_tokens, bool) or not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 1:
            raise ValueError(f"chunk size is {self.chunk_tokens!r} tokens; expected a positive int.")
        if isinstance(self.overlap_tokens, bool) or not isinstance(self.overlap_tokens, int) or self.overlap_tokens < 0:
            raise ValueError(f"chunk overlap is {self.overlap_tokens!r} tokens; expected an int >= 0.")
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"chunk overlap ({self.overlap_tokens}) is not smaller than the chunk size ({self.chunk_tokens}); "
                "expected overlap < size. Fix: lower the overlap or raise the size."
            )

    @property
    def stride(self) -> int:
        return self.chunk_tokens - self.overlap_tokens


@dataclass(frozen=True)
class Chunk:
    """One chunk: its text (a slice of the source), position and token count."""

    index: int
    text: str
    start_char: int
    end_char: int
    n_tokens: int


class TokenChunker:
    """Split texts into token windows with a Hugging Face *fast* tokenizer (it gives offsets)."""

    def __init__(self, tokenizer: Any, config: ChunkConfig = ChunkConfig()) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; expected one (character offsets are "
                "needed to cut the text). Fix: load the model's tokenizer.json (use_fast=True)."
            )
        self.tokenizer = tokenizer
        self.config = config

    def chunk(self, text: str) -> list[Chunk]:
        return self.chunk_many([text])[0]

    def chunk_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """Chunks of each text (one tokenizer call for all). Blank texts give no chunks."""
        if not texts:
            return []
        enc = self.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [
            self._windows(text, enc["offset_mapping"][i], enc.word_ids(i)) for i, text in enumerate(texts)
        ]

    def _windows(self, text: str, offsets: list[tuple[int, int]], words: list[int | None]) -> list[Chunk]:
        # Drop zero-width tokens (e.g. a lone metaspace) that cover no text.
        keep = [i for i, (s, e) in enumerate(offsets) if e > s]
        offsets = [offsets[i] for i in keep]
        words = [words[i] for i in keep]
        n = len(offsets)
        size = self.config.chunk_tokens
        chunks: list[Chunk] = []
        start = 0
        while start < n:
            end = min(start + size, n)
            if end < n:
                end = _word_start_at_or_before(words, end, floor=start + max(1, size // 2))
            s_char, e_char = offsets[start][0], offsets[end - 1][1]
            chunks.append(Chunk(len(chunks), text[s_char:e_char], s_char, e_char, end - start))
            if end >= n:
                break
            nxt = max(end - self.config.overlap_tokens, start + 1)
            start = _word_start_at_or_before(words, nxt, floor=start + 1)
        return chunks


def _word_start_at_or_before(words: list[int | None], pos: int, floor: int) -> int:
    """The nearest position <= ``pos`` (and >= ``floor``) where a new word starts; ``pos`` if none."""
    i = pos
    while i > floor and words[i] is not None and words[i] == words[i - 1]:
        i -= 1
    return i if i > floor or (words[i] is None or words[i] != words[i - 1]) else pos
