"""Hostile and faulty input to the store: confined collection names, filters that could match
everything, numbers compared as numbers, values that cannot round-trip, non-finite vectors,
local-mode concurrency, a damaged index, and a full disk. Each class on both backends where
it applies; the security items also through the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from m3_rag.cli import run
from m3_rag.store import And, Condition, M3Store, Not, Or, parse_filter
from m3_rag.store.backends.base import StorageFullError, refuse_vacuous_filter
from m3_rag.store.backends.edge import DISK_MARGIN_BYTES
from m3_rag.store.filters import MAX_FILTER_DEPTH
from m3_rag.types import M3Output, SparseVector
from test_store_helpers import FakeEncoder

BACKENDS = ["edge", "memory"]


def open_store(kind: str, tmp_path: Path, encoder=None, **kw) -> M3Store:
    encoder = encoder or FakeEncoder()
    if kind == "edge":
        return M3Store(encoder, path=tmp_path / "index", **kw)
    return M3Store(encoder, client=QdrantClient(":memory:"), **kw)


@pytest.fixture(params=BACKENDS)
def kind(request) -> str:
    return request.param


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------ 1. collection names
ESCAPING_NAMES = ["../x", "../../etc/m3", "/tmp/m3-abs-collection", "a/../../b", "a/b", "..", ".", "a\\b", "x\0y"]
BAD_NAMES = ["", "a" * 256, " lead", "trail ", "tab\there", "new\nline", "star*", "q?", "lt<", "pipe|", 'quo"te', "a\ud800"]


@pytest.mark.parametrize("name", ESCAPING_NAMES + BAD_NAMES)
def test_a_bad_collection_name_is_refused_before_any_file_is_touched(tmp_path, name):
    before = files_under(tmp_path)
    with pytest.raises(ValueError, match="collection name"):
        M3Store(FakeEncoder(), path=tmp_path / "store", collection=name)
    assert files_under(tmp_path) == before  # not even the store folder
    assert not Path("/tmp/m3-abs-collection").exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a" * 256, "star*", "x\0y", "", "a\ud800"])
def test_the_server_path_applies_qdrant_s_name_rule(name):
    client = QdrantClient(":memory:")
    with pytest.raises(ValueError, match="collection name"):
        M3Store(FakeEncoder(), client=client, collection=name)
    assert client.get_collections().collections == []


@pytest.mark.parametrize("name", [None, 3, b"m3", ["m3"]])
def test_a_collection_that_is_not_a_str_is_a_type_error(tmp_path, name):
    with pytest.raises(TypeError, match="collection must be a str"):
        M3Store(FakeEncoder(), path=tmp_path / "store", collection=name)


def test_plain_names_work_on_both_backends(kind, tmp_path):
    for name in ("docs", "my_docs-2.v1", "A0"):
        store = open_store(kind, tmp_path, collection=name)
        store.add_texts(["alpha"], ids=[1])
        assert store.count() == 1
        store.close()
    if kind == "edge":
        assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["A0", "docs", "my_docs-2.v1"]


def test_a_collection_folder_that_links_outside_the_store_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "m3").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the store path"):
        M3Store(FakeEncoder(), path=tmp_path / "store")
    assert list(outside.iterdir()) == []


def test_a_store_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        M3Store(FakeEncoder(), path=tmp_path / "file")


@pytest.mark.parametrize("name", ["../escaped", "/tmp/m3-cli-abs"])
def test_the_cli_refuses_an_escaping_collection(tmp_path, tiny_checkpoint, capsys, name):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Qdrant Edge runs in-process.", encoding="utf-8")
    code = run(["index", str(docs), "--model", str(tiny_checkpoint), "--device", "cpu", "--no-progress",
                "--path", str(tmp_path / "store"), "--collection", name])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "collection name" in err, err
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/m3-cli-abs").exists()
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------- 3. match-all filters
NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "lte", "gt", "gte"])
@pytest.mark.parametrize("value", NON_FINITE)
def test_every_operator_refuses_nan_and_inf(op, value):
    with pytest.raises(ValueError, match="NaN or infinite"):
        Condition("year", op, value)
    with pytest.raises(ValueError, match="NaN or infinite"):
        parse_filter({"year": {f"${op}": value}})


@pytest.mark.parametrize("op", ["in", "nin"])
@pytest.mark.parametrize("value", [[], (), [math.nan], [1, math.inf], [2**70], ["a", 1]])
def test_in_and_nin_refuse_empty_and_unmatchable_lists(op, value):
    with pytest.raises(ValueError, match="non-empty list|compares exactly"):
        Condition("year", op, value)


@pytest.mark.parametrize("op", ["eq", "ne", "lt", "gte"])
@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**70])
def test_integers_beyond_64_bits_are_refused_not_overflowed(op, value):
    with pytest.raises(ValueError, match="64-bit"):
        Condition("n", op, value)


@pytest.mark.parametrize("spec", [{"a\ud800": 1}, {"a": "x\udfffy"}, {"a": {"$in": ["ok", "\ud83d"]}}])
def test_strings_that_are_not_unicode_are_refused(spec):
    with pytest.raises(ValueError, match="surrogate"):
        parse_filter(spec)


@pytest.mark.parametrize("text", ["", "   ", "!!!", "..."])
def test_a_text_match_without_a_word_is_refused(text):
    with pytest.raises(ValueError, match="word character"):
        Condition("$text", "text", text)


@pytest.mark.parametrize("wrap", ["$not", "$and", "$or"])
def test_filter_depth_is_bounded_with_a_clear_error(wrap):
    spec: dict = {"a": 1}
    for _ in range(200):
        spec = {wrap: spec} if wrap == "$not" else {wrap: [spec]}
    with pytest.raises(ValueError, match=f"at most {MAX_FILTER_DEPTH}"):
        parse_filter(spec)
    node = Condition("a", "eq", 1)
    for _ in range(MAX_FILTER_DEPTH):
        node = Not(node)
    with pytest.raises(ValueError, match=f"at most {MAX_FILTER_DEPTH}"):
        And([node])
    Or([node.item])  # one level less is fine


MATCH_ALL_ATTEMPTS = [
    {"year": {"$lt": math.nan}},
    {"year": {"$gte": -math.inf}},
    {"year": {"$nin": []}},
    {"year": {"$in": []}},
    {"year": math.nan},
    {"$not": {"year": {"$eq": math.nan}}},
    {"$or": []},
    {"$and": []},
    {},
    {"year": {}},
]


@pytest.mark.parametrize("spec", MATCH_ALL_ATTEMPTS, ids=repr)
def test_delete_where_never_empties_the_store_from_a_bad_filter(kind, tmp_path, spec):
    store = open_store(kind, tmp_path)
    store.add_texts(["a", "b", "c"], ids=[1, 2, 3], metadatas=[{"year": 2020}, {"year": 2021}, {}])
    with pytest.raises((ValueError, TypeError)):
        store.delete_where(spec)
    assert store.count() == 3
    store.close()


def test_a_filter_that_matches_everything_by_its_own_logic_still_deletes(kind, tmp_path):
    store = open_store(kind, tmp_path)
    store.add_texts(["a", "b"], ids=[1, 2], metadatas=[{"year": 2020}, {}])
    store.delete_where({"$or": [{"year": 2020}, {"year": {"$ne": 2020}}]})
    assert store.count() == 0
    store.close()


@pytest.mark.parametrize("make", [lambda: models.Filter(), lambda: models.Filter(must=[models.Filter()]),
                                  lambda: models.Filter(should=[models.FieldCondition(key="a")])])  # fmt: skip
def test_a_vacuous_translated_filter_is_refused(make):
    with pytest.raises(ValueError, match="matches every point|tests nothing"):
        refuse_vacuous_filter(make(), "delete_where")


def test_a_vacuous_edge_filter_is_refused():
    import qdrant_edge as qe

    for flt in (qe.Filter(), qe.Filter(must_not=[qe.Filter()])):
        with pytest.raises(ValueError, match="matches every point"):
            refuse_vacuous_filter(flt, "delete_where")
    refuse_vacuous_filter(qe.Filter(must=[qe.FieldCondition("a", match=qe.MatchValue(1))]), "delete_where")


@pytest.mark.parametrize("text", ['{"year": {"$lt": NaN}}', '{"year": {"$nin": []}}', '{"year": Infinity}'])
def test_the_cli_delete_refuses_match_all_filters(tmp_path, tiny_checkpoint, tiny_encoder, capsys, text):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Qdrant Edge runs in-process.", encoding="utf-8")
    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--path", str(tmp_path / "index")]
    assert run(["index", str(docs), "--no-progress", *common]) == 0
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        before = store.count()
    capsys.readouterr()
    code = run(["delete", "--filter", text, *common])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("m3-rag: error:") and err.count("\n") == 1, err
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        assert store.count() == before > 0


# --------------------------------------------------------------------- 6. numbers as numbers
def test_numbers_compare_as_numbers(kind, tmp_path):
    store = open_store(kind, tmp_path)
    metas = [{"score": 1.0}, {"score": 2}, {"score": 3.5}, {"score": 2**60}, {"score": [1, 7]}, {}]
    store.add_texts([f"t{i}" for i in range(6)], ids=list(range(6)), metadatas=metas)

    def ids(spec) -> list:
        return sorted(p.id for p in store.scroll(spec, limit=None)[0])

    assert ids({"score": 1}) == [0, 4]  # int filter, stored float 1.0 and array element 1
    assert ids({"score": 2.0}) == [1]  # float filter, stored int
    assert ids({"score": {"$in": [1, 2]}}) == [0, 1, 4]
    assert ids({"score": {"$nin": [1, 2]}}) == [2, 3, 5]
    assert ids({"score": {"$ne": 1}}) == [1, 2, 3, 5]
    assert ids({"score": 2**60}) == [3] and ids({"score": 2**60 + 1}) == []  # exact beyond 2**53
    assert ids({"score": {"$gte": 2, "$lt": 3.5}}) == [1, 4]  # [1, 7]: each bound matches some element, as in Qdrant
    assert store.count({"score": 3.5}) == 1
    store.close()


# --------------------------------------------------------------- 7. non-finite vectors refused
def nan_output(encoder: FakeEncoder, texts: list[str], part: str, row: int) -> M3Output:
    out = encoder.encode_documents(texts)
    if part == "dense":
        out.dense[row, 0] = np.nan
    elif part == "sparse":
        values = out.sparse[row].values.copy()
        values[0] = np.inf
        out.sparse[row] = SparseVector(out.sparse[row].indices, values)
    else:
        out.colbert[row][0, 0] = -np.inf
    return out


@pytest.mark.parametrize("part", ["dense", "sparse", "colbert"])
def test_non_finite_vectors_are_refused_before_any_write(kind, tmp_path, part):
    store = open_store(kind, tmp_path)
    texts = ["alpha beta", "gamma delta", "epsilon"]
    with pytest.raises(ValueError, match=f"text 1's {part} vectors contain NaN or inf"):
        store.add_encoded(texts, nan_output(FakeEncoder(), texts, part, 1), ids=[1, 2, 3])
    assert store.count() == 0
    store.close()


class BrokenHeads(FakeEncoder):
    """An encoder whose ColBERT head gives NaN for one text (a broken head file)."""

    def encode_documents(self, texts, outputs=("dense", "sparse", "colbert"), show_progress=False):
        return nan_output(FakeEncoder(), list(texts), "colbert", len(texts) - 1)

    def encode_queries(self, texts, outputs=("dense", "sparse", "colbert"), show_progress=False):
        out = FakeEncoder().encode_queries(texts, outputs)
        if out.colbert is not None:
            out.colbert[0][:] = np.nan
        return out


def test_a_broken_encoder_writes_nothing_and_cannot_query(kind, tmp_path):
    store = open_store(kind, tmp_path, encoder=BrokenHeads())
    with pytest.raises(ValueError, match="colbert vectors contain NaN or inf"):
        store.add_texts(["one", "two"], ids=[1, 2], batch_size=8)
    assert store.count() == 0
    with pytest.raises(ValueError, match="query's colbert vectors contain NaN"):
        store.search("one", mode="hybrid+rerank")
    store.close()


# ---------------------------------------------------------- 10/12. values that cannot round-trip
class CountingEncoder(FakeEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode_documents(self, texts, outputs=("dense", "sparse", "colbert"), show_progress=False):
        self.calls += 1
        return super().encode_documents(texts, outputs)


BAD_ROWS = [
    ({"metadatas": [{1: "a", "1": "b"}]}, TypeError, "expected str keys"),
    ({"metadatas": [{2: "a"}]}, TypeError, "expected str keys"),
    ({"metadatas": [{"a.b": 5}]}, ValueError, "cannot be filtered"),
    ({"metadatas": [{"x": {"a.b": 5}}]}, ValueError, "cannot be filtered"),
    ({"metadatas": [{"x[0]": 5}]}, ValueError, "cannot be filtered"),
    ({"metadatas": [{"$text": 5}]}, ValueError, "cannot be filtered"),
    ({"metadatas": [{"": 5}]}, ValueError, "cannot be filtered"),
    ({"metadatas": [{"n": 2**64}]}, ValueError, "64-bit"),
    ({"metadatas": [{"n": [1, -(2**63) - 1]}]}, ValueError, "64-bit"),
    ({"metadatas": [{"n": math.nan}]}, TypeError, "not JSON-serialisable"),
    ({"metadatas": [{"k\ud800": 1}]}, ValueError, "surrogate"),
    ({"metadatas": [{"k": ["x\udc00"]}]}, ValueError, "surrogate"),
    ({"extras": [{3: "x"}]}, TypeError, "expected str keys"),
    ({"doc_ids": ["d\ud800"]}, ValueError, "surrogate"),
    ({"ids": ["id\ud800"]}, ValueError, "surrogate"),
    ({"texts": ["bad \ud800 text"]}, ValueError, "surrogate"),
]


@pytest.mark.parametrize("override,exc,needle", BAD_ROWS, ids=lambda v: repr(v)[:40])
def test_values_that_cannot_round_trip_are_refused_before_encoding(kind, tmp_path, override, exc, needle):
    encoder = CountingEncoder()
    store = open_store(kind, tmp_path, encoder=encoder)
    args = {"texts": ["fine text"], "ids": ["a"], **override}
    with pytest.raises(exc, match=needle):
        store.add_texts(**args)
    assert encoder.calls == 0 and store.count() == 0
    store.close()


def test_edge_values_within_range_round_trip(kind, tmp_path):
    store = open_store(kind, tmp_path)
    meta = {"big": 2**63 - 1, "small": -(2**63), "nested": {"a": {"b": [1, 2.5, "é"]}}}
    store.add_texts(["x"], ids=["a"], metadatas=[meta])
    assert store.get(["a"])[0].metadata == meta
    assert store.count({"nested.a.b": 2.5}) == 1 and store.count({"big": 2**63 - 1}) == 1
    store.close()


def test_a_huge_bad_item_is_not_echoed_in_the_error(kind, tmp_path):
    store = open_store(kind, tmp_path)
    for bad in ([b"x" * 2**20], ["ok", 7]):
        with pytest.raises(TypeError) as info:
            store.add_texts(bad)
        assert len(str(info.value)) < 400 and "text must be a str" in str(info.value)
    with pytest.raises(TypeError) as info:
        store.add_texts(["ok"], ids=[b"y" * 2**20])
    assert len(str(info.value)) < 400
    store.close()


# -------------------------------------------------------------- 13. local mode under threads
def test_local_mode_is_safe_under_threads(tmp_path):
    store = open_store("memory", tmp_path)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                store.add_texts([f"thread {t} text {i} alpha"], ids=[t * 100 + i])
                store.search("alpha", mode="hybrid+rerank", k=3)
                store.count()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and store.count() == 60


# ------------------------------------------------------------------------- 12. damaged index
@pytest.mark.parametrize("content", ['{"vectors": {"dense"', "", "[1, 2]", "\xff\xfe"])
def test_a_damaged_edge_config_names_the_file(tmp_path, content):
    store = open_store("edge", tmp_path)
    store.close()
    config = tmp_path / "index" / "m3" / "edge_config.json"
    config.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=r"edge_config\.json holds .*expected the JSON object"):
        open_store("edge", tmp_path)


# ------------------------------------------------------------------------------ 4. full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 160 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all but ``leave`` bytes of the disk."""
    filler = disk / "filler"
    size = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as f:
        for _ in range(size // 2**20):
            f.write(b"\0" * 2**20)
    return filler


def test_a_full_disk_is_an_error_not_a_crash_and_keeps_acknowledged_points(small_disk):
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from m3_rag.store import M3Store
from m3_rag.store.backends.base import StorageFullError
from test_store_helpers import FakeEncoder
store = M3Store(FakeEncoder(dense_dim=64, colbert_dim=64), path={str(small_disk / 'index')!r}, colbert_pool_factor=1)
acked = 0
try:
    for batch in range(10_000):
        ids = list(range(acked, acked + 20))
        store.add_texts([("word%d " % i) * 500 for i in ids], ids=ids)
        acked += 20
except StorageFullError as exc:
    print(acked, exc, flush=True)
store.close()
"""
    fill(small_disk, DISK_MARGIN_BYTES + 40 * 2**20)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # not SIGBUS (-7)
    acked, message = done.stdout.split(" ", 1)
    assert int(acked) > 0 and "no space left" in message and "acknowledged points are kept" in message
    with pytest.raises(StorageFullError, match="reopening"):  # reopening while full: an error too
        M3Store(FakeEncoder(dense_dim=64, colbert_dim=64), path=small_disk / "index")
    (small_disk / "filler").unlink()
    with M3Store(FakeEncoder(dense_dim=64, colbert_dim=64), path=small_disk / "index") as store:
        assert store.count() == int(acked)


def test_the_cli_reports_a_full_disk_with_exit_1(small_disk, tiny_checkpoint, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"d{i}.md").write_text(f"document {i} about Qdrant " * 300, encoding="utf-8")
    fill(small_disk, DISK_MARGIN_BYTES + 2 * 2**20)
    done = subprocess.run(
        [sys.executable, "-m", "m3_rag.cli", "index", str(docs), "--model", str(tiny_checkpoint), "--device", "cpu",
         "--path", str(small_disk / "index"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.startswith("m3-rag: error: no space left") and done.stderr.count("\n") == 1, done.stderr
    assert json.dumps(done.stderr)  # one readable line
