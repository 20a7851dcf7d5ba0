"""examples/hybrid_modes.py: runs offline on the tiny checkpoint (demo notes and a BEIR slice), and
its metrics are right on a hand-made ranking."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hybrid_modes.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hybrid_modes_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_runs_on_the_demo_notes(example, tiny_checkpoint, tmp_path, capsys):
    out_file = tmp_path / "modes.json"
    results = example.main(["--model", str(tiny_checkpoint), "--device", "cpu", "--json", str(out_file)])
    out = capsys.readouterr().out
    assert [r.mode for r in results] == list(example.MODES)
    assert "10 queries on demo notes" in out
    for line, r in zip(out.strip().splitlines()[-5:], results):
        assert line.split()[0] == r.mode
        assert 0.0 <= r.mrr10 <= 1.0 and 0.0 <= r.ndcg10 <= 1.0 and 0.0 <= r.recall <= 1.0
    saved = json.loads(out_file.read_text())
    assert [m["mode"] for m in saved["modes"]] == list(example.MODES) and saved["queries"] == 10


def test_runs_on_a_beir_slice(example, tiny_checkpoint, data_dir, capsys):
    results = example.main(["--model", str(tiny_checkpoint), "--device", "cpu", "--beir", str(data_dir / "xquad" / "en"),
                            "--max-queries", "6", "--max-docs", "12", "-k", "3"])  # fmt: skip
    out = capsys.readouterr().out
    assert "6 queries on en/test (12 docs); 12 points in Qdrant Edge" in out
    assert len(results) == 5 and all(len(r.top1) <= 6 for r in results)


def test_metrics_on_a_known_ranking(example):
    def hit(doc):
        return SimpleNamespace(metadata={"file": doc})

    class FixedStore:
        def search(self, text, mode, k):
            # chunk-level hits; b appears twice (its best chunk counts), the answer 'c' is 2nd document
            return {"q1": [hit("b"), hit("b"), hit("c"), hit("a")], "q2": [hit("x"), hit("y")]}[text]

    qs = example.QuerySet("fixed", [("1", "q1"), ("2", "q2")], {"1": {"c", "a"}, "2": {"x"}})
    r = example.score_mode(FixedStore(), qs, "dense", k=2)
    ideal = 1 + 1 / math.log2(3)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(4)) / ideal
    assert r.mrr10 == pytest.approx((1 / 2 + 1) / 2)
    assert r.ndcg10 == pytest.approx((ndcg_q1 + 1.0) / 2)
    assert r.recall == pytest.approx((1 / 2 + 1) / 2)  # q1: c in the top 2 documents, a not
    assert r.top1 == {"2"}
