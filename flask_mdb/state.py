"""Per-Flask-app state of the extension: config, engine, manifests, per-app (slug) caches.

One :class:`MDBState` lives in ``app.extensions["mdb"]`` for each Flask app. The engine is
built in ``init_app`` (no I/O) and made ready — connected, configured manifests registered
— on first use (first request, first CLI command that needs it), so importing or creating
the app under gunicorn ``--preload`` opens no connection before the fork.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, current_app

from mdb_sync import MongoDBEngine, ScopedDatabase
from mdb_sync.catalog import AppRecord

from .config import MDBConfig
from .headers import HeaderSet, header_set

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

    from .binding import Binding
    from .extension import MDB
    from .hooks import AfterStep, BeforeStep
    from .outbox import Outbox

log = logging.getLogger("flask_mdb")

_STATES: weakref.WeakSet[MDBState] = weakref.WeakSet()


@dataclass(frozen=True)
class SlugState:
    """One registered app as a request sees it: its manifest and the key of its registry
    record's state (:attr:`mdb_sync.catalog.AppRecord.key`) — what the values derived from the
    manifest (auth, CORS policy, websocket endpoints) are cached by, in the engine's per-app
    cache (:mod:`mdb_sync.app_services`), shared with scripts on the same engine."""

    slug: str
    manifest: Mapping[str, Any]
    key: tuple[str, str, int, int]


_T = TypeVar("_T")


@dataclass
class Hooks:
    """The steps the extension's request hooks run for one Flask app (see
    :mod:`flask_mdb.hooks`): before steps in the order added, after steps last-added first."""

    before: list[BeforeStep] = field(default_factory=list)
    after: list[AfterStep] = field(default_factory=list)
    #: ``init_app`` has returned: a step added now becomes a Flask hook of its own.
    sealed: bool = False


class MDBState:
    """The extension's state for one Flask app."""

    def __init__(
        self,
        extension: MDB,
        config: MDBConfig,
        engine: MongoDBEngine,
        owns_engine: bool,
        manifests: list[dict[str, Any]],
    ) -> None:
        self.extension = extension
        self.config = config
        self.engine = engine
        self.owns_engine = owns_engine
        self.manifests = manifests
        self.default_slug: str | None = config["MDB_APP_SLUG"] or (
            manifests[0]["slug"] if len(manifests) == 1 else None
        )
        #: ``register_app`` results of the configured manifests, by slug (after first use).
        self.registrations: dict[str, dict[str, Any]] = {}
        #: Blueprint name -> app slug (:meth:`MDB.bind_blueprint`).
        self.blueprint_slugs: dict[str, str] = {}
        #: Whether auth (login, tokens, CSRF...) is installed on the app.
        self.auth_installed = False
        #: The background sender of the app (:mod:`flask_mdb.outbox`), once used.
        self.outbox: Outbox | None = None
        #: The steps of the extension's request hooks (:mod:`flask_mdb.hooks`).
        self.hooks = Hooks()
        #: The security headers of responses no app is bound for (unknown apps, health),
        #: when auth is installed and ``MDB_SECURITY_HEADERS`` is on.
        self.unbound_headers: HeaderSet | None = (
            header_set(hsts=None, csp=config["MDB_CONTENT_SECURITY_POLICY"])
            if config["MDB_SECURITY_HEADERS"]
            else None
        )
        #: ``(slug, source)`` -> the record and the binding made for it
        #: (:func:`flask_mdb.binding.binding_of`).
        self.bindings: dict[tuple[str, str], tuple[AppRecord, Binding]] = {}
        self._ready = False
        self._lock = threading.Lock()
        _STATES.add(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    # --- the engine -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the engine was started for a request or by ``mdb.engine`` (no I/O)."""
        return self._ready and self.engine.is_initialized

    def ensure_ready(self, *, blocking: bool = False) -> MongoDBEngine:
        """Initialize the engine and register the configured manifests, once per process
        (and again if someone shut the engine down). Thread-safe. Declared indexes are
        built as ``MDB_INDEX_BUILDS`` says, or before returning with ``blocking``."""
        engine = self.engine
        if self._ready and engine.is_initialized:
            return engine
        with self._lock:
            if not (self._ready and engine.is_initialized):
                engine.initialize()
                background = not blocking and self.config["MDB_INDEX_BUILDS"] == "background"
                for manifest in self.manifests:
                    # Index problems are logged once, by the registration itself. In the
                    # background, the first request does not wait for index builds.
                    result = engine.register_app(
                        manifest, create_indexes=True, background_indexes=background
                    )
                    self.registrations[result["slug"]] = result
                self._ready = True
        return engine

    def scoped_db(self, slug: str) -> ScopedDatabase:
        """The sandboxed database of ``slug`` with this app's settings."""
        return self.engine.get_scoped_db(slug, auto_index=self.config["MDB_AUTO_INDEX"])

    def shutdown(self) -> None:
        """Shut the engine down if the extension built it (a shared engine is its owner's)."""
        with self._lock:
            self._ready = False
        if self.owns_engine:
            self.engine.shutdown()

    # --- per-app state ---------------------------------------------------------------------------

    def slug_state(self, slug: str, record: AppRecord | Mapping[str, Any]) -> SlugState:
        """The :class:`SlugState` of ``slug`` for its registry ``record`` (the catalog's
        :class:`~mdb_sync.catalog.AppRecord`, or a registry document)."""
        if not isinstance(record, AppRecord):
            cached = self.engine.catalog.cached(slug)
            # The catalog's record of this document (``record`` is a copy of its top level).
            if cached is None or cached.get("manifest") is not record.get("manifest"):
                cached = AppRecord.from_document(record)  # a record the catalog no longer holds
            record = cached
        return SlugState(slug, record.manifest, record.key)

    def per_slug(self, slug_state: SlugState, name: str, build: Callable[[SlugState], _T]) -> _T:
        """The value ``name`` derived from ``slug_state``'s manifest, built with ``build``
        once per state of the app, in the engine's per-app cache (``flask.<name>``)."""
        return self.engine.app_services.get(
            slug_state.key, f"flask.{name}", lambda: build(slug_state), id(self)
        )


def current_flask_app() -> Flask:
    """The Flask app of the current context itself, not the ``current_app`` proxy: what a
    signal is sent by, or an object kept beyond the context.

    Flask annotates ``current_app`` as ``Flask`` (so that attribute access type-checks),
    which hides from type checkers that it is a werkzeug ``LocalProxy``, whose documented
    ``_get_current_object()`` returns the app: the cast says what the object is."""
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def get_state(app: Flask | None = None) -> MDBState:
    """The extension state of ``app`` (default: the current app)."""
    if app is None:
        app = current_flask_app()
    try:
        state: MDBState = app.extensions["mdb"]
        return state
    except KeyError:
        raise RuntimeError(
            f"the MDB extension is not registered on the Flask app {app.name!r}: "
            "did you forget to call mdb.init_app(app)?"
        ) from None


def states_of(extension: MDB) -> list[MDBState]:
    """The states of the Flask apps ``extension`` initialized (and that still exist)."""
    return [state for state in list(_STATES) if state.extension is extension]


def lazy_engines_waiting() -> bool:
    """Whether this process has an MDB extension whose engine has not started yet (no
    request served, ``mdb.engine`` not used): what a "no engine" error should explain."""
    return any(not state.started for state in list(_STATES))


def _after_fork_in_child() -> None:
    for state in list(_STATES):
        state.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
