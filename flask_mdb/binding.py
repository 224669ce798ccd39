"""Which app a request serves: resolution, the ``ContextVar`` binding, and the ``db`` proxy.

Each request resolves its app slug — ``MDB_APP_RESOLVER(request)``, else the slug bound to
the request's blueprint (:meth:`MDB.bind_blueprint`), else ``MDB_APP_SLUG`` — and binds it
in a :class:`~contextvars.ContextVar` that ``teardown_request`` always resets, so a thread
reused by the server never carries the previous request's app (the request's WSGI environ
keeps it too, for streamed responses that run after teardown). ``db`` reads that binding;
with none it raises :class:`AppNotBoundError` and never falls back to anything unscoped.

A slug the resolver names must be registered and active (else 404): the resolver reads
request data (host, path, headers) that a client controls, so it may never create apps.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import abort, current_app, g, has_app_context, has_request_context, request
from werkzeug.local import LocalProxy

from mdb_sync.exceptions import AppNotActiveError, AppNotFoundError, ScopeError
from mdb_sync.scoping import ScopedDatabase, validate_slug

from .signals import app_bound
from .state import MDBState, SlugState, get_state

if TYPE_CHECKING:
    from flask import Request

#: Blueprint name of the extension's own endpoints (health, metrics): never bound.
OPS_BLUEPRINT = "mdb_ops"


class AppNotBoundError(ScopeError, RuntimeError):
    """``db`` (or ``current_app_slug``) was used where no app is bound: outside a request,
    or in a request for which no app could be resolved.

    Also a :class:`RuntimeError`, the error Werkzeug's proxies expect from an unbound
    proxy: Flask's app discovery (``flask --app module``) looks at every module attribute,
    ``db`` included, and skips those that raise it."""


@dataclass(frozen=True)
class Binding:
    """The app bound to the current context: its slug, how it was chosen, and the
    extension state (engine, config) it belongs to."""

    slug: str
    state: MDBState
    source: str
    slug_state: SlugState | None = None


_binding: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "flask_mdb_binding", default=None
)
#: The request's own binding, in its WSGI environ: a streamed response's generator runs
#: after teardown, in the same request context pushed again, and still needs it.
ENVIRON_KEY = "flask_mdb.binding"


def current_binding() -> Binding | None:
    """The binding of the current context (``mdb.bind`` or the request's), or None."""
    binding = _binding.get()
    if binding is None and has_request_context():
        binding = request.environ.get(ENVIRON_KEY)
    return binding


def get_current_app_slug() -> str | None:
    """The slug of the app bound to the current context, or None when none is."""
    binding = current_binding()
    return binding.slug if binding is not None else None


def _require_binding() -> Binding:
    binding = current_binding()
    if binding is not None:
        return binding
    if has_app_context() and "mdb" not in current_app.extensions:
        raise AppNotBoundError(
            f"flask_mdb.db is used in the Flask app {current_app.name!r}, which has no MDB "
            "extension: did you forget `mdb.init_app(app)` (or `MDB(app)`)?"
        )
    if has_request_context():
        raise AppNotBoundError(
            f"no app is bound to this request ({request.method} {request.path}): "
            "set MDB_APP_SLUG, bind the blueprint with mdb.bind_blueprint(bp, slug), or make "
            "MDB_APP_RESOLVER return a slug for it",
            context={"path": request.path},
        )
    raise AppNotBoundError(
        "no app is bound: flask_mdb.db serves the app of the current request; outside a "
        "request use `with mdb.bind(slug):` or mdb.get_db(slug)"
    )


def get_current_db() -> ScopedDatabase:
    """The scoped database of the app bound to the current context — the object behind the
    ``db`` proxy, to hand to a helper, a thread or a background job that must keep using the
    request's app after the request is gone. Raises :class:`AppNotBoundError` (a
    ``RuntimeError``) when no app is bound, like ``db``."""
    binding = _require_binding()
    return binding.state.scoped_db(binding.slug)


#: The scoped database of the app bound to the current request (a proxy: pass
#: :func:`get_current_db` to code that keeps it).
db: ScopedDatabase = LocalProxy(get_current_db)  # type: ignore[assignment]
#: The slug of the app bound to the current request (raises when none is bound).
current_app_slug: str = LocalProxy(lambda: _require_binding().slug)  # type: ignore[assignment]


def push_binding(binding: Binding | None) -> contextvars.Token[Binding | None]:
    return _binding.set(binding)


def pop_binding(token: contextvars.Token[Binding | None]) -> None:
    try:
        _binding.reset(token)
    except ValueError:  # reset from another context (a copied context): unbind regardless
        _binding.set(None)


# --- request resolution ---------------------------------------------------------------------------


def resolve_slug(state: MDBState, req: Request) -> tuple[str | None, str]:
    """``(slug, source)`` for ``req``: resolver, else blueprint, else the default app."""
    resolver = state.config["MDB_APP_RESOLVER"]
    if resolver is not None:
        slug = resolver(req)
        if slug is not None:
            return slug, "resolver"
    slugs = state.extension.blueprint_slugs
    if slugs:
        for name in req.blueprints:
            if name in slugs:
                return slugs[name], "blueprint"
    if state.default_slug is not None:
        return state.default_slug, "default"
    return None, "none"


def usable_record(state: MDBState, slug: Any, source: str) -> dict[str, Any]:
    """The registry record of an active app, or 404.

    Resolver slugs must already be registered; configured slugs (default, blueprint,
    :meth:`MDB.bind`) follow the engine's ``implicit_apps`` rule.
    """
    registry = state.engine.registry
    try:
        if source != "resolver":
            return registry.require_usable(slug)
        validate_slug(slug)
        record = registry.get_record(slug)
        if record is None:
            raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
        if record.get("status", "active") != "active":
            raise AppNotActiveError(f"app {slug!r} is not active", context={"app": slug})
        return record
    except (AppNotFoundError, AppNotActiveError, ScopeError):
        if has_request_context():
            abort(404, description=f"No active app {str(slug)[:64]!r} is served here.")
        raise


def bind_request() -> None:
    """``before_request``: resolve and bind the request's app (404 when unusable).

    The context is unbound first, so whatever happens next (an unreachable server, a 404,
    an error handler) runs with no app bound rather than with a stale one.
    """
    g.setdefault("_mdb_binding_tokens", []).append(push_binding(None))
    g._mdb_started = time.perf_counter()
    if request.blueprint == OPS_BLUEPRINT:
        return
    state = get_state()
    state.ensure_ready()
    slug, source = resolve_slug(state, request)
    if slug is None:
        return
    record = usable_record(state, slug, source)
    binding = Binding(slug, state, source, state.slug_state(slug, record))
    request.environ[ENVIRON_KEY] = binding
    _binding.set(binding)
    app_bound.send(current_app._get_current_object(), slug=slug, source=source)  # type: ignore[attr-defined]


def unbind_request(exc: BaseException | None = None) -> None:
    """``teardown_request``: always undo this request's binding."""
    tokens = g.get("_mdb_binding_tokens")
    if tokens:
        pop_binding(tokens.pop())
