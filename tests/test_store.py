"""Behavioural tests of m3_rag.store, each run on both backends (Edge on a temp path, qdrant-client :memory:)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from qdrant_client import QdrantClient

from m3_rag.scoring import combine_scores, maxsim_score
from m3_rag.store import (
    DEFAULT_WEIGHTS,
    And,
    Condition,
    M3Store,
    Not,
    Or,
    SchemaMismatchError,
    StoreLockedError,
    max_colbert_rows,
    parse_filter,
    to_point_id,
)
from m3_rag.types import M3Output
from test_store_helpers import FakeEncoder

BACKENDS = ["edge", "memory"]

DOCS = [
    ("The cat sat on the warm mat in the kitchen.", {"year": 2019, "tag": "pets", "rating": 4.5, "tags": ["cat"]}),
    ("Dogs love long walks in the park every morning.", {"year": 2020, "tag": "pets", "rating": 3.0, "tags": ["dog"]}),
    ("Quantum computers use qubits to explore many states.", {"year": 2021, "tag": "science", "rating": 5.0}),
    ("The stock market fell sharply after the announcement.", {"year": 2022, "tag": "finance", "rating": 2.5}),
    ("Photosynthesis turns sunlight into chemical energy.", {"year": 2018, "tag": "science", "note": None}),
    ("A recipe for bread needs flour, water, salt and yeast.", {"year": 2023, "tag": "food", "tags": []}),
    ("Volcanoes erupt when magma rises through the crust.", {"year": 2017, "tag": "science", "rating": 4.0}),
    ("Interest rates shape how banks lend money.", {"year": 2024, "tag": "finance"}),
]
IDS = [1, "2", "doc-three", str(uuid.UUID(int=4)), 5, "six", 7, "eight"]


def open_store(kind: str, tmp_path, encoder, client: QdrantClient | None = None, **kw) -> M3Store:
    if kind == "edge":
        return M3Store(encoder, path=tmp_path / "index", **kw)
    return M3Store(encoder, client=client or QdrantClient(":memory:"), **kw)


@pytest.fixture(params=BACKENDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def filled(kind, tmp_path, tiny_encoder):
    # Every token stored as encoded (float16), so scores can be compared with the encoder's own;
    # pooled and quantized storage is tested in test_store_colbert.py.
    store = open_store(kind, tmp_path, tiny_encoder, colbert_pool_factor=1, colbert_datatype="float16")
    store.add_texts([t for t, _ in DOCS], ids=IDS, metadatas=[m for _, m in DOCS],
                    doc_ids=["d1", "d1", "d2", "d2", "d3", "d3", "d4", "d4"], batch_size=3)  # fmt: skip
    yield store
    store.close()


# ------------------------------------------------------------------------------------ schema
def test_schema_from_encoder_sizes_and_reopen_validation(kind, tmp_path):
    client = QdrantClient(":memory:") if kind == "memory" else None
    store = open_store(kind, tmp_path, FakeEncoder(dense_dim=16, colbert_dim=8), client=client)
    assert store.schema.outputs == ("dense", "sparse", "colbert")
    assert (store.schema.dense_dim, store.schema.colbert_dim) == (16, 8)
    store.add_texts(["alpha beta"], ids=["a"])
    if kind == "edge":
        store.close()
    # Same encoder: opens and finds the point.
    again = open_store(kind, tmp_path, FakeEncoder(dense_dim=16, colbert_dim=8), client=client)
    assert again.count() == 1
    if kind == "edge":
        again.close()
    for wrong, needle in [
        (FakeEncoder(dense_dim=24, colbert_dim=8), "dense: 16-dim cosine"),
        (FakeEncoder(dense_dim=16, colbert_dim=4), "colbert: 8-dim cosine, multivector max_sim"),
        (FakeEncoder(dense_dim=16, outputs=("dense",)), "extra vector"),
    ]:
        with pytest.raises(SchemaMismatchError) as err:
            open_store(kind, tmp_path, wrong, client=client)
        msg = str(err.value)
        assert needle in msg and "Found [" in msg and "expected [" in msg and "Fix:" in msg
    # The failed opens did not touch the data.
    final = open_store(kind, tmp_path, FakeEncoder(dense_dim=16, colbert_dim=8), client=client)
    assert [p.id for p in final.get(["a"])] == ["a"]
    final.close()


def test_dense_only_encoder_creates_only_dense(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder(dense_dim=16, colbert_dim=None, outputs=("dense",)))
    assert store.schema.outputs == ("dense",)
    store.add_texts(["red apples", "green pears", "blue cars"], ids=[1, 2, 3])
    hits = store.search("red apples", mode="dense", k=2)
    assert hits[0].id == 1
    for mode in ("sparse", "hybrid", "hybrid+rerank", "m3"):
        with pytest.raises(ValueError, match="holds only \\['dense'\\]"):
            store.search("red apples", mode=mode)
    point = store.get([1], with_vectors=True)[0]
    assert point.dense is not None and point.sparse is None and point.colbert is None
    store.close()


def test_existing_collection_missing_vector_is_reported(tmp_path):
    client = QdrantClient(":memory:")
    M3Store(FakeEncoder(dense_dim=16, outputs=("dense",), colbert_dim=None), client=client)
    with pytest.raises(SchemaMismatchError, match="missing vector 'sparse: sparse, modifier=none'"):
        M3Store(FakeEncoder(dense_dim=16, colbert_dim=8), client=client)


def test_unknown_mode_and_bad_constructor_args(tmp_path):
    with pytest.raises(ValueError, match="exactly one of path="):
        M3Store(FakeEncoder())
    with pytest.raises(ValueError, match="exactly one of path="):
        M3Store(FakeEncoder(), path=tmp_path, location=":memory:")
    store = M3Store(FakeEncoder(), location=":memory:")
    with pytest.raises(ValueError, match="unknown search mode 'colbert'"):
        store.search("x", mode="colbert")


# --------------------------------------------------------------------------------------- ids
def test_ids_round_trip_and_re_add_overwrites(filled):
    got = filled.get(IDS)
    assert [p.id for p in got] == IDS  # original ids and types come back, in order
    assert [p.text for p in got] == [t for t, _ in DOCS]
    assert got[0].metadata == DOCS[0][1] and got[2].doc_id == "d2"
    assert to_point_id("doc-three") == to_point_id("doc-three") != to_point_id("six")
    assert to_point_id(5) == 5 and to_point_id(IDS[3]) == IDS[3]
    # Missing ids are simply absent.
    assert [p.id for p in filled.get(["nope", 999, "six"])] == ["six"]
    # Re-adding overwrites: same count, new text and metadata.
    filled.add_texts(["Cats and dogs."], ids=["doc-three"], metadatas=[{"year": 1999}])
    assert filled.count() == len(DOCS)
    (p,) = filled.get(["doc-three"])
    assert (p.text, p.metadata, p.doc_id) == ("Cats and dogs.", {"year": 1999}, None)


def test_string_and_int_ids_are_distinct(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder())
    store.add_texts(["one as int", "one as str"], ids=[1, "1"])
    assert store.count() == 2
    assert sorted(p.text for p in store.get([1, "1"])) == ["one as int", "one as str"]
    store.close()


def test_bad_input_raises_before_any_write(filled):
    before = filled.count()
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        filled.add_texts(["ok text", "bad meta"], ids=["n1", "n2"], metadatas=[{}, {"x": object()}])
    with pytest.raises(ValueError, match="different lengths"):
        filled.add_texts(["a", "b"], ids=["n1"])
    with pytest.raises(TypeError, match="expected a str or a non-negative int"):
        filled.add_texts(["a"], ids=[1.5])
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        filled.add_texts(["a"], ids=[-1])
    assert filled.count() == before
    assert filled.get(["n1", "n2"]) == []


# ------------------------------------------------------------------------------------ search
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid", "hybrid+rerank", "m3"])
def test_every_mode_finds_the_text_itself(filled, mode):
    text, meta = DOCS[3]
    hits = filled.search(text, mode=mode, k=3)
    assert hits and hits[0].id == IDS[3]
    assert (hits[0].text, hits[0].metadata, hits[0].doc_id) == (text, meta, "d2")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].mode_scores is None


def test_default_mode_is_hybrid_rerank_with_bge_scale(filled, tiny_encoder):
    text = DOCS[0][0]
    default = filled.search(text, k=3, with_mode_scores=True)
    explicit = filled.search(text, mode="hybrid+rerank", k=3)
    assert [h.id for h in default] == [h.id for h in explicit]
    # The reported score is BGE-M3's ColBERT score (mean over query tokens), not Qdrant's sum.
    for h in default:
        assert h.score == pytest.approx(h.mode_scores["colbert"], abs=1e-4)


def test_m3_scores_match_the_encoder_combination(filled, tiny_encoder):
    weights = (0.4, 0.2, 0.4)
    for query in ["cats on a mat", "banks and money", "volcano magma"]:
        hits = filled.search(query, mode="m3", k=5, weights=weights, with_mode_scores=True)
        assert len(hits) >= 3
        pairs = tiny_encoder.compute_score([(query, h.text) for h in hits], weights=weights)
        expected = combine_scores(pairs.dense, pairs.sparse, pairs.colbert, weights=weights)
        got = np.array([h.score for h in hits])
        np.testing.assert_allclose(got, pairs.colbert_sparse_dense, atol=1e-4)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose([h.mode_scores["dense"] for h in hits], pairs.dense, atol=1e-4)
        np.testing.assert_allclose([h.mode_scores["sparse"] for h in hits], pairs.sparse, atol=1e-4)
        np.testing.assert_allclose([h.mode_scores["colbert"] for h in hits], pairs.colbert, atol=1e-4)


MODEL_WEIGHTS = (0.1, 0.6, 0.3)


def _m3_expected(hits, weights) -> np.ndarray:
    """combine_scores of each hit's own dense/sparse/ColBERT scores (from its stored vectors)."""
    m = [h.mode_scores for h in hits]
    return combine_scores(np.array([x["dense"] for x in m]), np.array([x["sparse"] for x in m]),
                          np.array([x["colbert"] for x in m]), weights=weights)  # fmt: skip


