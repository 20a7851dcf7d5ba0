"""The ONNX export cache (hit, stale, partial, corrupt, races) and the backend's option errors."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings

import numpy as np
import pytest

from m3_rag.onnx import cache

NAMES = ("model.onnx", "model.onnx.data")


# ------------------------------------------------------------------ the cache alone (no ONNX needed)
@pytest.fixture
def sources(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in (("config.json", b"{}"), ("model.safetensors", b"w" * 100)):
        (folder / name).write_bytes(data)
    return [("backbone/config.json", folder / "config.json"), ("backbone/model.safetensors", folder / "model.safetensors")]


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, folder) -> None:
        self.calls += 1
        (folder / "model.onnx").write_bytes(b"graph")
        (folder / "model.onnx.data").write_bytes(b"d" * 64)


def _entry(tmp_path, sources, **options):
    return cache.cache_entry(tmp_path / "cache", sources, {"precision": "fp32", **options}, prefix="fp32")


def _bump_mtime(path) -> None:
    """A write moves mtime on; coarse file-system clocks may not within one test, so move it explicitly."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_hit_builds_once(tmp_path, sources):
    build, entry = Builder(), _entry(tmp_path, sources)
    first = cache.open_entry(entry, NAMES, build)
    second = cache.open_entry(_entry(tmp_path, sources), NAMES, build)
    assert first == second == entry.path and build.calls == 1
    manifest = json.loads((first / cache.MANIFEST).read_text())
    assert manifest["key"] == entry.key and sorted(manifest["files"]) == sorted(NAMES)
    assert manifest["sources"]["backbone/model.safetensors"]["size"] == 100
    assert not [p for p in entry.root.iterdir() if p.name.startswith(".tmp-")]  # the temp folder was renamed


def test_key_follows_contents_and_options(tmp_path, sources):
    base = _entry(tmp_path, sources)
    assert _entry(tmp_path, sources).key == base.key
    assert _entry(tmp_path, sources, opset=18).key != base.key
    weights = sources[1][1]
    weights.write_bytes(b"W" + b"w" * 99)  # same size, other contents
    _bump_mtime(weights)
    stale = _entry(tmp_path, sources)
    assert stale.key != base.key and stale.name != base.name


def test_modified_weights_build_a_new_folder(tmp_path, sources):
    build = Builder()
    old = cache.open_entry(_entry(tmp_path, sources), NAMES, build)
    sources[1][1].write_bytes(b"v" * 100)
    _bump_mtime(sources[1][1])
    new = cache.open_entry(_entry(tmp_path, sources), NAMES, build)
    assert new != old and build.calls == 2


@pytest.mark.parametrize("damage", ["missing data", "truncated", "corrupt same size", "no manifest", "other key",
                                    "manifest not json", "symlinked file"])  # fmt: skip
def test_partial_or_corrupt_folder_is_detected_and_rebuilt(tmp_path, sources, damage):
    build, entry = Builder(), _entry(tmp_path, sources)
    folder = cache.open_entry(entry, NAMES, build)
    data, manifest = folder / "model.onnx.data", folder / cache.MANIFEST
    if damage == "missing data":
        data.unlink()
    elif damage == "truncated":
        data.write_bytes(b"d" * 10)
    elif damage == "corrupt same size":
        data.write_bytes(b"x" * 64)
        _bump_mtime(data)
    elif damage == "no manifest":
        manifest.unlink()
    elif damage == "other key":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "key": "0" * 64}))
    elif damage == "manifest not json":
        manifest.write_text("{ truncated")
    elif damage == "symlinked file":
        outside = tmp_path / "outside.data"
        outside.write_bytes(data.read_bytes())
        data.unlink()
        data.symlink_to(outside)
    assert cache.check_entry(entry, NAMES) is not None
    with pytest.warns(cache.OnnxCacheWarning, match="unusable"):
        again = cache.open_entry(entry, NAMES, build)
    assert again == folder and build.calls == 2 and cache.check_entry(entry, NAMES) is None
    assert not data.is_symlink() and data.read_bytes() == b"d" * 64


def test_failed_build_leaves_nothing(tmp_path, sources):
    entry = _entry(tmp_path, sources)

    def broken(folder):
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        cache.open_entry(entry, NAMES, broken)
    assert list(entry.root.iterdir()) == []


def test_build_that_forgets_a_file_is_an_error(tmp_path, sources):
    def incomplete(folder):
        (folder / "model.onnx").write_bytes(b"graph")

    with pytest.raises(RuntimeError, match="did not write model.onnx.data"):
        cache.open_entry(_entry(tmp_path, sources), NAMES, incomplete)


def test_unwritable_root_says_how_to_fix(tmp_path, sources):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(RuntimeError, match=r"cannot write the ONNX export cache.*Fix: pass onnx_cache_dir="):
        cache.open_entry(_entry(tmp_path, sources), NAMES, Builder())


