"""Bad inputs give one line on stderr (``m3-rag: error: ...``), a non-zero exit, no traceback,
and leave a stored index untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from m3_rag.cli import run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A folder with good docs, an empty folder, assorted bad files, and a built index (shared:
    every case must leave it as it was, which each test checks)."""
    tmp_path = tmp_path_factory.mktemp("cli-errors")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Qdrant Edge runs in-process. " * 5, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_images").mkdir()
    (tmp_path / "only_images" / "x.png").write_bytes(b"\x89PNG")
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "b.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "broken_link").mkdir()
    (tmp_path / "broken_link" / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (tmp_path / "bad.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n', encoding="utf-8")
    (tmp_path / "no_text.jsonl").write_text('{"_id": "1", "body": "no text field"}\n', encoding="utf-8")
    (tmp_path / "dup.jsonl").write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', encoding="utf-8")
    (tmp_path / "clash.jsonl").write_text('{"text": "a", "metadata": {"source": "x"}}\n', encoding="utf-8")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    assert run(["index", str(tmp_path / "docs"), "--model", str(tiny_checkpoint), "--device", "cpu",
                "--path", str(tmp_path / "index"), "--no-progress"]) == 0  # fmt: skip
    return tmp_path


BAD = {
    # name: (argv, exit code, words the message must contain)
    "missing path": (["index", "{w}/does_not_exist"], 1, ["does not exist"]),
    "folder of only a dangling link": (["index", "{w}/broken_link"], 1, ["holds no", "gone.md", "symlink"]),
    "empty folder": (["index", "{w}/empty"], 1, ["holds no", "empty"]),
    "folder without documents": (["index", "{w}/only_images"], 1, ["holds no", "1 other file"]),
    "unsupported file": (["index", "{w}/notes.pdf"], 1, ["'.pdf'", "expected one of"]),
    "not utf-8": (["index", "{w}/latin1"], 1, ["not UTF-8", "0xe9"]),
    "malformed jsonl": (["index", "{w}/bad.jsonl"], 1, ["bad.jsonl:2", "not valid JSON"]),
    "jsonl without text": (["index", "{w}/no_text.jsonl"], 1, ["no_text.jsonl:1", "no 'text' field"]),
    "duplicate record ids": (["index", "{w}/dup.jsonl"], 1, ["appears twice"]),
    "reserved metadata key": (["index", "{w}/clash.jsonl"], 1, ["['source']", "set by the indexer"]),
    "overlap >= size": (["index", "{w}/docs", "--chunk-tokens", "8", "--overlap-tokens", "8"], 2, ["overlap < size"]),
    "chunk longer than the model": (["index", "{w}/docs", "--chunk-tokens", "100000"], 1, ["expected at most 8190"]),
    "bad batch size": (["index", "{w}/docs", "--batch-size", "0"], 2, ["--batch-size"]),
    "unknown mode": (["search", "q", "--mode", "colbert"], 2, ["unknown mode 'colbert'", "hybrid+rerank"]),
    "malformed filter": (["search", "q", "--filter", "{year: 2020}"], 2, ["--filter is not valid JSON"]),
    "unknown filter operator": (["search", "q", "--filter", '{"year": {"$regex": "x"}}'], 2, ["unknown filter operator '$regex'"]),
    "filter not an object": (["search", "q", "--filter", "[1, 2]"], 2, ["filter dict was expected"]),
    "empty filter": (["search", "q", "--filter", "{}"], 2, ["empty filter dict"]),
    "bad k": (["search", "q", "-k", "0"], 2, ["-k is 0"]),
    "non-integer k": (["search", "q", "-k", "many"], 2, ["Invalid value", "--k"]),
    "no index there": (["search", "q", "--path", "{w}/no_index"], 1, ["no index at", "m3-rag index PATH"]),
    "unknown collection": (["search", "q", "--collection", "other"], 1, ["no index at", "'other'"]),
    "unknown dtype": (["search", "q", "--dtype", "int8"], 2, ["--dtype 'int8'"]),
    "delete nothing": (["delete"], 2, ["nothing to delete"]),
    "unknown command": (["frobnicate"], 2, ["No such command"]),
    "unknown option": (["search", "q", "--colour"], 2, ["No such option"]),
    "missing query": (["search"], 2, ["Missing argument"]),
    "unknown benchmark": (["bench", "gpu"], 2, ["unknown benchmark 'gpu'"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_and_non_zero(case, workdir, tiny_checkpoint, tiny_encoder, capsys):
    from m3_rag.store import M3Store

    args, code, words = BAD[case]
    argv = [a.replace("{w}", str(workdir)) for a in args]
    if argv[0] in ("index", "search", "delete"):
        argv += ["--model", str(tiny_checkpoint), "--device", "cpu", "--no-progress"] if argv[0] == "index" else [
            "--model", str(tiny_checkpoint), "--device", "cpu"]  # fmt: skip
        if "--path" not in argv:
            argv += ["--path", str(workdir / "index")]
    assert run(argv) == code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("m3-rag: error: "), err
    assert "Traceback" not in err + out
    for word in words:
        assert word in lines[0]
    with M3Store(tiny_encoder, path=workdir / "index") as store:
        assert store.count() == 1  # the fixture's index is intact (a.md is one chunk)


def test_unreachable_hub_model_is_one_line(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = run(["search", "q", "--model", "BAAI/no-such-model", "--path", str(workdir / "index")])
    _, err = capsys.readouterr()
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "could not load 'BAAI/no-such-model'" in err and "Fix:" in err


def test_missing_model_folder_is_one_line(workdir, capsys):
    code = run(["index", str(workdir / "docs"), "--model", str(workdir / "no_model_here"), "--path", str(workdir / "i2")])
    _, err = capsys.readouterr()
    assert code == 1 and len(err.strip().splitlines()) == 1 and "is not a directory" in err
    assert not (workdir / "i2").exists()  # nothing created on failure


def test_unreadable_file_by_permission(workdir, tiny_checkpoint, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    (workdir / "locked").mkdir(exist_ok=True)
    locked = workdir / "locked" / "locked.txt"
    locked.write_text("secret", encoding="utf-8")
    locked.chmod(0)
    code = run(["index", str(workdir / "locked"), "--model", str(tiny_checkpoint), "--path", str(workdir / "index")])
    _, err = capsys.readouterr()
    assert code == 1 and "cannot read" in err and len(err.strip().splitlines()) == 1


def test_console_script_is_declared_and_runs_as_a_process(tmp_path):
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "m3-rag"]
    assert script.value == "m3_rag.cli:main"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "m3_rag.cli", "index", str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"m3-rag: error: '{tmp_path / 'missing'}' does not exist; expected a file or folder to index. Fix: check the path."
    assert proc.stdout == ""


def test_help_version_and_wired_subcommands(capsys):
    from m3_rag import __version__

    assert run(["--version"]) == 0 and capsys.readouterr().out.strip() == f"m3-rag {__version__}"
    for command, word in [("index", "--chunk-tokens"), ("search", "--filter"), ("delete", "--source"),
                          ("demo", "--query"), ("eval", "BEIR"), ("train", "--output-dir"),
                          ("train-pairs", "corpus"), ("train-mine", "--exclude-qrels"), ("bench", "encode")]:  # fmt: skip
        assert run([command, "--help"]) == 0, command
        assert word in capsys.readouterr().out, command


def test_bench_runs_the_benchmark_script(capsys):
    """``m3-rag bench store -- --help`` runs benchmarks/store.py from the checkout."""
    code = run(["bench", "store", "--", "--help"])
    assert code == 0


def test_eval_through_the_cli(tiny_checkpoint, data_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = run(["eval", str(data_dir / "xquad" / "en"), "--model", str(tiny_checkpoint), "--device", "cpu",
                "--max-queries", "5", "--max-docs", "20", "--no-pipeline", "--no-progress", "--json", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(out.read_text())