def test_m3_default_weights_are_the_encoders_model_weights(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder(default_weights=MODEL_WEIGHTS))
    assert store.weights == MODEL_WEIGHTS and "weights=(0.1, 0.6, 0.3)" in repr(store)
    store.add_texts([t for t, _ in DOCS], ids=IDS)
    for query in ["cats on a mat", "banks and money", "volcano magma rises"]:
        hits = store.search(query, mode="m3", k=len(DOCS), with_mode_scores=True)
        assert len(hits) >= 3
        got = np.array([h.score for h in hits])
        np.testing.assert_allclose(got, _m3_expected(hits, MODEL_WEIGHTS), atol=1e-4)
        # The same as passing the model's weights, and not the old hard-coded default.
        explicit = store.search(query, mode="m3", k=len(DOCS), weights=MODEL_WEIGHTS)
        assert [h.id for h in explicit] == [h.id for h in hits]
        np.testing.assert_allclose([h.score for h in explicit], got, atol=1e-6)
        old = store.search(query, mode="m3", k=len(DOCS), weights=DEFAULT_WEIGHTS, with_mode_scores=True)
        np.testing.assert_allclose([h.score for h in old], _m3_expected(old, DEFAULT_WEIGHTS), atol=1e-4)
        assert not np.allclose([h.score for h in old], _m3_expected(old, MODEL_WEIGHTS), atol=1e-3)
        # search_encoded takes the same default.
        encoded = store.search_encoded(store.encoder.encode_queries([query]), mode="m3", k=len(DOCS))
        np.testing.assert_allclose([h.score for h in encoded], got, atol=1e-6)
    store.close()


