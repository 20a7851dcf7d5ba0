"""How ColBERT vectors are stored: datatype and pool factor, recorded with the collection and
honoured on reopen, old (0.1.0) collections, pooling at ingest, long documents whole, and the
m3 plan's exact scores. Both backends (qdrant-client local mode ignores datatypes when it
scores, so datatype effects on scores are checked on Edge only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from m3_rag.pooling import pooled_rows
from m3_rag.scoring import combine_scores, dense_scores, lexical_score, maxsim_score
from m3_rag.store import M3Store, SchemaMismatchError, max_colbert_rows
from m3_rag.store.backends.edge import SETTINGS_FILE
from m3_rag.store.schema import COLBERT_DATATYPES, DEFAULT_COLBERT
from m3_rag.types import M3Output, SparseVector
from test_store_helpers import FakeEncoder

BACKENDS = ["edge", "memory"]
TEXTS = [
    "cats chase mice in the park every single morning before the sun rises over the hills",
    "dogs sleep in the sun",
    "birds sing in the park at dawn while the city slowly wakes and the traffic starts",
    "fish swim",
]


@pytest.fixture(params=BACKENDS)
def kind(request) -> str:
    return request.param


class Opener:
    """Opens the same collection again and again on one backend."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind, self.path = kind, tmp_path / "index"
        self.client = QdrantClient(":memory:") if kind == "memory" else None

    def __call__(self, encoder=None, **kw) -> M3Store:
        encoder = encoder or FakeEncoder()
        if self.kind == "edge":
            return M3Store(encoder, path=self.path, **kw)
        return M3Store(encoder, client=self.client, **kw)


def stored_datatype(store: M3Store) -> str:
    if hasattr(store.backend, "shard_path"):
        return json.loads((store.backend.shard_path / "edge_config.json").read_text())["vectors"]["colbert"]["datatype"]
    return store.backend.client.get_collection(store.collection).config.params.vectors["colbert"].datatype.value


# ----------------------------------------------------------------------------- settings
def test_defaults_are_recorded_for_a_new_collection(kind, tmp_path):
    with Opener(kind, tmp_path)() as store:
        assert store.schema.colbert == DEFAULT_COLBERT
        assert stored_datatype(store) == DEFAULT_COLBERT.datatype


@pytest.mark.parametrize("datatype", COLBERT_DATATYPES)
@pytest.mark.parametrize("factor", [1, 3])
def test_datatype_and_pool_factor_are_kept_on_reopen(kind, tmp_path, datatype, factor):
    opener = Opener(kind, tmp_path)
    store = opener(colbert_datatype=datatype, colbert_pool_factor=factor)
    store.add_texts(TEXTS, ids=list(range(4)))
    store.close() if kind == "edge" else None
    again = opener()  # options left open: the collection's own
    assert (again.schema.colbert_datatype, again.schema.colbert_pool_factor) == (datatype, factor)
    assert stored_datatype(again) == datatype
    again.add_texts(["a later text about cats in the park and more"], ids=[9])
    rows = {p.id: p.colbert.shape[0] for p in again.get([0, 9], with_vectors=True)}
    n0 = FakeEncoder().encode_documents([TEXTS[0]]).colbert[0].shape[0]
    assert rows[0] == pooled_rows(n0, factor, None)  # the same rule for later adds
    again.close() if kind == "edge" else None
    same = opener(colbert_datatype=datatype, colbert_pool_factor=factor)  # the same explicit settings open it too
    assert same.count() == 5
    same.close() if kind == "edge" else None


@pytest.mark.parametrize("option", [{"colbert_datatype": "float32"}, {"colbert_pool_factor": 4}])
def test_a_conflicting_explicit_option_is_a_schema_mismatch(kind, tmp_path, option):
    opener = Opener(kind, tmp_path)
    store = opener(colbert_datatype="turbo8", colbert_pool_factor=2)
    store.add_texts(TEXTS[:1], ids=[1])
    store.close() if kind == "edge" else None
    with pytest.raises(SchemaMismatchError, match="the options ask for.*Fix: leave the option out"):
        opener(**option)
    with opener() as again:
        assert again.count() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_pool_factor_raises_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError, match="colbert_pool_factor=.*expected an int >= 1"):
        M3Store(FakeEncoder(), path=tmp_path / "index", colbert_pool_factor=bad)
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("bad", ["bfloat16", "int8", "uint8", "Turbo8", ""])
def test_a_datatype_the_store_cannot_use_raises_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError, match="colbert_datatype=.*expected one of"):
        M3Store(FakeEncoder(), path=tmp_path / "index", colbert_datatype=bad)
    assert not (tmp_path / "index").exists()


