"""Fail early, and say how to fix it, when the optional LlamaIndex dependency is missing."""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "m3_rag_llamaindex needs llama-index-core, which is not installed "
        f'(import failed: {exc}). Fix: pip install "m3-rag[llamaindex]"'
    ) from exc
