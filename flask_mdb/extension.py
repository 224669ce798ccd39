"""The ``MDB`` extension object: ``init_app`` wires mdb-sync into a Flask app.

Modelled on Flask-SQLAlchemy: ``MDB(app)`` or ``mdb = MDB()`` + ``mdb.init_app(app)`` in a
factory, any number of Flask apps per process, state in ``app.extensions["mdb"]`` (never on
the extension object), config keys ``MDB_*`` validated in ``init_app``. Nothing connects
before first use. ``init_app`` runs small steps (``_init_*``) that later features extend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from flask import Blueprint, Flask, Response
from werkzeug.routing import BaseConverter, ValidationError

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import ConfigurationError, ManifestValidationError, ScopeError
from mdb_sync.manifest import validate_manifest
from mdb_sync.scoping import ScopedDatabase, validate_slug

from . import binding, cors, hooks
from .auth.setup import init_auth
from .auth_switch import wants_auth
from .cli import mdb_cli
from .config import load_config
from .endpoints import make_blueprint
from .errors import register_error_handlers
from .json import install_json_provider
from .outbox import stop_outbox
from .request_state import RequestState
from .state import MDBState, current_flask_app, get_state, states_of
from .websockets import routes as websockets


class ObjectIdConverter(BaseConverter):
    """URL converter ``<objectid:name>``: a malformed id is a 404, not a 500."""

    regex = "[0-9a-fA-F]{24}"

    def to_python(self, value: str) -> ObjectId:
        try:
            return ObjectId(value)
        except InvalidId as exc:  # pragma: no cover - the regex already guarantees the shape
            raise ValidationError() from exc

    def to_url(self, value: Any) -> str:
        return str(value)


def _cors_preflight(req_state: RequestState) -> Response | None:
    """Before step: a CORS preflight (an ``OPTIONS`` request) is answered by the app's
    policy (:func:`.cors.handle_preflight`); other methods skip it without a look."""
    if req_state.environ.get("REQUEST_METHOD", "").upper() != "OPTIONS":
        return None
    return cors.handle_preflight()


def _cors_headers(response: Response, req_state: RequestState | None) -> Response:
    """After step: CORS headers for a cross-origin request (:func:`.cors.add_cors_headers`);
    a request without ``Origin`` (not cross-origin, or not from a browser) gets none."""
    if req_state is not None and not req_state.environ.get("HTTP_ORIGIN"):
        return response
    return cors.add_cors_headers(response)


class MDB:
    """The Flask extension of mdb-sync.

    :param app: a Flask app to initialize now (or call :meth:`init_app` later).
    :param engine: a :class:`~mdb_sync.MongoDBEngine` shared by every app this extension
        initializes (its owner initializes and shuts it down; the extension initializes it
        on first use if needed). Without it, each app gets an engine built from its
        ``MDB_*`` config.
    """

    def __init__(self, app: Flask | None = None, engine: MongoDBEngine | None = None) -> None:
        self._engine = engine
        # Blueprint name -> app slug declared with bind_blueprint() for every Flask app this
        # extension serves; each app's state holds its own copy (MDBState.blueprint_slugs).
        self._blueprint_slugs: dict[str, str] = {}
        if app is not None:
            self.init_app(app)

    # --- setup ----------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Validate the config, build the engine (no I/O) and install the request hooks."""
        if "mdb" in app.extensions:
            raise RuntimeError(
                f"an MDB extension is already registered on the Flask app {app.name!r}; "
                "call init_app once per app"
            )
        state = self._init_state(app)
        self._init_json(app, state)  # first: it may refuse, and must leave the app untouched
        app.extensions["mdb"] = state
        self._init_binding(app, state)
        self._init_cors(app, state)
        self._init_errors(app, state)
        self._init_endpoints(app, state)
        self._init_auth(app, state)
        self._init_websockets(app, state)
        self._init_cli(app)
        app.url_map.converters.setdefault("objectid", ObjectIdConverter)
        state.hooks.sealed = True  # from now on, a step is a Flask hook of its own

    def _init_state(self, app: Flask) -> MDBState:
        config = load_config(app.config, engine_given=self._engine is not None)
        engine = self._engine or MongoDBEngine(
            config["MDB_MONGO_URI"],
            config["MDB_DB_NAME"],
            embedded_dir=config["MDB_EMBEDDED_DIR"],
            limits=config["MDB_QUERY_LIMITS"],
            implicit_apps=config["MDB_IMPLICIT_APPS"],
            command_metrics=config["MDB_COMMAND_METRICS"],
            **config["MDB_CLIENT_OPTIONS"],
        )
        manifests = self._load_manifests(engine, config["MDB_MANIFESTS"])
        state = MDBState(self, config, engine, self._engine is None, manifests)
        state.blueprint_slugs.update(self._blueprint_slugs)
        return state

    @staticmethod
    def _load_manifests(engine: MongoDBEngine, paths: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Read and validate the configured manifests now (files only, no database), so a
        bad one stops the app at startup with its file and JSON path."""
        manifests: dict[str, dict[str, Any]] = {}
        for path in paths:
            try:
                manifest = engine.load_manifest(path)  # every section, cors included
            except ManifestValidationError as exc:
                raise ManifestValidationError(
                    f"MDB_MANIFESTS: {path}: {exc}", errors=exc.errors, context=exc.context
                ) from exc
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"MDB_MANIFESTS: {path}: {exc}", context=exc.context
                ) from exc
            slug = manifest["slug"]
            if slug in manifests:
                raise ConfigurationError(
                    f"MDB_MANIFESTS: two manifests declare the app {slug!r} ({path})",
                    context={"option": "MDB_MANIFESTS", "app": slug},
                )
            manifests[slug] = manifest
        return list(manifests.values())

    def _init_binding(self, app: Flask, state: MDBState) -> None:
        """The extension's request hooks (:mod:`.hooks`): binding first, then the steps the
        following ``_init_*`` add."""
        hooks.install(app)
        hooks.add_after(app, state, binding.finish_request)

    def _init_cors(self, app: Flask, state: MDBState) -> None:
        if state.config["MDB_CORS"]:
            hooks.add_before(app, state, _cors_preflight)
            hooks.add_after(app, state, _cors_headers)

    def _init_json(self, app: Flask, state: MDBState) -> None:
        if state.config["MDB_JSON_PROVIDER"]:
            install_json_provider(app)

    def _init_errors(self, app: Flask, state: MDBState) -> None:
        """The library's own exceptions are always answered (the app's handlers still win);
        pymongo's and bson's only with ``MDB_ERROR_HANDLERS``."""
        register_error_handlers(app, third_party=state.config["MDB_ERROR_HANDLERS"])

    def _init_endpoints(self, app: Flask, state: MDBState) -> None:
        health_url, metrics_url = state.config["MDB_HEALTH_URL"], state.config["MDB_METRICS_URL"]
        if health_url or metrics_url:
            app.register_blueprint(make_blueprint(health_url, metrics_url))

    def _init_auth(self, app: Flask, state: MDBState) -> None:
        """Login, tokens, RBAC, CSRF and security headers (``MDB_AUTH``; by default on when
        a configured manifest has ``auth`` or ``token_management``). After binding: its
        hooks act on the request's app."""
        if wants_auth(state):
            init_auth(app, state)

    def _init_websockets(self, app: Flask, state: MDBState) -> None:
        websockets.init_app(app, state)
        if state.config["MDB_WEBSOCKETS"]:
            for manifest in state.manifests:
                websockets.register_routes(app, manifest)

    def register_websocket_routes(
        self, app: Flask, slug: str, manifest: dict[str, Any] | None = None
    ) -> list[str]:
        """Serve the websocket endpoints of app ``slug`` (from ``manifest``, a configured
        manifest file, or the registry) on ``app``; return their paths. Call it before the
        app serves its first request; ``init_app`` already did it for ``MDB_MANIFESTS``."""
        state = get_state(app)
        if manifest is None:
            manifest = websockets.manifest_for(state, slug)
        else:
            manifest = validate_manifest(manifest)
            if manifest["slug"] != slug:
                raise ConfigurationError(
                    f"register_websocket_routes: the manifest is app {manifest['slug']!r}, "
                    f"not {slug!r}"
                )
        return websockets.register_routes(app, manifest)

    def _init_cli(self, app: Flask) -> None:
        if "mdb" not in app.cli.commands:
            app.cli.add_command(mdb_cli)

    # --- binding --------------------------------------------------------------------------------

    def bind_blueprint(
        self, blueprint: Blueprint | str, slug: str, app: Flask | None = None
    ) -> None:
        """Serve app ``slug`` on every request routed to ``blueprint`` (or a blueprint
        nested in it), unless ``MDB_APP_RESOLVER`` names another app: in ``app`` only, or
        without it in every Flask app this extension serves, now and later."""
        name = blueprint if isinstance(blueprint, str) else blueprint.name
        try:
            validate_slug(slug)
        except ScopeError as exc:
            raise ConfigurationError(f"bind_blueprint({name!r}, ...): {exc}") from exc
        if app is not None:
            get_state(app).blueprint_slugs[name] = slug
            return
        self._blueprint_slugs[name] = slug
        for state in states_of(self):
            state.blueprint_slugs[name] = slug

    @contextlib.contextmanager
    def bind(self, slug: str, app: Flask | None = None) -> Iterator[ScopedDatabase]:
        """Bind ``slug`` for the ``with`` block (scripts, CLI commands, threads, tests):
        ``db`` and ``current_app_slug`` refer to it there, and the previous binding comes
        back afterwards. Needs an app context unless ``app`` is given."""
        state = get_state(app)
        state.ensure_ready()
        record = binding.usable_record(state, slug, "manual")
        token = binding.push_binding(binding.binding_of(state, slug, "manual", record))
        try:
            yield state.scoped_db(slug)
        finally:
            binding.pop_binding(token)

    # --- accessors ------------------------------------------------------------------------------

    def get_engine(self, app: Flask | None = None) -> MongoDBEngine:
        """The engine of ``app`` (default: the current app), ready for use."""
        return get_state(app).ensure_ready()

    @property
    def engine(self) -> MongoDBEngine:
        """The engine of the current app, ready for use."""
        return self.get_engine()

    def get_db(self, slug: str | None = None, app: Flask | None = None) -> ScopedDatabase:
        """The scoped database of ``slug`` (default: the bound app, else ``MDB_APP_SLUG``),
        without binding anything."""
        state = get_state(app)
        state.ensure_ready()
        slug = slug or binding.get_current_app_slug() or state.default_slug
        if slug is None:
            raise binding.AppNotBoundError(
                "mdb.get_db() needs a slug: none was given, none is bound and MDB_APP_SLUG is unset"
            )
        return state.scoped_db(slug)

    def shutdown(self, app: Flask | None = None) -> None:
        """Shut down the engine the extension built for ``app`` (a shared engine is left to
        its owner). It reconnects on next use. Open websockets are closed first (1001), and
        the background sender runs what it holds (password-reset links; at most 10 s)."""
        websockets.close_all(app)
        stop_outbox(app or current_flask_app())
        get_state(app).shutdown()
