"""scripts/heldout_split.py: held-out queries never reach the fit rows; --disjoint-docs keeps their documents out too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "heldout_split.py"


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "scifact" / "qrels").mkdir(parents=True)
    # 12 queries; query i's positive is doc i // 2, so pairs of queries share a document
    rows = [
        {"query": f"q{i}", "pos": [f"d{i // 2}"], "neg": [f"d{(i + 3) % 6}"], "query_id": str(i),
         "pos_ids": [str(i // 2)], "neg_ids": [str((i + 3) % 6)]}
        for i in range(12)
    ]
    (data / "train" / "scifact_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "scifact" / "queries.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": f"q{i}"}) + "\n" for i in range(12)))
    (data / "scifact" / "corpus.jsonl").write_text("".join(json.dumps({"_id": str(d), "title": "", "text": f"d{d}"}) + "\n" for d in range(6)))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"{i}\t{i // 2}\t1\n" for i in range(12))
    (data / "scifact" / "qrels" / "train.tsv").write_text(qrels)
    return data


def _split(data: Path, out: Path, *extra: str) -> tuple[list[dict], set[str]]:
    subprocess.run([sys.executable, str(SCRIPT), str(data), str(out), "--n-heldout", "3", *extra], check=True, capture_output=True)
    fit = [json.loads(line) for line in (out / "fit.jsonl").open()]
    held = {line.split("\t")[0] for line in (out / "beir" / "qrels" / "heldout.tsv").read_text().splitlines()[1:]}
    return fit, held


def test_heldout_queries_are_not_fit_rows(tmp_path):
    data = _data(tmp_path)
    fit, held = _split(data, tmp_path / "plain")
    assert len(held) == 3 and len(fit) == 9
    assert held.isdisjoint(r["query_id"] for r in fit)
    assert (tmp_path / "plain" / "beir" / "corpus.jsonl").is_symlink()


def test_disjoint_docs_drops_rows_that_show_a_heldout_document(tmp_path):
    data = _data(tmp_path)
    fit, held = _split(data, tmp_path / "disjoint", "--disjoint-docs")
    held_docs = {str(int(q) // 2) for q in held}
    assert held and fit
    for row in fit:
        assert row["query_id"] not in held
        assert held_docs.isdisjoint(row["pos_ids"]) and held_docs.isdisjoint(row["neg_ids"]), row
    plain, _ = _split(data, tmp_path / "plain")
    assert len(fit) < len(plain)


def test_extra_rows_join_the_fit_rows_without_heldout_documents(tmp_path):
    data = _data(tmp_path)
    _, held = _split(data, tmp_path / "base")
    held_docs = {str(int(q) // 2) for q in held}
    free_doc = next(str(d) for d in range(6) if str(d) not in held_docs)
    held_doc = next(iter(held_docs))
    extra = [
        {"query": "title a", "pos": ["x"], "neg": ["y"], "pos_ids": [free_doc], "neg_ids": [free_doc]},
        {"query": "title b", "pos": ["x"], "neg": ["y"], "pos_ids": [held_doc], "neg_ids": [free_doc]},
        {"query": "title c", "pos": ["x"], "neg": ["y"], "pos_ids": [free_doc], "neg_ids": [held_doc]},
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in extra))
    plain, _ = _split(data, tmp_path / "plain")
    fit, _ = _split(data, tmp_path / "extra", "--extra-rows", str(pairs))
    assert [r["query"] for r in fit[len(plain):]] == ["title a"]
    assert fit[: len(plain)] == plain


@pytest.mark.parametrize(("second_line", "message"), [
    (json.dumps({"query": "t", "pos": ["x"], "neg": ["y"]}), "pos_ids"),
    ('{"query": "t", "pos": [', "not valid JSON"),
])  # fmt: skip
def test_bad_extra_rows_are_refused_with_their_line(tmp_path, second_line, message):
    data = _data(tmp_path)
    good = {"query": "t0", "pos": ["x"], "neg": ["y"], "pos_ids": ["9"], "neg_ids": ["9"]}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(good) + "\n" + second_line + "\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(data), str(out), "--n-heldout", "3", "--extra-rows", str(pairs)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "pairs.jsonl:2" in proc.stderr and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "fit.jsonl").exists()
