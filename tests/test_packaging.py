"""Every non-Python file the package reads at run time is declared as package data.

A file missing from ``[tool.setuptools.package-data]`` works in an editable install and is absent
from the wheel (the demo corpus once was). Building a wheel here would be slow; matching the
declared globs against the files in the source tree catches the same mistake.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declared(package: str) -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-data"].get(package, [])


def _matches(path: str, pattern: str) -> bool:
    """setuptools' glob: ``*`` stays within one path segment."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats))


def _data_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


def test_every_data_file_of_m3_rag_is_package_data():
    root = REPO / "m3_rag"
    patterns = _declared("m3_rag")
    files = _data_files(root)
    missing = [f for f in files if not any(_matches(f, pat) for pat in patterns)]
    assert not missing, f"add these to [tool.setuptools.package-data] m3_rag: {missing}"


def test_run_time_data_is_in_the_tree():
    from m3_rag.demo import DEMO_CORPUS
    from m3_rag.loading import BUILTIN_MODELS

    files = _data_files(REPO / "m3_rag")
    assert "py.typed" in files
    assert sorted(p.name for p in DEMO_CORPUS.glob("*.md")) and DEMO_CORPUS.parent == REPO / "m3_rag"
    for model_dir in BUILTIN_MODELS.values():
        for name in ("m3_config.json", "colbert_linear.pt", "sparse_linear.pt"):
            assert (model_dir / name).relative_to(REPO / "m3_rag").as_posix() in files