# ----------------------------------------------------------------------- 0.1.0 collections
def make_old_collection(kind: str, opener: Opener) -> None:
    """A collection as m3-rag 0.1.0 wrote it: float16, every token stored, no settings record."""
    with_encoder = FakeEncoder()
    if kind == "edge":
        store = opener(colbert_datatype="float16", colbert_pool_factor=1, dense_quantization="none")
        (store.backend.shard_path / SETTINGS_FILE).unlink()  # 0.1.0 wrote none
    else:
        from m3_rag.store.backends.client import collection_params
        from m3_rag.store.schema import schema_from_encoder

        params = collection_params(schema_from_encoder(with_encoder, "float16", 1))
        params.pop("metadata")
        opener.client.create_collection("m3", **params)
        opener.client.create_payload_index("m3", field_name="doc_id", field_schema=models.PayloadSchemaType.KEYWORD)
        store = opener()
    store.add_texts(TEXTS, ids=list(range(4)))
    store.close() if kind == "edge" else None


def test_an_old_collection_opens_and_searches_unchanged(kind, tmp_path):
    opener = Opener(kind, tmp_path)
    make_old_collection(kind, opener)
    store = opener()
    assert store.schema.colbert.to_json() == {"colbert_datatype": "float16", "colbert_pool_factor": 1}
    assert store.schema.dense_quantization == "none"  # 0.1.0's float32-only dense index, kept
    enc = FakeEncoder()
    for p in store.get(list(range(4)), with_vectors=True):
        assert p.colbert.shape == enc.encode_documents([p.text]).colbert[0].shape  # unpooled, as written
    hits = store.search("cats in the park", mode="hybrid+rerank", k=4)
    q = enc.encode_queries(["cats in the park"]).colbert[0]
    docs = {p.id: p.colbert for p in store.get([h.id for h in hits], with_vectors=True)}
    assert [h.score for h in hits] == pytest.approx([maxsim_score(q, docs[h.id]) for h in hits], abs=2e-3)
    store.add_texts(["a new text about cats and mice in the park today"], ids=[7])  # still unpooled
    new = store.get([7], with_vectors=True)[0]
    assert new.colbert.shape[0] == enc.encode_documents([new.text]).colbert[0].shape[0]
    with pytest.raises(SchemaMismatchError):
        opener(colbert_pool_factor=2)
    store.close()


# ------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_documents_are_pooled_before_the_write_and_scores_are_exact_for_what_is_stored(kind, tmp_path, factor):
    enc = FakeEncoder(colbert_dim=16)
    with Opener(kind, tmp_path)(enc, colbert_pool_factor=factor, colbert_datatype="float32") as store:
        store.add_texts(TEXTS, ids=list(range(4)))
        points = {p.id: p for p in store.get(list(range(4)), with_vectors=True)}
        for i, text in enumerate(TEXTS):
            n = enc.encode_documents([text]).colbert[0].shape[0]
            c = points[i].colbert
            assert c.shape == (pooled_rows(n, factor, None), 16)
            assert np.linalg.norm(c, axis=1) == pytest.approx(1.0, abs=1e-5)
        q = enc.encode_queries(["birds in the park at dawn"])
        hits = store.search("birds in the park at dawn", mode="hybrid+rerank", k=4, with_mode_scores=True)
        for h in hits:
            exact = maxsim_score(q.colbert[0], points[h.id].colbert)
            assert h.score == pytest.approx(exact, abs=1e-5) and h.mode_scores["colbert"] == pytest.approx(exact, abs=1e-5)


def test_queries_are_never_pooled(kind, tmp_path):
    enc = FakeEncoder(colbert_dim=16)
    with Opener(kind, tmp_path)(enc, colbert_pool_factor=4, colbert_datatype="float32") as store:
        store.add_texts(TEXTS, ids=list(range(4)))
        text = "cats chase mice in the park every single morning"
        q = enc.encode_queries([text])
        doc = store.get([0], with_vectors=True)[0].colbert
        hit = {h.id: h for h in store.search(text, mode="hybrid+rerank", k=4)}[0]
        assert hit.score == pytest.approx(maxsim_score(q.colbert[0], doc), abs=1e-5)  # all 9 query tokens


