"""Choosing the torch device, checked before any weights are read."""

from __future__ import annotations

import torch

from m3_rag.validation import short_repr

__all__ = ["SUPPORTED_DEVICE_TYPES", "resolve_device"]

SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")
_FIX = "Fix: omit the device (--device on the command line) to use CUDA when present and the CPU otherwise, or pass 'cpu'."


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a usable torch device (None: CUDA when present, else CPU); ValueError/TypeError if it cannot be used."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        try:
            dev = torch.device(device.strip().lower())
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device {short_repr(device)} is not a device name; expected 'cpu', 'cuda', 'cuda:N' or 'mps'. {_FIX}"
            ) from None
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(
            f"device is {type(device).__name__} ({short_repr(device)}); expected a str such as 'cpu' or 'cuda:0'. {_FIX}"
        )
    if dev.type not in SUPPORTED_DEVICE_TYPES:
        supported = ", ".join(SUPPORTED_DEVICE_TYPES)
        raise ValueError(f"device {short_repr(str(dev))} is not supported; expected one of {supported}. {_FIX}")
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            found = f"this torch build ({torch.__version__}) has no CUDA support"
        elif not torch.cuda.is_available():
            found = "no CUDA device is available on this machine"
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            found = f"CUDA device {dev.index} does not exist (this machine has {torch.cuda.device_count()})"
        else:
            return dev
        raise ValueError(f"device {short_repr(str(dev))} cannot be used: {found}; expected an available device. {_FIX}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        found = "no Apple MPS device is available"
        raise ValueError(f"device 'mps' cannot be used: {found}; expected an available device. {_FIX}")
    return dev