def test_explicit_weights_override_the_models(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder(default_weights=MODEL_WEIGHTS), weights=[1, 0, 0])
    assert store.weights == (1.0, 0.0, 0.0)
    store.add_texts([t for t, _ in DOCS], ids=IDS)
    hits = store.search("cats on a mat", mode="m3", k=5, with_mode_scores=True)
    np.testing.assert_allclose([h.score for h in hits], [h.mode_scores["dense"] for h in hits], atol=1e-4)
    # A search's own weights override the store's.
    hits = store.search("cats on a mat", mode="m3", k=5, weights=(0.0, 0.0, 1.0), with_mode_scores=True)
    np.testing.assert_allclose([h.score for h in hits], [h.mode_scores["colbert"] for h in hits], atol=1e-4)
    store.close()


def test_default_weights_without_a_model_config(tiny_encoder):
    from m3_rag.cache import CachedEncoder

    assert M3Store(FakeEncoder(), location=":memory:").weights == DEFAULT_WEIGHTS  # no config: the fallback
    model = tuple(tiny_encoder.config.default_weights)
    assert M3Store(tiny_encoder, location=":memory:").weights == model
    assert M3Store(CachedEncoder(tiny_encoder), location=":memory:").weights == model


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, -0.5, 1.0), (0, 0, 0), (1.0, float("nan"), 1.0), "abc", 1.0])
def test_bad_constructor_weights_raise(bad):
    with pytest.raises(ValueError, match=r"weights= is .*expected three finite non-negative numbers.*Fix:"):
        M3Store(FakeEncoder(), location=":memory:", weights=bad)
    with pytest.raises(ValueError, match=r"encoder.config.default_weights is"):
        M3Store(FakeEncoder(default_weights=bad if not isinstance(bad, (str, float)) else (bad,)), location=":memory:")