def test_add_encoded_pools_what_the_encoder_gave(kind, tmp_path):
    enc = FakeEncoder(colbert_dim=16)
    with Opener(kind, tmp_path)(enc, colbert_pool_factor=2) as store:
        out = enc.encode_documents(TEXTS)
        store.add_encoded(TEXTS, out, ids=list(range(4)))
        got = {p.id: p.colbert.shape[0] for p in store.get(list(range(4)), with_vectors=True)}
        assert got == {i: pooled_rows(c.shape[0], 2, None) for i, c in enumerate(out.colbert)}


class LongDocEncoder(FakeEncoder):
    """One random unit token vector per word at D=1024 (so max_colbert_rows is 1023)."""

    def __init__(self) -> None:
        super().__init__(dense_dim=16, colbert_dim=1024)


def test_a_long_document_keeps_a_representation_of_every_token(kind, tmp_path):
    enc = LongDocEncoder()
    words = [f"w{i}" for i in range(3000)]
    text = " ".join(words)
    tokens = enc.encode_documents([text]).colbert[0]
    assert tokens.shape == (3000, 1024)
    with Opener(kind, tmp_path)(enc, colbert_pool_factor=1, colbert_datatype="float32") as store:
        store.add_texts([text], ids=[1])
        stored = store.get([1], with_vectors=True)[0].colbert
    assert stored.shape == (max_colbert_rows(1024), 1024)
    # The last tokens are in the stored rows as much as the first: their best cosine with the
    # rows (a cluster mean holds its members, ~0.6 here) is far above what a vector absent from
    # them gets (~0.1 at D=1024, as keeping only the first 1023 rows gave the tail).
    best = (tokens @ stored.T).max(axis=1)
    assert best[-1000:].mean() > 0.5 and best[:1000].mean() > 0.5
    assert best[-1000:].mean() == pytest.approx(best[:1000].mean(), abs=0.05)
    clipped_best = (tokens[-1000:] @ tokens[:1023].T).max(axis=1)  # what keeping the head gave
    assert clipped_best.max() < 0.3


def test_a_long_document_through_the_tiny_model_covers_the_whole_text(tmp_path, data_dir):
    from m3_rag import M3Encoder
    from m3_rag.testing import build_random_checkpoint
    from conftest import tokenizer_corpus

    path = build_random_checkpoint(tmp_path / "long-model", tokenizer_corpus(), colbert_dim=1024, seed=1)
    enc = M3Encoder.from_pretrained(path, device="cpu")
    text = " ".join(tokenizer_corpus()[:400])
    out = enc.encode_documents([text])
    n = out.colbert[0].shape[0]
    assert n > 2000  # longer than 1023 rows by far
    with M3Store(enc, path=tmp_path / "index", colbert_pool_factor=1, colbert_datatype="float32") as store:
        store.add_encoded([text], out, ids=[1])
        stored = store.get([1], with_vectors=True)[0].colbert
    assert stored.shape[0] == max_colbert_rows(1024)
    tail, head = out.colbert[0][-300:], out.colbert[0][:300]
    # The tail of the text scores as well against what is stored as its head does.
    assert maxsim_score(tail, stored) == pytest.approx(maxsim_score(head, stored), abs=0.05)


# ------------------------------------------------------------------------------ m3 plan
def test_m3_scores_are_exactly_bge_m3_s_formula_of_the_stored_vectors(kind, tmp_path):
    enc = FakeEncoder(colbert_dim=16)
    weights = (0.4, 0.2, 0.4)
    with Opener(kind, tmp_path)(enc, colbert_datatype="float32", colbert_pool_factor=2) as store:
        store.add_texts(TEXTS * 3, ids=list(range(12)))
        query = "birds in the park"
        hits = store.search(query, mode="m3", k=5, weights=weights)
        q = enc.encode_queries([query])
        stored = {p.id: p for p in store.get([h.id for h in hits], with_vectors=True)}
    assert len(hits) == 5
    for h in hits:
        p = stored[h.id]
        expected = combine_scores(
            dense_scores(q.dense[0], p.dense[None, :]),
            np.array([lexical_score(q.sparse[0], p.sparse)]),
            np.array([maxsim_score(q.colbert[0], p.colbert)]),
            weights,
        )[0]
        assert h.score == pytest.approx(float(expected), abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_m3_ranks_the_same_union_as_hybrid_rerank(kind, tmp_path):
    enc = FakeEncoder(colbert_dim=16)
    with Opener(kind, tmp_path)(enc) as store:
        store.add_texts(TEXTS * 4, ids=list(range(16)))
        rerank = store.search("the park", mode="hybrid+rerank", k=16, prefetch_k=5)
        m3 = store.search("the park", mode="m3", k=16, prefetch_k=5, weights=(0.0, 0.0, 1.0))
    # TEXTS repeat, so equal scores tie: compare the ids at each score.
    def by_score(hits) -> dict[float, set]:
        groups: dict[float, set] = {}
        for h in hits:
            groups.setdefault(round(h.score, 5), set()).add(h.id)
        return groups

    assert by_score(m3) == by_score(rerank) and len(m3) == len(rerank)


def test_a_point_without_sparse_terms_scores_zero_sparse_in_m3(kind, tmp_path):
    enc = FakeEncoder(colbert_dim=16)
    with Opener(kind, tmp_path)(enc, colbert_pool_factor=1) as store:
        out = enc.encode_documents(TEXTS[:2])
        out.sparse[1] = SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32))
        store.add_encoded(TEXTS[:2], M3Output(out.dense, out.sparse, out.colbert, out.token_counts, out.truncated), ids=[1, 2])
        hits = store.search("dogs sleep in the sun", mode="m3", k=2, with_mode_scores=True)
    assert {h.id for h in hits} == {1, 2}
    assert {h.id: h.mode_scores["sparse"] for h in hits}[2] == 0.0


