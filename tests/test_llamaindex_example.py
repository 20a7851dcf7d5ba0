"""Smoke test: examples/llamaindex_rag.py runs offline end to end on the tiny checkpoint."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llamaindex_rag.py"


def test_example_prints_scored_nodes_per_mode(tiny_checkpoint, tmp_path, monkeypatch, capsys) -> None:
    argv = [str(EXAMPLE), "--model", str(tiny_checkpoint), "--device", "cpu", "--k", "2", "--path", str(tmp_path / "ix")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "Indexed 6 chunks with 1 forward pass(es) over 6 texts." in out
    sections = re.split(r"\n(default|sparse|hybrid) \(top 2\):\n", out)
    modes = sections[1::2]
    assert modes == ["default", "sparse", "hybrid"]
    scored = re.compile(r"^  -?\d+\.\d{4}  \[\w[\w.-]*\.md\] .+$")
    for mode, body in zip(modes, sections[2::2]):
        lines = [ln for ln in body.splitlines() if scored.match(ln)]
        assert 1 <= len(lines) <= 2 if mode == "sparse" else len(lines) == 2, (mode, body)
    assert "Answer (MockLLM, offline stand-in):" in out
    assert (tmp_path / "ix").is_dir()  # --path: the index is on disk
