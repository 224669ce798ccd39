"""ScopedDatabase: one app's database, the only database handle apps get.

Collections are reached as attributes or items (``db.tasks``, ``db["tasks"]``), exactly like
pymongo; each maps to the app's physical collection and filters by ``app_id``. There is no
path from here to the raw :class:`~pymongo.database.Database` or the client.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from ..exceptions import ScopeError
from .collection import ScopedCollection
from .limits import QueryLimits
from .names import physical_name, validate_collection_name, validate_slug
from .session import ScopedSession

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

security_log = logging.getLogger("mdb_sync.security")

# pymongo Database attributes that a scoped database does not offer: ``db.client`` must not
# silently become a collection named "client" for code written against pymongo.
_UNSCOPED_DATABASE_ATTRIBUTES = frozenset(
    name for name in dir(Database) if not name.startswith("_")
) | {"client", "command", "cursor_command", "dereference", "validate_collection"}


class ScopedDatabase:
    """The sandboxed database of one app (see the sandbox contract in the README)."""

    __slots__ = (
        "__collections",
        "__engine",
        "__lock",
        "_auto_index",
        "_limits",
        "app_slug",
        "read_scopes",
        "write_scope",
    )

    def __init__(
        self,
        engine: MongoDBEngine,
        app_slug: str,
        *,
        read_scopes: tuple[str, ...] | None = None,
        write_scope: str | None = None,
        limits: QueryLimits | None = None,
        auto_index: bool = True,
    ) -> None:
        self.app_slug: str = validate_slug(app_slug)
        self.write_scope: str = validate_slug(write_scope or app_slug, "write scope")
        scopes = tuple(read_scopes) if read_scopes is not None else (self.app_slug,)
        for scope in scopes:
            validate_slug(scope, "read scope")
        if not scopes:
            raise ScopeError("read_scopes cannot be empty", context={"app": app_slug})
        if self.write_scope not in scopes:
            raise ScopeError(
                f"write scope {self.write_scope!r} must be one of the read scopes {list(scopes)}",
                context={"app": app_slug},
            )
        self.read_scopes: tuple[str, ...] = scopes
        self._limits = limits or QueryLimits()
        self._auto_index = auto_index
        self.__engine = engine
        self.__collections: dict[str, ScopedCollection] = {}
        self.__lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScopedDatabase(app={self.app_slug!r}, read_scopes={list(self.read_scopes)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScopedDatabase):
            return NotImplemented
        return (self.app_slug, self.read_scopes, self.write_scope) == (
            other.app_slug,
            other.read_scopes,
            other.write_scope,
        )

    def __hash__(self) -> int:
        return hash((self.app_slug, self.read_scopes, self.write_scope))

    @property
    def name(self) -> str:
        """The app slug (the raw database name is not exposed)."""
        return self.app_slug

    @property
    def limits(self) -> QueryLimits:
        return self._limits

    # --- collections --------------------------------------------------------------------------

    def __getattr__(self, name: str) -> ScopedCollection:
        if name.startswith("_") or name in _UNSCOPED_DATABASE_ATTRIBUTES:
            raise AttributeError(
                f"ScopedDatabase has no attribute {name!r} (scoped databases offer no unscoped "
                f"database operations). To access the {name} collection, use db[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> ScopedCollection:
        return self.get_collection(name)

    def get_collection(self, name: str) -> ScopedCollection:
        """The scoped collection ``name`` (validated; cached per database object)."""
        coll = self.__collections.get(name)
        if coll is not None:
            return coll
        validate_collection_name(name)
        with self.__lock:
            coll = self.__collections.get(name)
            if coll is None:
                raw = self.__engine._raw_collection(physical_name(self.write_scope, name))
                coll = ScopedCollection(self, name, raw)
                self.__collections[name] = coll
        return coll

    # --- sessions -----------------------------------------------------------------------------

    def client_session(self, **kwargs: Any) -> ScopedSession:
        """Start a client session for transactions and causal consistency."""
        return ScopedSession(self.__engine._start_session(**kwargs), self.app_slug)

    start_session = client_session

    # --- engine hooks -------------------------------------------------------------------------

    def _observe_query(self, collection: str, raw: Any, user_filter: Any, sort: Any) -> None:
        if self._auto_index:
            self.__engine._observe_query(self.app_slug, collection, raw, user_filter, sort)

    def _security_event(self, reason: str, collection: str | None = None) -> None:
        security_log.warning(
            "refused operation for app %r on %r: %s", self.app_slug, collection, reason
        )
        self.__engine._record_security_event(self.app_slug, reason)
