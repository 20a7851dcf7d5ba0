"""scripts/compare_eval.py: paired bootstrap of two eval reports' per-query nDCG@10."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from m3_rag.evaluation import score_runs
from m3_rag.evaluation.report import EvalReport

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_eval.py"


def _report(tmp_path: Path, name: str, ranks: dict[str, int]) -> Path:
    """A report whose ``all`` run puts each query's one relevant document at the given rank (1-based)."""
    qrels = {q: {"rel": 1} for q in ranks}
    run = {q: {**{f"x{i}": 10.0 - i for i in range(r - 1)}, "rel": 10.0 - r} for q, r in ranks.items()}
    report = EvalReport("toy", name, len(ranks), 10, (0.1, 0.3, 0.6), score_runs({"all": run}, qrels))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(report.to_dict()))
    return path


def _compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def _interval(stdout: str) -> tuple[float, float]:
    """The printed 95% interval's ends."""
    lo, hi = (float(x) for x in stdout.split("95% [")[1].rstrip("]\n").split(", "))
    return lo, hi


def test_a_better_run_gets_an_interval_above_zero(tmp_path):
    rng = np.random.default_rng(0)
    worse = {f"q{i}": int(rng.integers(2, 6)) for i in range(40)}
    a = _report(tmp_path, "a", worse)
    b = _report(tmp_path, "b", {q: 1 for q in worse})  # every relevant document at rank 1
    done = _compare(str(a), str(b))
    assert done.returncode == 0, done.stderr
    mean_a = np.mean([1 / np.log2(r + 1) for r in worse.values()])
    assert f"A {mean_a:.4f}  B 1.0000  B-A {1 - mean_a:+.4f}" in done.stdout
    lo, hi = _interval(done.stdout)
    assert 0 < lo < 1 - mean_a < hi


def test_runs_that_differ_by_noise_get_an_interval_holding_zero(tmp_path):
    a = _report(tmp_path, "a", {f"q{i}": 1 + i % 2 for i in range(40)})
    b = _report(tmp_path, "b", {f"q{i}": 2 - i % 2 for i in range(40)})  # same scores, swapped between queries
    done = _compare(str(a), str(b))
    lo, hi = _interval(done.stdout)
    assert done.returncode == 0 and lo < 0 < hi


def test_a_report_against_itself_differs_by_exactly_zero(tmp_path):
    a = _report(tmp_path, "a", {f"q{i}": 1 + i % 3 for i in range(10)})
    done = _compare(str(a), str(a))
    assert done.returncode == 0 and "B-A +0.0000  se 0.0000  95% [+0.0000, +0.0000]" in done.stdout, done.stdout


def test_reports_on_different_queries_are_refused(tmp_path):
    a = _report(tmp_path, "a", {"q1": 1, "q2": 2})
    b = _report(tmp_path, "b", {"q1": 1, "q3": 2})
    done = _compare(str(a), str(b))
    assert done.returncode == 1 and "different queries" in done.stderr and "Fix:" in done.stderr


def test_a_report_without_per_query_scores_is_refused(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"scores": {"all": {"ndcg@10": 0.5}}}))
    done = _compare(str(old), str(old))
    assert done.returncode == 1 and "no per-query scores" in done.stderr and "Fix:" in done.stderr


def test_an_unknown_mode_names_the_ones_present(tmp_path):
    a = _report(tmp_path, "a", {"q1": 1, "q2": 2})
    done = _compare(str(a), str(a), "--mode", "colbert")
    assert done.returncode == 1 and "'colbert' not in the report" in done.stderr and "['all']" in done.stderr
