"""The ColBERT storage datatype: float16 by default, float32 on request (Edge), kept on reopen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3_rag.scoring import maxsim_score
from m3_rag.store import M3Store
from m3_rag.store.backends.edge import EdgeBackend
from m3_rag.store.schema import DEFAULT_COLBERT, StoreSchema, schema_from_encoder
from test_store_helpers import FakeEncoder

TEXTS = ["cats chase mice in the park", "dogs sleep in the sun", "birds sing in the park at dawn", "fish swim"]


def _edge_datatype(path) -> str:
    return json.loads((path / "m3" / "edge_config.json").read_text())["vectors"]["colbert"]["datatype"]


def test_default_is_turbo4_for_a_new_collection_and_bad_datatype_raises():
    enc = FakeEncoder()
    assert schema_from_encoder(enc).colbert_datatype is None  # open: the collection's, or the default
    assert schema_from_encoder(enc).for_new_collection().colbert_datatype == DEFAULT_COLBERT.datatype == "turbo4"
    with pytest.raises(ValueError, match="colbert_datatype='bfloat16'.*expected one of"):
        StoreSchema(outputs=("dense",), dense_dim=4, colbert_datatype="bfloat16")  # type: ignore[arg-type]


@pytest.mark.parametrize("datatype", ["float16", "float32"])
def test_edge_datatype_is_stored_and_kept_on_reopen(tmp_path, datatype):
    enc = FakeEncoder()
    created = EdgeBackend(tmp_path, "m3")
    created.open(schema_from_encoder(enc, colbert_datatype=datatype))
    created.close()
    assert _edge_datatype(tmp_path) == datatype
    # The store (float16 by default) opens the existing collection as it is: not a mismatch.
    with M3Store(enc, path=tmp_path, collection="m3") as store:
        store.add_texts(TEXTS, ids=[str(i) for i in range(len(TEXTS))])
        query = "cats in the park"
        hits = store.search(query, mode="hybrid+rerank", k=len(TEXTS))
        stored = {p.id: p.colbert for p in store.get([h.id for h in hits], with_vectors=True)}
    assert _edge_datatype(tmp_path) == datatype
    q = enc.encode_queries([query]).colbert[0]
    tol = 1e-4 if datatype == "float16" else 1e-6
    for h in hits:
        assert h.score == pytest.approx(maxsim_score(q, np.asarray(stored[h.id])), abs=tol)


def test_store_constructor_creates_float32_on_edge(tmp_path):
    enc = FakeEncoder()
    with M3Store(enc, path=tmp_path, collection="m3", colbert_datatype="float32") as store:
        assert store.schema.colbert_datatype == "float32"
        store.add_texts(TEXTS)
    assert _edge_datatype(tmp_path) == "float32"


@pytest.mark.parametrize("datatype", ["float16", "float32"])
def test_store_constructor_datatype_on_client(datatype):
    enc = FakeEncoder()
    with M3Store(enc, location=":memory:", colbert_datatype=datatype) as store:
        info = store.backend.client.get_collection(store.collection)
        assert info.config.params.vectors["colbert"].datatype.value == datatype


def test_store_constructor_rejects_unknown_datatype(tmp_path):
    with pytest.raises(ValueError, match="colbert_datatype='int8'.*expected one of"):
        M3Store(FakeEncoder(), path=tmp_path, colbert_datatype="int8")  # type: ignore[arg-type]
    assert not (tmp_path / "m3").exists()  # nothing created for a bad option
