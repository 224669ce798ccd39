"""What the extension keeps for one request: one object on ``g``.

``before_request`` starts a :class:`RequestState` (:func:`begin`) and ``teardown_request``
ends it (:func:`end`); in between, every part of the extension reads and writes its own
fields here instead of keys of its own on ``g``. The state remembers the WSGI environ of
the request it belongs to: a request for which ``before_request`` never ran (another
extension's hook answered first) finds no state rather than a previous request's, even when
several requests share one app context (a test client inside ``with app.app_context():``).

Teardown leaves the ended state in place (marked ``ended``) because a streamed response's
generator runs after teardown, with the request context pushed again, and still needs its
binding; the next request replaces it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from flask import g, has_request_context, request

if TYPE_CHECKING:
    from flask import Request
    from werkzeug.local import LocalProxy

    from mdb_sync.auth import AuthService
    from mdb_sync.auth.revocation import Standing
    from mdb_sync.context import Context
    from mdb_sync.realtime import Subscription

    from .auth.anonymous import AnonymousVisitor
    from .auth.plan import AuthPlan
    from .binding import Binding
    from .websockets.endpoints import Endpoint

#: The one ``g`` attribute of the extension.
G_KEY = "_mdb"


@dataclass(slots=True)
class RequestState:
    """The extension's per-request state."""

    #: The WSGI environ of the request this state belongs to.
    environ: dict[str, Any]
    #: The correlation id of the request (``X-Request-ID`` or a new one), echoed back.
    correlation_id: str = ""
    #: ``time.perf_counter()`` when the request's hooks started (for ``http.request``).
    started: float | None = None
    #: The request's app binding (also what streamed responses see after teardown).
    binding: Binding | None = None
    #: The context the request runs in, and the token that undoes it at teardown.
    context: Context | None = None
    token: contextvars.Token[Any] | None = None
    #: The state of a request that was running when this one began (a request made from a
    #: view with the test client), restored when this one ends.
    outer: RequestState | None = None
    ended: bool = False
    #: CORS headers were already added (a preflight answered in ``before_request``).
    cors_done: bool = False
    #: The anonymous visitor of the request, once resolved.
    anonymous: AnonymousVisitor | None = None
    # --- auth (flask_mdb.auth.current) ---
    #: The bound app's auth as the request uses it (None: no auth), once ``auth_resolved``.
    auth_plan: AuthPlan | None = None
    auth_resolved: bool = False
    #: The server-side session the request's user came from, if any.
    session: dict[str, Any] | None = None
    #: Why the request's bearer token was refused, if it was.
    token_error: str | None = None
    #: What to do with the session cookie: ``("set", sid, remember)`` or ``("clear",)``.
    cookie: tuple[Any, ...] | None = None
    #: A new CSRF seed to set, and whether the response carries a CSRF token.
    csrf_seed: str | None = None
    csrf_issued: bool = False
    #: Other cookies to set or clear: name -> (value or None, max_age, samesite).
    extra_cookies: dict[str, tuple[str | None, int | None, str | None]] = field(
        default_factory=dict
    )
    #: Standings the identity resolvers noted in this request (:mod:`flask_mdb.identity`).
    resolved: dict[tuple[Any, ...], Callable[[], Standing]] = field(default_factory=dict)
    # --- websockets ---
    #: The websocket handshake's findings before the upgrade (:mod:`.websockets.routes`).
    websocket: WebSocketHandshake | None = None

    @property
    def auth(self) -> AuthService | None:
        """The bound app's ``AuthService`` (None: no auth, or not resolved yet)."""
        plan = self.auth_plan
        return plan.auth if plan is not None else None


@dataclass(frozen=True, slots=True)
class WebSocketHandshake:
    """What a websocket endpoint's before step found, for its view: the endpoint as the
    app's current manifest declares it, who the client is, why it is refused (None:
    admitted), the revocation mark taken before the login was read, and the endpoint's
    simple-websocket options (read by flask-sock through ``SOCK_SERVER_OPTIONS``)."""

    endpoint: Endpoint
    identity: dict[str, Any] | None
    refusal: str | None
    mark: tuple[Subscription | None, int]
    options: dict[str, Any]


def current_request() -> Request:
    """The request of the current context itself, not the ``request`` proxy: for code that
    reads several of its attributes (each use of the proxy looks the context up again).
    Needs a request context. (Flask annotates ``request`` as a ``Request``; the cast says it
    is werkzeug's ``LocalProxy``, whose documented ``_get_current_object()`` returns it.)"""
    return cast("LocalProxy[Request]", request)._get_current_object()


def begin(environ: dict[str, Any] | None = None) -> RequestState:
    """Start the state of the current request (``before_request``); ``environ``: the
    request's WSGI environ, when the caller has it."""
    outer = g.get(G_KEY)
    state = RequestState(
        environ=request.environ if environ is None else environ,
        outer=outer if outer is not None and not outer.ended else None,
    )
    setattr(g, G_KEY, state)
    return state


def current_state() -> RequestState | None:
    """The state of the current request, or None (outside a request, or before
    ``before_request`` ran for it)."""
    if not has_request_context():
        return None
    state: RequestState | None = g.get(G_KEY)
    if state is None:
        return None
    environ = request.environ
    while state is not None and state.environ is not environ:
        state = state.outer
    return state


def ensure_state() -> RequestState:
    """The state of the current request, started now when the extension's
    ``before_request`` has not run for it (another hook answered first). Needs a request
    context."""
    state = current_state()
    return state if state is not None else begin()


def end(state: RequestState) -> None:
    """End ``state`` (``teardown_request``): the enclosing request's state comes back."""
    state.ended = True
    if state.outer is not None:
        setattr(g, G_KEY, state.outer)
