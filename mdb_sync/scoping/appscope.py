"""Internal to the sandbox: what one scoped database shares with the objects it hands out.

A :class:`~mdb_sync.scoping.ScopedDatabase` hands out collections, cursors, GridFS buckets
and command answers; they all need the app's scopes and limits, the host's raw collections,
raw database and sessions, and the host's hooks (the ``app_id`` index, query observation,
refused operations). Those must not become public attributes of the scoped objects — a raw
collection's ``.database.client`` is the unscoped client, and every public name on a scoped
database would also hide a collection of that name. So the database builds one
:class:`AppScope`, keeps it in a private slot, and passes it to what it creates; the sandbox's
modules reach each other's raw handles through it, never through each other's private
members.

Not exported from :mod:`mdb_sync.scoping` and not part of the documented API: an app never
gets an ``AppScope``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .limits import QueryLimits
from .names import physical_name
from .session import unwrap_session

if TYPE_CHECKING:
    from pymongo.change_stream import DatabaseChangeStream
    from pymongo.client_session import ClientSession
    from pymongo.collection import Collection
    from pymongo.database import Database

    from .collection import ScopedCollection
    from .host import ScopeHost

security_log = logging.getLogger("mdb_sync.security")

#: Raw collection and the app_id it is read with; the first one is the app's own.
Source = tuple["Collection[Any]", str]


class AppScope:
    """One scoped database's scopes, limits, options and host (see the module docstring)."""

    __slots__ = (
        "auto_index",
        "client_generation",
        "collections",
        "host",
        "limits",
        "lock",
        "meter",
        "options",
        "read_scopes",
        "slug",
        "write_scope",
    )

    def __init__(
        self,
        host: ScopeHost,
        slug: str,
        read_scopes: tuple[str, ...],
        limits: QueryLimits,
        auto_index: bool,
        options: Mapping[str, Any],
    ) -> None:
        self.host = host
        self.slug = slug
        #: Writes go to the app's own collections only: the write scope is the slug.
        self.write_scope = slug
        self.read_scopes = read_scopes
        self.limits = limits
        self.auto_index = auto_index
        self.options = dict(options)
        #: Records the operations of this app's collections (None: pymongo listeners do).
        self.meter: Any = host.operation_meter(slug)
        #: The host's client epoch getter: it changes in a forked child and when the
        #: embedded server was re-attached on a new port (collections then rebuild).
        self.client_generation: Callable[[], int] = host.client_generation
        #: The scoped collections handed out (bounded by the database, oldest first out).
        self.collections: dict[str, ScopedCollection] = {}
        self.lock = threading.Lock()

    # --- raw handles ----------------------------------------------------------------------

    def raw_collection(self, physical: str) -> Collection[Any]:
        raw = self.host.collection(physical)
        return raw.with_options(**self.options) if self.options else raw

    def raw_sources(self, name: str) -> list[Source]:
        """The pymongo collections behind logical ``name``, one per read scope (own first),
        from the host's current client."""
        return [(self.raw_collection(physical_name(s, name)), s) for s in self.read_scopes]

    def raw_database(self) -> Database[Any]:
        return self.host.database()

    def raw_session(self, session: object) -> ClientSession | None:
        """The pymongo session behind ``session`` (a session of this app's database)."""
        return unwrap_session(session, self.slug)

    def start_session(self, **kwargs: Any) -> ClientSession:
        return self.host.start_session(**kwargs)

    def watch(self, stages: list[dict[str, Any]], **kwargs: Any) -> DatabaseChangeStream[Any]:
        """A database-level change stream running ``stages`` (already scoped)."""
        if kwargs.get("session") is not None:
            kwargs["session"] = self.raw_session(kwargs["session"])
        return self.host.database().watch(stages, **kwargs)

    # --- host hooks -------------------------------------------------------------------------

    def ensure_app_id_index(self, raw: Collection[Any], force: bool = False) -> None:
        self.host.ensure_app_id_index(raw, force=force)

    def forget_collection(self, name: str, raw: Collection[Any]) -> None:
        """``name`` was dropped or renamed: its scoped collection and index state go."""
        with self.lock:
            self.collections.pop(name, None)
        self.host.forget_app_id_index(raw)

    def observe_query(
        self, collection: str, raw: Collection[Any], user_filter: Any, sort: Any
    ) -> None:
        if self.auto_index:
            self.host.observe_query(self.slug, collection, raw, user_filter, sort)

    def security_event(self, reason: str, collection: str | None = None) -> None:
        """A refused operation: logged on ``mdb_sync.security`` and counted by the host."""
        security_log.warning(
            "refused operation for app %r on %r: %s", self.slug, collection, reason
        )
        self.host.record_security_event(self.slug, reason)
