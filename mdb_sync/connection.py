"""The engine's connection: this process's one MongoClient and the embedded server under it.

One :class:`Connection` per engine owns what the rest of the engine reaches only through
:class:`~mdb_sync.storage.Storage`:

* **the client** — one :class:`~pymongo.MongoClient` per process, built lazily: a forked
  child (gunicorn ``--preload``, Celery prefork, ``multiprocessing``) never uses its
  parent's sockets, it builds its own on first use. Every new client bumps the *client
  epoch* (:meth:`Connection.generation`): scoped collections compare it before each
  operation and rebuild their pymongo collections when it changed.
* **the embedded server** (when no URI is given) — started or leased on :meth:`open`
  (a forked child takes a lease of its own before its first client), watched by an
  :class:`~mdb_sync.embedded_watch.EmbeddedWatch` that restarts it or re-attaches to the one
  another process started; on a new address, the connection builds a new client.
* **closing** — bounded whatever state the server is in (:data:`CLOSE_TIMEOUT`,
  :data:`SHUTDOWN_LOCK_TIMEOUT`).

It sits below storage and knows nothing of apps, metrics or services: the engine hands it
the extra pymongo listeners each new client gets (``listeners``), the one thing it needs
from the layers above.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo import MongoClient, uri_parser
from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import PyMongoError

from . import embedded
from . import uri as uri_helpers
from .embedded_watch import RUNNING, EmbeddedWatch
from .exceptions import (
    EmbeddedServerError,
    EngineConnectionError,
    EngineNotInitializedError,
    InvalidMongoURI,
)

log = logging.getLogger(__name__)

#: Database name when neither the caller, ``MDB_DB_NAME`` nor the URI names one.
DEFAULT_DB_NAME = "mdb_sync"
DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5_000
#: A stalled server (a hung process, a partition without resets) is noticed by pymongo's
#: monitor after heartbeatFrequencyMS + connectTimeoutMS, and a read it retries waits the
#: server-selection timeout on top: 35 s with pymongo's own 20 s; 5 s (ample for a TCP + TLS
#: handshake) makes it ~20 s.
DEFAULT_CONNECT_TIMEOUT_MS = 5_000
#: The socket timeout is the longest a scoped operation may run on the server (the
#: ``QueryLimits.max_time_ms`` cap, 5 min by default) plus this margin: it never cuts a
#: legitimate operation, and bounds every wait on a socket whatever else fails.
SOCKET_TIMEOUT_MARGIN_MS = 30_000
#: Longest wait of closing the client for the server (ending its sessions; seconds).
CLOSE_TIMEOUT = 1.0
#: Longest wait of :meth:`Connection.close` for the embedded server's lock (seconds).
SHUTDOWN_LOCK_TIMEOUT = 15.0
#: Message of :class:`~mdb_sync.exceptions.EngineNotInitializedError` before :meth:`open`.
NOT_OPEN = (
    "the engine is not initialized: call engine.initialize() first "
    "(or use `with MongoDBEngine(...) as engine:`)"
)

#: This process's id, kept current by the fork hook: ``os.getpid()`` is a system call, and
#: the client's owner is checked on every operation.
_PID = os.getpid()


def resolve_db_name(db_name: str | None, uri: str | None) -> str:
    """The database to use: ``db_name`` if given, else the URI's, else
    :data:`DEFAULT_DB_NAME` (the engine and the Celery settings agree on it)."""
    return db_name or uri_helpers.database(uri or "") or DEFAULT_DB_NAME


class Connection:
    """This process's client and the embedded server it talks to (see the module docstring).

    :param uri: the MongoDB URI, or None for the embedded server in ``embedded_dir``
        (``":memory:"``: a private throwaway one) started with ``embedded_durable``.
    :param db_name: the database, or None for the URI's (else :data:`DEFAULT_DB_NAME`).
    :param client_options: passed to every :class:`~pymongo.MongoClient` (see
        :meth:`settings` for the defaults added).
    :param socket_timeout_ms: ``socketTimeoutMS`` unless the options or the URI set it.
    :param listeners: called for each new client: extra pymongo event listeners for it
        (the engine's metrics; new ones per client, so a forked child counts its own pool).
    """

    def __init__(
        self,
        uri: str | None,
        db_name: str | None,
        *,
        embedded_dir: str | os.PathLike[str] | None = None,
        embedded_durable: bool | None = None,
        client_options: dict[str, Any] | None = None,
        socket_timeout_ms: int,
        listeners: Callable[[], list[Any]] = list,
    ) -> None:
        self._uri_arg = uri
        self._db_name_arg = db_name
        self._embedded_dir = embedded_dir
        self._embedded_durable = embedded_durable
        self._client_options = dict(client_options or {})
        #: ``socketTimeoutMS`` of the next client unless the options or the URI set it.
        self.socket_timeout_ms = socket_timeout_ms
        self._listeners = listeners
        self._lock = threading.RLock()
        self._open = False
        self._uri: str | None = None
        self._db_name: str | None = None
        self._embedded: embedded.EmbeddedServer | None = None
        self._embedded_lease_pid: int | None = None
        self._embedded_owner_pid: int | None = None
        self._watch: EmbeddedWatch | None = None
        self._client: MongoClient[dict[str, Any]] | None = None
        self._client_pid: int | None = None
        # Bumped for every new client (a forked child's, a re-attached embedded server's).
        self._client_epoch = 0

    # --- opening and closing --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    def require_open(self) -> None:
        """Raise :class:`~mdb_sync.exceptions.EngineNotInitializedError` unless :meth:`open`
        ran."""
        if not self._open:
            raise EngineNotInitializedError(NOT_OPEN)

    def open(self) -> None:
        """Start or lease the embedded server (without a URI), build the client and ping the
        server. Idempotent.

        Raises :class:`~mdb_sync.exceptions.InvalidMongoURI` for a malformed URI or client
        option, :class:`~mdb_sync.exceptions.EngineConnectionError` naming the host when the
        server does not answer within the server-selection timeout; either way nothing is
        left open (the embedded lease is released)."""
        with self._lock:
            if self._open:
                return
            if self._uri_arg is None:
                self._start_embedded()
            else:
                self._uri = self._uri_arg
            self._db_name = resolve_db_name(self._db_name_arg, self._uri)
            host = self.describe_server()  # before a release forgets the URI
            try:
                self.client.admin.command("ping")
            except InvalidMongoURI:
                self._release_embedded()
                raise
            except PyMongoError as exc:
                self._close_client()
                self._release_embedded()
                raise EngineConnectionError(
                    f"cannot reach MongoDB at {host}: {exc}", context={"host": host}
                ) from exc
            self._open = True

    def close(self) -> None:
        """Close the client (waiting at most :data:`CLOSE_TIMEOUT`) and release the
        embedded server (the last user stops it). Idempotent."""
        with self._lock:
            self._open = False
            self._close_client()
            self._release_embedded()

    # --- what it connects to -------------------------------------------------------------------

    @property
    def db_name(self) -> str:
        """The database all apps share."""
        return self._db_name or resolve_db_name(self._db_name_arg, self._uri or self._uri_arg)

    @property
    def uses_embedded_server(self) -> bool:
        return self._uri_arg is None

    @property
    def embedded_server(self) -> embedded.EmbeddedServer | None:
        """The embedded server in use, if any."""
        return self._embedded

    def embedded_state(self) -> dict[str, Any] | None:
        """The embedded server as the watch sees it (see
        :attr:`MongoDBEngine.embedded_state <mdb_sync.engine.MongoDBEngine.embedded_state>`),
        or None without one. No I/O."""
        watch = self._watch
        return watch.status() if watch is not None else None

    def describe_server(self) -> str:
        """The server, without credentials (``mongodb://host:port``)."""
        if self._uri is None and self._uri_arg is not None:
            return uri_helpers.describe(self._uri_arg)
        return uri_helpers.describe(self._uri or "")

    # --- the client -----------------------------------------------------------------------------

    @property
    def client(self) -> MongoClient[dict[str, Any]]:
        """This process's MongoClient, built on first use in each process."""
        client = self._client
        if client is not None and self._client_pid == _PID:
            return client
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = self._make_client()
                self._client_pid = os.getpid()
            return self._client

    def current_client(self) -> MongoClient[dict[str, Any]] | None:
        """This process's client if it has one already (never builds one; no I/O)."""
        client = self._client
        return client if client is not None and self._client_pid == os.getpid() else None

    @property
    def client_pid(self) -> int | None:
        """The id of the process that built the current client (None before it is built)."""
        return self._client_pid

    def generation(self) -> int:
        """The epoch of this process's current client (scoped collections compare it to
        theirs before each operation), after the embedded server check. On the path of
        every scoped operation: attribute checks only (a forked child has no client until
        this builds one)."""
        if self._watch is not None:
            self.check_embedded()
        if self._client is None:
            self.client  # noqa: B018 - builds this process's client, bumping the epoch
        return self._client_epoch

    def settings(self) -> dict[str, Any]:
        """The options clients are built with: the caller's, plus defaults (5 s server
        selection and connect timeouts, :attr:`socket_timeout_ms`, ``appname``) for those
        neither the caller nor the URI set. Event listeners are added per client."""
        uri = self._uri or self._uri_arg or ""
        given = {k.lower() for k in self._client_options} | uri_helpers.option_names(uri)
        defaults = {
            "serverSelectionTimeoutMS": DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
            "connectTimeoutMS": DEFAULT_CONNECT_TIMEOUT_MS,
            "socketTimeoutMS": self.socket_timeout_ms,
            "appname": "mdb-sync",
        }
        settings = {k: v for k, v in defaults.items() if k.lower() not in given}
        settings.update(self._client_options)
        settings.pop("event_listeners", None)
        return settings

    def _make_client(self) -> MongoClient[dict[str, Any]]:
        if self._uri is None:
            raise EngineNotInitializedError("the engine is not initialized: call initialize()")
        server = self._embedded
        if (
            server is not None
            and not server.is_private
            and self._embedded_lease_pid != os.getpid()
            and server.base_dir is not None
        ):
            # A forked child uses the parent's server: hold a lease of its own.
            embedded.add_lease(server.base_dir)
            self._embedded_lease_pid = os.getpid()
        try:
            if self._uri.startswith("mongodb://"):
                # Strict parse first: pymongo's client only warns about a misspelt option or
                # a bad value and then ignores it. (Not for +srv, whose parse does DNS.)
                uri_parser.parse_uri(self._uri, warn=False)
            options = {**self.settings(), "event_listeners": self._event_listeners()}
            client: MongoClient[dict[str, Any]] = MongoClient(self._uri, **options)
        except (PyMongoConfigurationError, ValueError, TypeError) as exc:
            host = uri_helpers.describe(self._uri)
            raise InvalidMongoURI(
                f"invalid MongoDB URI or client option for {host}: {exc}", context={"host": host}
            ) from exc
        self._client_epoch += 1
        return client

    def _event_listeners(self) -> list[Any]:
        """The caller's listeners, the engine's (``listeners``) and the embedded server's
        heartbeat watch."""
        listeners = list(self._client_options.get("event_listeners") or [])
        listeners += self._listeners()
        if self._watch is not None:
            listeners.append(self._watch.listener())
        return listeners

    def server_selection_timeout(self) -> float:
        """The client's server-selection timeout in seconds."""
        return float(self.client.options.server_selection_timeout)

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_pid == os.getpid():
            close_quietly(client, timeout=CLOSE_TIMEOUT)
        self._client_pid = None

    # --- the embedded server ------------------------------------------------------------------

    def _start_embedded(self) -> None:
        if str(self._embedded_dir) == embedded.MEMORY:
            server = embedded.start_private()
            self._embedded_owner_pid = os.getpid()
        else:
            server = embedded.acquire(self._embedded_dir, durable=self._embedded_durable)
            self._embedded_lease_pid = os.getpid()
        self._embedded = server
        self._uri = server.uri
        self._watch = EmbeddedWatch(self, server, self._embedded_durable)

    def _release_embedded(self) -> None:
        server, self._embedded = self._embedded, None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        if server is None:
            return
        if server.is_private:
            if self._embedded_owner_pid == os.getpid():
                embedded.stop_private(server)
        elif self._embedded_lease_pid == os.getpid() and server.base_dir is not None:
            try:
                embedded.release(server.base_dir, lock_timeout=SHUTDOWN_LOCK_TIMEOUT)
            except EmbeddedServerError as exc:
                # The lease stays until this process exits; the supervisor reaps it then.
                log.warning("could not release the embedded server: %s", exc)
        self._embedded_lease_pid = None
        self._uri = None

    def embedded_replaced(self, server: embedded.EmbeddedServer) -> None:
        """Called by the watch when it brought the embedded server back: on the same address
        the client reconnects by itself; on a new one, a new client is built (scoped
        collections follow through the client epoch) and the old one closed."""
        with self._lock:
            if self._watch is None:  # closed meanwhile
                return
            old, self._embedded = self._embedded, server
            if old is None or (old.host, old.port) == (server.host, server.port):
                return
            self._uri = server.uri
            stale = self.current_client()
            self._client = None
            self._client_pid = None
        log.warning("re-attached to the embedded server at %s", uri_helpers.describe(server.uri))
        if stale is not None:
            close_quietly(stale, timeout=0.2)  # its server is gone

    def check_embedded(self) -> None:
        """Before an operation: fail at once, saying why, when the embedded server is known
        to be down; wait (bounded) for a recovery under way."""
        watch = self._watch
        if watch is None:
            return
        if watch.state == RUNNING and not watch.server.is_private and watch.server_gone():
            watch.heartbeat_failed()  # noticed before pymongo's monitor: start the recovery
        if watch.state != RUNNING:
            watch.check(self.server_selection_timeout())

    # --- fork -----------------------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """Internal (the engine's fork handler calls it): a new lock and no client — the
        child builds its own on first use (taking its own embedded lease) — and a fresh
        watch state."""
        self._lock = threading.RLock()
        self._client = None
        self._client_pid = None
        if self._watch is not None:
            self._watch.after_fork_in_child()


def close_quietly(client: MongoClient[Any], timeout: float) -> None:
    """Close ``client`` waiting at most ``timeout`` s: pymongo's ``close`` ends the server
    sessions with a command, which would wait the whole server-selection timeout for a
    server that is down (the server forgets idle sessions on its own)."""
    try:
        with pymongo.timeout(timeout):
            client.close()
    except Exception:  # pragma: no cover - closing is best effort
        log.debug("error closing the MongoClient", exc_info=True)


def _after_fork_in_child() -> None:
    global _PID
    _PID = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
