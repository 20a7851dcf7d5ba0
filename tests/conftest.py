"""Shared fixtures: the tiny random BGE-M3-layout checkpoint and the real data beside the repo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("M3_RAG_DATA", REPO.parent / "shared" / "data"))
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
TINY_VERSION = "tiny-m3-v1"  # bump when m3_rag.testing changes what it writes


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow")
    skip_gpu = pytest.mark.skip(reason="gpu: no CUDA device here")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tokenizer_corpus() -> list[str]:
    """Multilingual text for the test tokenizer: every XQuAD language plus SciFact abstracts."""
    texts: list[str] = []
    for lang in XQUAD_LANGS:
        texts += [r["text"] for r in read_jsonl(DATA / "xquad" / lang / "corpus.jsonl")[:40]]
        texts += [r["text"] for r in read_jsonl(DATA / "xquad" / lang / "queries.jsonl")[:40]]
    texts += [r["title"] + " " + r["text"] for r in read_jsonl(DATA / "scifact" / "corpus.jsonl")[:300]]
    return texts


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}; set M3_RAG_DATA to the shared/data folder")
    return DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(request: pytest.FixtureRequest, data_dir: Path) -> Path:
    """A seeded random checkpoint in BGE-M3's layout (built once, cached in .pytest_cache)."""
    import shutil

    from m3_rag.testing import build_random_checkpoint

    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("m3-rag")) if cache is not None else REPO / ".pytest_cache" / "d" / "m3-rag"
    path = root / TINY_VERSION
    if not (path / ".complete").exists():
        # Several pytest processes may build at once: build aside, then rename into place.
        scratch = root / f"{TINY_VERSION}.{os.getpid()}"
        build_random_checkpoint(scratch, tokenizer_corpus(), seed=0)
        (scratch / ".complete").write_text("ok")
        try:
            scratch.rename(path)
        except OSError:  # another process won the race
            shutil.rmtree(scratch, ignore_errors=True)
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Path):
    from m3_rag import M3Encoder

    return M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
