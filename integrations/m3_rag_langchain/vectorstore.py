"""``M3VectorStore``: a LangChain ``VectorStore`` over :class:`m3_rag.store.M3Store`.

Thin by design: storage, search modes, filters and the connection live in the core store; each
method maps one LangChain call and its ``Document`` objects onto one call of the core store (the
async ones onto its async view).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from m3_rag.store import DEFAULT_COLLECTION, AsyncM3Store, Connection, M3Store, SearchResult, StoredPoint
from m3_rag.store.queries import DEFAULT_MODE, Mode, check_mode
from m3_rag.store.schema import schema_from_encoder
from m3_rag.types import ALL_OUTPUTS, Encoder
from m3_rag.validation import as_list
from m3_rag_langchain.dense_only import EmbeddingsEncoder
from m3_rag_langchain.embeddings import BGEM3Embeddings

__all__ = ["M3VectorStore", "BOUNDED_MODES"]

# Modes whose score is a cosine or a ColBERT MaxSim of unit vectors, i.e. in [-1, 1]; the
# others (sparse dot products, RRF, the m3 weighted sum with its sparse part) are unbounded.
BOUNDED_MODES = ("dense", "hybrid+rerank")
_SEARCH_OPTIONS = ("filter", "mode", "prefetch_k", "weights")
_VECTOR_OPTIONS = ("filter", "mode")  # a caller's vector runs dense mode only


def encoder_for(embedding: Embeddings, dense_dim: int | None = None) -> Encoder:
    """The m3 encoder behind ``embedding``: BGE-M3's own, or a plain model as dense-only."""
    if isinstance(embedding, BGEM3Embeddings):
        if dense_dim is not None:
            raise ValueError(
                f"dense_dim={dense_dim} was given with BGEM3Embeddings, whose size comes from the model config. "
                "Fix: drop dense_dim (it is only for plain, dense-only Embeddings)."
            )
        return embedding.encoder
    if not isinstance(embedding, Embeddings):
        raise TypeError(
            f"embedding is a {type(embedding).__name__}; expected a langchain_core Embeddings "
            "(BGEM3Embeddings for all modes, any other model for dense-only). Fix: pass BGEM3Embeddings(...)."
        )
    return EmbeddingsEncoder(embedding, dense_dim=dense_dim)


