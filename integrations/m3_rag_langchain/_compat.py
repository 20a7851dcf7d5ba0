"""Import guard: the adapter needs the ``langchain`` extra, and says so when it is missing."""

from __future__ import annotations

import importlib

__all__ = ["INSTALL_HINT", "require_langchain"]

INSTALL_HINT = 'pip install "m3-rag[langchain]"'
# The modules the adapter imports; langchain-qdrant provides the SparseEmbeddings interface.
_REQUIRED = ("langchain_core", "langchain_qdrant")


def require_langchain() -> None:
    """Raise ``ImportError`` naming the extra to install if a LangChain package is missing."""
    for module in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"m3_rag_langchain needs {module.replace('_', '-')!r}, which is not installed "
                f"({exc}). Fix: {INSTALL_HINT}"
            ) from exc
