"""Import guard: the adapter needs the ``langchain`` extra, and says so when it is missing."""

import importlib

# The modules the adapter imports; langchain-qdrant provides the SparseEmbeddings interface.
for _module in ("langchain_core", "langchain_qdrant"):
    try:
        importlib.import_module(_module)
    except ImportError as exc:
        raise ImportError(
            f"m3_rag_langchain needs {_module.replace('_', '-')!r}, which is not installed "
            f'({exc}). Fix: pip install "m3-rag[langchain]"'
        ) from exc
