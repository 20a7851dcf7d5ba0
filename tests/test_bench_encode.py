"""benchmarks/encode.py end to end on a tiny checkpoint, with whichever peers this environment has.

No timing is asserted: only that every side ran or says why not, the JSON's shape, positive
throughputs, and that the float32 sides compute the same model (dense parity).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_encode", REPO / "benchmarks" / "encode.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_encode"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """150 SciFact abstracts: enough for the tokenizer and the mixes, quick to train on."""
    lines = (data_dir / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:150]
    path = tmp_path_factory.mktemp("bench-encode") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_peer_and_output_lists(bench):
    args = bench.parse_args([])
    assert args.peer_list == list(bench.PEERS) and args.modes == ["all", "dense"]
    assert args.checkpoint.name == "bench-bge-m3-shape"
    assert bench.parse_args(["--small"]).checkpoint.name == "bench-bge-m3-shape-small"
    assert bench.parse_args(["--peers", "none"]).peer_list == []
    assert bench.parse_args(["--peers", "lite-int8, flag,flag", "--outputs", "all"]).peer_list == ["lite-int8", "flag"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--peers", "flag,fastembed"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--outputs", "sparse"])


def test_end_to_end_on_a_tiny_checkpoint(bench, corpus_file: Path, tmp_path: Path):
    checkpoint, out = tmp_path / "tiny", tmp_path / "results.json"
    argv = ["--device", "cpu", "--tiny", "--checkpoint", str(checkpoint), "--data", str(corpus_file),
            "--chunks", "3", "--queries", "3", "--long", "0", "--repeats", "1", "--latency-repeats", "1",
            "--parity-texts", "2", "--lite-calibration", "4", "--json", str(out)]  # fmt: skip
    results = bench.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))

    sides = results["sides"]
    assert list(sides) == list(bench.SIDES)
    for name, entry in sides.items():
        # Not installed, or not importable here: skipped with the reason; installed but broken: a bug.
        assert entry["status"] in ("ran", "skipped"), (name, entry)
        if entry["status"] == "skipped":
            assert isinstance(entry["reason"], str) and entry["reason"], name
    ran = [name for name, entry in sides.items() if entry["status"] == "ran"]
    assert ran[0] == bench.BASELINE and "flag" in ran  # FlagEmbedding is in the test extra

    assert set(results["mixes"]) == {"chunks/all", "chunks/dense", "queries/all", "queries/dense"}
    for key, row in results["mixes"].items():
        assert row["texts"] == 3 and row["tokens"] > 0, key
        assert set(row["sides"]) == set(ran), key
        for name in ran:
            cell = row["sides"][name]
            assert cell["tok_s"] > 0 and cell["seconds"] > 0 and cell["vs_m3_rag"] > 0, (key, name)
        assert row["m3_rag_tok_s"] == row["sides"][bench.BASELINE]["tok_s"]
        assert row["ratio"] == pytest.approx(row["m3_rag_tok_s"] / row["flagembedding_tok_s"])
    for mode in ("all", "dense"):
        assert set(results["latency_ms_p50"][mode]) == set(ran)
        assert all(ms > 0 for ms in results["latency_ms_p50"][mode].values())
    assert results["query_tokens"] == bench.QUERY_TOKENS

    assert set(results["parity"]) == set(ran) - {bench.BASELINE}
    for name in set(ran) & {"onnx-fp32", "flag", "m3serve", "lite-fp32"}:  # the same float32 model
        assert results["parity"][name]["dense_max_abs_diff"] < 1e-4, (name, results["parity"][name])
    for name in set(ran) & {"lite-fp32", "lite-int8"}:  # it tokenises with the SentencePiece file itself
        rec = results["tokenization"][name]
        assert rec["same_token_count"] == rec["texts"] > 0, rec

    lite = checkpoint / "peers" / "bge-m3-lite"
    if "lite-fp32" in ran:
        # A second run finds the export complete (marker) and does not write it again.
        stamp = (lite / "model.onnx_data").stat().st_mtime_ns
        again = bench.main(argv[:-2] + ["--peers", "lite-fp32,lite-int8", "--prepare-only"])
        assert again["sides"]["lite-fp32"]["status"] == "ran"
        assert (lite / "model.onnx_data").stat().st_mtime_ns == stamp
        assert set(json.loads((lite / ".complete").read_text())["done"]) >= {"base", "fp32"}
