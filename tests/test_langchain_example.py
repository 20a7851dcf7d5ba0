"""Smoke test: examples/langchain_rag.py runs offline end to end on the tiny checkpoint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "langchain_rag.py"


def test_langchain_rag_example_runs(tiny_checkpoint):
    query = "ColBERT late interaction scores a document by the best match of every query token."
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(tiny_checkpoint), "--device", "cpu", "--k", "2", "--query", query],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Answer:   (offline stand-in" in proc.stdout
    sources = re.findall(r"^\s+(-?\d+\.\d{4})\s+\[(\S+)\] ", proc.stdout, flags=re.M)
    assert len(sources) == 2
    # The query is one corpus text verbatim: it must come first, with a MaxSim near 1 (below
    # it: the store keeps pooled, quantized ColBERT vectors, so a text's own tokens are merged).
    assert sources[0][1] == "colbert.md"
    scores = [float(s) for s, _ in sources]
    assert scores == sorted(scores, reverse=True) and 0.9 < scores[0] <= 1.0 + 1e-3
