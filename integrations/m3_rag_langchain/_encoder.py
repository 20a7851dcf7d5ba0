"""Resolve the encoder an adapter class runs on: one passed in, or BGE-M3 loaded by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from m3_rag.types import Encoder, check_encoder

__all__ = ["DEFAULT_MODEL", "resolve_encoder", "EncoderFields", "EmbeddingFields"]

DEFAULT_MODEL = "BAAI/bge-m3"


def resolve_encoder(encoder: Any, model_name: str | None, device: str | None, owner: str) -> Encoder:
    """Return ``encoder`` as given, or load ``model_name`` behind a :class:`CachedEncoder`.

    A loaded encoder is wrapped in the cache so that the dense embeddings, the sparse
    embeddings and the store built on the same encoder run the model once per text.
    """
    if encoder is not None:
        if model_name is not None:
            raise ValueError(
                f"{owner} got both encoder= and model_name={model_name!r}; expected one. "
                "Fix: pass encoder= to share an already-loaded model, or model_name= to load one."
            )
        return check_encoder(encoder, owner)
    from m3_rag.cache import CachedEncoder
    from m3_rag.encoder import M3Encoder

    return CachedEncoder(M3Encoder.from_pretrained(model_name or DEFAULT_MODEL, device=device))


class EncoderFields(BaseModel):
    """The fields the embedding and reranker classes share: which model (``model_name`` or a ready
    ``encoder``) and its ``device``; the encoder is resolved on validation."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    model_name: str | None = None
    encoder: Any = None
    device: str | None = None

    @model_validator(mode="after")
    def _load(self) -> Any:
        self.encoder = resolve_encoder(self.encoder, self.model_name, self.device, type(self).__name__)
        return self


class EmbeddingFields(EncoderFields):
    """The embedding classes' fields: the encoder's, and progress bars when embedding documents."""

    show_progress: bool = False