def test_hybrid_rerank_matches_exhaustive_python_maxsim(filled, tiny_encoder):
    query, k1, k2 = "animals in the park", 3, 4
    dense_ids = [h.id for h in filled.search(query, mode="dense", k=k1)]
    sparse_ids = [h.id for h in filled.search(query, mode="sparse", k=k2)]
    union = list(dict.fromkeys(dense_ids + sparse_ids))
    stored = {p.id: p.colbert for p in filled.get(union, with_vectors=True)}
    q = tiny_encoder.encode_queries([query]).colbert[0]
    python_scores = {i: maxsim_score(q, stored[i]) for i in union}
    expected = sorted(union, key=lambda i: -python_scores[i])
    hits = filled.search(query, mode="hybrid+rerank", k=len(DOCS), prefetch_k=(k1, k2))
    assert [h.id for h in hits] == expected
    for h in hits:
        assert h.score == pytest.approx(python_scores[h.id], abs=1e-4)


def test_hybrid_is_rrf_of_dense_and_sparse(filled):
    query, k1, rrf_k = "science energy qubits", 5, 7
    dense = [h.id for h in filled.search(query, mode="dense", k=k1)]
    sparse = [h.id for h in filled.search(query, mode="sparse", k=k1)]
    expected: dict = {}
    for ranking in (dense, sparse):
        for rank, i in enumerate(ranking):
            expected[i] = expected.get(i, 0.0) + 1.0 / (rrf_k + rank)
    hits = filled.search(query, mode="hybrid", k=len(DOCS), prefetch_k=k1, rrf_k=rrf_k)
    assert {h.id for h in hits} == set(expected)
    for h in hits:
        assert h.score == pytest.approx(expected[h.id], rel=1e-5)


def test_search_on_empty_store_returns_nothing(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder())
    for mode in ("dense", "sparse", "hybrid", "hybrid+rerank", "m3"):
        assert store.search("anything", mode=mode) == []
    store.close()


# ----------------------------------------------------------------------------------- filters
FILTER_CASES = [
    (Condition("tag", "eq", "science"), {"doc-three", "5", "7"}),
    (Condition("year", "eq", 2019), {"1"}),
    (Condition("rating", "eq", 4.5), {"1"}),
    (Condition("tag", "ne", "science"), {"1", "2", str(uuid.UUID(int=4)), "six", "eight"}),
    (Condition("year", "lt", 2019), {"5", "7"}),
    (Condition("year", "lte", 2019), {"1", "5", "7"}),
    (Condition("year", "gt", 2022), {"six", "eight"}),
    (Condition("year", "gte", 2022), {str(uuid.UUID(int=4)), "six", "eight"}),
    (Condition("tag", "in", ["food", "finance"]), {str(uuid.UUID(int=4)), "six", "eight"}),
    (Condition("year", "in", [2017, 2018]), {"5", "7"}),
    (Condition("tag", "nin", ["pets", "science"]), {str(uuid.UUID(int=4)), "six", "eight"}),
    (Condition("$text", "text", "magma"), {"7"}),
    (Condition("rating", "is_empty", True), {"5", "six", "eight"}),
    (Condition("tags", "is_empty", True), {"doc-three", str(uuid.UUID(int=4)), "5", "six", "7", "eight"}),
    (Condition("rating", "is_empty", False), {"1", "2", "doc-three", str(uuid.UUID(int=4)), "7"}),
    (Condition("tags", "eq", "dog"), {"2"}),
    (Condition("$doc_id", "eq", "d4"), {"7", "eight"}),
    (And([Condition("tag", "eq", "science"), Condition("year", "gte", 2018)]), {"doc-three", "5"}),
    (Or([Condition("tag", "eq", "food"), Condition("year", "lt", 2018)]), {"six", "7"}),
    (Not(Condition("tag", "in", ["pets", "science"])), {str(uuid.UUID(int=4)), "six", "eight"}),
    (And([Or([Condition("tag", "eq", "pets"), Condition("tag", "eq", "finance")]),
          Not(Condition("year", "gte", 2022))]), {"1", "2"}),  # fmt: skip
    ({"tag": "science", "year": {"$gt": 2017, "$lt": 2021}}, {"5"}),
    ({"$or": [{"tag": "food"}, {"rating": {"$gte": 5}}]}, {"doc-three", "six"}),
    ({"$not": {"tag": {"$nin": ["pets"]}}}, {"1", "2"}),
]


