"""Evaluation: BEIR slicing, exhaustive runs equal the scoring functions, ranx metrics, pipeline, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from m3_rag.evaluation import EXHAUSTIVE_MODES, PIPELINE_MODES, evaluate, exhaustive_runs, load_beir, score_runs
from m3_rag.evaluation.runs import encode_corpus
from m3_rag.scoring import combine_scores, dense_scores, lexical_scores, maxsim_scores


@pytest.fixture(scope="module")
def scifact_slice(data_dir):
    return load_beir(data_dir / "scifact", "test", max_queries=6, max_docs=40, seed=1)


def test_slice_keeps_every_relevant_document(scifact_slice, data_dir):
    data = scifact_slice
    assert len(data.query_ids) == 6 and len(data.doc_ids) == 40
    relevant = {d for r in data.qrels.values() for d in r}
    assert relevant <= set(data.doc_ids)
    assert set(data.qrels) == set(data.query_ids)
    # Document text is BEIR's title + " " + text.
    first = json.loads((data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()[0])
    full = load_beir(data_dir / "scifact", "test")
    assert full.doc_texts[0] == f"{first['title']} {first['text']}" and len(full.query_ids) == 300


def test_missing_split_names_the_ones_present(data_dir):
    with pytest.raises(FileNotFoundError, match=r"found \['test.tsv', 'train.tsv'\]"):
        load_beir(data_dir / "scifact", "dev")


def test_ranx_metrics_match_hand_values():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1}}
    runs = {"m": {"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d4": 3.0, "d9": 2.0}}}
    (s,) = score_runs(runs, qrels)
    q1 = 1 / math.log2(3)  # the one relevant doc at rank 2
    q2 = (1 / math.log2(2)) / (1 / math.log2(2) + 1 / math.log2(3))  # one of two found, at rank 1
    assert s.ndcg10 == pytest.approx((q1 + q2) / 2, abs=1e-6)
    assert s.recall100 == pytest.approx((1.0 + 0.5) / 2)
    assert s.per_query_ndcg10 == pytest.approx({"q1": q1, "q2": q2}, abs=1e-6)


def test_a_query_the_run_misses_scores_zero_per_query():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    (s,) = score_runs({"m": {"q1": {"d1": 1.0}}}, qrels)
    assert s.per_query_ndcg10 == {"q1": 1.0, "q2": 0.0} and s.ndcg10 == pytest.approx(0.5)


def test_exhaustive_runs_equal_the_scoring_functions(tiny_encoder, scifact_slice):
    data = scifact_slice
    weights = (0.4, 0.2, 0.4)
    q = tiny_encoder.encode_queries(data.query_texts)
    c = encode_corpus(tiny_encoder, data.doc_texts, batch=16, show_progress=False)
    runs = exhaustive_runs(q, c, data, weights, show_progress=False)
    assert set(runs) == set(EXHAUSTIVE_MODES)
    colbert_docs = [x.astype(np.float32) for x in c.colbert]
    for i, qid in enumerate(data.query_ids):
        d = dense_scores(q.dense[i], c.dense)
        s = lexical_scores(q.sparse[i], c.sparse)
        m = maxsim_scores(q.colbert[i], colbert_docs)
        want = {"dense": d, "sparse": s, "colbert": m, "dense+sparse": combine_scores(d, s, weights=weights),
                "all": combine_scores(d, s, m, weights=weights)}  # fmt: skip
        for mode, scores in want.items():
            run = runs[mode][qid]
            assert len(run) == len(data.doc_ids)  # fewer docs than 100: every doc is ranked
            for j, doc in enumerate(data.doc_ids):
                assert run[doc] == pytest.approx(float(scores[j]), abs=2e-3), (mode, qid, doc)


@pytest.mark.parametrize("pair_budget", [1, 300, 1 << 26])
def test_maxsim_is_the_same_whatever_the_chunking(pair_budget):
    """A small budget splits the corpus into many chunks (down to one document each); scores do not change."""
    from m3_rag.evaluation.runs import _maxsim_all

    rng = np.random.default_rng(0)
    unit = lambda n: (v := rng.normal(size=(n, 8)).astype(np.float32)) / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    queries = [unit(n) for n in (3, 5, 1)]
    docs = [unit(n) for n in (4, 40, 1, 7, 2)]
    got = _maxsim_all(queries, docs, pair_budget=pair_budget, show_progress=False)
    want = np.array([maxsim_scores(q, docs) for q in queries])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_evaluate_reports_every_mode_and_the_pipeline_matches_exhaustive(tiny_encoder, scifact_slice, tmp_path):
    # Unpooled float16 storage (the store's default pools and quantizes, which moves scores a little).
    report = evaluate(tiny_encoder, scifact_slice, model_name="tiny", index_path=tmp_path / "idx", show_progress=False,
                      colbert_pool_factor=1, colbert_datatype="float16")  # fmt: skip
    assert [s.mode for s in report.scores] == list(EXHAUSTIVE_MODES) + list(PIPELINE_MODES)
    for s in report.scores:
        assert 0.0 <= s.ndcg10 <= 1.0 and 0.0 <= s.recall100 <= 1.0
    # 40 docs, all within the prefetch: the store's m3 formula ranks like exhaustive "all".
    assert report.score("m3").ndcg10 == pytest.approx(report.score("all").ndcg10, abs=5e-3)
    assert report.score("all").recall100 == 1.0  # every doc is in the top 100 of 40
    assert "| all |" in report.to_table()


def test_cli_smoke_on_a_small_slice(tiny_checkpoint, data_dir, tmp_path):
    from m3_rag.evaluation.cli import main

    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as done:
        main(["eval", str(data_dir / "xquad" / "en"), "--model", str(tiny_checkpoint), "--max-queries", "4",
              "--max-docs", "12", "--device", "cpu", "--no-progress", "--json", str(out), "--weights", "1,0.3,1"])  # fmt: skip
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert report["n_queries"] == 4 and report["n_docs"] == 12 and report["weights"] == [1.0, 0.3, 1.0]
    assert set(report["scores"]) == set(EXHAUSTIVE_MODES) | set(PIPELINE_MODES)
    per_query = report["per_query_ndcg@10"]
    assert set(per_query) == set(report["scores"])
    for mode, scores in per_query.items():  # the report's nDCG@10 is the mean of its per-query values
        assert len(scores) == 4 and np.mean(list(scores.values())) == pytest.approx(report["scores"][mode]["ndcg@10"])


def test_cli_lengths_default_to_the_encoders(tiny_checkpoint, data_dir, monkeypatch):
    from m3_rag.encoder import M3Encoder
    from m3_rag.evaluation.cli import main

    real, seen = M3Encoder.from_pretrained.__func__, []

    def recording(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(M3Encoder, "from_pretrained", classmethod(recording))
    base = ["eval", str(data_dir / "xquad" / "en"), "--model", str(tiny_checkpoint), "--max-queries", "2",
            "--max-docs", "4", "--device", "cpu", "--no-progress", "--no-pipeline"]  # fmt: skip
    for extra, want in (([], {}), (["--query-max-length", "64", "--doc-max-length", "128"],
                                   {"query_max_length": 64, "document_max_length": 128})):  # fmt: skip
        with pytest.raises(SystemExit) as done:
            main(base + extra)
        assert done.value.code == 0
        lengths = {k: v for k, v in seen.pop().items() if k.endswith("max_length")}
        assert lengths == want  # none given: the encoder's own (capped) defaults, not a fixed 512


def test_weight_selection_finds_the_mode_that_ranks_right():
    from m3_rag.evaluation import BeirData
    from m3_rag.evaluation.weights import select_weights, weight_grid

    data = BeirData("toy", ["a", "b", "c"], ["", "", ""], ["q1", "q2"], ["", ""], {"q1": {"a": 1}, "q2": {"c": 1}})
    scores = {
        "dense": np.array([[0.0, 1.0, 0.2], [1.0, 0.0, 0.0]], np.float32),  # wrong for both
        "sparse": np.array([[0.9, 0.1, 0.5], [0.1, 0.5, 0.9]], np.float32),  # right for both
        "colbert": np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], np.float32),  # wrong for both
    }
    choice = select_weights(scores, data, step=0.5)
    assert choice.weights == (0.0, 1.0, 0.0) and choice.ndcg10 == pytest.approx(1.0)
    assert len(choice.tried) == len(weight_grid(0.5))


def test_weight_grid_with_a_floor_keeps_every_mode():
    from m3_rag.evaluation.weights import weight_grid

    grid = weight_grid(0.1, min_weight=0.1)
    assert len(grid) == 36 and all(min(w) >= 0.1 - 1e-9 and abs(sum(w) - 1) < 1e-6 for w in grid)
    assert (0.0, 0.0, 1.0) not in grid and (0.1, 0.1, 0.8) in grid
    with pytest.raises(ValueError, match="min_weight"):
        weight_grid(0.1, min_weight=0.5)
    with pytest.raises(ValueError, match="no grid point"):
        weight_grid(0.5, min_weight=0.2)


class _CountingEncoder:
    """Wraps an encoder and counts the document texts it encodes."""

    def __init__(self, inner):
        self.inner, self.docs_encoded = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_documents(self, texts, *args, **kwargs):
        self.docs_encoded += len(texts)
        return self.inner.encode_documents(texts, *args, **kwargs)


def test_weight_selection_encodes_the_corpus_once_and_reports_the_choice(tiny_encoder, scifact_slice, monkeypatch):
    import sys

    from m3_rag.evaluation.runs import score_matrices
    from m3_rag.evaluation.weights import select_weights

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return score_matrices(*args, **kwargs)

    ev = sys.modules["m3_rag.evaluation.evaluate"]  # the package re-exports a function of the same name
    monkeypatch.setattr(ev, "score_matrices", counted)
    enc = _CountingEncoder(tiny_encoder)
    report = evaluate(enc, scifact_slice, select_weights=True, weight_step=0.25, min_weight=0.25, pipeline=False,
                      show_progress=False)  # fmt: skip
    assert enc.docs_encoded == len(scifact_slice.doc_ids)  # once, not once for the choice and once for the table
    assert len(calls) == 1  # one MaxSim pass too
    choice = report.weight_choice
    assert choice is not None and report.weights == choice.weights and min(choice.weights) >= 0.25
    assert report.score("all").ndcg10 == pytest.approx(choice.ndcg10, abs=1e-9)  # the same "all" it chose by
    # Same choice as selecting on separately computed score matrices.
    q = tiny_encoder.encode_queries(scifact_slice.query_texts)
    c = encode_corpus(tiny_encoder, scifact_slice.doc_texts, show_progress=False)
    again = select_weights(score_matrices(q, c, show_progress=False), scifact_slice, step=0.25, min_weight=0.25)
    assert again.weights == choice.weights
    assert report.to_dict()["weights_selected_here"] is True and "(selected on this split)" in report.to_table()
    with pytest.raises(ValueError, match="both weights and select_weights"):
        evaluate(enc, scifact_slice, weights=(1, 1, 1), select_weights=True, pipeline=False, show_progress=False)


def test_cli_selects_and_writes_weights(tiny_checkpoint, data_dir, tmp_path, capsys):
    import shutil

    from m3_rag.evaluation.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    with pytest.raises(SystemExit) as done:
        main(["eval", str(data_dir / "scifact"), "--split", "train", "--model", str(model), "--max-queries", "4",
              "--max-docs", "12", "--device", "cpu", "--no-progress", "--no-pipeline", "--select-weights",
              "--write-weights", "--weight-step", "0.25", "--min-weight", "0.25"])  # fmt: skip
    assert done.value.code == 0
    written = json.loads((model / "m3_config.json").read_text())["weights"]
    assert len(written) == 3 and min(written) >= 0.25 and sum(written) == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert out.count("selected weights") == 1 and f"= {tuple(written)}" in out


def test_bad_weights_fail_before_any_encoding(tiny_encoder, scifact_slice):
    enc = _CountingEncoder(tiny_encoder)
    with pytest.raises(ValueError, match=r"weights is \(1, -1, 0\); expected three finite non-negative numbers"):
        evaluate(enc, scifact_slice, weights=(1, -1, 0), pipeline=False, show_progress=False)
    with pytest.raises(ValueError, match="weights is"):
        evaluate(enc, scifact_slice, weights=(1, 1), pipeline=False, show_progress=False)
    assert enc.docs_encoded == 0


# ------------------------------------------------------------------ compact ColBERT storage of the pipeline


def test_pipeline_grid_combines_validates_and_defaults_to_the_store():
    from m3_rag.evaluation.runs import pipeline_collection, pipeline_grid

    assert pipeline_grid() == [(None, None, None)] and pipeline_grid([], [], []) == [(None, None, None)]
    assert pipeline_grid(2, "turbo8") == [(2, "turbo8", None)]
    assert pipeline_grid([1, 2, 1], ["float16", "turbo4"]) == [
        (1, "float16", None), (1, "turbo4", None), (2, "float16", None), (2, "turbo4", None)]  # fmt: skip
    assert pipeline_grid([3], None, ["none", "int8"]) == [(3, None, "none"), (3, None, "int8")]
    with pytest.raises(ValueError, match="colbert_pool_factor=0"):
        pipeline_grid([1, 0])
    with pytest.raises(ValueError, match="colbert_datatype='int8'"):
        pipeline_grid(None, ["int8"])
    with pytest.raises(ValueError, match="dense_quantization='int4'"):
        pipeline_grid(None, None, ["int4"])
    assert pipeline_collection(None, None) == "m3"  # no options: the collection eval always used
    assert pipeline_collection(2, "turbo8") == "m3-f2-turbo8" and pipeline_collection(None, "float16") == "m3-float16"
    assert pipeline_collection(2, "turbo8", "none") == "m3-f2-turbo8-dense-none"


def test_cli_datatypes_are_the_stores():
    from m3_rag.evaluation.cli import _DATATYPES
    from m3_rag.store.schema import COLBERT_DATATYPES

    assert tuple(_DATATYPES) == tuple(COLBERT_DATATYPES)


def test_variadic_options_expand_to_one_value_per_flag():
    from m3_rag.evaluation.cli import expand_variadic_options as expand

    assert expand(["F", "--pool-factor", "1", "2", "3", "--colbert-datatype", "float16", "turbo8", "--json", "o"]) == [
        "F", "--pool-factor", "1", "--pool-factor", "2", "--pool-factor", "3",
        "--colbert-datatype", "float16", "--colbert-datatype", "turbo8", "--json", "o"]  # fmt: skip
    # A following token that is no value (a folder, another option) ends the list; the flag's own value is kept as is.
    assert expand(["--pool-factor", "2", "data/x", "--pool-factor", "x", "4"]) == [
        "--pool-factor", "2", "data/x", "--pool-factor", "x", "--pool-factor", "4"]  # fmt: skip
    assert expand(["--pool-factor", "1,2", "3", "--", "--pool-factor", "5", "6"]) == [
        "--pool-factor", "1,2", "--pool-factor", "3", "--", "--pool-factor", "5", "6"]  # fmt: skip


def test_evaluate_runs_the_pipeline_per_storage_setting_on_one_encoding(tiny_encoder, scifact_slice, tmp_path):
    enc = _CountingEncoder(tiny_encoder)
    report = evaluate(enc, scifact_slice, colbert_pool_factor=[1, 2], colbert_datatype=["float16"],
                      index_path=tmp_path / "idx", show_progress=False)  # fmt: skip
    assert enc.docs_encoded == len(scifact_slice.doc_ids)  # one encode serves every grid point
    grid_modes = ["hybrid+rerank@f1-float16", "m3@f1-float16", "hybrid+rerank@f2-float16", "m3@f2-float16"]
    assert [s.mode for s in report.scores] == list(EXHAUSTIVE_MODES) + grid_modes
    assert report.pipeline_colbert["m3@f2-float16"] == {"mode": "m3", "colbert_datatype": "float16", "colbert_pool_factor": 2,
                                                        "dense_quantization": "int8"}  # fmt: skip
    assert set(report.pipeline_colbert) == set(grid_modes)
    # Unpooled float16, all 40 docs within the prefetch: m3 ranks like exhaustive "all".
    assert report.score("m3@f1-float16").ndcg10 == pytest.approx(report.score("all").ndcg10, abs=5e-3)
    # Each grid point kept its own collection under the index path.
    assert {p.name for p in (tmp_path / "idx").iterdir()} >= {"m3-f1-float16", "m3-f2-float16"}
    table = report.to_table()
    assert "| m3@f2-float16 |" in table and "float16, pool factor 2, dense int8 |" in table
    assert report.to_dict()["pipeline_colbert"] == report.pipeline_colbert


def test_evaluate_default_storage_records_the_stores_defaults(tiny_encoder, scifact_slice):
    from m3_rag.store.schema import DEFAULT_COLBERT

    report = evaluate(tiny_encoder, scifact_slice, show_progress=False)
    assert [s.mode for s in report.scores][-2:] == list(PIPELINE_MODES)  # plain names with one setting
    for mode in PIPELINE_MODES:
        assert report.pipeline_colbert[mode] == {"mode": mode, **DEFAULT_COLBERT.to_json(), "dense_quantization": "int8"}


def _eval_args(tiny_checkpoint, data_dir, out, *extra):
    return ["eval", str(data_dir / "xquad" / "en"), "--model", str(tiny_checkpoint), "--max-queries", "3",
            "--max-docs", "10", "--device", "cpu", "--no-progress", "--json", str(out), *extra]  # fmt: skip


def test_cli_pool_factor_and_datatype_reach_the_index_and_the_report(tiny_checkpoint, data_dir, tmp_path):
    from m3_rag.evaluation.cli import main

    out = tmp_path / "one.json"
    with pytest.raises(SystemExit) as done:
        main(_eval_args(tiny_checkpoint, data_dir, out, "--pool-factor", "3", "--colbert-datatype", "turbo4"))
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert set(report["scores"]) == set(EXHAUSTIVE_MODES) | set(PIPELINE_MODES)
    assert report["pipeline_colbert"]["m3"] == {"mode": "m3", "colbert_datatype": "turbo4", "colbert_pool_factor": 3,
                                                "dense_quantization": "int8"}  # fmt: skip


def test_cli_dense_quantization_is_a_grid_axis(tiny_checkpoint, data_dir, tmp_path):
    from m3_rag.evaluation.cli import main

    out = tmp_path / "dense.json"
    with pytest.raises(SystemExit) as done:
        main(_eval_args(tiny_checkpoint, data_dir, out, "--pool-factor", "1", "--dense-quantization", "none,int8"))
    assert done.value.code == 0
    colbert = json.loads(out.read_text())["pipeline_colbert"]
    assert {name: c["dense_quantization"] for name, c in colbert.items()} == {
        f"{m}@f1-turbo4-dense-{q}": q for m in PIPELINE_MODES for q in ("none", "int8")}  # fmt: skip
    with pytest.raises(SystemExit) as bad:
        main(_eval_args(tiny_checkpoint, data_dir, out, "--dense-quantization", "int4"))
    assert bad.value.code == 2


def test_cli_grid_space_separated_and_comma_separated(tiny_checkpoint, data_dir, tmp_path):
    import subprocess
    import sys

    from m3_rag.cli import run
    from m3_rag.evaluation.cli import main

    want = {f"{m}@f{f}-{d}" for m in PIPELINE_MODES for f in (1, 2) for d in ("float16", "turbo8")}
    spaced = tmp_path / "spaced.json"
    with pytest.raises(SystemExit) as done:  # the eval command's own parser takes lists after one flag
        main(_eval_args(tiny_checkpoint, data_dir, spaced, "--pool-factor", "1", "2", "--colbert-datatype", "float16", "turbo8"))
    assert done.value.code == 0
    report = json.loads(spaced.read_text())
    assert set(report["scores"]) == set(EXHAUSTIVE_MODES) | want and set(report["pipeline_colbert"]) == want
    # m3-rag eval: commas (and repeated flags) work whichever command class the app registers.
    comma = tmp_path / "comma.json"
    assert run(_eval_args(tiny_checkpoint, data_dir, comma, "--pool-factor", "1,2", "--colbert-datatype", "float16",
                          "--colbert-datatype", "turbo8")) == 0  # fmt: skip
    assert json.loads(comma.read_text())["pipeline_colbert"] == report["pipeline_colbert"]
    # A grid point's mode is a valid --mode of scripts/compare_eval.py.
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_eval.py"
    done_cmp = subprocess.run([sys.executable, str(script), str(spaced), str(comma), "--mode", "m3@f2-turbo8"],
                              capture_output=True, text=True)  # fmt: skip
    assert done_cmp.returncode == 0, done_cmp.stderr
    assert done_cmp.stdout.startswith("m3@f2-turbo8 nDCG@10 over 3 queries")


@pytest.mark.parametrize("extra, message", [
    (["--pool-factor", "0"], "--pool-factor 0; expected ints >= 1"),
    (["--colbert-datatype", "int8"], "--colbert-datatype int8; expected some of"),
    (["--pool-factor", "2", "--no-pipeline"], "--no-pipeline runs none"),
])  # fmt: skip
def test_cli_bad_storage_options_fail_before_encoding(tiny_checkpoint, data_dir, tmp_path, monkeypatch, capsys, extra, message):
    import m3_rag.evaluation.beir as beir
    from m3_rag.evaluation.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the data was loaded before the options were checked")

    monkeypatch.setattr(beir, "load_beir", no_load)
    with pytest.raises(SystemExit) as done:
        main(_eval_args(tiny_checkpoint, data_dir, tmp_path / "x.json", *extra))
    assert done.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_no_exhaustive_scores_only_the_pipeline(tiny_encoder, scifact_slice):
    report = evaluate(tiny_encoder, scifact_slice, exhaustive=False, colbert_pool_factor=[1, 2], show_progress=False)
    assert {s.mode for s in report.scores} == {f"{m}@f{f}-turbo4" for m in PIPELINE_MODES for f in (1, 2)}
    with pytest.raises(ValueError, match="nothing to score"):
        evaluate(tiny_encoder, scifact_slice, exhaustive=False, pipeline=False)
    with pytest.raises(ValueError, match="select_weights chooses on the exhaustive scores"):
        evaluate(tiny_encoder, scifact_slice, exhaustive=False, select_weights=True)
