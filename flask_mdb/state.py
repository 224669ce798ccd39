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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from mdb_sync import MongoDBEngine, ScopedDatabase

from .config import MDBConfig

if TYPE_CHECKING:
    from .extension import MDB
    from .outbox import Outbox

log = logging.getLogger("flask_mdb")

_STATES: weakref.WeakSet[MDBState] = weakref.WeakSet()


@dataclass
class SlugState:
    """What the extension derived from one registered app's manifest (CORS policy, and
    whatever other features compute per app), cached until the registry record changes."""

    slug: str
    manifest: dict[str, Any]
    #: The registry's manifest object this was derived from: the registry replaces it when
    #: the app is re-registered or reloaded, which is how a stale entry is recognised.
    source: Any
    values: dict[str, Any] = field(default_factory=dict)


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
        self._ready = False
        self._lock = threading.Lock()
        self._slugs: dict[str, SlugState] = {}
        _STATES.add(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    # --- the engine -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the engine was started for a request or by ``mdb.engine`` (no I/O)."""
        return self._ready and self.engine.is_initialized

    def ensure_ready(self) -> MongoDBEngine:
        """Initialize the engine and register the configured manifests, once per process
        (and again if someone shut the engine down). Thread-safe."""
        engine = self.engine
        if self._ready and engine.is_initialized:
            return engine
        with self._lock:
            if not (self._ready and engine.is_initialized):
                engine.initialize()
                for manifest in self.manifests:
                    # Index problems are logged once, by the registration itself.
                    result = engine.register_app(manifest, create_indexes=True)
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
            self._slugs.clear()
        if self.owns_engine:
            self.engine.shutdown()

    # --- per-app state ---------------------------------------------------------------------------

    def slug_state(self, slug: str, record: dict[str, Any]) -> SlugState:
        """The cached :class:`SlugState` of ``slug`` for its current registry ``record``."""
        source = record.get("manifest")
        cached = self._slugs.get(slug)
        if cached is not None and cached.source is source:
            return cached
        fresh = SlugState(slug, dict(source or {}), source)
        with self._lock:
            self._slugs[slug] = fresh
        return fresh

    def per_slug(self, slug_state: SlugState, name: str, build: Callable[[SlugState], Any]) -> Any:
        """``slug_state.values[name]``, built once per manifest version with ``build``."""
        try:
            return slug_state.values[name]
        except KeyError:
            value = slug_state.values[name] = build(slug_state)
            return value


def get_state(app: Flask | None = None) -> MDBState:
    """The extension state of ``app`` (default: the current app)."""
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        return app.extensions["mdb"]  # type: ignore[no-any-return]
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