@pytest.mark.parametrize("flt,expected", FILTER_CASES, ids=[str(i) for i in range(len(FILTER_CASES))])
def test_filter_operators(filled, flt, expected):
    assert filled.count(flt) == len(expected)
    hits = filled.search("the", mode="dense", k=len(DOCS), filter=flt)
    assert {str(h.id) for h in hits} == expected


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid", "hybrid+rerank", "m3"])
def test_filter_applies_to_every_mode(kind, tmp_path, mode):
    # The hash encoder: shared words always overlap in sparse (the tiny model's sparse is very sparse).
    filled = open_store(kind, tmp_path, FakeEncoder())
    filled.add_texts([t for t, _ in DOCS], ids=IDS, metadatas=[m for _, m in DOCS])
    query, n = "the cat sat in the park after the stock market fell", len(DOCS)
    unfiltered = filled.search(query, mode=mode, k=n, prefetch_k=n)
    hits = filled.search(query, mode=mode, k=n, prefetch_k=n, filter={"tag": {"$ne": "finance"}})
    expected = [h.id for h in unfiltered if h.metadata["tag"] != "finance"]
    assert expected and len(expected) < len(unfiltered)
    if mode == "hybrid":  # RRF ranks shift once points are filtered out; the set may not
        assert {h.id for h in hits} == set(expected)
    else:  # every point's score is its own: the filtered list is the unfiltered one minus finance
        assert [h.id for h in hits] == expected
    filled.close()


def test_unknown_operators_raise():
    with pytest.raises(ValueError, match="unknown filter operator '\\$regex' on key 'tag'"):
        parse_filter({"tag": {"$regex": "sci.*"}})
    with pytest.raises(ValueError, match="unknown filter operator '\\$nor'"):
        parse_filter({"$nor": [{"tag": "a"}]})
    with pytest.raises(ValueError, match="unknown filter operator 'like'"):
        Condition("tag", "like", "a")
    with pytest.raises(ValueError, match="unknown payload field '\\$vector'"):
        Condition("$vector", "eq", 1)
    with pytest.raises(ValueError, match="all-str or all-int"):
        Condition("tag", "in", ["a", 1])
    with pytest.raises(ValueError, match="ambiguous"):
        And([])
    with pytest.raises(ValueError, match="ambiguous"):
        parse_filter({})
    with pytest.raises(TypeError, match="filter must be"):
        M3Store(FakeEncoder(), location=":memory:").count(filter="tag == a")


# ------------------------------------------------------------------------------- maintenance
def test_delete_get_count_clear(filled):
    assert filled.count() == len(DOCS)
    filled.delete([1, "six", "not-there"])
    assert filled.count() == len(DOCS) - 2
    assert filled.get([1, "six"]) == []
    filled.delete_by_doc_id("d2")
    assert filled.count() == len(DOCS) - 4
    assert filled.count({"$doc_id": "d2"}) == 0
    assert {h.id for h in filled.search(DOCS[2][0], mode="dense", k=10)}.isdisjoint({"doc-three", IDS[3]})
    filled.clear()
    assert filled.count() == 0
    # The schema stays: the store takes new points.
    filled.add_texts(["after clear"], ids=["z"])
    assert [p.text for p in filled.get(["z"])] == ["after clear"]


