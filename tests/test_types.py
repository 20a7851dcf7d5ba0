"""The encoder contract (m3_rag.types.Encoder) and its async view (async_encoder)."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from m3_rag.cache import CachedEncoder
from m3_rag.store.schema import schema_from_encoder
from m3_rag.types import ENCODER_MEMBERS, AsyncEncoder, Encoder, M3Output, async_encoder, check_encoder

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the cat sat on the mat", "a dog in the fog"]


def _members(names) -> SimpleNamespace:
    """An object with exactly these Encoder members (methods are plain callables)."""
    values = {"outputs": ("dense",), "dense_dim": 4, "colbert_dim": None}
    return SimpleNamespace(**{n: values.get(n, lambda *a, **k: None) for n in names})


def test_the_four_encoders_are_encoders(tiny_encoder, tiny_checkpoint, tmp_path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from m3_rag.train.states_encoder import StateCachedEncoder
    from m3_rag_langchain import EmbeddingsEncoder

    encoders = [
        tiny_encoder,
        CachedEncoder(tiny_encoder),
        EmbeddingsEncoder(DeterministicFakeEmbedding(size=4)),
        StateCachedEncoder(tiny_checkpoint, tmp_path / "states", show_progress=False),
    ]
    for encoder in encoders:
        assert isinstance(encoder, Encoder), type(encoder).__name__
        assert check_encoder(encoder, "test") is encoder
        assert schema_from_encoder(encoder).outputs == encoder.outputs
    # Only the dense-only wrapper has an async path of its own.
    assert [isinstance(e, AsyncEncoder) for e in encoders] == [False, False, True, False]


def test_encoder_members_are_the_protocols() -> None:
    assert isinstance(_members(ENCODER_MEMBERS), Encoder)
    for name in ENCODER_MEMBERS:
        lacking = _members([n for n in ENCODER_MEMBERS if n != name])
        assert not isinstance(lacking, Encoder), name
        with pytest.raises(TypeError, match=rf"got encoder='SimpleNamespace', which has no {name}; expected"):
            check_encoder(lacking, "the store")


def test_no_outputs_probe_an_encoder_without_outputs_is_refused(tiny_encoder) -> None:
    # The store and the cache read encoder.outputs; an object without it no longer passes as "all outputs".
    sizes_only = SimpleNamespace(dense_dim=8, colbert_dim=4, encode_queries=print, encode_documents=print)
    for build in (schema_from_encoder, CachedEncoder):
        with pytest.raises(TypeError, match="which has no outputs; expected an m3_rag Encoder"):
            build(sizes_only)
    probe = re.compile(r"getattr\([^)]*[\"']outputs[\"']")
    sources = [*(REPO / "m3_rag").rglob("*.py"), *(REPO / "integrations").rglob("*.py")]
    assert [str(p) for p in sources if probe.search(p.read_text(encoding="utf-8"))] == []


def test_cached_encoder_forwards_the_protocol_and_the_extras(tiny_encoder) -> None:
    cached = CachedEncoder(tiny_encoder)
    assert (cached.outputs, cached.dense_dim, cached.colbert_dim) == (
        tiny_encoder.outputs, tiny_encoder.dense_dim, tiny_encoder.colbert_dim,
    )  # fmt: skip
    assert cached.config is tiny_encoder.config and cached.device == tiny_encoder.device
    with pytest.raises(AttributeError, match="'CachedEncoder' object has no attribute 'compute_score'"):
        cached.compute_score  # noqa: B018  (not forwarded: not part of the drop-in surface)


class _ThreadRecorder:
    """An encoder that records the thread each call ran on."""

    outputs = ("dense",)
    dense_dim, colbert_dim = 2, None

    def __init__(self) -> None:
        self.threads: list[int] = []

    def _encode(self, texts, outputs=("dense",), show_progress=False) -> M3Output:
        self.threads.append(threading.get_ident())
        n = len(texts)
        return M3Output(dense=np.ones((n, 2), np.float32), sparse=None, colbert=None,
                        token_counts=np.zeros(n, np.int64), truncated=np.zeros(n, bool))  # fmt: skip

    def encode_queries(self, texts, *, outputs=("dense",), show_progress=False) -> M3Output:
        return self._encode(texts, outputs, show_progress)

    def encode_documents(self, texts, *, outputs=("dense",), show_progress=False) -> M3Output:
        return self._encode(texts, outputs, show_progress)


async def test_async_encoder_runs_a_sync_encoder_off_the_event_loop(tiny_encoder) -> None:
    recorder = _ThreadRecorder()
    view = async_encoder(recorder)
    assert isinstance(view, AsyncEncoder) and view is not recorder
    out = await view.aencode_documents(TEXTS, outputs=("dense",))
    await view.aencode_queries(TEXTS[:1])
    assert len(out) == 2 and len(recorder.threads) == 2
    assert threading.get_ident() not in recorder.threads  # a worker thread, not the loop's
    # Same vectors as the sync call, for the real model too.
    sync = tiny_encoder.encode_queries(TEXTS, outputs=("dense", "sparse"))
    got = await async_encoder(tiny_encoder).aencode_queries(TEXTS, outputs=("dense", "sparse"))
    np.testing.assert_array_equal(got.dense, sync.dense)
    assert got.sparse == sync.sparse and got.colbert is None


async def test_async_encoder_uses_an_encoders_own_coroutines() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from m3_rag_langchain import EmbeddingsEncoder

    class CountingFake(DeterministicFakeEmbedding):
        calls: int = 0

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += 1
            return self.embed_documents(texts)

    wrapped = EmbeddingsEncoder(CountingFake(size=4))
    assert async_encoder(wrapped) is wrapped
    out = await asyncio.wait_for(async_encoder(wrapped).aencode_documents(TEXTS), timeout=30)
    assert wrapped.embeddings.calls == 1 and out.dense is not None and out.dense.shape == (2, 4)
    with pytest.raises(TypeError, match="async_encoder\\(\\) got encoder='object'"):
        async_encoder(object())
