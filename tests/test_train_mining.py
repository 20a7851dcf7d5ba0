"""Hard-negative mining: the rank window, the documents it must never pick, the row format it keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3_rag.train.mining import mine_negatives

WEIGHTS = (0.4, 0.2, 0.4)


@pytest.fixture(scope="module")
def corpus(data_dir):
    docs = [json.loads(line) for line in open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8")][:40]
    return [str(d["_id"]) for d in docs], [f"{d['title']} {d['text']}" for d in docs]


def _ranking(encoder, query, texts):
    """The encoder's own pair scores, document by document: an independent path to the ranking."""
    scores = encoder.compute_score([(query, t) for t in texts], weights=WEIGHTS).colbert_sparse_dense
    return list(np.argsort(-scores, kind="stable"))


def test_mined_negatives_are_the_window_after_blocked_documents(tiny_encoder, corpus):
    ids, texts = corpus
    query = texts[3].split(".")[0]
    ranked = _ranking(tiny_encoder, query, texts)
    pos, old_neg, excluded = ranked[0], ranked[2], ranked[4]
    row = {"query": query, "pos": [texts[pos]], "neg": [texts[old_neg]], "pos_ids": [ids[pos]], "neg_ids": [ids[old_neg]]}
    [mined] = mine_negatives(tiny_encoder, [row], ids, texts, weights=WEIGHTS, negatives=3, skip=1, pool=3,
                             exclude_ids={ids[excluded]}, show_progress=False)  # fmt: skip
    allowed = [d for d in ranked if d not in (pos, old_neg, excluded)]
    window = allowed[1:4]  # skip the best allowed one, then a pool of 3, all 3 taken
    assert mined["neg"] == [texts[old_neg]] + [texts[d] for d in window]
    assert mined["neg_ids"] == [ids[old_neg]] + [ids[d] for d in window]
    assert mined["pos"] == row["pos"] and mined["query"] == query
    assert row["neg"] == [texts[old_neg]], "the input row is left as it was"


def test_a_positive_given_only_as_text_is_never_mined(tiny_encoder, corpus):
    ids, texts = corpus
    query = texts[7].split(".")[0]
    ranked = _ranking(tiny_encoder, query, texts)
    row = {"query": query, "pos": [texts[ranked[0]]]}  # no ids at all
    [mined] = mine_negatives(tiny_encoder, [row], ids, texts, weights=WEIGHTS, negatives=2, skip=0, pool=2,
                             show_progress=False)  # fmt: skip
    assert mined["neg"] == [texts[ranked[1]], texts[ranked[2]]]
    assert mined["neg_ids"] == [ids[ranked[1]], ids[ranked[2]]]


def test_mining_is_seeded(tiny_encoder, corpus):
    ids, texts = corpus
    rows = [{"query": texts[i].split(".")[0], "pos": [texts[i]]} for i in range(5)]
    runs = [mine_negatives(tiny_encoder, rows, ids, texts, negatives=3, pool=10, skip=2, seed=s, show_progress=False)
            for s in (0, 0, 1)]  # fmt: skip
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    for row in runs[0]:
        assert len(row["neg"]) == 3 and len(set(row["neg"])) == 3 and row["pos"][0] not in row["neg"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"skip": -1}, "skip=-1"),
    ({"pool": 0}, "pool=0"),
    ({"negatives": 0}, "negatives=0"),
    ({"weights": (1.0, -1.0, 1.0)}, "weight"),
])  # fmt: skip
def test_bad_options_are_refused_before_encoding(kwargs, message):
    class NoEncoder:
        def __getattr__(self, name):
            raise AssertionError(f"the encoder was used ({name}) before the options were checked")

    with pytest.raises(ValueError, match=message):
        mine_negatives(NoEncoder(), [{"query": "q", "pos": ["p"]}], ["1"], ["p"], **kwargs)


def test_ids_and_texts_must_pair_up():
    with pytest.raises(ValueError, match="2 doc ids but 1 texts"):
        mine_negatives(object(), [], ["1", "2"], ["p"], weights=WEIGHTS)


def test_cli_mines_from_a_beir_corpus_and_keeps_excluded_documents_out(tiny_checkpoint, tmp_path, corpus):
    from m3_rag.train.cli import main

    ids, texts = corpus
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                                   for i, t in zip(ids, texts)))  # fmt: skip
    rows = [{"query": texts[i].split(".")[0], "pos": [texts[i]], "pos_ids": [ids[i]], "neg": [], "neg_ids": []} for i in range(3)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Everything but documents 0-8 is judged relevant for some held-out query: only 6 may be mined per row.
    (tmp_path / "heldout.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"h\t{d}\t1\n" for d in ids[9:]))
    with pytest.raises(SystemExit) as done:
        main(["mine", str(tmp_path / "rows.jsonl"), "--corpus", str(tmp_path / "corpus.jsonl"), "-o", str(tmp_path / "out.jsonl"),
              "--model", str(tiny_checkpoint), "--negatives", "20", "--skip", "2", "--exclude-qrels", str(tmp_path / "heldout.tsv"),
              "--device", "cpu", "--no-progress"])  # fmt: skip
    assert done.value.code == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["query"] for r in out] == [r["query"] for r in rows]
    for i, row in enumerate(out):
        assert len(row["neg_ids"]) == 6 and set(row["neg_ids"]) < set(ids[:9]) - {ids[i]}
        assert row["neg"] == [texts[ids.index(d)] for d in row["neg_ids"]]


def test_cli_refuses_a_bad_row_with_its_line(tiny_checkpoint, tmp_path):
    from m3_rag.train.cli import main
    from m3_rag.train.data import DataError

    (tmp_path / "rows.jsonl").write_text(json.dumps({"query": "q", "pos": ["p"]}) + "\n" + json.dumps({"query": "q"}) + "\n")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "1", "text": "p"}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl:2: no 'pos' key"):
        main(["mine", str(tmp_path / "rows.jsonl"), "--corpus", str(tmp_path / "corpus.jsonl"), "-o", str(tmp_path / "out.jsonl"),
              "--model", str(tiny_checkpoint), "--no-progress"])  # fmt: skip
    assert not (tmp_path / "out.jsonl").exists()


def test_rows_with_teacher_scores_and_an_empty_corpus_are_refused():
    scored = [{"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": [0.0]}]
    with pytest.raises(ValueError, match="row 1 has teacher scores"):
        mine_negatives(object(), scored, ["1"], ["p"], weights=WEIGHTS)
    with pytest.raises(ValueError, match="corpus has no documents"):
        mine_negatives(object(), [{"query": "q", "pos": ["p"]}], [], [], weights=WEIGHTS)
    assert mine_negatives(object(), [], ["1"], ["p"], weights=WEIGHTS) == []