def _science_ids() -> set[str]:
    return {str(i) for i, (_, m) in zip(IDS, DOCS) if m["tag"] == "science"}


def test_scroll_pages_through_the_points_a_filter_matches(filled):
    seen, offset, pages = [], None, 0
    while True:
        page, offset = filled.scroll({"tag": "science"}, limit=2, offset=offset)
        assert 1 <= len(page) <= 2
        seen += page
        pages += 1
        if offset is None:
            break
    assert pages == 2 and {str(p.id) for p in seen} == _science_ids() and len(seen) == 3
    (three,) = [p for p in seen if p.id == "doc-three"]
    assert (three.text, three.metadata, three.doc_id) == (DOCS[2][0], DOCS[2][1], "d2")
    assert three.dense is None and three.colbert is None  # vectors only when asked
    assert filled.scroll(Condition("tag", "eq", "nothing")) == ([], None)


def test_scroll_offsets_and_vectors(filled):
    first, next_offset = filled.scroll(limit=3)
    second, _ = filled.scroll(limit=3, offset=next_offset)
    assert len(first) == len(second) == 3 and {p.id for p in first}.isdisjoint(p.id for p in second)
    # A caller's id is an offset too: the page starts at that point.
    assert filled.scroll(limit=2, offset=first[1].id)[0][0].id == first[1].id
    everything, none_left = filled.scroll(limit=None, with_vectors=True)
    assert none_left is None and sorted(map(str, (p.id for p in everything))) == sorted(map(str, IDS))
    assert all(p.dense is not None and p.sparse is not None and p.colbert is not None for p in everything)
    assert [p.id for p in filled.scroll(limit=None, offset=next_offset)[0]] == [p.id for p in everything[3:]]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            filled.scroll(limit=bad)


def test_scroll_without_limit_fetches_every_page(filled, monkeypatch):
    monkeypatch.setattr("m3_rag.store.core.SCROLL_PAGE", 3)  # 8 points: three requests
    calls = []
    real = filled.backend.scroll
    monkeypatch.setattr(filled.backend, "scroll", lambda *a: calls.append(a[2]) or real(*a))
    points, next_offset = filled.scroll(limit=None)
    assert next_offset is None and len(calls) == 3 and calls[0] is None
    assert sorted(map(str, (p.id for p in points))) == sorted(map(str, IDS))


def test_delete_where_deletes_what_the_filter_matches(filled):
    filled.delete_where({"year": {"$lt": 2020}})  # 2019, 2018, 2017
    assert filled.count() == len(DOCS) - 3 and filled.count({"year": {"$lt": 2020}}) == 0
    filled.delete_where(And([Condition("tag", "eq", "finance"), Condition("year", "gte", 2024)]))
    assert filled.get(["eight", 7]) == [] and filled.count() == len(DOCS) - 4
    filled.delete_where({"tag": "no such tag"})  # matches nothing: deletes nothing
    assert filled.count() == len(DOCS) - 4


@pytest.mark.parametrize("nothing", [None, {}])
def test_delete_where_refuses_a_filter_that_would_delete_everything(filled, nothing):
    with pytest.raises(ValueError, match=r"call clear\(\)"):
        filled.delete_where(nothing)
    with pytest.raises(TypeError, match="filter must be"):
        filled.delete_where("tag == pets")
    assert filled.count() == len(DOCS)


def test_get_with_vectors_returns_all_three(filled, tiny_encoder):
    (p,) = filled.get(["doc-three"], with_vectors=True)
    enc = tiny_encoder.encode_documents([DOCS[2][0]])
    np.testing.assert_allclose(p.dense, enc.dense[0], atol=1e-5)
    np.testing.assert_array_equal(p.sparse.indices, enc.sparse[0].indices)
    np.testing.assert_allclose(p.sparse.values, enc.sparse[0].values, atol=1e-6)
    np.testing.assert_allclose(p.colbert, enc.colbert[0], atol=2e-3)  # float16 storage


