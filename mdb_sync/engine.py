"""MongoDBEngine: the composition root of one database's runtime, and its public API.

The engine builds the internal services and wires each to what it needs — storage over the
process's connection (:mod:`mdb_sync.storage`, :mod:`mdb_sync.connection`: one
:class:`~pymongo.MongoClient` per process, rebuilt in a forked child, the embedded server),
the app catalog, the registration workflow, the per-app services, metrics, indexing, the
event bus — and exposes the public API over them: scoped databases, app registration,
services, health and metrics. One engine serves many threads. Nothing touches the network at
import time or in ``__init__``; :meth:`MongoDBEngine.initialize` connects.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database

from . import context, embedded
from . import uri as uri_helpers
from .app_services import AppServices
from .catalog import AppCatalog

# The connection's settings, importable from here as before.
from .connection import CLOSE_TIMEOUT as CLOSE_TIMEOUT
from .connection import DEFAULT_CONNECT_TIMEOUT_MS as DEFAULT_CONNECT_TIMEOUT_MS
from .connection import DEFAULT_DB_NAME as DEFAULT_DB_NAME
from .connection import DEFAULT_SERVER_SELECTION_TIMEOUT_MS as DEFAULT_SERVER_SELECTION_TIMEOUT_MS
from .connection import SHUTDOWN_LOCK_TIMEOUT as SHUTDOWN_LOCK_TIMEOUT
from .connection import SOCKET_TIMEOUT_MARGIN_MS as SOCKET_TIMEOUT_MARGIN_MS
from .connection import Connection
from .deprecation import renamed_parameters
from .display import engine_html, engine_repr
from .exceptions import ConfigurationError, ScopeError
from .indexes.auto import AutoIndexManager
from .indexes.background import DeclaredIndexBuilds
from .indexes.declared import DEFAULT_SEARCH_TIMEOUT
from .manifest import load_manifest as load_manifest_file
from .manifest.model import DataAccess, as_manifest
from .observability import pool
from .observability.health import check_health
from .observability.listeners import CommandMetricsListener, PoolMonitor
from .observability.metrics import MetricsCollector, OperationMeter
from .realtime import EventBus
from .registration import Registration
from .registry import AppRegistry
from .scoping import QueryLimits, ScopedDatabase
from .scoping.database import COLLECTION_CACHE_SIZE
from .scoping.host import StorageScopeHost
from .scoping.names import APPS_COLLECTION
from .signals import security_violation
from .storage import APP_ID_INDEX_CACHE_SIZE as APP_ID_INDEX_CACHE_SIZE
from .storage import Storage

if TYPE_CHECKING:
    from .ai import EmbeddingService, LLMService, MemoryService

log = logging.getLogger(__name__)

#: Environment variable holding the MongoDB URI when none is passed.
MONGO_URI_ENV = "MDB_MONGO_URI"
#: Environment variable holding the database name when none is passed.
DB_NAME_ENV = "MDB_DB_NAME"
#: Longest wait of :meth:`MongoDBEngine.shutdown` for the query-shape flush (seconds).
SHUTDOWN_FLUSH_TIMEOUT = 2.0
#: Scoped databases cached per engine (oldest dropped first) and physical collections whose
#: ``app_id`` index this process already ensured: bounded whatever names requests bring.
SCOPED_CACHE_SIZE = 1024


def describe_uri(uri: str) -> str:
    """``mongodb://host:port`` of ``uri``, without credentials, path or options (see
    :func:`mdb_sync.uri.describe`; a ``mongodb+srv://`` name is not resolved)."""
    return uri_helpers.describe(uri)


