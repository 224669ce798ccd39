"""ScopedDatabase: one app's database, the only database handle apps get.

Collections are reached as attributes or items (``db.tasks``, ``db["tasks"]``), exactly like
pymongo; each maps to the app's physical collection and filters by ``app_id``. There is no
path from here to the raw :class:`~pymongo.database.Database` or the client.

The scoped collections a database hands out are cached, at most
:data:`COLLECTION_CACHE_SIZE` per database (the oldest dropped first): code that names
collections after user input cannot grow it without bound, and a dropped entry costs only
its re-creation (a name check and a pymongo ``Collection``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.database import Database

from ..deprecation import renamed_parameters
from ..display import database_html
from ..exceptions import QueryValidationError, ScopeError
from .alternatives import DATABASE_ALTERNATIVES, instead
from .appscope import AppScope
from .changes import database_change_pipeline
from .collection import ScopedCollection, _change_stages
from .commands import run_command
from .gridfs import ScopedGridFSBucket
from .guards import check_query
from .host import ScopeHost
from .limits import QueryLimits
from .names import logical_name, physical_name, validate_collection_name, validate_slug
from .session import ScopedSession

if TYPE_CHECKING:
    from pymongo.change_stream import DatabaseChangeStream

#: Scoped collections cached per scoped database.
COLLECTION_CACHE_SIZE = 256

# pymongo Database attributes that a scoped database does not offer: ``db.client`` must not
# silently become a collection named "client" for code written against pymongo.
_UNSCOPED_DATABASE_ATTRIBUTES = frozenset(
    name for name in dir(Database) if not name.startswith("_")
) - {"command"} | {"client", "cursor_command", "dereference", "validate_collection"}

# Options of create_collection that keep the collection the app's own. Views (viewOn,
# pipeline) are refused: a view over another collection would bypass the physical scope.
_COLLECTION_OPTIONS = frozenset(
    {
        "validator", "validationLevel", "validationAction", "capped", "size", "max",
        "collation", "timeseries", "expireAfterSeconds", "clusteredIndex",
        "changeStreamPreAndPostImages", "storageEngine", "indexOptionDefaults",
        "check_exists", "comment", "codec_options", "read_preference", "write_concern",
        "read_concern",
    }
)  # fmt: skip


class ScopedDatabase:
    """The sandboxed database of one app (see the sandbox contract in the README)."""

    __slots__ = ("__scope", "app_slug", "read_scopes", "write_scope")

    @renamed_parameters(app_slug="slug")
    def __init__(
        self,
        host: ScopeHost,
        slug: str,
        *,
        read_scopes: tuple[str, ...] | None = None,
        write_scope: str | None = None,
        limits: QueryLimits | None = None,
        auto_index: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app_slug: str = validate_slug(slug)
        self.write_scope: str = validate_slug(write_scope or slug, "write scope")
        if self.write_scope != self.app_slug:
            raise ScopeError(
                f"write scope {self.write_scope!r} is not {slug!r}: writes never cross apps",
                context={"app": slug},
            )
        scopes = tuple(read_scopes) if read_scopes is not None else (self.app_slug,)
        if not scopes:
            raise ScopeError("read_scopes cannot be empty", context={"app": slug})
        for scope in scopes:
            validate_slug(scope, "read scope")
        if self.write_scope not in scopes:
            raise ScopeError(
                f"write scope {self.write_scope!r} must be one of the read scopes {list(scopes)}",
                context={"app": slug},
            )
        # Own scope first, then the others in the caller's order, without duplicates.
        ordered = [self.write_scope, *[s for s in scopes if s != self.write_scope]]
        self.read_scopes: tuple[str, ...] = tuple(dict.fromkeys(ordered))
        # What this database shares with its collections, cursors and buckets (raw handles
        # and host hooks included): kept private, never handed to the app.
        self.__scope = AppScope(
            host,
            self.app_slug,
            self.read_scopes,
            limits or QueryLimits(),
            auto_index,
            options or {},
        )

    def __repr__(self) -> str:
        return f"ScopedDatabase(app={self.app_slug!r}, read_scopes={list(self.read_scopes)!r})"

    def _repr_html_(self) -> str:
        return database_html(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScopedDatabase):
            return NotImplemented
        return (self.app_slug, self.read_scopes) == (other.app_slug, other.read_scopes)

    def __hash__(self) -> int:
        return hash((self.app_slug, self.read_scopes))

    @property
    def name(self) -> str:
        """The app slug (the raw database name is not exposed)."""
        return self.app_slug

    @property
    def limits(self) -> QueryLimits:
        """The resource limits of this database's operations."""
        return self.__scope.limits

    def with_options(
        self,
        codec_options: Any = None,
        read_preference: Any = None,
        write_concern: Any = None,
        read_concern: Any = None,
    ) -> ScopedDatabase:
        """The same scoped database with other codec options or read/write settings."""
        scope = self.__scope
        options = dict(scope.options)
        for key, value in (
            ("codec_options", codec_options),
            ("read_preference", read_preference),
            ("write_concern", write_concern),
            ("read_concern", read_concern),
        ):
            if value is not None:
                options[key] = value
        return ScopedDatabase(
            scope.host,
            self.app_slug,
            read_scopes=self.read_scopes,
            limits=scope.limits,
            auto_index=scope.auto_index,
            options=options,
        )

    # --- collections --------------------------------------------------------------------------

    def __getattr__(self, name: str) -> ScopedCollection:
        if name.startswith("_") or name in _UNSCOPED_DATABASE_ATTRIBUTES:
            raise AttributeError(
                f"ScopedDatabase has no attribute {name!r} (scoped databases offer no unscoped "
                f"database operations).{instead(DATABASE_ALTERNATIVES, name)} To access a "
                f"collection named {name!r}, use db[{name!r}]."
            )
        return self.get_collection(name)

    def __getitem__(self, name: str) -> ScopedCollection:
        return self.get_collection(name)

    def get_collection(self, name: str, **options: Any) -> ScopedCollection:
        """The scoped collection ``name`` (validated; cached per database object). Options
        (``codec_options``, ``read_preference``, ``write_concern``, ``read_concern``) are
        those of pymongo's ``get_collection``."""
        if options:
            return self.get_collection(name).with_options(**options)
        scope = self.__scope
        coll = scope.collections.get(name)
        if coll is not None:
            return coll
        validate_collection_name(name)
        with scope.lock:
            coll = scope.collections.get(name)
            if coll is None:
                coll = ScopedCollection(self, scope, name, scope.raw_sources(name))
                collections = scope.collections
                if len(collections) >= COLLECTION_CACHE_SIZE:
                    del collections[next(iter(collections))]
                collections[name] = coll
        return coll

    def is_hosted_by(self, host: object) -> bool:
        """Whether ``host`` serves this database (how the engine recognises its own
        databases without the database handing out a path to it)."""
        return self.__scope.host is host

    def cached_collections(self) -> int:
        """Internal: how many scoped collections this database caches (``engine.cache_info()``)."""
        return len(self.__scope.collections)

    def list_collection_names(
        self, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[str]:
        """Names of this app's collections (logical names, without the prefix)."""
        return [c["name"] for c in self.list_collections(filter, **kwargs)]

    def list_collections(
        self, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """``listCollections`` of this app's collections, with logical names. A ``name``
        condition in ``filter`` may be a string or ``{"$in": [...]}`` of logical names."""
        prefix = f"{self.write_scope}_"
        query: dict[str, Any] = {"name": {"$regex": "^" + _regex_escape(prefix)}}
        if filter:
            filter = dict(filter)
            check_query(filter, self.__scope.limits, "listCollections filter")
            if "name" in filter:
                query = {
                    "$and": [query, {"name": self._physical_name_condition(filter.pop("name"))}]
                }
            if filter:
                query = {"$and": [query, filter]}
        raw_session = self.__scope.raw_session(kwargs.pop("session", None))
        results = []
        for info in self.__scope.raw_database().list_collections(
            filter=query, session=raw_session, **kwargs
        ):
            name = logical_name(self.write_scope, info["name"])
            if name is None or name.startswith("system."):
                continue
            info = dict(info)
            info["name"] = name
            info.pop("idIndex", None)
            results.append(info)
        return sorted(results, key=lambda i: i["name"])

    def _physical_name_condition(self, condition: Any) -> Any:
        if isinstance(condition, str):
            return physical_name(self.write_scope, condition)
        if isinstance(condition, Mapping) and set(condition) == {"$in"}:
            return {"$in": [physical_name(self.write_scope, n) for n in condition["$in"]]}
        raise QueryValidationError(
            "a name condition in list_collections must be a string or {'$in': [...]}"
        )

    def create_collection(self, name: str, **options: Any) -> ScopedCollection:
        """Create this app's collection ``name`` (validators, capped, timeseries, collation,
        clustered...). Views are refused: they would read around the physical scope."""
        validate_collection_name(name)
        unknown = sorted(set(options) - _COLLECTION_OPTIONS - {"session"})
        if unknown:
            raise QueryValidationError(
                f"create_collection options {unknown} are not available on a scoped database"
                + (" (views are refused)" if {"viewOn", "pipeline"} & set(unknown) else ""),
                context={"collection": name},
            )
        scope = self.__scope
        if "validator" in options:
            check_query(options["validator"], scope.limits, "validator")
        raw_session = scope.raw_session(options.pop("session", None))
        raw = scope.raw_database().create_collection(
            physical_name(self.write_scope, name), session=raw_session, **options
        )
        scope.ensure_app_id_index(raw)
        return self.get_collection(name)

    def drop_collection(self, name_or_collection: Any, **kwargs: Any) -> None:
        """Drop this app's collection (never another app's; refused if shared)."""
        if isinstance(name_or_collection, ScopedCollection):
            if name_or_collection.database.app_slug != self.app_slug:
                raise ScopeError("cannot drop another app's collection")
            name = name_or_collection.name
        elif isinstance(name_or_collection, str):
            name = name_or_collection
        else:
            raise TypeError("name_or_collection must be a collection name or a ScopedCollection")
        self.get_collection(name).drop(**kwargs)

    # --- commands -----------------------------------------------------------------------------

    def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        allowable_errors: Any = None,
        read_preference: Any = None,
        codec_options: Any = None,
        session: Any = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Like pymongo's ``Database.command``, for an allow-list: ``ping``, ``hello``,
        ``buildInfo``, and ``count`` / ``distinct`` / ``collStats`` of this app's own
        collections, answered from its documents only. Anything else raises
        :class:`~mdb_sync.exceptions.ScopeError` naming the scoped method to use instead
        (see :mod:`mdb_sync.scoping.commands`)."""
        return run_command(
            self,
            self.__scope,
            command,
            value,
            check=check,
            allowable_errors=allowable_errors,
            read_preference=read_preference,
            codec_options=codec_options,
            session=session,
            comment=comment,
            **kwargs,
        )

    # --- sessions, GridFS, change streams -----------------------------------------------------

    def client_session(self, **kwargs: Any) -> ScopedSession:
        """Start a client session for transactions and causal consistency."""
        return ScopedSession(self.__scope.start_session(**kwargs), self.app_slug)

    start_session = client_session

    def gridfs(self, bucket_name: str = "fs", **kwargs: Any) -> ScopedGridFSBucket:
        """A GridFS bucket of this app (``<slug>_<bucket>.files`` / ``.chunks``)."""
        validate_collection_name(bucket_name)
        return ScopedGridFSBucket(self, bucket_name, self.__scope.raw_database(), **kwargs)

    def watch(self, pipeline: Any = None, **kwargs: Any) -> DatabaseChangeStream[Any]:
        """A change stream of this app's collections (and its read scopes'), only their
        documents' changes, with ``ns`` in logical names."""
        kwargs.setdefault("full_document", "updateLookup")
        scope = self.__scope
        try:
            user = _change_stages(pipeline, scope.limits)
        except QueryValidationError as exc:
            scope.security_event(str(exc))
            raise
        stages = database_change_pipeline(list(self.read_scopes), user)
        return scope.watch(stages, **kwargs)


def _regex_escape(text: str) -> str:
    return re.escape(text)