@pytest.mark.parametrize("datatype", COLBERT_DATATYPES)
def test_mode_scores_and_m3_use_the_backend_s_colbert_score_for_every_datatype(tmp_path, datatype):
    # Turbo4's own MaxSim differs slightly (~0.5%) from a MaxSim over the vectors it returns:
    # the rerank's score is the one of record, so every reported ColBERT score is that one.
    enc = FakeEncoder(colbert_dim=64)
    weights = (0.4, 0.2, 0.4)
    with M3Store(enc, path=tmp_path / "index", colbert_datatype=datatype, colbert_pool_factor=2) as store:
        store.add_texts(TEXTS * 2, ids=list(range(8)))
        rerank = store.search("birds in the park", mode="hybrid+rerank", k=8, with_mode_scores=True)
        m3 = store.search("birds in the park", mode="m3", k=8, weights=weights, with_mode_scores=True)
    for h in rerank:
        assert h.mode_scores["colbert"] == pytest.approx(h.score, abs=1e-6)
    colbert = {h.id: h.score for h in rerank}
    for h in m3:
        ms = h.mode_scores
        assert ms["colbert"] == pytest.approx(colbert[h.id], abs=1e-6)
        expected = (weights[0] * ms["dense"] + weights[1] * ms["sparse"] + weights[2] * ms["colbert"]) / sum(weights)
        assert h.score == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------- CLI
def test_the_cli_index_honours_the_colbert_options_and_search_json_keeps_its_shape(tmp_path, tiny_checkpoint, capsys):
    from m3_rag.cli import run

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Qdrant Edge runs the engine in-process. " * 30, encoding="utf-8")
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--path", str(tmp_path / "index")]
    assert run(["index", str(docs), "--no-progress", "--pool-factor", "3", "--colbert-datatype", "turbo4", *common]) == 0
    settings = json.loads((tmp_path / "index" / "m3" / SETTINGS_FILE).read_text())
    assert settings == {"colbert_datatype": "turbo4", "colbert_pool_factor": 3}
    capsys.readouterr()
    assert run(["search", "Qdrant Edge", "--json", "-k", "2", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["k", "mode", "query", "results"]
    assert sorted(out["results"][0]) == ["doc_id", "id", "metadata", "mode_scores", "rank", "score", "source", "text"]
    # Re-indexing with the recorded settings works; a conflicting one is refused in one line.
    assert run(["index", str(docs), "--no-progress", *common]) == 0
    capsys.readouterr()
    assert run(["index", str(docs), "--no-progress", "--pool-factor", "1", *common]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "colbert_pool_factor=1" in err


@pytest.mark.parametrize("bad", [["--pool-factor", "0"], ["--colbert-datatype", "int8"]])
def test_the_cli_refuses_bad_colbert_options_before_loading_the_model(tmp_path, capsys, bad):
    from m3_rag.cli import run

    (tmp_path / "a.md").write_text("text", encoding="utf-8")
    code = run(["index", str(tmp_path / "a.md"), "--model", str(tmp_path / "no-such-model"), "--path", str(tmp_path / "i"), *bad])
    err = capsys.readouterr().err
    assert code == 2 and "expected" in err and "no-such-model" not in err
    assert not (tmp_path / "i").exists()