def test_long_colbert_is_pooled_to_the_row_limit_before_write(kind, tmp_path):
    enc = FakeEncoder(dense_dim=8, colbert_dim=1024)
    store = open_store(kind, tmp_path, enc, colbert_pool_factor=1, colbert_datatype="float32")
    base = enc.encode_documents(["long doc", "short doc"])
    rng = np.random.default_rng(0)
    long = rng.normal(size=(1100, 1024)).astype(np.float32)
    long /= np.linalg.norm(long, axis=1, keepdims=True)
    encoded = M3Output(base.dense, base.sparse, [long, base.colbert[1]], base.token_counts, base.truncated)
    store.add_encoded(["long doc", "short doc"], encoded, ids=["l", "s"])
    stored = {p.id: p.colbert for p in store.get(["l", "s"], with_vectors=True)}
    assert max_colbert_rows(1024) == 1023
    assert stored["l"].shape == (1023, 1024) and stored["l"].size < 2**20
    # 77 merges: most rows are single tokens kept exactly, the rest means of a few tokens.
    kept = (np.abs(stored["l"][:, None, :] - long[None, :, :]).max(axis=2) < 1e-6).any(axis=1)
    assert 1023 - 77 <= kept.sum() < 1023
    np.testing.assert_allclose(stored["s"], base.colbert[1], atol=1e-6)
    store.close()


# ------------------------------------------------------------------------------------- Edge
def test_edge_reopen_finds_the_same_points(tmp_path, tiny_encoder):
    store = M3Store(tiny_encoder, path=tmp_path / "idx")
    store.add_texts([t for t, _ in DOCS], ids=IDS, metadatas=[m for _, m in DOCS])
    before = [(h.id, round(h.score, 5)) for h in store.search("cats and dogs", k=4)]
    store.close()
    again = M3Store(tiny_encoder, path=tmp_path / "idx")
    assert again.count() == len(DOCS)
    assert [p.id for p in again.get(IDS)] == IDS
    assert [(h.id, round(h.score, 5)) for h in again.search("cats and dogs", k=4)] == before
    again.close()


def test_edge_second_opener_gets_a_clear_error(tmp_path):
    first = M3Store(FakeEncoder(), path=tmp_path / "idx")
    with pytest.raises(StoreLockedError, match="already open"):
        M3Store(FakeEncoder(), path=tmp_path / "idx")
    first.add_texts(["still works"], ids=["w"])
    assert first.count() == 1
    first.close()
    M3Store(FakeEncoder(), path=tmp_path / "idx").close()  # free again once closed


def test_edge_collections_are_separate_folders(tmp_path):
    a = M3Store(FakeEncoder(), path=tmp_path, collection="a")
    b = M3Store(FakeEncoder(dense_dim=8), path=tmp_path, collection="b")
    a.add_texts(["x"], ids=[1])
    assert (a.count(), b.count()) == (1, 0)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    a.close()
    b.close()


def test_skip_existing_resumes_without_re_encoding(kind, tmp_path):
    enc = FakeEncoder()
    store = open_store(kind, tmp_path, enc)
    texts = [f"text number {i}" for i in range(10)]
    store.add_texts(texts[:6], ids=list(range(6)))
    enc.texts_encoded = 0
    ids = store.add_texts(texts, ids=list(range(10)), batch_size=4, skip_existing=True)
    assert ids == list(range(10))
    assert enc.texts_encoded == 4 and store.count() == 10
    with pytest.raises(ValueError, match="needs ids="):
        store.add_texts(texts, skip_existing=True)
    store.close()


def test_streaming_input_from_a_generator(kind, tmp_path):
    store = open_store(kind, tmp_path, FakeEncoder())
    ids = store.add_texts((f"streamed {i}" for i in range(7)), ids=(f"s{i}" for i in range(7)), batch_size=3)
    assert ids == [f"s{i}" for i in range(7)] and store.count() == 7
    with pytest.raises(ValueError, match="ids ran out"):
        store.add_texts((f"t {i}" for i in range(5)), ids=iter(["a", "b"]), batch_size=10)
    assert store.count() == 7  # the short batch raised before its write
    store.close()


def test_edge_refuses_boolean_filters_it_cannot_match(tmp_path, tiny_encoder):
    store = open_store("edge", tmp_path, tiny_encoder)
    store.add_texts(["a flagged text"], ids=["x"], metadatas=[{"flag": True}])
    for flt in ({"flag": True}, {"flag": {"$ne": False}}):
        with pytest.raises(ValueError, match="boolean"):
            store.search("flagged", mode="dense", filter=flt)
    assert store.count() == 1
    store.close()
