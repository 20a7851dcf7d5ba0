"""The dense index's quantization: Qdrant's int8 scalar quantization for new collections,
read back from Qdrant's own config on reopen, and scores that stay exact (rescored with the
float32 originals). Both backends; qdrant-client local mode records the config but scores
exactly without it, so the scores' exactness under quantization is checked on Edge."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdrant_client import QdrantClient

from m3_rag.scoring import dense_scores
from m3_rag.store import M3Store, SchemaMismatchError
from m3_rag.store.schema import DEFAULT_DENSE_QUANTIZATION, quantization_kind
from test_store_helpers import FakeEncoder

TEXTS = [f"text {i} about {w} and {v}" for i, (w, v) in enumerate(
    [("cats", "mice"), ("dogs", "sun"), ("birds", "dawn"), ("fish", "sea"), ("cats", "park"), ("owls", "night")] * 8
)]  # fmt: skip


class Opener:
    def __init__(self, kind: str, tmp_path) -> None:
        self.kind, self.path = kind, tmp_path / "index"
        self.client = QdrantClient(":memory:") if kind == "memory" else None

    def __call__(self, **kw) -> M3Store:
        if self.kind == "edge":
            return M3Store(FakeEncoder(dense_dim=32), path=self.path, **kw)
        return M3Store(FakeEncoder(dense_dim=32), client=self.client, **kw)


def stored_quantization(store: M3Store) -> str:
    """What Qdrant itself recorded for the dense vector, read without m3-rag's schema code."""
    if hasattr(store.backend, "shard_path"):
        config = json.loads((store.backend.shard_path / "edge_config.json").read_text())
        q = config["vectors"]["dense"].get("quantization_config")
    else:
        found = store.backend.client.get_collection(store.collection).config.params.vectors["dense"].quantization_config
        q = found.model_dump(exclude_none=True) if found is not None else None
    return "none" if q is None else ("int8" if q["scalar"]["type"] == "int8" else repr(q))


@pytest.fixture(params=["edge", "memory"])
def opener(request, tmp_path) -> Opener:
    return Opener(request.param, tmp_path)


def test_a_new_collection_gets_int8_and_keeps_it_on_reopen(opener):
    store = opener()
    assert store.schema.dense_quantization == DEFAULT_DENSE_QUANTIZATION == "int8"
    assert stored_quantization(store) == "int8"
    store.add_texts(TEXTS[:4], ids=list(range(4)))
    store.close() if opener.kind == "edge" else None
    again = opener()
    assert again.schema.dense_quantization == "int8" and again.count() == 4
    again.close() if opener.kind == "edge" else None
    with opener(dense_quantization="int8") as same:  # the same explicit setting opens it too
        assert same.count() == 4


def test_none_creates_a_float32_only_index_and_a_conflicting_option_raises(opener):
    store = opener(dense_quantization="none")
    assert stored_quantization(store) == "none"
    store.add_texts(TEXTS[:2], ids=[0, 1])
    store.close() if opener.kind == "edge" else None
    with pytest.raises(SchemaMismatchError, match="quantization 'none'.*dense_quantization='int8'.*Fix: leave"):
        opener(dense_quantization="int8")
    with opener() as again:  # left open: the collection's own
        assert again.schema.dense_quantization == "none" and again.count() == 2


@pytest.mark.parametrize("bad", ["int4", "binary", "INT8", "", 8])
def test_a_bad_value_raises_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError, match=r"dense_quantization=.*expected one of \('int8', 'none'\).*Fix"):
        M3Store(FakeEncoder(), path=tmp_path / "index", dense_quantization=bad)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("quantization", ["int8", "none"])
def test_dense_scores_stay_exact_with_the_quantized_index(opener, quantization):
    enc = FakeEncoder(dense_dim=32)
    with opener(dense_quantization=quantization) as store:
        store.add_texts(TEXTS, ids=list(range(len(TEXTS))))
        store.optimize()  # builds the HNSW graph over the int8 copy
        docs = enc.encode_documents(TEXTS).dense
        for query in ["cats in the park", "owls at night", "fish in the sea"]:
            q = enc.encode_queries([query]).dense[0]
            exact = dense_scores(q, docs)
            hits = store.search(query, mode="dense", k=5)
            assert [h.score for h in hits] == pytest.approx([exact[int(h.id)] for h in hits], abs=1e-5)
            m3 = store.search(query, mode="m3", k=5, with_mode_scores=True)
            assert [h.mode_scores["dense"] for h in m3] == pytest.approx([exact[int(h.id)] for h in m3], abs=1e-5)


def test_quantization_kind_names_qdrant_configs():
    assert quantization_kind(None) == "none" and quantization_kind({}) == "none"
    assert quantization_kind({"scalar": {"type": "int8", "always_ram": True}}) == "int8"
    assert quantization_kind({"binary": {"always_ram": True}}) == "binary"


def test_a_collection_with_another_quantization_opens_with_it_and_refuses_a_conflicting_option(tmp_path):
    from qdrant_client import models

    from m3_rag.store.backends.client import collection_params
    from m3_rag.store.schema import schema_from_encoder

    client = QdrantClient(":memory:")
    params = collection_params(schema_from_encoder(FakeEncoder(dense_dim=32)).for_new_collection())
    params["vectors_config"]["dense"].quantization_config = models.BinaryQuantization(binary=models.BinaryQuantizationConfig())
    client.create_collection("m3", **params)
    store = M3Store(FakeEncoder(dense_dim=32), client=client)  # not closed: that would close the client
    assert store.schema.dense_quantization == "binary"
    with pytest.raises(SchemaMismatchError, match="quantization 'binary'"):
        M3Store(FakeEncoder(dense_dim=32), client=client, dense_quantization="int8")


def test_the_cli_index_honours_dense_quantization(tmp_path, tiny_checkpoint, capsys):
    from m3_rag.cli import run

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Qdrant Edge runs the engine in-process. " * 10, encoding="utf-8")
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--path", str(tmp_path / "index")]
    assert run(["index", str(docs), "--no-progress", "--dense-quantization", "none", *common]) == 0
    config = json.loads((tmp_path / "index" / "m3" / "edge_config.json").read_text())
    assert "quantization_config" not in config["vectors"]["dense"]
    capsys.readouterr()
    assert run(["index", str(docs), "--no-progress", "--dense-quantization", "int8", *common]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dense_quantization='int8'" in err


def test_the_cli_refuses_a_bad_dense_quantization_before_loading_the_model(tmp_path, capsys):
    from m3_rag.cli import run

    (tmp_path / "a.md").write_text("text", encoding="utf-8")
    code = run(["index", str(tmp_path / "a.md"), "--model", str(tmp_path / "no-such-model"), "--path", str(tmp_path / "i"),
                "--dense-quantization", "int4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--dense-quantization" in err and "expected one of" in err and "no-such-model" not in err
    assert not (tmp_path / "i").exists()
