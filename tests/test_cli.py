"""The m3-rag CLI end to end on Qdrant Edge with the tiny checkpoint: index -> search -> re-index ->
change -> delete, interrupt + resume, and the JSON output. Commands run in-process through
``m3_rag.cli.run`` (the console script's body) and are read back from stdout/stderr."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from m3_rag.cli import run
from m3_rag.store import M3Store

NOTES = {
    "bge_m3.md": "BGE-M3 produces a dense vector, sparse lexical weights and ColBERT multi-vectors from one forward pass. " * 3,
    "qdrant.md": "Qdrant stores named dense, sparse and multi-vectors per point and fuses them in one query. " * 3,
    "sub/rrf.txt": "Reciprocal rank fusion merges ranked lists by summing one over the rank plus a constant. " * 3,
}
RECORDS = [
    {"_id": "r1", "title": "Edge", "text": "Qdrant Edge runs the engine in-process.", "metadata": {"year": 2024}},
    {"_id": "r2", "text": "LangChain retrievers return Documents.", "metadata": {"year": 2019}},
]
CHUNKING = ["--chunk-tokens", "24", "--overlap-tokens", "4"]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in NOTES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")  # other suffixes are skipped, not errors
    return root


@pytest.fixture()
def cli(tiny_checkpoint: Path, tmp_path: Path, capsys):
    """Run the CLI on the tiny model and a store under tmp_path; returns (exit code, stdout, stderr)."""

    def call(*args: str, store: bool = True, model: bool = True) -> tuple[int, str, str]:
        argv = list(args)
        if model:
            argv += ["--model", str(tiny_checkpoint), "--device", "cpu"]
        if store:
            argv += ["--path", str(tmp_path / "index")]
        capsys.readouterr()
        code = run(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return call


def index_json(cli, *paths: str, extra: tuple[str, ...] = (), store: bool = True) -> dict:
    code, out, err = cli("index", *paths, *CHUNKING, "--json", "--no-progress", *extra, store=store)
    assert code == 0, err
    return json.loads(out)


def stored(tiny_encoder, tmp_path: Path) -> tuple[int, dict[str, int]]:
    """(points, chunks per doc_id) read straight from the Edge index."""
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        total = store.count()
        per_doc = {}
        for doc in {str(p) for p in (tmp_path / "docs").rglob("*") if p.is_file()}:
            n = store.count({"$doc_id": doc})
            if n:
                per_doc[doc] = n
    return total, per_doc


def test_index_search_reindex_change_delete(cli, corpus, tiny_encoder, tmp_path):
    first = index_json(cli, str(corpus))
    assert first["files"] == 4 and first["skipped_files"] == [str(corpus / "image.png")]
    total, per_doc = stored(tiny_encoder, tmp_path)
    assert first["chunks_written"] == total == first["chunks_in_index"] == sum(per_doc.values())
    assert set(per_doc) == {str(corpus / n) for n in (*NOTES, "records.jsonl")}
    assert per_doc[str(corpus / "bge_m3.md")] > 1  # 3 sentences > 24 tokens: several chunks
    assert per_doc[str(corpus / "records.jsonl")] == 2  # one chunk per short record

    # search: human output names the source, shows all three mode scores and a snippet
    code, out, err = cli("search", "reciprocal rank fusion", "-k", "3")
    assert code == 0, err
    assert out.splitlines()[0].startswith("hybrid+rerank: 3 hit(s)")
    labels = re.findall(r"\b(dense|sparse|colbert) -?\d+\.\d{4}\b", out)  # not the snippets' words
    assert [labels.count(m) for m in ("dense", "sparse", "colbert")] == [3, 3, 3]
    assert any(name in out for name in ("bge_m3.md", "qdrant.md", "rrf.txt", "records.jsonl"))

    # re-index: nothing encoded, no duplicates
    again = index_json(cli, str(corpus))
    assert again["chunks_written"] == 0 and again["files_unchanged"] == 4
    assert again["chunks_present"] == total and stored(tiny_encoder, tmp_path)[0] == total

    # a changed file is replaced (its old chunks go), the others stay untouched
    (corpus / "qdrant.md").write_text("Qdrant now holds a single short note.", encoding="utf-8")
    changed = index_json(cli, str(corpus))
    assert changed["files_replaced"] == 1 and changed["files_unchanged"] == 3 and changed["chunks_written"] == 1
    total2, per_doc2 = stored(tiny_encoder, tmp_path)
    assert per_doc2[str(corpus / "qdrant.md")] == 1
    assert total2 == total - per_doc[str(corpus / "qdrant.md")] + 1

    # other chunking settings re-chunk every file
    rechunked = index_json(cli, str(corpus), extra=("--chunk-tokens", "64"))
    assert rechunked["files_replaced"] == 4 and rechunked["chunks_written"] == rechunked["chunks_in_index"]

    # delete by source (relative path resolves to the stored absolute one) and by chunk id
    code, out, err = cli("delete", "--source", str(corpus / "bge_m3.md"))
    assert code == 0, err
    _, per_doc3 = stored(tiny_encoder, tmp_path)
    assert str(corpus / "bge_m3.md") not in per_doc3
    rec_id = f"{corpus / 'records.jsonl'}#r1:0"
    code, out, err = cli("delete", "--id", rec_id)
    assert code == 0, err
    assert stored(tiny_encoder, tmp_path)[1][str(corpus / "records.jsonl")] == 1
    # deleting what is not there says so and fails, without touching the rest
    before = stored(tiny_encoder, tmp_path)
    code, out, err = cli("delete", "--source", str(corpus / "bge_m3.md"))
    assert code == 1 and "nothing stored for source" in err and len(err.strip().splitlines()) == 1
    assert stored(tiny_encoder, tmp_path) == before
    code, out, err = cli("delete", "--all")
    assert code == 2 and "--yes" in err and stored(tiny_encoder, tmp_path) == before
    code, out, err = cli("delete", "--all", "--yes")
    assert code == 0 and stored(tiny_encoder, tmp_path)[0] == 0


def test_delete_by_metadata_filter(cli, corpus, tiny_encoder, tmp_path):
    index_json(cli, str(corpus))
    total, _ = stored(tiny_encoder, tmp_path)
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        matching = store.count({"file": "qdrant.md"})
    assert 1 <= matching < total
    code, out, err = cli("delete", "--filter", '{"file": "qdrant.md"}')
    assert code == 0, err
    assert f"deleted {matching} chunk(s); {total - matching} left" in out
    after, per_doc = stored(tiny_encoder, tmp_path)
    assert after == total - matching and str(corpus / "qdrant.md") not in per_doc
    # a filter that matches nothing says so and fails; one that matches everything is refused
    for args, exit_code, words in [
        (("--filter", '{"file": "qdrant.md"}'), 1, "nothing stored for filter"),
        (("--filter", "{}"), 2, "--all --yes"),
        (("-f", '{"year": {"$between": 1}}'), 2, "unknown filter operator"),
        (("--filter", "{year"), 2, "not valid JSON"),
    ]:
        code, out, err = cli("delete", *args)
        assert code == exit_code and words in err and len(err.strip().splitlines()) == 1, err
    assert stored(tiny_encoder, tmp_path)[0] == after


def test_search_json_filter_and_modes(cli, corpus):
    index_json(cli, str(corpus))
    for mode in ("dense", "sparse", "hybrid", "hybrid+rerank", "m3"):
        code, out, err = cli("search", "Qdrant Edge engine", "--mode", mode, "-k", "4", "--json")
        assert code == 0, err
        payload = json.loads(out)
        assert payload["mode"] == mode and len(payload["results"]) <= 4
        for hit in payload["results"]:
            assert set(hit["mode_scores"]) == {"dense", "sparse", "colbert"}
            assert hit["doc_id"] == hit["source"] and Path(hit["source"]).is_file()
    code, out, err = cli("search", "Qdrant Edge engine", "--mode", "dense", "-k", "10", "--json",
                         "--filter", '{"year": {"$gte": 2020}}')  # fmt: skip
    assert code == 0, err
    hits = json.loads(out)["results"]
    assert [h["metadata"]["record_id"] for h in hits] == ["r1"]
    assert hits[0]["metadata"]["title"] == "Edge" and hits[0]["text"].startswith("Edge\n\nQdrant Edge")
    code, out, err = cli("search", "anything", "--mode", "dense", "--json", "--filter", '{"file": "qdrant.md"}')
    assert {Path(h["source"]).name for h in json.loads(out)["results"]} == {"qdrant.md"}


def test_search_warns_when_the_model_differs_from_the_index(cli, corpus, tiny_checkpoint, tmp_path):
    index_json(cli, str(corpus))
    other = tmp_path / "same-model-elsewhere"
    shutil.copytree(tiny_checkpoint, other)
    code, out, err = cli("search", "Qdrant", "--model", str(other), "--device", "cpu", model=False)
    assert code == 0 and "warning: these chunks were indexed with" in err


def test_interrupted_index_resumes_without_duplicates_or_re_encoding(cli, corpus, tiny_encoder, tmp_path, monkeypatch):
    from m3_rag.encoder import M3Encoder

    full = index_json(cli, str(corpus), extra=("--path", str(tmp_path / "reference")), store=False)
    expected = full["chunks_written"]
    assert expected >= 6

    real = M3Encoder.encode_documents
    calls = {"n": 0}

    def interrupt_on_third_batch(self, texts, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(self, texts, **kwargs)

    monkeypatch.setattr(M3Encoder, "encode_documents", interrupt_on_third_batch)
    code, out, err = cli("index", str(corpus), *CHUNKING, "--batch-size", "2", "--json", "--no-progress")
    assert code == 130
    assert err.strip().splitlines() == ["m3-rag: error: interrupted; what was written is kept. Run the same command again to resume."]
    partial = json.loads(out)
    assert partial["interrupted"] and partial["chunks_written"] == 4 == stored(tiny_encoder, tmp_path)[0]

    monkeypatch.setattr(M3Encoder, "encode_documents", real)
    resumed = index_json(cli, str(corpus), extra=("--batch-size", "2"))
    assert resumed["chunks_written"] == expected - 4 and resumed["chunks_present"] == 4
    total, per_doc = stored(tiny_encoder, tmp_path)
    assert total == expected == resumed["chunks_in_index"]
    assert index_json(cli, str(corpus))["chunks_written"] == 0


def test_index_and_search_through_a_server_url(cli, corpus, monkeypatch, tmp_path):
    """--url goes through qdrant-client; its local mode on a folder stands in for a server here."""
    import qdrant_client

    seen_urls = []

    class StandInServer(qdrant_client.QdrantClient):
        def __init__(self, url=None, api_key=None, **kwargs):
            seen_urls.append(url)
            super().__init__(path=str(tmp_path / "server"))

    monkeypatch.setattr(qdrant_client, "QdrantClient", StandInServer)
    url = "http://qdrant.example:6333"
    code, out, err = cli("search", "q", "--url", url, store=False)
    assert code == 1 and err.strip() == f"m3-rag: error: no collection 'm3' on {url}. Fix: run 'm3-rag index PATH --url {url}' first."
    code, out, err = cli("index", str(corpus), *CHUNKING, "--url", url, "--json", "--no-progress", store=False)
    assert code == 0, err
    written = json.loads(out)["chunks_written"]
    assert written > 0 and json.loads(out)["chunks_in_index"] == written
    code, out, err = cli("search", "Qdrant", "--url", url, "--json", "-k", "3", store=False)
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 3
    assert set(seen_urls) == {url} and not (tmp_path / "index").exists()


def test_ctrl_c_in_a_real_process_then_resume(tiny_checkpoint, tiny_encoder, tmp_path):
    """SIGINT (what Ctrl-C sends) mid-index: exit 130 with the resume hint, no traceback; the
    same command then finishes the job with no duplicates."""
    import os
    import signal
    import subprocess
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    # ~900 one-at-a-time chunks: several seconds of runway on an idle machine (at 12 files the
    # whole index took 0.6 s and could finish before the signal arrived).
    for i in range(100):
        (docs / f"n{i:03d}.md").write_text(f"Note {i}. " + "Dense sparse and ColBERT vectors in Qdrant. " * 6, encoding="utf-8")
    argv = [sys.executable, "-m", "m3_rag.cli", "index", str(docs), "--model", str(tiny_checkpoint), "--device", "cpu",
            "--path", str(tmp_path / "index"), "--chunk-tokens", "16", "--overlap-tokens", "0", "--batch-size", "1",
            "--progress", "--json"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN (so
    # the signal would be dropped whenever the test suite itself runs in the background): give the
    # child the default disposition, as an interactive Ctrl-C would find it.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    seen = b""
    while not re.search(rb"indexing:\s+\d+%\|[^|]*\| *([3-9]|\d\d+)/", seen):  # a few chunks written
        block = os.read(proc.stderr.fileno(), 4096)
        assert block, f"index ended before it could be interrupted: {seen[-500:]!r}"
        seen += block
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    err = (seen + err).decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("m3-rag: error: interrupted;")
    partial = json.loads(out)
    assert partial["interrupted"] and partial["chunks_written"] == partial["chunks_in_index"] >= 3

    # the same command (bigger batches only to keep the test short; ids do not depend on them)
    argv[argv.index("--batch-size") + 1] = "32"
    done = subprocess.run(argv[:-2] + ["--no-progress", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["chunks_present"] == partial["chunks_in_index"]
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        assert store.count() == report["chunks_in_index"] == partial["chunks_in_index"] + report["chunks_written"]
        assert store.count() > partial["chunks_in_index"]


def test_a_beir_folder_indexes_only_its_corpus(cli, tmp_path, tiny_encoder):
    beir = tmp_path / "docs" / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "where does Edge run?"}\n', encoding="utf-8")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tr1\t1\n", encoding="utf-8")
    report = index_json(cli, str(beir))
    assert report["files"] == 1 and report["chunks_written"] == 2 and report["skipped_files"] == []
    with M3Store(tiny_encoder, path=tmp_path / "index") as store:
        [r1] = store.get([f"{beir / 'corpus.jsonl'}#r1:0"])
    assert r1.metadata == {"year": 2024, "source": str(beir / "corpus.jsonl"), "file": "corpus.jsonl",
                           "record_id": "r1", "title": "Edge", "chunk": 0, "n_chunks": 1}  # fmt: skip
    assert r1.doc_id == str(beir / "corpus.jsonl")
