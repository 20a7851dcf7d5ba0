"""benchmarks/store.py (the compact-ColBERT grid) and scripts/plot_compact_colbert.py, on tiny inputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(relative: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("benchmarks/store.py", "bench_store")


@pytest.fixture(scope="module")
def plot_script():
    return _load("scripts/plot_compact_colbert.py", "plot_compact_colbert")


def _args(bench, *argv: str):
    return bench.build_parser().parse_args(list(argv))


def test_plan_is_the_grid_then_defaults_then_client(bench):
    args = _args(bench, "--edge-sizes", "100", "200", "--pool-factors", "1", "2", "--datatypes", "float16", "turbo4",
                 "--default-sizes", "300", "--client-sizes", "0", "50")  # fmt: skip
    runs = bench.plan_runs(args)
    grid = [(r.points, r.pool_factor, r.datatype) for r in runs if r.backend == "edge" and r.requested != "default"]
    assert grid == [(n, f, d) for n in (100, 200) for f in (1, 2) for d in ("float16", "turbo4")]
    assert [(r.backend, r.points, r.requested) for r in runs[len(grid):]] == [
        ("edge", 300, "default"), ("qdrant_client_local", 50, "default")]  # fmt: skip
    with_base = bench.plan_runs(_args(bench, "--edge-sizes", "100", "--pool-factors", "1", "2", "--datatypes", "float16",
                                      "--grid-dense-quantization", "int8", "--with-baseline", "--client-sizes", "0"))  # fmt: skip
    assert [(r.pool_factor, r.datatype, r.dense_quantization) for r in with_base] == [
        (1, "float16", "none"), (1, "float16", "int8"), (2, "float16", "int8")]  # fmt: skip
    defaults = _args(bench)
    assert defaults.pool_factors == [1, 2, 3, 4] and defaults.datatypes == ["float16", "turbo8", "turbo4"]
    assert defaults.out is None and _args(bench, "--json", "x.json").out == Path("x.json")


def test_disk_estimate_scales_with_datatype_bytes_and_pool_factor(bench):
    args = _args(bench, "--dense-dim", "8", "--sparse-terms", "1")
    f16 = bench.estimate_bytes(1000, args, "float16", 1)
    assert bench.estimate_bytes(1000, args, "float32", 1) > 1.9 * f16
    assert bench.estimate_bytes(1000, args, "turbo8", 1) == pytest.approx(f16 / 2, rel=0.02)
    assert bench.estimate_bytes(1000, args, "turbo4", 2) == pytest.approx(f16 / 8, rel=0.05)
    from m3_rag.store.schema import DEFAULT_COLBERT

    default = bench.estimate_bytes(1000, args, DEFAULT_COLBERT.datatype, DEFAULT_COLBERT.pool_factor)
    assert bench.estimate_bytes(1000, args) == default  # the store's defaults


def test_ratios_divide_by_the_float16_factor1_run_of_the_same_size(bench):
    def run(points, dt, f, rerank, m3, colbert, disk):
        return {"backend": "edge", "points": points, "colbert_datatype": dt, "colbert_pool_factor": f,
                "ingest_points_per_s": 100.0, "colbert_storage_bytes_per_token": colbert,
                "disk_bytes_per_original_token": disk,
                "latency": {"hybrid+rerank": {"p50_ms": rerank}, "m3": {"p50_ms": m3}}}  # fmt: skip

    runs = [run(10, "float16", 1, 20.0, 30.0, 2048.0, 3000.0), run(10, "turbo8", 2, 5.0, 15.0, 512.0, 1200.0),
            run(99, "turbo4", 4, 1.0, 1.0, 64.0, 500.0), {"backend": "edge", "points": 10, "skipped": "no disk"}]  # fmt: skip
    bench.add_ratios(runs)
    assert runs[0]["ratios_vs_float16_f1"]["m3_p50"] == 1.0
    assert runs[1]["ratios_vs_float16_f1"] == {
        "hybrid+rerank_p50": 0.25, "m3_p50": 0.5, "colbert_storage_bytes_per_original_token": 0.25,
        "disk_bytes_per_original_token": 0.4, "ingest_points_per_s": 1.0}  # fmt: skip
    assert "ratios_vs_float16_f1" not in runs[2]  # no baseline at that size
    quantized = {**run(10, "float16", 1, 10.0, 15.0, 2048.0, 3000.0), "dense_quantization": "int8"}
    alone = [{**quantized, "points": 77}]
    bench.add_ratios(runs + [quantized] + alone)
    assert quantized["ratios_vs_float16_f1"]["hybrid+rerank_p50"] == 0.5  # vs the dense-none run
    assert "ratios_vs_float16_f1" not in alone[0]  # an int8 dense index is not the baseline


def test_a_tiny_grid_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--edge-sizes", "40", "--client-sizes", "0", "--queries", "2", "--warmup", "0",
                       "--pool-factors", "1", "2", "--datatypes", "float16", "--modes", "hybrid+rerank", "m3",
                       "--no-optimize", "--quiet", "--workdir", str(tmp_path / "work"), "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    f1, f2 = result["runs"]
    assert (f1["colbert_datatype"], f1["colbert_pool_factor"], f2["colbert_pool_factor"]) == ("float16", 1, 2)
    assert f1["stored_rows_check"] == f2["stored_rows_check"] == "ok"
    assert f1["colbert_original_tokens"] == f2["colbert_original_tokens"] == f1["colbert_stored_tokens"]
    assert f2["colbert_stored_tokens"] < 0.55 * f2["colbert_original_tokens"]  # 16-128 tokens: all pooled by 2
    assert f2["colbert_storage_bytes_per_token"] < f1["colbert_storage_bytes_per_token"]
    assert f2["ratios_vs_float16_f1"]["colbert_storage_bytes_per_original_token"] < 1.0
    assert set(f2["latency"]) == {"hybrid+rerank", "m3"} and "reopen_s" in f2
    assert not list((tmp_path / "work").iterdir())  # each run's index is removed after it
    printed = capsys.readouterr().out
    assert "Ratios to the float16 / factor-1 / dense-none run" in printed and "| 40 | float16 f2 dense none |" in printed
    assert f1["dense_quantization"] == "none"  # the grid's default: m3-rag 0.1.0's dense index


def test_interleave_times_the_kept_indexes_side_by_side_and_removes_them(bench, tmp_path):
    out = tmp_path / "bench.json"
    code = bench.main(["--edge-sizes", "40", "--client-sizes", "0", "--queries", "2", "--warmup", "1",
                       "--pool-factors", "2", "--datatypes", "turbo4", "--grid-dense-quantization", "int8",
                       "--with-baseline", "--interleave", "--modes", "hybrid+rerank", "m3", "--no-optimize", "--quiet",
                       "--workdir", str(tmp_path / "work"), "--json", str(out)])  # fmt: skip
    assert code == 0
    base, f2 = json.loads(out.read_text())["runs"]
    assert (base["dense_quantization"], f2["dense_quantization"], f2["colbert_pool_factor"]) == ("none", "int8", 2)
    for run in (base, f2):
        assert run["latency_timing"].startswith("interleaved with 1 other")
        assert {m: v["n"] for m, v in run["latency"].items()} == {"hybrid+rerank": 2, "m3": 2}
        assert "index_path" not in run
    assert f2["ratios_vs_float16_f1"]["m3_p50"] > 0
    assert not list((tmp_path / "work").iterdir())  # the kept indexes are removed after timing


def test_the_v010_m3_plan_scores_as_todays_m3_and_gets_its_ratio(bench, tmp_path):
    """--v010-m3 times 0.1.0's one-query plan: the same top k and scores as today's two-round-trip m3,
    so its ratio compares plans, not answers."""
    import numpy as np

    from m3_rag.store import M3Store

    args = _args(bench, "--min-tokens", "4", "--max-tokens", "12", "--dense-dim", "16", "--colbert-dim", "8",
                 "--vocab", "300", "--sparse-terms", "6")  # fmt: skip
    rng = np.random.default_rng(3)
    store = M3Store(bench.SyntheticEncoder(16, 8), path=tmp_path / "edge", colbert_pool_factor=1,
                    colbert_datatype="float32", dense_quantization="none")  # fmt: skip
    store.add_encoded([f"t{i}" for i in range(60)], bench.synthetic_batch(rng, 60, args), ids=list(range(60)))
    for _ in range(5):
        query = bench.synthetic_batch(rng, 1, args, query=True)
        today = store.search_encoded(query, mode="m3", k=5)
        old = bench.search_v010_m3(store, query, 5, None)
        assert [str(h.id) for h in old] == [str(h.id) for h in today]
        assert [h.score for h in old] == pytest.approx([h.score for h in today], abs=1e-4)
    store.close()
    out = tmp_path / "bench.json"
    code = bench.main(["--edge-sizes", "40", "--client-sizes", "0", "--queries", "2", "--warmup", "0",
                       "--pool-factors", "2", "--datatypes", "turbo4", "--with-baseline", "--interleave", "--v010-m3",
                       "--modes", "m3", "--no-optimize", "--quiet", "--workdir", str(tmp_path / "work"),
                       "--json", str(out)])  # fmt: skip
    assert code == 0
    base, f2 = json.loads(out.read_text())["runs"]
    assert set(base["latency"]) == {"m3", bench.V010_M3}
    expected = f2["latency"]["m3"]["p50_ms"] / base["latency"][bench.V010_M3]["p50_ms"]
    assert f2["ratios_vs_float16_f1"]["m3_p50_vs_0.1.0_plan"] == pytest.approx(expected, abs=1e-3)


def test_a_run_that_does_not_fit_is_skipped_with_its_reason(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--edge-sizes", "40", "--client-sizes", "0", "--pool-factors", "1", "--datatypes", "turbo8",
                       "--disk-margin-gb", "1e9", "--quiet", "--workdir", str(tmp_path), "--json", str(out)])  # fmt: skip
    assert code == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["requested"] == "f1-turbo8" and "not enough free disk" in run["skipped"]
    assert "skipping edge 40 f1-turbo8: not enough free disk" in capsys.readouterr().err


def _fake_reports(tmp_path: Path) -> list[Path]:
    def run(points, dt, f, colbert, rerank, m3):
        return {"backend": "edge", "points": points, "requested": f"f{f}-{dt}", "colbert_datatype": dt,
                "colbert_pool_factor": f, "colbert_storage_bytes_per_token": colbert,
                "latency": {"hybrid+rerank": {"p50_ms": rerank}, "m3": {"p50_ms": m3}}}  # fmt: skip

    bench = {"machine": {"cpus": 2}, "runs": [
        run(1000, "float16", 1, 2050.0, 17.0, 23.0), run(1000, "turbo8", 2, 515.0, 6.0, 9.0),
        run(5000, "float16", 1, 2049.0, 18.0, 24.0), run(5000, "turbo8", 2, 514.0, 7.0, 10.0),
        {"backend": "edge", "points": 9000, "requested": "f1-turbo4", "skipped": "no disk"}]}  # fmt: skip
    settings = {f"{m}@f{f}-{d}": {"mode": m, "colbert_datatype": d, "colbert_pool_factor": f}
                for m in ("hybrid+rerank", "m3") for f, d in ((1, "float16"), (2, "turbo8"), (3, "turbo4"))}  # fmt: skip
    scores = {name: {"ndcg@10": 0.6 + 0.01 * i, "recall@100": 0.9} for i, name in enumerate(settings)}
    evaluation = {"dataset": "scifact/test", "n_queries": 5, "scores": {"all": {"ndcg@10": 0.7}, **scores},
                  "pipeline_colbert": settings}  # fmt: skip
    paths = [tmp_path / "bench.json", tmp_path / "eval.json"]
    paths[0].write_text(json.dumps(bench))
    paths[1].write_text(json.dumps(evaluation))
    return paths


def test_plot_matches_bytes_by_setting_and_writes_a_png(plot_script, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    paths = _fake_reports(tmp_path)
    bench, evals = plot_script.load_reports(paths)
    sizes = plot_script.storage_bytes(bench)
    assert sizes == {("float16", 1): 2049.0, ("turbo8", 2): 514.0}  # the largest run of each setting
    points, notes = plot_script.quality_points(evals, sizes)
    assert {(p["mode"], p["datatype"], p["factor"], p["bytes"]) for p in points} == {
        (m, d, f, sizes[(d, f)]) for m in ("hybrid+rerank", "m3") for d, f in (("float16", 1), ("turbo8", 2))}  # fmt: skip
    assert len(notes) == 2 and all("turbo4, factor 3) has no benchmark run" in n for n in notes)
    # panel (a) plots the change against the same report's float16 factor-1 score, in points
    delta = {(p["mode"], p["factor"]): p["delta_points"] for p in points}
    assert delta == pytest.approx({("hybrid+rerank", 1): 0.0, ("hybrid+rerank", 2): 1.0, ("m3", 1): 0.0, ("m3", 2): 1.0})
    assert len(plot_script.latency_points(bench)) == 8  # 4 measured runs x 2 modes; the skipped run has none
    assert len(plot_script.latency_points(bench, min_points=5000)) == 4  # the small runs left out
    out = tmp_path / "docs" / "compact-colbert.png"
    assert plot_script.main([str(p) for p in paths] + ["-o", str(out), "--dense-quantization", "all"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "has no benchmark run" in capsys.readouterr().err


def test_plot_keeps_one_dense_index_against_the_float16_unpooled_none_baseline(plot_script):
    """Settings measured on both dense indexes: panel (a) keeps the chosen one, each compared with
    float16 unpooled on the 'none' index (0.1.0's store), whichever order the report lists them in."""
    settings, scores = {}, {}
    for dense, f1_score, f2_score in (("int8", 0.70, 0.72), ("none", 0.60, 0.65)):
        for f, dt, score in ((1, "float16", f1_score), (2, "turbo4", f2_score)):
            name = f"m3@f{f}-{dt}-dense-{dense}"
            settings[name] = {"mode": "m3", "colbert_datatype": dt, "colbert_pool_factor": f, "dense_quantization": dense}
            scores[name] = {"ndcg@10": score}
    evaluation = {"dataset": "d", "_path": "e.json", "scores": scores, "pipeline_colbert": settings}
    sizes = {("float16", 1): 2048.0, ("turbo4", 2): 256.0}
    points, _ = plot_script.quality_points([evaluation], sizes, "int8")
    assert {(p["factor"], round(p["delta_points"], 6)) for p in points} == {(1, 10.0), (2, 12.0)}
    points, _ = plot_script.quality_points([evaluation], sizes, "none")
    assert {(p["factor"], round(p["delta_points"], 6)) for p in points} == {(1, 0.0), (2, 5.0)}


def test_plot_refuses_a_file_that_is_no_report(plot_script, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(SystemExit, match="neither a benchmarks/store.py --json report"):
        plot_script.load_reports([bad])
