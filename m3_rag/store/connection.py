"""Where a store's collection lives: one frozen description shared by the stores, the CLI and
the adapters, which owns the "exactly one of path / location / url / client" rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient, QdrantClient

__all__ = ["Connection", "ConnectionKind", "CONNECTION_FIELDS"]

ConnectionKind = Literal["path", "location", "url", "client"]
#: The constructor keywords a :class:`Connection` is made of (the stores and adapters take them too).
CONNECTION_FIELDS = ("path", "location", "url", "client", "api_key", "prefer_grpc", "shard_number", "replication_factor")
_SERVER_ONLY = ("api_key", "prefer_grpc")
_Client = TypeVar("_Client", "QdrantClient", "AsyncQdrantClient")


@dataclass(frozen=True)
class Connection:
    """Exactly one of ``path`` (Qdrant Edge, embedded, on disk), ``location`` (qdrant-client local
    mode: ``":memory:"`` or a folder), ``url`` (a Qdrant server) or ``client`` (an open
    ``QdrantClient``/``AsyncQdrantClient``), with the options that apply to it: ``api_key``,
    ``prefer_grpc`` and ``client_kwargs`` (passed to ``QdrantClient``) for ``url``;
    ``shard_number``/``replication_factor`` (used when the collection is created) for a server.
    An option that does not apply to the kind given raises instead of being ignored."""

    path: str | Path | None = None
    location: str | None = None
    url: str | None = None
    client: Any = None
    api_key: str | None = None
    prefer_grpc: bool = False
    shard_number: int | None = None
    replication_factor: int | None = None
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [k for k in ("path", "location", "url", "client") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"pass exactly one of path= (Qdrant Edge, embedded), location=':memory:' (qdrant-client "
                f"local mode), url= (a Qdrant server) or client=; found {given or 'none'}."
            )
        kind = given[0]
        misplaced = [k for k in _SERVER_ONLY if getattr(self, k) not in (None, False) and kind != "url"]
        if self.client_kwargs and kind not in ("url", "location"):
            misplaced.append(f"client options {sorted(self.client_kwargs)}")
        if kind == "path":
            misplaced += [k for k in ("shard_number", "replication_factor") if getattr(self, k) is not None]
        if misplaced:
            raise ValueError(
                f"{', '.join(misplaced)} given with {kind}=, where {'it does' if len(misplaced) == 1 else 'they do'} "
                f"not apply; expected them only with url= (shards and replicas: any server). Fix: drop them, or "
                "connect with url=."
            )

    @classmethod
    def of(cls, **options: Any) -> Connection:
        """A connection from constructor keywords: :data:`CONNECTION_FIELDS`; any other keyword
        is a ``QdrantClient`` option (``client_kwargs``)."""
        known = {k: options.pop(k) for k in CONNECTION_FIELDS if k in options}
        return cls(**known, client_kwargs=options)

    @property
    def kind(self) -> ConnectionKind:
        for k in ("path", "location", "url"):
            if getattr(self, k) is not None:
                return k
        return "client"

    def describe(self) -> str:
        """Where, for messages (never the api key)."""
        if self.kind == "client":
            return f"client {type(self.client).__name__}"
        return f"{self.kind} {getattr(self, self.kind)}"

    def backend(self, collection: str, *, asynchronous: bool) -> Any:
        """The backend over this connection: Edge for ``path``, else qdrant-client
        (``AsyncQdrantClient`` and the async backends when ``asynchronous``)."""
        if self.path is not None:  # kind "path"
            from m3_rag.store.backends.base import ThreadedBackend
            from m3_rag.store.backends.edge import EdgeBackend

            edge = EdgeBackend(self.path, collection)
            return ThreadedBackend(edge) if asynchronous else edge
        from qdrant_client import AsyncQdrantClient, QdrantClient

        from m3_rag.store.backends.client import AsyncClientBackend, ClientBackend, ServerOptions

        options = ServerOptions(self.shard_number, self.replication_factor)
        if asynchronous:
            return AsyncClientBackend(self._qdrant_client(AsyncQdrantClient), collection, options)
        return ClientBackend(self._qdrant_client(QdrantClient), collection, options)

    def _qdrant_client(self, client_cls: type[_Client]) -> _Client:
        """The ``client`` given, or a new ``client_cls`` for ``location``/``url``."""
        if self.kind == "client":
            if not isinstance(self.client, client_cls):
                raise TypeError(f"client= takes a qdrant_client.{client_cls.__name__}, found {type(self.client).__name__}.")
            return self.client
        if self.kind == "location":
            return client_cls(location=self.location, **self.client_kwargs)
        return client_cls(url=self.url, api_key=self.api_key, prefer_grpc=self.prefer_grpc, **self.client_kwargs)
