"""``M3Retriever``: hybrid retrieval + ColBERT rerank over an :class:`M3VectorStore`, as a ``BaseRetriever``."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, model_validator

from m3_rag.store.queries import check_mode
from m3_rag_langchain.vectorstore import M3VectorStore

__all__ = ["M3Retriever"]


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
    mode: str | None = None
    filter: Any = None
    prefetch_k: int | None = None
    score_key: str | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> M3Retriever:
        if self.mode is not None:
            check_mode(self.mode, self.vectorstore.store.schema)
        return self

    def _options(self, k: int | None, mode: str | None, filter: Any, prefetch_k: int | None) -> dict[str, Any]:
        k = self.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, found {k}")
        return {
            "k": k,
            # None defers to the retriever, then the store; "" is a mode, and the store refuses it.
            "mode": self.mode if mode is None else mode,
            "filter": self.filter if filter is None else filter,
            "prefetch_k": self.prefetch_k if prefetch_k is None else prefetch_k,
        }

    def _documents(self, scored: list[tuple[Document, float]]) -> list[Document]:
        if self.score_key is None:
            return [doc for doc, _ in scored]
        return [
            doc.model_copy(update={"metadata": {**doc.metadata, self.score_key: score}}) for doc, score in scored
        ]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        mode: str | None = None,
        filter: Any = None,
        prefetch_k: int | None = None,
    ) -> list[Document]:
        options = self._options(k, mode, filter, prefetch_k)
        return self._documents(self.vectorstore.similarity_search_with_score(query, **options))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        mode: str | None = None,
        filter: Any = None,
        prefetch_k: int | None = None,
    ) -> list[Document]:
        options = self._options(k, mode, filter, prefetch_k)
        return self._documents(await self.vectorstore.asimilarity_search_with_score(query, **options))
