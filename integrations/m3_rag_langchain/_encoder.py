"""Resolve the encoder an adapter class runs on: one passed in, or BGE-M3 loaded by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from m3_rag.backends import Backend, Precision
from m3_rag.types import Encoder, check_encoder

__all__ = ["DEFAULT_MODEL", "resolve_encoder", "EncoderFields", "EmbeddingFields"]

DEFAULT_MODEL = "BAAI/bge-m3"


def resolve_encoder(
    encoder: Any,
    model_name: str | None,
    device: str | None,
    owner: str,
    backend: Backend = "torch",
    precision: Precision = "fp32",
) -> Encoder:
    """Return ``encoder`` as given, or load ``model_name`` (on ``backend`` at ``precision``) behind a :class:`CachedEncoder`.

    A loaded encoder is wrapped in the cache so that the dense embeddings, the sparse
    embeddings and the store built on the same encoder run the model once per text.
    """
    if encoder is not None:
        if model_name is not None:
            raise ValueError(
                f"{owner} got both encoder= and model_name={model_name!r}; expected one. "
                "Fix: pass encoder= to share an already-loaded model, or model_name= to load one."
            )
        if (backend, precision) != ("torch", "fp32"):
            raise ValueError(
                f"{owner} got encoder= with backend={backend!r}, precision={precision!r}; expected those only when "
                "model_name= loads a model. Fix: pass model_name= with them, or load the encoder with "
                "M3Encoder.from_pretrained(..., backend=..., precision=...)."
            )
        return check_encoder(encoder, owner)
    from m3_rag.cache import CachedEncoder
    from m3_rag.encoder import M3Encoder

    return CachedEncoder(
        M3Encoder.from_pretrained(model_name or DEFAULT_MODEL, device=device, backend=backend, precision=precision)
    )


class EncoderFields(BaseModel):
    """The fields the embedding and reranker classes share: which model (``model_name`` or a ready
    ``encoder``), its ``device``, and, for a model loaded by name, its ``backend`` (``"onnx"``:
    ONNX Runtime on the CPU, extra ``m3-rag[onnx]``) and ``precision`` (``"int8"``: onnx only);
    the encoder is resolved on validation."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    model_name: str | None = None
    encoder: Any = None
    device: str | None = None
    backend: Backend = "torch"
    precision: Precision = "fp32"

    @model_validator(mode="after")
    def _load(self) -> Any:
        self.encoder = resolve_encoder(self.encoder, self.model_name, self.device, type(self).__name__,
                                       self.backend, self.precision)  # fmt: skip
        return self


class EmbeddingFields(EncoderFields):
    """The embedding classes' fields: the encoder's, and progress bars when embedding documents."""

    show_progress: bool = False
