"""What a scoped database needs from whoever hosts it: the narrow seam between the sandbox
and the engine.

:class:`~mdb_sync.scoping.ScopedDatabase` depends on this protocol, not on
:class:`~mdb_sync.engine.MongoDBEngine`: raw collections of the app's physical names, the
database for the few database-level operations it scopes itself (``listCollections``,
``create``, change streams, GridFS, allowed commands), sessions, the client epoch, the
``app_id`` index bookkeeping, two hooks (query observation for automatic indexes, refused
operations for security metrics) and the searches of :mod:`mdb_sync.ai` (vector and hybrid
search live in a layer above the sandbox: the host brings them, the sandbox never imports
them). Nothing here hands out the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from pymongo.client_session import ClientSession
    from pymongo.collection import Collection
    from pymongo.database import Database

    from ..storage import Storage
    from .collection import ScopedCollection

#: Which search :meth:`ScopeHost.search` runs: ``vector_search`` or ``hybrid_search``.
SearchKind = Literal["vector", "hybrid"]
#: ``search(kind, collection, *args, **kwargs)``: the host's searches (see ScopeHost.search).
Search = Callable[..., list[dict[str, Any]]]


class ScopeHost(Protocol):
    """The services a scoped database uses (implemented by :class:`StorageScopeHost`)."""

    def database(self) -> Database[Any]: ...

    def collection(self, physical: str) -> Collection[Any]: ...

    def start_session(self, **kwargs: Any) -> ClientSession: ...

    #: The epoch of the host's current client: it changes in a forked child and when the
    #: embedded server is re-attached on a new port (scoped collections then rebuild).
    client_generation: Callable[[], int]

    def ensure_app_id_index(self, raw: Collection[Any], force: bool = False) -> None: ...

    def forget_app_id_index(self, raw: Collection[Any]) -> None: ...

    def observe_query(
        self, slug: str, collection: str, raw: Collection[Any], user_filter: Any, sort: Any
    ) -> None: ...

    def record_security_event(self, slug: str, reason: str) -> None: ...

    def operation_meter(self, slug: str) -> Any:
        """What the scoped API of ``slug`` records its operations with (None when pymongo
        listeners record them)."""

    def search(
        self, kind: SearchKind, collection: ScopedCollection, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """``ScopedCollection.vector_search`` / ``hybrid_search``: the ``kind`` search over
        ``collection`` (the scoped collection: the search reads through it, so the sandbox
        scopes it), with the method's arguments."""


class StorageScopeHost:
    """A :class:`ScopeHost` over the storage service and the engine's callbacks."""

    __slots__ = ("_meter", "_observe", "_search", "_security", "_storage", "client_generation")

    def __init__(
        self,
        storage: Storage,
        observe_query: Callable[[str, str, Any, Any, Any], None],
        record_security_event: Callable[[str, str], None],
        operation_meter: Callable[[str], Any],
        search: Search | None = None,
    ) -> None:
        self._storage = storage
        self._observe = observe_query
        self._security = record_security_event
        self._meter = operation_meter
        self._search = search
        self.client_generation = storage.client_generation

    def database(self) -> Database[Any]:
        return self._storage.database()

    def collection(self, physical: str) -> Collection[Any]:
        return self._storage.collection(physical)

    def start_session(self, **kwargs: Any) -> ClientSession:
        return self._storage.start_session(**kwargs)

    def ensure_app_id_index(self, raw: Collection[Any], force: bool = False) -> None:
        self._storage.ensure_app_id_index(raw, force=force)

    def forget_app_id_index(self, raw: Collection[Any]) -> None:
        self._storage.forget_app_id_index(raw)

    def observe_query(
        self, slug: str, collection: str, raw: Collection[Any], user_filter: Any, sort: Any
    ) -> None:
        self._observe(slug, collection, raw, user_filter, sort)

    def record_security_event(self, slug: str, reason: str) -> None:
        self._security(slug, reason)

    def operation_meter(self, slug: str) -> Any:
        return self._meter(slug)

    def search(
        self, kind: SearchKind, collection: ScopedCollection, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        if self._search is None:
            raise ConfigurationError(
                f"{kind}_search needs a host that brings the AI searches (an engine's "
                "scoped database)"
            )
        return self._search(kind, collection, *args, **kwargs)
