"""The cache of exported graphs: one folder per key, built aside and renamed into place, with a manifest.

    <root>/<prefix>-<key[:32]>/manifest.json     key, options, source and file hashes
    <root>/<prefix>-<key[:32]>/<the exporter's files>

The key is the SHA-256 of the model's source files (their contents) and the export options, so
a model whose weights, heads or config change gets a new folder (the old one is left alone). A
folder is complete when its manifest names this key and every expected file with its size and
hash; a file whose mtime differs from the manifest's is hashed again. Nothing from a folder or
its manifest is used as a path: the file names are the caller's, the folder name is built here
from a hex digest, and symlinks are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from m3_rag.loading import COLBERT_HEAD, M3_CONFIG, SPARSE_HEAD, WEIGHT_FILES, ModelFiles
from m3_rag.model_folder import clip_text, read_json_object
from m3_rag.validation import short_repr

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "CacheEntry",
    "OnnxCacheWarning",
    "default_cache_root",
    "model_sources",
    "file_sha256",
    "cache_entry",
    "check_entry",
    "open_entry",
]

CACHE_ENV = "M3_RAG_ONNX_CACHE"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600  # a temp folder this old is a crashed export's
_NAME = re.compile(r"[a-z0-9]{1,16}-[0-9a-f]{32}")
_CHUNK = 8 * 2**20
_digests: dict[tuple, str] = {}  # (path, size, mtime_ns, inode, device) -> sha256: each file is read once per process
_digests_lock = threading.Lock()


class OnnxCacheWarning(UserWarning):
    """A cache folder was incomplete or corrupt and is built again."""


def default_cache_root() -> Path:
    """``$M3_RAG_ONNX_CACHE``, else ``$XDG_CACHE_HOME/m3-rag/onnx``, else ``~/.cache/m3-rag/onnx``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "m3-rag" / "onnx"


def model_sources(files: ModelFiles) -> list[tuple[str, Path]]:
    """The files an export reads, labelled: the backbone's config.json and weights, the heads, m3_config.json."""
    backbone, heads = files.backbone_dir, files.heads_dir
    sources = [("backbone/config.json", backbone / "config.json")]
    weights = next((name for name in WEIGHT_FILES if (backbone / name).exists()), None)
    if weights is None:
        raise FileNotFoundError(
            f"{backbone} has none of the weight files {', '.join(WEIGHT_FILES)}; expected the backbone's weights "
            "beside its config.json. Fix: copy model.safetensors from the original model."
        )
    sources.append((f"backbone/{weights}", backbone / weights))
    if weights.endswith(".index.json"):
        sources += [(f"backbone/{shard}", backbone / shard) for shard in _shards(backbone / weights)]
    sources += [(f"heads/{COLBERT_HEAD}", heads / COLBERT_HEAD), (f"heads/{SPARSE_HEAD}", heads / SPARSE_HEAD)]
    if (heads / M3_CONFIG).exists():
        sources.append((f"heads/{M3_CONFIG}", heads / M3_CONFIG))
    return sources


def _shards(index: Path) -> list[str]:
    """The shard file names of a sharded checkpoint's index: plain names in the same folder, nothing else."""
    fix = "copy the index and its shards again from the original model."
    data = read_json_object(index, expected="a sharded checkpoint index with a weight_map object", fix=fix)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index}: weight_map is {short_repr(weight_map)}; expected an object of tensor -> shard file. Fix: {fix}")
    names = sorted({str(v) for v in weight_map.values()})
    for name in names:
        if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
            raise ValueError(f"{index} names shard {short_repr(name)}; expected a file name in {index.parent}. Fix: {fix}")
    return names


def file_sha256(path: Path) -> str:
    """The SHA-256 of ``path``'s contents (memoised per path, size, mtime and inode within this process)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    with _digests_lock:
        if memo in _digests:
            return _digests[memo]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    with _digests_lock:
        _digests[memo] = digest.hexdigest()
    return _digests[memo]


@dataclass(frozen=True)
class CacheEntry:
    """Where the export of one model with one set of options lives, and what its manifest must say."""

    root: Path
    name: str
    key: str
    sources: dict  # label -> {"sha256", "size"}
    options: dict

    @property
    def path(self) -> Path:
        return self.root / self.name


def cache_entry(root: str | os.PathLike, sources: Sequence[tuple[str, Path]], options: dict, *, prefix: str) -> CacheEntry:
    """The entry of ``sources`` exported with ``options`` (JSON-serialisable) under ``root``."""
    if not re.fullmatch(r"[a-z0-9]{1,16}", prefix):
        raise ValueError(f"cache prefix {short_repr(prefix)}; expected 1-16 lowercase letters or digits")
    described = {}
    for label, path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file; expected the model's {label}. Fix: copy it from the original model.")
        described[label] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    payload = json.dumps({"sources": described, "options": options}, sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(payload.encode()).hexdigest()
    return CacheEntry(Path(root).expanduser().absolute(), f"{prefix}-{key[:32]}", key, described, options)


def check_entry(entry: CacheEntry, names: Sequence[str]) -> str | None:
    """None if ``entry``'s folder is complete (manifest of this key, every file in ``names`` intact); else what is wrong."""
    folder = entry.path
    if folder.is_symlink() or not folder.is_dir():
        return f"{folder} is a symlink or not a folder" if folder.exists() or folder.is_symlink() else "missing"
    file = folder / MANIFEST
    if file.is_symlink() or not file.is_file():
        return f"{file} is missing (an interrupted or partial export)"
    try:
        manifest = read_json_object(file, expected="an m3-rag ONNX cache manifest", fix="delete the folder.")
    except ValueError as exc:
        return clip_text(exc, 200)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != entry.key:
        return f"{file} is for key {short_repr(manifest.get('key'))}, expected {entry.key} (format {MANIFEST_FORMAT})"
    recorded = manifest.get("files")
    if not isinstance(recorded, dict) or sorted(recorded) != sorted(names):
        listed = sorted(recorded) if isinstance(recorded, dict) else recorded
        return f"{file} lists files {short_repr(listed)}, expected {sorted(names)}"
    for name in names:
        path, info = folder / name, recorded[name]
        if not isinstance(info, dict):
            return f"{file}: the entry of {name} is {short_repr(info)}, expected its size and sha256"
        if path.is_symlink() or not path.is_file():
            return f"{path} is missing (or not a regular file)"
        st = path.stat()
        if st.st_size != info.get("size"):
            return f"{path} is {st.st_size} bytes, the manifest says {short_repr(info.get('size'))} (truncated or replaced)"
        if st.st_mtime_ns != info.get("mtime_ns") and file_sha256(path) != info.get("sha256"):
            return f"{path} does not match the manifest's sha256 (modified or corrupt)"
    return None


