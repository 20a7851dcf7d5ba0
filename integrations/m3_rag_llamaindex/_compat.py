"""Fail early, and say how to fix it, when the optional LlamaIndex dependency is missing."""

from __future__ import annotations

__all__ = ["INSTALL_HINT", "require_llama_index"]

INSTALL_HINT = 'pip install "m3-rag[llamaindex]"'


def require_llama_index() -> None:
    """Raise ``ImportError`` naming the extra to install when ``llama-index-core`` is absent."""
    try:
        import llama_index.core  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "m3_rag_llamaindex needs llama-index-core, which is not installed "
            f"(import failed: {exc}). Fix: {INSTALL_HINT}"
        ) from exc


require_llama_index()
