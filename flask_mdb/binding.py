"""Which app a request serves: resolution, the binding, and the ``db`` proxy.

Each request resolves its app slug — ``MDB_APP_RESOLVER(request)``, else the slug bound to
the request's blueprint (:meth:`MDB.bind_blueprint`), else ``MDB_APP_SLUG`` — and binds it
in :mod:`mdb_sync.context`, the one ``ContextVar`` that logging, metrics and Celery read
too, together with the request's correlation id (a valid ``X-Request-ID``, else a new one,
echoed in the response) and the engine. ``teardown_request`` always resets it, so a thread
reused by the server never carries the previous request's app or id (the request's state
on ``g`` keeps the binding for streamed responses that run after teardown). ``db`` reads
that binding; with none it raises :class:`AppNotBoundError` and never falls back to
anything unscoped.

A slug the resolver names must be registered and active (else 404): the resolver reads
request data (host, path, headers) that a client controls, so it may never create apps.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from flask import abort, current_app, has_app_context, has_request_context, request
from werkzeug.local import LocalProxy

from mdb_sync import context
from mdb_sync.catalog import AppRecord
from mdb_sync.exceptions import AppNotActiveError, AppNotFoundError, ScopeError
from mdb_sync.scoping import ScopedDatabase, validate_slug

from . import request_state
from .request_state import RequestState
from .signals import app_bound
from .state import MDBState, SlugState, current_flask_app, get_state

if TYPE_CHECKING:
    from flask import Request, Response

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


def current_binding() -> Binding | None:
    """The binding of the current context (``mdb.bind`` or the request's), or None."""
    bound = context.current().binding
    if isinstance(bound, Binding):
        return bound
    state = request_state.current_state()
    if state is not None and state.ended:
        return state.binding  # a streamed response, after teardown
    return None


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


# The proxies forward every attribute and operation to the object they stand for, so they
# are typed as that object (as Flask types ``current_app`` as ``Flask``).

#: The scoped database of the app bound to the current request (a proxy: pass
#: :func:`get_current_db` to code that keeps it).
db = cast(ScopedDatabase, LocalProxy(get_current_db))
#: The slug of the app bound to the current request (raises when none is bound).
current_app_slug = cast(str, LocalProxy(lambda: _require_binding().slug))


def push_binding(binding: Binding | None) -> contextvars.Token[Any]:
    """Bind ``binding`` (None: no app) in the current context, keeping its correlation id;
    give the token to :func:`pop_binding` in ``finally``."""
    base = context.current()
    if binding is None:
        return context.bind(context.changed(base, app_id=None, binding=None))
    return context.bind(
        context.changed(base, app_id=binding.slug, binding=binding, engine=binding.state.engine)
    )


def pop_binding(token: contextvars.Token[Any]) -> None:
    """Undo :func:`push_binding` (from another context: unbind regardless)."""
    context.reset(token)


# --- request resolution ---------------------------------------------------------------------------


def resolve_slug(state: MDBState, req: Request) -> tuple[str | None, str]:
    """``(slug, source)`` for ``req``: resolver, else blueprint, else the default app."""
    resolver = state.config["MDB_APP_RESOLVER"]
    if resolver is not None:
        slug = resolver(req)
        if slug is not None:
            return slug, "resolver"
    slugs = state.blueprint_slugs
    if slugs:
        for name in req.blueprints:
            if name in slugs:
                return slugs[name], "blueprint"
    if state.default_slug is not None:
        return state.default_slug, "default"
    return None, "none"


def usable_record(state: MDBState, slug: Any, source: str) -> AppRecord:
    """The registry record of an active app, or 404.

    Resolver slugs must already be registered; configured slugs (default, blueprint,
    :meth:`MDB.bind`) follow the engine's ``implicit_apps`` rule.
    """
    engine = state.engine
    try:
        if source != "resolver":
            return engine.registration.require_usable(slug)
        validate_slug(slug)
        record = engine.catalog.get(slug)
        if record is None:
            raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
        if record.status != "active":
            raise AppNotActiveError(f"app {slug!r} is not active", context={"app": slug})
        return record
    except (AppNotFoundError, AppNotActiveError, ScopeError):
        if has_request_context():
            abort(404, description=f"No active app {str(slug)[:64]!r} is served here.")
        raise


#: Most bindings :func:`binding_of` keeps per extension state (one per app and way of
#: choosing it is the usual count; resolver slugs are registered apps, never any string).
BINDING_CACHE_SIZE = 1024


def binding_of(state: MDBState, slug: str, source: str, record: AppRecord) -> Binding:
    """The :class:`Binding` of ``slug`` (chosen by ``source``) in the app state ``record``:
    one immutable object per app state, shared by the requests, instead of one per request.
    A new record (the app changed, in any process) makes a new binding."""
    key = (slug, source)
    cached = state.bindings.get(key)
    if cached is not None and cached[0] is record:
        return cached[1]
    made = Binding(slug, state, source, state.slug_state(slug, record))
    if len(state.bindings) >= BINDING_CACHE_SIZE:
        state.bindings.clear()
    state.bindings[key] = (record, made)
    return made


def request_correlation_id(state: MDBState, req: Request) -> str:
    """The correlation id of ``req``: its ``MDB_REQUEST_ID_HEADER`` (``X-Request-ID``) when
    ``MDB_TRUST_REQUEST_ID`` and the value is 1-128 characters of ``[A-Za-z0-9._:+/=@-]``
    (it is client input that goes into every log line), else a new random one."""
    if state.config["MDB_TRUST_REQUEST_ID"]:
        return context.accept_correlation_id(req.headers.get(state.config["MDB_REQUEST_ID_HEADER"]))
    return context.new_correlation_id()


def bind_request(mdb_state: MDBState | None = None) -> RequestState:
    """The first step of every request (:mod:`flask_mdb.hooks`): start the request's
    context — its correlation id and engine, no app yet — then resolve and bind the
    request's app (404 when unusable). Returns the request's state.

    The context starts empty (nothing of what the thread ran before), so whatever happens
    next (an unreachable server, a 404, an error handler) runs with no app bound rather than
    with a stale one, and its log records already carry the request's id.
    """
    if mdb_state is None:
        mdb_state = get_state()
    req = request_state.current_request()
    req_state = request_state.begin(req.environ)
    req_state.started = time.perf_counter()
    correlation_id = req_state.correlation_id = request_correlation_id(mdb_state, req)
    engine = mdb_state.engine
    req_state.context = context.Context(correlation_id=correlation_id, engine=engine)
    req_state.token = context.bind(req_state.context)
    if req.blueprint == OPS_BLUEPRINT:
        return req_state
    mdb_state.ensure_ready()
    slug, source = resolve_slug(mdb_state, req)
    if slug is None:
        return req_state
    record = usable_record(mdb_state, slug, source)
    bound = req_state.binding = binding_of(mdb_state, slug, source, record)
    # The slug is a registered app's (validated): the context is built as it is.
    req_state.context = context.Context(
        app_id=slug, correlation_id=correlation_id, engine=engine, binding=bound
    )
    context.replace_current(req_state.context)  # the token still undoes the whole request
    if app_bound.receivers:
        app_bound.send(current_flask_app(), slug=slug, source=source)
    return req_state


def finish_request(response: Response, req_state: RequestState | None) -> Response:
    """After step: echo the correlation id (``X-Request-ID``), and record the request count
    and latency of the bound app in the engine's metrics (operation ``http.request``; a 5xx
    counts as an error)."""
    if req_state is None:
        return response
    mdb_state = get_state()
    response.headers[mdb_state.config["MDB_REQUEST_ID_HEADER"]] = req_state.correlation_id
    bound = current_binding()
    if bound is not None and req_state.started is not None:
        bound.state.engine.metrics.record_operation(
            "http.request",
            (time.perf_counter() - req_state.started) * 1000.0,
            response.status_code < 500,
            bound.slug,
        )
    return response


def unbind_request(exc: BaseException | None = None) -> None:
    """``teardown_request``: always undo this request's context."""
    req_state = request_state.current_state()
    if req_state is None:
        return
    token, req_state.token = req_state.token, None
    if token is not None:
        context.reset(token)
    request_state.end(req_state)