def test_another_process_published_first(tmp_path, sources):
    entry = _entry(tmp_path, sources)
    build = Builder()

    def racing(folder):
        cache.open_entry(entry, NAMES, Builder())  # the other process finishes while we build
        build(folder)

    assert cache.open_entry(entry, NAMES, racing) == entry.path
    assert cache.check_entry(entry, NAMES) is None
    assert not [p for p in entry.root.iterdir() if p.name.startswith(".tmp-")]


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "x"))
    assert cache.default_cache_root() == tmp_path / "x"
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_root() == tmp_path / "xdg" / "m3-rag" / "onnx"


def test_shard_names_are_confined(tmp_path):
    from m3_rag.loading import ModelFiles

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    with pytest.raises(ValueError, match="names shard"):
        cache.model_sources(ModelFiles(name="m", backbone_dir=folder, heads_dir=folder))


# ------------------------------------------------------------------ through from_pretrained
onnx_needed = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnxruntime", "onnx")), reason="needs m3-rag[onnx]"
)


@pytest.fixture
def own_checkpoint(tiny_checkpoint, tmp_path):
    """A copy of the tiny checkpoint that a test may modify."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


@onnx_needed
def test_second_load_does_not_export_and_stale_weights_do(own_checkpoint, tmp_path, monkeypatch):
    from m3_rag import M3Encoder
    from m3_rag.onnx import export

    calls = []
    real = export.export_model
    monkeypatch.setattr(export, "export_model", lambda *a, **k: (calls.append(1), real(*a, **k)))
    root = tmp_path / "onnx"
    first = M3Encoder.from_pretrained(own_checkpoint, backend="onnx", onnx_cache_dir=root)
    again = M3Encoder.from_pretrained(own_checkpoint, backend="onnx", onnx_cache_dir=root)
    assert len(calls) == 1 and again.backbone.folder == first.backbone.folder
    text = ["a text to encode"]
    assert np.array_equal(first.encode(text).dense, again.encode(text).dense)

    # New head weights: a new key, a new export, and the new weights' outputs.
    import torch

    head = own_checkpoint / "sparse_linear.pt"
    state = torch.load(head, weights_only=True)
    torch.save({"weight": -state["weight"], "bias": state["bias"]}, head)
    _bump_mtime(head)
    fresh = M3Encoder.from_pretrained(own_checkpoint, backend="onnx", onnx_cache_dir=root)
    assert len(calls) == 2 and fresh.backbone.folder != first.backbone.folder
    reference = M3Encoder.from_pretrained(own_checkpoint, device="cpu")
    assert fresh.encode(text).sparse[0].to_dict().keys() == reference.encode(text).sparse[0].to_dict().keys()


@onnx_needed
def test_partial_export_is_detected_through_from_pretrained(own_checkpoint, tmp_path, tiny_encoder):
    from m3_rag import M3Encoder

    root = tmp_path / "onnx"
    folder = M3Encoder.from_pretrained(own_checkpoint, backend="onnx", onnx_cache_dir=root).backbone.folder
    (folder / "model.onnx.data").unlink()
    with pytest.warns(cache.OnnxCacheWarning, match=r"model\.onnx\.data is missing"):
        encoder = M3Encoder.from_pretrained(own_checkpoint, backend="onnx", onnx_cache_dir=root)
    assert encoder.backbone.folder == folder
    text = ["a text to encode"]
    assert np.abs(encoder.encode(text).dense - tiny_encoder.encode(text).dense).max() <= 1e-5


# ------------------------------------------------------------------ option errors
def test_missing_extra_names_it(monkeypatch, tiny_checkpoint):
    from m3_rag import M3Encoder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r"m3-rag\[onnx\]"):
        M3Encoder.from_pretrained(tiny_checkpoint, backend="onnx")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "tensorrt"}, r"backend is 'tensorrt'; expected one of 'torch', 'onnx'\. Fix"),
        ({"backend": "onnx", "precision": "int4"}, r"precision is 'int4'; expected one of 'fp32', 'int8'\. Fix"),
        ({"precision": "int8"}, r"precision 'int8' needs backend 'onnx'.*Fix"),
        pytest.param({"backend": "onnx", "dtype": "float16"}, r"computes in float32.*Fix", marks=onnx_needed),
        pytest.param({"backend": "onnx", "device": "meta"}, r"device 'meta'", marks=onnx_needed),
    ],
)
def test_bad_options_say_what_and_how_to_fix(tiny_checkpoint, kwargs, match):
    from m3_rag import M3Encoder

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            M3Encoder.from_pretrained(tiny_checkpoint, **kwargs)


@onnx_needed
def test_onnx_on_cuda_is_refused_before_reading(tmp_path):
    import torch

    from m3_rag.onnx.runtime import _check_device

    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="runs on the CPU"):
            _check_device("cuda")
    assert _check_device(None).type == "cpu"