class M3VectorStore(VectorStore):
    """BGE-M3 hybrid search on Qdrant as a LangChain vector store.

    With :class:`BGEM3Embeddings` every search mode works: ``dense``, ``sparse``, ``hybrid``
    (RRF), ``hybrid+rerank`` (default: dense + sparse candidates reranked by ColBERT MaxSim)
    and ``m3`` (BGE-M3's weighted score). Ingestion runs the model once per batch for all three
    vectors.

    **Dense-only mode**: any other LangChain ``Embeddings`` (OpenAI, a fake, ...) is accepted and
    wrapped by :class:`EmbeddingsEncoder`; the collection then holds only the dense vector, the
    default mode is ``dense`` and the other modes raise an error naming the fix.

    Where the collection lives: ``connection=`` (a :class:`~m3_rag.store.Connection`) or its
    keywords, one of ``path=`` (Qdrant Edge, embedded, on disk), ``location=":memory:"``
    (qdrant-client local mode), ``url=`` (a Qdrant server, with ``api_key=``, ...; the async
    methods then use ``AsyncQdrantClient`` natively) or ``client=``: these and the other
    ``store_options`` (``colbert_datatype=``, ...) are :class:`~m3_rag.store.M3Store`'s.
    Otherwise the async methods run on the store's async view, :meth:`M3Store.aio` (one worker
    thread: the in-process engines block, and one process owns their data). ``store=`` wraps an
    existing :class:`~m3_rag.store.M3Store` instead (e.g. one shared with the LlamaIndex
    adapter); ``async_store=`` gives the async methods their own.

    Maximal marginal relevance (``max_marginal_relevance_search``, ``as_retriever(search_type="mmr")``)
    runs in Qdrant: ``k`` of the ``fetch_k`` best hits of ``mode``, picked by the dense vector.
    The ``*_by_vector`` methods take a dense vector (e.g. ``embed_query``'s) and run ``dense`` mode.

    Returned documents carry exactly the metadata that was added, and ``Document.id``.
    ``filter=`` takes a Mongo-style dict (``{"year": {"$gte": 2020}}``) or an
    ``m3_rag.store.filters`` node; ``{"title": {"$text": "Hello world"}}`` is Qdrant's
    case-insensitive word match (every word, in any order; not a substring or phrase).

    Arguments are checked where they enter: a ``mode`` (constructor, search keyword,
    ``as_retriever(search_kwargs=...)``) that the store cannot run raises ``ValueError``
    listing the modes, and every list argument (``texts``, ``metadatas``, ``ids``,
    ``documents``) given as a single str, dict or ``Document`` raises ``TypeError``.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        connection: Connection | None = None,
        collection: str = DEFAULT_COLLECTION,
        mode: Mode | None = None,
        weights: tuple[float, float, float] | None = None,
        prefetch_k: int | None = None,
        dense_dim: int | None = None,
        store: M3Store | None = None,
        async_store: AsyncM3Store | None = None,
        **store_options: Any,
    ) -> None:
        self._embedding = embedding
        if store is not None:
            if connection is not None or store_options:
                given = sorted({*store_options, *(["connection"] if connection is not None else [])})
                raise ValueError(
                    f"store= was given together with {given}; expected one. "
                    "Fix: configure the connection on the M3Store, or drop store=."
                )
            schema = store.schema
        else:
            encoder = encoder_for(embedding, dense_dim)
            schema = schema_from_encoder(encoder)
        # Checked before a store opens (and, on Edge, locks) its path.
        default: Mode = DEFAULT_MODE if set(schema.outputs) >= set(ALL_OUTPUTS) else "dense"
        self.mode: Mode = default if mode is None else check_mode(mode, schema)
        if store is None:
            # The core store makes the Connection of connection= or of its keywords, and checks them.
            options = {"collection": collection, "connection": connection, **store_options}
            store = M3Store(encoder, **options)
            if async_store is None and store.connection.kind == "url":
                async_store = AsyncM3Store(encoder, **options)
        self._store = store
        # The async methods' store: a native one (a server), else the sync store's view, whose
        # calls run on one worker thread, serialised as on the sync API.
        self._native_aio = async_store is not None
        self._aio: AsyncM3Store = store.aio() if async_store is None else async_store
        self.weights = weights
        self.prefetch_k = prefetch_k

    @classmethod
    def from_store(
        cls,
        store: M3Store,
        embedding: Embeddings | None = None,
        *,
        async_store: AsyncM3Store | None = None,
        **options: Any,
    ) -> M3VectorStore:
        """Wrap an existing core store; ``embedding`` defaults to BGE-M3 on the store's encoder."""
        embedding = BGEM3Embeddings(encoder=store.encoder) if embedding is None else embedding
        return cls(embedding, store=store, async_store=async_store, **options)

    # ------------------------------------------------------------------------- properties
    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def store(self) -> M3Store:
        """The core store (for what LangChain's interface has no words for)."""
        return self._store

    # ------------------------------------------------------------------------------ write
    def add_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add (or overwrite, by id) texts; missing ids get a UUID4. Returns the ids. Options:
        ``batch_size`` (64), ``show_progress`` (False)."""
        rows, options = _add_call(texts, metadatas, ids, kwargs, "add_texts")
        self._store.add_texts(*rows, **options)
        return rows[1]

    async def aadd_texts(
        self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        rows, options = _add_call(texts, metadatas, ids, kwargs, "aadd_texts")
        await self._aio.add_texts(*rows, **options)
        return rows[1]

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        # LangChain's version iterates first: a lone Document would be read field by field.
        return super().add_documents(as_list(documents, "documents", "Documents"), **kwargs)

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        return await super().aadd_documents(as_list(documents, "documents", "Documents"), **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by ids (missing ids are fine). ``ids=None`` raises rather than wiping the
        collection, so that an unset variable loses no data: call :meth:`clear` for that."""
        _no_extra(kwargs, "delete")
        self._store.delete(_ids_to_delete(ids))
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        _no_extra(kwargs, "adelete")
        await self._aio.delete(_ids_to_delete(ids))
        return True

    def clear(self) -> None:
        """Delete every document of the collection."""
        self._store.clear()

    async def aclear(self) -> None:
        await self._aio.clear()

    # ------------------------------------------------------------------------------- read
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return _documents(self._store.get(as_list(ids, "ids", "ids")))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return _documents(await self._aio.get(as_list(ids, "ids", "ids")))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return _documents(self._store.search(query, k=k, **self._search_options(kwargs)))

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return _documents(await self._aio.search(query, k=k, **self._search_options(kwargs)))

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Top ``k`` documents with the mode's score (higher is more similar).

        Keyword options: ``mode``, ``filter``, ``prefetch_k``, ``weights`` (default: the store's).
        """
        return _scored(self._store.search(query, k=k, **self._search_options(kwargs)))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return _scored(await self._aio.search(query, k=k, **self._search_options(kwargs)))

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """Top ``k`` documents by the dense cosine to ``embedding``; options ``filter`` (and ``mode="dense"``)."""
        return _documents(self._store.search_by_vector(embedding, k, **self._vector_options(kwargs)))

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return _documents(await self._aio.search_by_vector(embedding, k, **self._vector_options(kwargs)))

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return _scored(self._store.search_by_vector(embedding, k, **self._vector_options(kwargs)))

    async def asimilarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return _scored(await self._aio.search_by_vector(embedding, k, **self._vector_options(kwargs)))

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """``k`` documents of the ``fetch_k`` best hits of ``mode``, picked for relevance and
        diversity by the dense vector (``lambda_mult``: 1 relevance only, 0 diversity only).

        Keyword options as :meth:`similarity_search_with_score`'s; documents come in pick order.
        """
        options = self._search_options(kwargs)
        return _documents(self._store.search_mmr(query, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, **options))

    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        options = self._search_options(kwargs)
        return _documents(await self._aio.search_mmr(query, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, **options))

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """MMR over the ``fetch_k`` dense hits of ``embedding``; option ``filter`` (and ``mode="dense"``)."""
        options = self._vector_options(kwargs, mmr=True)
        return _documents(self._store.search_mmr_by_vector(embedding, k, fetch_k, lambda_mult, **options))

    async def amax_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        options = self._vector_options(kwargs, mmr=True)
        return _documents(await self._aio.search_mmr_by_vector(embedding, k, fetch_k, lambda_mult, **options))

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        to_relevance = self._relevance_fn(kwargs.get("mode"))
        return [(doc, to_relevance(s)) for doc, s in self.similarity_search_with_score(query, k, **kwargs)]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        to_relevance = self._relevance_fn(kwargs.get("mode"))
        return [(doc, to_relevance(s)) for doc, s in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self._relevance_fn(None)

    def _relevance_fn(self, mode: str | None) -> Callable[[float], float]:
        mode = self._mode(mode)
        if mode not in BOUNDED_MODES:
            raise NotImplementedError(
                f"mode {mode!r} has no bounded score to map to a [0, 1] relevance; relevance scores exist "
                f"for {BOUNDED_MODES}. Fix: pass mode='hybrid+rerank' (or 'dense'), or use similarity_search_with_score."
            )
        # Cosine/MaxSim in [-1, 1] -> [0, 1]; the clamp absorbs float rounding (1.0000001).
        return lambda score: min(1.0, max(0.0, (score + 1.0) / 2.0))

    def _mode(self, mode: str | None) -> Mode:
        """The store's mode for ``None``, else ``mode`` checked by the core (``""`` is not ``None``)."""
        return self.mode if mode is None else check_mode(mode, self._store.schema)

    def as_retriever(self, **kwargs: Any) -> Any:
        """LangChain's ``VectorStoreRetriever``; a ``search_kwargs`` mode is checked now, not at the first query."""
        self._mode((kwargs.get("search_kwargs") or {}).get("mode"))
        return super().as_retriever(**kwargs)

    def _search_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The core search's options: ``mode`` (None: the store's; the core checks it), ``filter``,
        ``prefetch_k`` and ``weights`` (None: this store's, then the core store's)."""
        unknown = sorted(set(kwargs) - set(_SEARCH_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown search option(s) {unknown}; expected any of {_SEARCH_OPTIONS}. "
                "Fix: pass only these (e.g. as_retriever(search_kwargs={'k': 4, 'mode': 'dense'}))."
            )
        mode = kwargs.get("mode")
        return {
            "mode": self.mode if mode is None else mode,
            "filter": kwargs.get("filter"),
            "prefetch_k": kwargs.get("prefetch_k", self.prefetch_k),
            "weights": kwargs.get("weights", self.weights),
        }

    def _vector_options(self, kwargs: dict[str, Any], mmr: bool = False) -> dict[str, Any]:
        """A search by a caller's vector (``mmr``: MMR's): its ``filter``; ``mode`` only as ``"dense"``."""
        text_method = "max_marginal_relevance_search" if mmr else "similarity_search"
        unknown = sorted(set(kwargs) - set(_VECTOR_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown option(s) {unknown} for a search by vector; expected any of {_VECTOR_OPTIONS}. "
                f"Fix: pass only these, or call {text_method}(query, ...) with the text for the other options."
            )
        mode = kwargs.get("mode")
        if mode is not None and self._mode(mode) != "dense":
            raise ValueError(
                f"mode={mode!r} was given with a vector; a dense vector can only run mode 'dense'. "
                f"Fix: drop mode, or call {text_method}(query, mode={mode!r}) with the query text."
            )
        return {"filter": kwargs.get("filter")}

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def from_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
        ids: list[str] | None = None, **kwargs: Any,
    ) -> M3VectorStore:  # fmt: skip
        """Build a store (``kwargs`` as for the constructor, plus the add's ``batch_size`` /
        ``show_progress``) and add ``texts`` to it."""
        rows, options = _add_call(texts, metadatas, ids, _pop_add_options(kwargs), "from_texts")  # before the path opens
        vs = cls(embedding, **kwargs)
        try:
            vs._store.add_texts(*rows, **options)
        except BaseException:
            vs.close()  # else an Edge path stays locked by a store the caller never got
            raise
        return vs

    @classmethod
    async def afrom_texts(
        cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
        ids: list[str] | None = None, **kwargs: Any,
    ) -> M3VectorStore:  # fmt: skip
        rows, options = _add_call(texts, metadatas, ids, _pop_add_options(kwargs), "afrom_texts")
        vs = cls(embedding, **kwargs)
        try:
            await vs._aio.add_texts(*rows, **options)
        except BaseException:
            await vs.aclose()
            raise
        return vs

    @classmethod
    def from_documents(cls, documents: list[Document], embedding: Embeddings, **kwargs: Any) -> M3VectorStore:
        return super().from_documents(as_list(documents, "documents", "Documents"), embedding, **kwargs)

    @classmethod
    async def afrom_documents(cls, documents: list[Document], embedding: Embeddings, **kwargs: Any) -> M3VectorStore:
        return await super().afrom_documents(as_list(documents, "documents", "Documents"), embedding, **kwargs)

    def close(self) -> None:
        """Close the store and its async view (a native async store needs :meth:`aclose`)."""
        self._store.close()

    async def aclose(self) -> None:
        """Close the native async store, if any, then the store."""
        try:
            if self._native_aio:
                await self._aio.close()
        finally:
            self.close()


def _rows(
    texts: Iterable[str], metadatas: Iterable[dict] | None, ids: Iterable[str | None] | None
) -> tuple[list[str], list[dict] | None, list[str]]:
    texts = as_list(texts, "texts", "texts")
    metadatas = None if metadatas is None else as_list(metadatas, "metadatas", "dicts (one per text)")
    ids = [None] * len(texts) if ids is None else as_list(ids, "ids", "ids")
    if len(ids) != len(texts):
        raise ValueError(
            f"got {len(ids)} ids for {len(texts)} texts; expected one id (or None) per text. "
            "Fix: pass ids of the same length, or none to generate them."
        )
    # LangChain ids are strings: generate UUID4s for the documents that have none.
    return texts, metadatas, [str(uuid.uuid4()) if i is None else i for i in ids]


def _ids_to_delete(ids: list[str] | None) -> list[str]:
    if ids is None:
        raise ValueError(
            "delete() needs ids; got None. Deleting everything on a missing argument would lose data. "
            "Fix: pass ids=[...], or call clear() to empty the collection."
        )
    return as_list(ids, "ids", "ids")


def _add_call(
    texts: Iterable[str], metadatas: Iterable[dict] | None, ids: Iterable[str | None] | None, kwargs: dict[str, Any],
    method: str,
) -> tuple[tuple[list[str], list[str], list[dict] | None], dict[str, Any]]:
    """The core ``add_texts`` arguments of a LangChain ``(a)add_texts`` call: (texts, ids, metadatas)
    and the options it takes (``batch_size``, ``show_progress``); anything else raises."""
    options = {"batch_size": kwargs.pop("batch_size", 64), "show_progress": kwargs.pop("show_progress", False)}
    _no_extra(kwargs, method)
    texts, metadatas, ids = _rows(texts, metadatas, ids)
    return (texts, ids, metadatas), options


def _pop_add_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The add's options out of a ``from_texts`` call's ``kwargs`` (the rest are the constructor's)."""
    return {name: kwargs.pop(name) for name in ("batch_size", "show_progress") if name in kwargs}


def _no_extra(kwargs: dict[str, Any], method: str) -> None:
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(kwargs)}")


def _document(record: SearchResult | StoredPoint) -> Document:
    # The store keeps the caller's id as given; LangChain document ids are strings.
    return Document(id=str(record.id), page_content=record.text, metadata=dict(record.metadata))


def _documents(records: Sequence[SearchResult | StoredPoint]) -> list[Document]:
    return [_document(r) for r in records]


def _scored(hits: list[SearchResult]) -> list[tuple[Document, float]]:
    return [(_document(h), h.score) for h in hits]