class MongoDBEngine:
    """The runtime of one MongoDB database shared by many apps.

    :param mongo_uri: MongoDB connection string; defaults to ``MDB_MONGO_URI``, and without
        either, the embedded server (see :mod:`mdb_sync.embedded`).
    :param db_name: database name; defaults to ``MDB_DB_NAME``, then the URI's database,
        then ``mdb_sync``.
    :param embedded_dir: directory of the embedded server (``./.mdb`` by default,
        ``":memory:"`` for a private throwaway server). Ignored when a URI is given.
    :param limits: :class:`~mdb_sync.scoping.QueryLimits` applied to every scoped operation.
    :param implicit_apps: if true (the default), :meth:`get_scoped_db` registers an unknown
        slug as a minimal active app, as the seeds' hello world expects; if false, only
        apps registered with :meth:`register_app` can be used.
    :param registry_refresh_seconds: how long this process trusts its cached view of the app
        registry (default 5 s): an app registered, changed or deactivated by another process
        is seen here within that delay. ``0`` reads the registry on every lookup.
    :param embedded_durable: whether an embedded server this engine starts fsyncs every
        commit (``--sync-on-commit``: an acknowledged write survives a crash). Default: true,
        unless ``MDB_EMBEDDED_DURABLE=0``. A running server keeps the setting it started with.
    :param command_metrics: record every command the client sends (pymongo command and
        connection-pool listeners: engine-internal commands too, ``getMore`` batches, timings
        by the driver, and the pool's check-out failure counters) instead of the scoped API's
        operations. Off by default: listeners make pymongo build and publish several event
        objects per operation (~15-20% of a simple operation's client CPU).
    :param client_options: passed to :class:`~pymongo.MongoClient`. Unless given here or in
        the URI: ``serverSelectionTimeoutMS`` 5000 (an unreachable server fails fast),
        ``connectTimeoutMS`` 5000, and ``socketTimeoutMS`` the ``limits.max_time_ms`` cap
        plus 30 s (330 s by default). ``timeoutMS`` (pymongo's client-side operation
        timeout) is not set by default: it would replace each scoped operation's
        ``maxTimeMS``; set it for a tighter bound on every operation.
    """

    def __init__(
        self,
        mongo_uri: str | None = None,
        db_name: str | None = None,
        *,
        embedded_dir: str | os.PathLike[str] | None = None,
        limits: QueryLimits | None = None,
        implicit_apps: bool = True,
        registry_refresh_seconds: float = 5.0,
        embedded_durable: bool | None = None,
        command_metrics: bool = False,
        **client_options: Any,
    ) -> None:
        if registry_refresh_seconds < 0:
            raise ConfigurationError("registry_refresh_seconds cannot be negative")
        limits = limits or QueryLimits()
        self.implicit_apps = implicit_apps
        self.registry_refresh_seconds = float(registry_refresh_seconds)
        #: Whether pymongo listeners record every command (see the class docstring).
        self.command_metrics = bool(command_metrics)
        self._pool_monitor: PoolMonitor | None = None
        self._lock = threading.RLock()
        # (slug, read scopes, write scope, auto_index) -> (database, when its app was checked)
        self._scoped: dict[tuple[Any, ...], tuple[ScopedDatabase, float]] = {}
        self._connection = Connection(
            mongo_uri or os.environ.get(MONGO_URI_ENV) or None,
            db_name or os.environ.get(DB_NAME_ENV) or None,
            embedded_dir=embedded_dir,
            embedded_durable=embedded_durable,
            client_options=client_options,
            socket_timeout_ms=limits.max_time_ms + SOCKET_TIMEOUT_MARGIN_MS,
            listeners=self._metrics_listeners,
        )
        self._limits = limits
        #: The storage service (:mod:`mdb_sync.storage`) over this process's connection
        #: (:mod:`mdb_sync.connection`): the client, the embedded server, the database, raw
        #: and internal collections, sessions. Engine-internal: apps use scoped databases.
        self.storage = Storage(self._connection)
        self._scope_host = StorageScopeHost(
            self.storage,
            self._observe_query,
            self._record_security_event,
            self._operation_meter,
            search=self._search_collection,
        )
        #: The registered apps (:mod:`mdb_sync.catalog`): the only owner of ``apps_config``.
        self.catalog = AppCatalog(
            lambda: self.storage.collection(APPS_COLLECTION), lambda: self.registry_refresh_seconds
        )
        #: The registration workflow (:mod:`mdb_sync.registration`).
        self.registration = Registration(self, self.catalog, self.storage.system)
        #: Everything derived from an app's manifest, keyed by its record's version
        #: (:mod:`mdb_sync.app_services`).
        self.app_services = AppServices(self.catalog)
        #: The registry as one object (a facade over ``catalog`` and ``registration``).
        self.registry = AppRegistry(self.catalog, self.registration)
        self.metrics = MetricsCollector()
        #: Query-driven indexing (:mod:`mdb_sync.indexes.auto`); tune with ``.configure()``.
        self.auto_indexes = AutoIndexManager(self)
        #: Declared index builds off the caller's path (``register_app(background_indexes=...)``).
        self.index_builds = DeclaredIndexBuilds(self)
        self._events: EventBus | None = None
        context.track_engine(self)

    # --- lifecycle ----------------------------------------------------------------------------

    def initialize(self) -> MongoDBEngine:
        """Connect, ping the server and load the registered apps. Idempotent.

        Raises :class:`~mdb_sync.exceptions.EngineConnectionError` (a pymongo
        ``ConnectionFailure``) naming the host when the URI is malformed or the server does
        not answer within the server-selection timeout.
        """
        with self._lock:
            if self._connection.is_open:
                return self
            self.storage.open()
        try:
            self.catalog.load()
        except BaseException:  # not initialized after all: nobody would shut it down
            self.shutdown()
            raise
        log.info("engine ready on %s, database %r", self.describe_server(), self.db_name)
        return self

    def shutdown(self) -> None:
        """Close the client and release the embedded server. Idempotent.

        Bounded whatever state the server is in: the query-shape flush waits at most
        :data:`SHUTDOWN_FLUSH_TIMEOUT` (and is skipped when no server is known to be up),
        the embedded server's lock at most :data:`SHUTDOWN_LOCK_TIMEOUT`; stopping the
        embedded server (the last user) takes ~2 s, at most 10 s before SIGKILL.
        """
        if self._connection.is_open:
            self.auto_indexes.stop(timeout=SHUTDOWN_FLUSH_TIMEOUT)
        self.index_builds.stop(timeout=SHUTDOWN_FLUSH_TIMEOUT)
        if self._events is not None:
            self._events.close()
        self.app_services.clear()
        with self._lock:
            self._scoped.clear()
            self.storage.close()

    close = shutdown

    def __enter__(self) -> MongoDBEngine:
        return self.initialize()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return engine_repr(self)  # no I/O: what the engine already knows

    def _repr_html_(self) -> str:
        return engine_html(self)

    @property
    def limits(self) -> QueryLimits:
        """The :class:`~mdb_sync.scoping.QueryLimits` of every scoped operation; the client's
        default socket timeout follows their ``max_time_ms`` cap (see the class docstring)."""
        return self._limits

    @limits.setter
    def limits(self, limits: QueryLimits) -> None:
        self._limits = limits
        self._connection.socket_timeout_ms = limits.max_time_ms + SOCKET_TIMEOUT_MARGIN_MS

    @property
    def is_initialized(self) -> bool:
        return self._connection.is_open

    @property
    def db_name(self) -> str:
        """Name of the database all apps share."""
        return self._connection.db_name

    @property
    def uses_embedded_server(self) -> bool:
        return self._connection.uses_embedded_server

    @property
    def embedded_server(self) -> embedded.EmbeddedServer | None:
        """The embedded server in use, if the engine runs on one."""
        return self._connection.embedded_server

    @property
    def embedded_state(self) -> dict[str, Any] | None:
        """The embedded server as this engine's watch sees it (``state``: ``running``,
        ``recovering``, ``unresponsive`` or ``down``; ``pid``, ``port``, ``recoveries``,
        ``error``), or None without an embedded server. No I/O."""
        return self._connection.embedded_state()

    def describe_server(self) -> str:
        """The server the engine talks to, without credentials (``mongodb://host:port``)."""
        return self._connection.describe_server()

    def require_initialized(self) -> None:
        """Raise :class:`~mdb_sync.exceptions.EngineNotInitializedError` unless
        :meth:`initialize` ran (services built on the engine check it first)."""
        self._connection.require_open()

    # --- the client ---------------------------------------------------------------------------

    @property
    def client(self) -> MongoClient[dict[str, Any]]:
        """The process's MongoClient (engine-internal: apps use scoped databases)."""
        return self._connection.client

    @property
    def client_pid(self) -> int | None:
        """The id of the process that built the current MongoClient (None before it is
        built). After a fork, the child builds its own on first use: a client is never
        shared across processes."""
        return self._connection.client_pid

    def client_settings(self) -> dict[str, Any]:
        """The options the engine's client is built with: the caller's, plus the engine's
        defaults (see the class docstring) for timeouts neither they nor the URI set."""
        return self._connection.settings()

    def after_fork_in_child(self) -> None:
        """Internal (the fork handler calls it): drop the parent's client, cached scoped
        databases (their collections hold the parent's client) and locks; the child builds
        its own client on first use, and scoped objects the child still holds rebuild theirs
        on their next operation."""
        self._lock = threading.RLock()
        self._scoped = {}
        self.storage.after_fork_in_child()
        self.catalog.after_fork_in_child()
        self.app_services.after_fork_in_child()
        self.metrics.after_fork_in_child()
        self.auto_indexes.after_fork_in_child()
        self.index_builds.after_fork_in_child()
        if self._events is not None:
            self._events.after_fork_in_child()

    @property
    def scope_host(self) -> StorageScopeHost:
        """Internal: what this engine's scoped databases are built on (for the registration
        workflow, which seeds an app before it is usable through :meth:`get_scoped_db`)."""
        return self._scope_host

    def owns(self, database: object) -> bool:
        """Whether ``database`` is a scoped database of this engine (used by services such
        as vector search, given only a scoped collection, to find its app's engine)."""
        return isinstance(database, ScopedDatabase) and database.is_hosted_by(self._scope_host)

    # Kept for tests and scripts written against earlier versions: use ``engine.storage``.
    def _database(self) -> Database[dict[str, Any]]:
        return self.storage.database()

    def _raw_collection(self, physical: str) -> Collection[dict[str, Any]]:
        return self.storage.collection(physical)

    # --- apps ---------------------------------------------------------------------------------

    @renamed_parameters(app_slug="slug")
    def get_scoped_db(
        self,
        slug: str,
        read_scopes: list[str] | tuple[str, ...] | None = None,
        write_scope: str | None = None,
        auto_index: bool = True,
    ) -> ScopedDatabase:
        """The sandboxed database of ``slug`` (cached; cheap to call per request).

        ``read_scopes`` defaults to the manifest's ``data_access.read_scopes``, else the app
        alone. Reading another app requires that this app's manifest grants it
        (``data_access.read_scopes``) and that the other app's ``cross_app_policy`` is not
        ``deny_all``; writes never cross apps (``write_scope`` can only be the app itself).
        """
        self.require_initialized()
        key = (
            slug,
            tuple(read_scopes) if read_scopes is not None else None,
            write_scope,
            auto_index,
        )
        cached = self._scoped.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.registry_refresh_seconds:
            return cached[0]
        record = self.registration.require_usable(slug)
        access = record.typed_manifest.data_access
        if read_scopes is None and access.read_scopes:
            read_scopes = [slug, *access.read_scopes]
        if read_scopes is not None:
            read_scopes = tuple(read_scopes)
            self._check_read_scopes(slug, read_scopes, access)
        db = ScopedDatabase(
            self._scope_host,
            slug,
            read_scopes=read_scopes,
            write_scope=write_scope or access.write_scope,
            limits=self.limits,
            auto_index=auto_index,
        )
        with self._lock:
            if len(self._scoped) >= SCOPED_CACHE_SIZE and key not in self._scoped:
                del self._scoped[next(iter(self._scoped))]
            self._scoped[key] = (db, time.monotonic())
        return db

    def _check_read_scopes(
        self, app_slug: str, read_scopes: tuple[str, ...], access: DataAccess
    ) -> None:
        if isinstance(read_scopes, str) or not all(isinstance(s, str) for s in read_scopes):
            raise ScopeError("read_scopes must be a list of app slugs", context={"app": app_slug})
        if "*" in read_scopes:
            raise ScopeError(
                "the '*' read scope is refused: list the apps to read explicitly",
                context={"app": app_slug},
            )
        granted = set(access.read_scopes)
        for other in dict.fromkeys(read_scopes):
            if other == app_slug:
                continue
            if other not in granted:
                self._record_security_event(app_slug, f"read scope {other!r} not granted")
                raise ScopeError(
                    f"app {app_slug!r} may not read {other!r}: its manifest does not grant it "
                    "(data_access.read_scopes)",
                    context={"app": app_slug, "scope": other},
                )
            owner = self.registry.get_record(other)
            if owner is None:
                raise ScopeError(
                    f"read scope {other!r} is not a registered app", context={"app": app_slug}
                )
            if as_manifest(owner.get("manifest")).data_access.denies_all:
                self._record_security_event(app_slug, f"{other!r} denies cross-app reads")
                raise ScopeError(
                    f"app {other!r} denies reads by other apps (cross_app_policy: deny_all)",
                    context={"app": app_slug, "scope": other},
                )

    def load_manifest(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read and validate a manifest file; see :func:`mdb_sync.manifest.load_manifest`."""
        return load_manifest_file(Path(path))

    def register_app(
        self,
        manifest: Mapping[str, Any],
        create_indexes: bool = True,
        *,
        replace_conflicting_indexes: bool = False,
        search_index_timeout: float | None = None,
        background_indexes: bool = False,
    ) -> dict[str, Any]:
        """Validate and persist ``manifest``, apply its collection settings, reconcile its
        declared indexes and seed its initial data.

        A manifest that fails validation changes nothing
        (:class:`~mdb_sync.exceptions.ManifestValidationError` names every bad path). Index
        problems do not fail the registration: each index's outcome is returned under
        ``"indexes"`` (``{"collection", "name", "type", "status", "error"?}`` with status
        ``created``, ``exists``, ``replaced``, ``pending``, ``conflict``, ``not_supported``
        or ``failed``) and stored in the registry. An index whose name exists with other keys
        or options is a ``conflict`` unless ``replace_conflicting_indexes`` rebuilds it;
        ``search_index_timeout`` bounds the wait for new Atlas Search indexes (default 60 s).

        ``background_indexes``: return as soon as the manifest is stored and build the
        declared indexes on a background thread (see :mod:`mdb_sync.indexes.background`):
        each is reported ``pending`` — here, in the registry and by
        :meth:`get_health_status` — until its build is done; :meth:`wait_for_indexes`
        waits for that. Unique indexes (constraints) are built before returning all the
        same. The default builds every index before returning.

        Returns ``{"slug", "created", "indexes", "collections", "seeded"}``.
        """
        self.require_initialized()
        background = bool(create_indexes and background_indexes)
        result = self.registration.register(
            manifest,
            create_indexes=create_indexes and not background,
            replace_indexes=replace_conflicting_indexes,
            search_index_timeout=search_index_timeout,
        )
        slug = result["slug"]
        if background:
            result["indexes"] = self.index_builds.start(
                slug,
                (self.registry.get_manifest(slug) or {}).get("managed_indexes") or {},
                replace=replace_conflicting_indexes,
                search_timeout=(
                    DEFAULT_SEARCH_TIMEOUT if search_index_timeout is None else search_index_timeout
                ),
                previous=result["indexes"],
            )
        self._forget_scoped(slug)
        return result

    def wait_for_indexes(self, slug: str | None = None, timeout: float | None = None) -> bool:
        """Wait until the background index builds of ``slug`` (default: every app) started
        by this process are done; False if ``timeout`` seconds passed first."""
        return self.index_builds.wait(slug, timeout)

    def get_app(self, slug: str) -> dict[str, Any] | None:
        """The registered manifest of ``slug``, or None."""
        self.require_initialized()
        record = self.catalog.get(slug)
        return dict(record.manifest) if record is not None else None

    def list_apps(self, status: str | None = None) -> list[dict[str, Any]]:
        """Registered apps (manifests), optionally only those with ``status``."""
        self.require_initialized()
        return self.registry.list(status=status)

    def reload_apps(self) -> int:
        """Re-read the registry from the database; return the number of active apps."""
        self.require_initialized()
        self._scoped.clear()
        return self.catalog.load()

    def unregister_app(self, slug: str) -> bool:
        """Remove ``slug`` from the registry (its data is kept). True if it was registered."""
        self.require_initialized()
        self._forget_scoped(slug)
        self.app_services.forget(slug)
        return self.registration.unregister(slug)

    def _forget_scoped(self, slug: str) -> None:
        # Grants and policies of one app shape other apps' scoped databases: start afresh.
        with self._lock:
            self._scoped.clear()

    # --- AI services --------------------------------------------------------------------------
    # mdb_sync.ai needs the optional ai extra (it imports numpy): imported when first asked for.

    def get_llm_service(self, slug: str) -> LLMService:
        """The :class:`~mdb_sync.ai.LLMService` of ``slug``, from its manifest's
        ``llm_config`` and the environment (cached; rebuilt when either changes)."""
        from .ai.services import llm_service_for

        return llm_service_for(self, slug)

    def get_embedding_service(self, slug: str) -> EmbeddingService:
        """The :class:`~mdb_sync.ai.EmbeddingService` of ``slug`` (``embedding_config``)."""
        from .ai.services import embedding_service_for

        return embedding_service_for(self, slug)

    def get_memory_service(self, slug: str) -> MemoryService:
        """The :class:`~mdb_sync.ai.MemoryService` of ``slug`` (``memory_config``)."""
        from .ai.services import memory_service_for

        return memory_service_for(self, slug)

    # --- realtime -----------------------------------------------------------------------------

    @property
    def events_if_started(self) -> EventBus | None:
        """The event bus if something already used :attr:`events` (never creates one)."""
        return self._events

    @property
    def events(self) -> EventBus:
        """The :class:`~mdb_sync.realtime.EventBus` of this engine: realtime events published
        to (``publish``) and received from (``subscribe``) every process on the database."""
        if self._events is None:
            with self._lock:
                if self._events is None:
                    self._events = EventBus(self)
        return self._events

    # --- hooks used by the scoping layer -------------------------------------------------------

    def _observe_query(
        self,
        app_slug: str,
        collection: str,
        raw: Collection[Any],
        user_filter: Mapping[str, Any] | None,
        sort: Any,
    ) -> None:
        """Called by scoped collections with each query's filter and sort (query-driven
        indexing, see :mod:`mdb_sync.indexes.auto`). Must stay cheap: it runs on the caller's
        thread for every scoped query; index builds happen on a background thread. Never
        fails the query: bookkeeping errors are logged."""
        try:
            self.auto_indexes.observe(app_slug, collection, raw, user_filter, sort)
        except Exception:
            log.exception("query-driven indexing failed for %s.%s", app_slug, collection)

    def _metrics_listeners(self) -> list[Any]:
        """pymongo event listeners for each new client of this process: with
        ``command_metrics`` only, the command metrics listener and the pool monitor (new ones
        per client, so a forked child counts its own pool). Without them the scoped API
        records operations and the pool gauges are read on demand
        (:mod:`.observability.pool`)."""
        if self.command_metrics:
            monitor = self._pool_monitor = PoolMonitor()
            self.metrics.set_gauge_source("pool", monitor.gauges)
            return [CommandMetricsListener(self), monitor]
        self._pool_monitor = None
        self.metrics.set_gauge_source("pool", lambda: pool.gauges(self.pool_stats()))
        return []

    def pool_stats(self) -> dict[str, Any]:
        """The connection pool now: ``open_connections``, ``in_use``, ``waiting``,
        ``max_pool_size``, ``utilization`` (busiest server), ``cleared`` — plus
        ``checkout_failures``/``checkout_timeouts`` with ``command_metrics``.
        ``{"monitored": False}`` before this process has a client. No I/O."""
        monitor = self._pool_monitor
        if monitor is not None:
            return monitor.stats()
        client = self._connection.current_client()
        if client is None:
            return {"monitored": False}
        return pool.pool_stats(client)

    def _operation_meter(self, app_slug: str) -> Any:
        """What the scoped API of ``app_slug`` records its operations with (None with
        ``command_metrics``: the listeners record them)."""
        if self.command_metrics:
            return None
        return OperationMeter(self.metrics, app_slug, self.app_services.metrics_check(app_slug))

    def _search_collection(self, kind: str, collection: Any, *args: Any, **kwargs: Any) -> Any:
        """``db.<collection>.vector_search`` / ``hybrid_search``, for the scoping layer (the
        optional ai extra, imported when called)."""
        if kind == "hybrid":
            from .ai.hybrid_search import hybrid_search

            return hybrid_search(collection, *args, **kwargs)
        from .ai.vector_search import vector_search

        return vector_search(collection, *args, **kwargs)

    # --- observability ------------------------------------------------------------------------

    def _record_security_event(self, app_slug: str, reason: str) -> None:
        self.metrics.increment("security.refused", slug=app_slug)
        security_violation.send(self, slug=app_slug, reason=reason)

    @renamed_parameters(app="slug")
    def record_operation(
        self, name: str, duration_ms: float, success: bool = True, slug: str | None = None
    ) -> None:
        """Record a custom operation in the engine's metrics (e.g. ``"report.build"``);
        ``slug`` defaults to the app of the current context (the request's or task's)."""
        if slug is None:
            slug = context.get_app_id()
        self.metrics.record_operation(name, duration_ms, success, slug)

    def get_metrics(self) -> dict[str, Any]:
        """``{"summary": {...}, "apps": {app: {"operations": ..., "counters": ...}}}``."""
        return self.metrics.snapshot()

    def metrics_text(self) -> str:
        """The metrics in the Prometheus text exposition format, for a scrape endpoint."""
        return self.metrics.prometheus_text()

    def cache_info(self) -> dict[str, dict[str, int]]:
        """Size and bound of each per-process cache: ``{name: {"size", "limit"}}`` for
        ``scoped_databases``, ``collections_per_database`` (the fullest cached database),
        ``app_id_indexes``, ``raw_collections`` (pymongo collection objects),
        ``vector_index_states`` (search indexes known ready or missing),
        ``unknown_slugs``, ``registered_apps`` (no limit: the apps you registered),
        ``app_services`` (what is derived from each app's manifest: auth, AI services, metrics
        settings, CORS, websockets) and ``query_shapes``. None of them grows with what
        requests ask for."""
        with self._lock:
            databases = [db for db, _ in self._scoped.values()]
            info = {
                "scoped_databases": {"size": len(self._scoped), "limit": SCOPED_CACHE_SIZE},
                "collections_per_database": {
                    "size": max((db.cached_collections() for db in databases), default=0),
                    "limit": COLLECTION_CACHE_SIZE,
                },
                **self.storage.cache_info(),
            }
        # Read only if loaded: the AI extra (numpy) is optional, and unloaded means empty.
        vector_search = sys.modules.get("mdb_sync.ai.vector_search")
        info["vector_index_states"] = (
            vector_search.index_state_cache_info(self)
            if vector_search is not None
            else {"size": 0, "limit": 0}
        )
        return {
            **info,
            **self.catalog.cache_info(),
            **self.app_services.cache_info(),
            **self.auto_indexes.cache_info(),
        }

    def get_health_status(self, timeout: float | None = None) -> dict[str, Any]:
        """``{"status": "healthy"|"degraded"|"unhealthy", "checks": [...]}``, each check also
        under its name (``health["mongodb"]["latency_ms"]``, ``health["pool"]``); see
        :mod:`mdb_sync.observability.health`. Waits at most ``timeout`` seconds for the server
        (default: the server-selection timeout, at most 3 s); a server problem is reported,
        never raised."""
        return check_health(self, timeout=timeout)

    # --- portability --------------------------------------------------------------------------
    # mdb_sync.portability imports mdb_sync.auth, which needs the optional auth extra (PyJWT):
    # imported when first asked for.

    def export_app(
        self, slug: str, directory: str | os.PathLike[str], **options: Any
    ) -> dict[str, Any]:
        """Export app ``slug`` in mongodump's directory layout; see
        :func:`mdb_sync.portability.export_app`."""
        from .portability import export_app

        self.require_initialized()
        return export_app(self, slug, directory, **options)

    def import_app(
        self, slug: str, directory: str | os.PathLike[str], **options: Any
    ) -> dict[str, Any]:
        """Import an exported app into this engine's database; see
        :func:`mdb_sync.portability.import_app`."""
        from .portability import import_app

        self.require_initialized()
        return import_app(self, slug, directory, **options)


def _after_fork_in_child() -> None:
    for engine in context.live_engines():
        engine.after_fork_in_child()


def _shutdown_all() -> None:
    for engine in context.live_engines():
        with contextlib.suppress(Exception):  # interpreter exit: best effort
            engine.shutdown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_all)
