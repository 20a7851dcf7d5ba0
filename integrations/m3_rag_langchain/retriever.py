"""``M3Retriever``: hybrid retrieval + ColBERT rerank over an :class:`M3VectorStore`, as a ``BaseRetriever``."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from m3_rag.store.queries import Mode, check_mode
from m3_rag_langchain.vectorstore import M3VectorStore

__all__ = ["M3Retriever"]

_CALL_OPTIONS = ("k", "mode", "filter", "prefetch_k")


class M3Retriever(BaseRetriever):
    """Retrieves the top ``k`` documents of an :class:`M3VectorStore`.

    ``k``, ``mode`` (default: the store's, ``hybrid+rerank`` with BGE-M3), ``filter`` and
    ``prefetch_k`` are set at construction and can be overridden per call:
    ``retriever.invoke("query", k=1, filter={"year": 2024})``.

    Documents carry exactly their stored metadata; set ``score_key`` (e.g. ``"score"``) to also
    get the mode's score in a copy of each document's metadata under that key.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    vectorstore: M3VectorStore
    k: int = Field(default=4, ge=1)
    mode: Mode | None = None
    filter: Any = None
    prefetch_k: int | None = None
    score_key: str | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _check_mode(cls, mode: Any, info: ValidationInfo) -> Any:
        # The core's check against the store's schema (and its message), before pydantic's of the literal.
        store = info.data.get("vectorstore")
        return mode if mode is None or store is None else check_mode(mode, store.store.schema)

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The vector store's search options: this call's ``overrides``, else the retriever's."""
        unknown = sorted(set(overrides) - set(_CALL_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown} for this call; expected any of {_CALL_OPTIONS}. "
                "Fix: pass only these, e.g. retriever.invoke(query, k=1, mode='dense')."
            )
        # None defers to the retriever, then the store; "" or 0 are values, and the store refuses them.
        options = {
            name: getattr(self, name) if overrides.get(name) is None else overrides[name] for name in _CALL_OPTIONS
        }
        if options["k"] < 1:
            raise ValueError(f"k must be >= 1, found {options['k']}")
        return options

    def _documents(self, scored: list[tuple[Document, float]]) -> list[Document]:
        if self.score_key is None:
            return [doc for doc, _ in scored]
        return [doc.model_copy(update={"metadata": {**doc.metadata, self.score_key: score}}) for doc, score in scored]

    # Per call: any of k, mode, filter, prefetch_k (retriever.invoke(query, k=1)).
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        return self._documents(self.vectorstore.similarity_search_with_score(query, **self._options(overrides)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        return self._documents(await self.vectorstore.asimilarity_search_with_score(query, **self._options(overrides)))
