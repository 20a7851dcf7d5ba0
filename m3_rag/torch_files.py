"""Reading a ``torch.save`` file from outside: tensors only, one-line errors naming the file."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from m3_rag.model_folder import clip_text

__all__ = ["SAFE_TORCH", "HEAD_RESAVE", "require_safe_torch", "load_tensor_file", "pickle_refusal"]

# torch.load(weights_only=True) before 2.6 can still run code from a crafted file (CVE-2025-32434).
SAFE_TORCH = (2, 6)
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def require_safe_torch(file: Path) -> None:
    found = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if found < SAFE_TORCH:
        raise RuntimeError(
            f"torch {torch.__version__} cannot load {file} safely: before 2.6, torch.load can run code from a crafted "
            "file even with weights_only=True (CVE-2025-32434); expected torch >= 2.6. Fix: pip install 'torch>=2.6'."
        )


HEAD_RESAVE = "torch.save(linear.state_dict(), path)"


def pickle_refusal(file: Path, exc: BaseException, expected: str, resave: str = HEAD_RESAVE) -> str:
    """The message for a file torch's weights-only unpickler refused (it never advises unsafe loading)."""
    name = _GLOBAL.search(str(exc))
    what = f"unsupported global {clip_text(name.group(1))}" if name else "an unsupported pickle instruction"
    return (
        f"{file} holds pickled Python objects beyond tensors ({what}); it is refused because loading it could run code. "
        f"Expected {expected}. Fix: from a trusted copy of the model, re-save it with {resave}."
    )


def load_tensor_file(file: Path, expected: str) -> object:
    """``torch.load(file, weights_only=True)`` on the CPU, with every failure as one line naming ``file``."""
    require_safe_torch(file)
    if not file.is_file():
        raise ValueError(f"{file} is not a regular file; expected {expected}. Fix: copy the file from the original model.")
    size = file.stat().st_size
    fix = "Fix: copy the file again from the original model (it is saved with torch.save(linear.state_dict(), path))."
    if size == 0:
        raise ValueError(f"{file} is empty (0 bytes); expected {expected}. {fix}")
    with open(file, "rb") as f:  # opened here: an OSError below comes from parsing, not from the disk
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            name = _GLOBAL.search(str(exc))
            # A torch.* name torch does not allow is a cut-off or corrupt file far more often than an attack.
            if name and not name.group(1).startswith("torch."):
                raise ValueError(pickle_refusal(file, exc, expected)) from None  # torch's text suggests unsafe loading
            problem: Exception = exc
        except Exception as exc:  # truncated zip, garbage, a crafted storage: torch raises many types
            problem = exc
    # from None: torch's weights-only message advises loading unsafely.
    raise ValueError(
        f"{file} ({size} bytes) cannot be read as a tensor-only PyTorch file ({type(problem).__name__}: truncated, "
        f"corrupt, another format, or pickle instructions refused because they could run code); expected {expected}. {fix}"
    ) from None