def open_entry(entry: CacheEntry, names: Sequence[str], build: Callable[[Path], None], *, about: str = "") -> Path:
    """The folder of ``entry``, checked; built first by ``build(temp_folder)`` if missing, stale or broken.

    ``build`` writes the files ``names`` into the empty folder it is given; the manifest is written
    here, and the folder renamed into place in one step, so that no reader sees a partial export.
    """
    problem = check_entry(entry, names)
    if problem is None:
        return entry.path
    if problem != "missing":
        warnings.warn(
            f"ONNX cache folder {entry.path} is unusable ({problem}); expected a complete export. "
            "Exporting it again (delete the folder to silence this).",
            OnnxCacheWarning,
            stacklevel=3,
        )
        _remove(entry)
    temp = entry.root / f"{_TMP_PREFIX}{entry.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        entry.root.mkdir(parents=True, exist_ok=True)
        temp.mkdir(mode=0o700)
    except OSError as exc:
        raise RuntimeError(
            f"cannot write the ONNX export cache in {entry.root} ({type(exc).__name__}: {clip_text(exc)}); expected a "
            f"writable folder. Fix: pass onnx_cache_dir= (or set ${CACHE_ENV}) to a writable folder."
        ) from exc
    _clean_stale_temps(entry.root, keep=temp)
    try:
        build(temp)
        _write_manifest(temp, entry, names, about)
        # Another process may have published the same key meanwhile: keep a complete one, replace a broken one.
        if not _publish(temp, entry.path) and check_entry(entry, names) is not None:
            _remove(entry)
            _publish(temp, entry.path)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    problem = check_entry(entry, names)
    if problem is not None:
        raise RuntimeError(
            f"ONNX cache folder {entry.path} is unusable right after export ({problem}); expected a complete export. "
            f"Fix: check that {entry.root} is writable and has free space, then load the model again."
        )
    return entry.path


def _publish(temp: Path, folder: Path) -> bool:
    """Rename ``temp`` to ``folder`` in one step; False if ``folder`` exists already."""
    try:
        os.rename(temp, folder)
    except OSError:
        if folder.exists() or folder.is_symlink():
            return False
        raise
    return True


def _write_manifest(folder: Path, entry: CacheEntry, names: Sequence[str], about: str) -> None:
    files = {}
    for name in names:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise RuntimeError(f"the export did not write {name} into {folder}; expected files {list(names)}")
        _fsync(path)
        st = path.stat()
        files[name] = {"size": st.st_size, "sha256": file_sha256(path), "mtime_ns": st.st_mtime_ns}
    manifest = {
        "format": MANIFEST_FORMAT,
        "key": entry.key,
        "about": about,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": entry.options,
        "sources": entry.sources,
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    _fsync(folder / MANIFEST)
    _fsync(folder)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. folders on Windows
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(entry: CacheEntry) -> None:
    """Delete ``entry``'s folder (a symlink in its place is unlinked, never followed)."""
    folder = entry.path
    if not _NAME.fullmatch(folder.name) or folder.parent != entry.root:
        raise ValueError(f"refusing to delete {folder}: not a cache folder name")
    try:
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RuntimeError(
            f"ONNX cache folder {folder} is broken and cannot be deleted ({type(exc).__name__}: {clip_text(exc)}); "
            f"expected a writable cache. Fix: delete {folder} by hand, or pass another onnx_cache_dir."
        ) from exc


def _clean_stale_temps(root: Path, keep: Path) -> None:
    now = time.time()
    for path in root.glob(f"{_TMP_PREFIX}*"):
        try:
            if path == keep or path.is_symlink() or not path.is_dir():
                continue
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
