"""The encoder's backends and precisions: their names and the check of a requested pair.

``torch`` (default) runs the Hugging Face backbone on any torch device. ``onnx`` runs one ONNX
Runtime graph (backbone and the three heads) on the CPU, exported once and cached
(:mod:`m3_rag.onnx`, extra ``m3-rag[onnx]``); its ``int8`` precision quantises the backbone.
"""

from __future__ import annotations

from typing import Literal, cast, get_args

from m3_rag.validation import short_repr

__all__ = ["Backend", "Precision", "BACKENDS", "PRECISIONS", "ONNX_EXTRA", "check_backend"]

Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)
ONNX_EXTRA = "m3-rag[onnx]"  # the optional dependencies of the onnx backend


def check_backend(backend: object, precision: object) -> tuple[Backend, Precision]:
    """``(backend, precision)`` if the pair is supported; ValueError saying found, expected and fix otherwise."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"backend is {short_repr(backend)}; expected one of {', '.join(map(repr, BACKENDS))}. "
            "Fix: omit it for 'torch', or pass backend='onnx' for ONNX Runtime on the CPU."
        )
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"precision is {short_repr(precision)}; expected one of {', '.join(map(repr, PRECISIONS))}. "
            "Fix: omit it for 'fp32', or pass precision='int8' (with backend='onnx') for the quantised backbone."
        )
    if precision == "int8" and backend != "onnx":
        raise ValueError(
            f"precision 'int8' needs backend 'onnx', found backend {backend!r}; expected fp32 on the torch backend. "
            "Fix: pass backend='onnx' with precision='int8', or omit precision (dtype sets the torch precision)."
        )
    return cast(Backend, backend), cast(Precision, precision)  # the checks above narrowed them
