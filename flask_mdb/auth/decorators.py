"""View decorators: who may call a view, how often, and over which transport.

Missing identity is 401 (browsers asking for HTML are sent to the login page instead, when
the auth routes are on); an identity without the right is 403; too many attempts 429. The
decorators raise these as HTTP exceptions carrying their status
(:class:`~flask_mdb.errors.MDBHTTPError`: ``MDBUnauthorized`` is a werkzeug
``Unauthorized``...), so an error handler the app registers for the status or the class
answers them; without one, the library's renderer does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlencode

from flask import abort, current_app, redirect, request, url_for
from werkzeug.routing import BuildError

from mdb_sync.auth import RateLimiter
from mdb_sync.exceptions import AuthNotConfiguredError

from ..auth_switch import PUBLIC_ATTR
from ..binding import current_binding
from ..errors import MDBHTTPError
from ..state import get_state
from .current import client_ip, csrf_problem, current_service, get_current_user, require_service
from .responses import refusal, wants_html
from .user import AuthUser

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on views exempt from the automatic CSRF check.
CSRF_EXEMPT_ATTR = "_mdb_csrf_exempt"


def public(view: F) -> F:
    """Leave ``view`` open to anonymous callers even when the app's policy requires auth."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def csrf_exempt(view: F) -> F:
    """Skip the automatic CSRF check for ``view`` (e.g. a webhook that authenticates itself)."""
    setattr(view, CSRF_EXEMPT_ATTR, True)
    return view


def unauthorized(message: str = "authentication required") -> NoReturn:
    """Refuse a caller without identity: 401 for API callers (with ``WWW-Authenticate``
    when the app issues tokens); browsers are redirected to the login page instead."""
    auth = current_service()
    if wants_html() and auth is not None and auth.users is not None:
        # A related app of a platform sends browsers through its hub (signed in there
        # already: back at once); any other app to its own sign-in page.
        endpoint = "mdb_auth.platform_login" if auth.config.hub_slug else "mdb_auth.login"
        try:
            login = url_for(endpoint, **(request.view_args or {}))
        except BuildError:
            login = None
        if login is not None:
            # A redirect is no error: it bypasses the error handlers.
            abort(redirect(f"{login}?{urlencode({'next': request.full_path.rstrip('?')})}"))
    headers = {}
    if auth is not None and auth.tokens is not None:
        headers["WWW-Authenticate"] = f'Bearer realm="{auth.slug}"'
    raise refusal(401, message, headers=headers)


def forbidden(message: str) -> NoReturn:
    """Refuse a caller whose identity lacks the right: 403."""
    raise refusal(403, message)


def _signed_in_user() -> AuthUser | None:
    """The request's signed-in user, for a decorator that needs one: raises
    :class:`~mdb_sync.exceptions.AuthNotConfiguredError` (naming the app and the missing
    ``auth`` key) when the bound app's manifest has no auth, instead of failing somewhere
    inside Flask-Login — a configuration mistake, never a silent 401 for everyone."""
    binding = current_binding()
    if binding is not None and (not get_state().auth_installed or current_service() is None):
        raise AuthNotConfiguredError(
            f"app {binding.slug!r} has no 'auth' (or 'token_management') block in its "
            f"manifest, but the view {request.endpoint!r} requires a signed-in user: add "
            '"auth": {"users": {"enabled": true}} to the manifest (or remove the decorator)',
            context={"app": binding.slug, "path": "auth"},
        )
    return get_current_user()


def _wrap(check: Callable[[], Any]) -> Callable[[F], F]:
    """Run ``check()`` before the view: it raises a refusal, or returns a response (the
    answer) or None (the view runs)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            response = check()
            if response is not None:
                return response
            return current_app.ensure_sync(view)(*args, **kwargs)

        # functools.wraps gives the wrapper the view's name, signature and attributes: it
        # stands for the view, which the type system cannot follow by itself.
        return cast(F, wrapper)

    return decorator


def view_check(check: Callable[[], Any]) -> Callable[[F], F]:
    """A view decorator running ``check()`` first: an HTTP exception it raises, or a
    response it returns, is the answer (a refusal); None lets the view run."""
    return _wrap(check)


def login_required(view: F) -> F:
    """Only signed-in users (session or bearer token) of the bound app."""

    def check() -> None:
        if _signed_in_user() is None:
            unauthorized()

    return _wrap(check)(view)


def require_auth(view: F | None = None, *, redirect_to: str | None = None) -> Any:
    """:func:`login_required` as the predecessor spells it, with or without arguments:
    ``redirect_to`` (a path of this site) sends browsers without a user there, with the page
    they wanted as ``next``, instead of to the app's login page."""
    if redirect_to is not None and (
        not redirect_to.startswith("/") or redirect_to.startswith(("//", "/\\"))
    ):
        raise ValueError(f"redirect_to must be a path of this site, not {redirect_to!r}")

    def check() -> Any:
        if _signed_in_user() is not None:
            return None
        if redirect_to is not None and wants_html():
            wanted = urlencode({"next": request.full_path.rstrip("?")})
            abort(redirect(f"{redirect_to}?{wanted}"))
        unauthorized()

    decorator = _wrap(check)
    return decorator(view) if view is not None else decorator


def require_admin(view: F) -> F:
    """Only users with the ``admin`` role (the predecessor's ``@require_admin``)."""
    return require_role("admin")(view)


def require_role(*roles: str) -> Callable[[F], F]:
    """Only users with one of ``roles`` in the bound app (inherited casbin roles count)."""
    if not roles:
        raise TypeError("require_role needs at least one role")

    def check() -> None:
        user = _signed_in_user()
        if user is None:
            unauthorized()
        if not set(roles) & require_service().roles_of(user.data):
            forbidden(f"this requires the role {' or '.join(map(repr, roles))}")

    return _wrap(check)


def require_permission(resource: str, action: str) -> Callable[[F], F]:
    """Only users the app's authorization provider allows ``action`` on ``resource``."""

    def check() -> None:
        user = _signed_in_user()
        if user is None:
            unauthorized()
        if not require_service().is_allowed(user.data, resource, action):
            forbidden(f"permission denied: {action} on {resource}")

    return _wrap(check)


def limit_refusal(retry_after: int) -> MDBHTTPError:
    """The 429 of a caller over a rate limit, with ``Retry-After``."""
    return refusal(
        429,
        f"too many attempts: retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def hit_limit(
    scope: str, max_attempts: int, window_seconds: int, key: str | None = None
) -> MDBHTTPError | None:
    """Count one attempt of ``scope`` for the client (MongoDB-backed); the 429 to raise
    when over the limit, else None."""
    binding = current_binding()
    slug = binding.slug if binding is not None else "-"
    engine = binding.state.engine if binding is not None else get_state().ensure_ready()
    attempt = RateLimiter(engine).hit(slug, scope, key or client_ip(), max_attempts, window_seconds)
    return None if attempt.allowed else limit_refusal(attempt.retry_after)


def rate_limit_auth(
    max_attempts: int = 5,
    window_seconds: int = 300,
    *,
    scope: str | None = None,
    key: Callable[[], str] | None = None,
) -> Callable[[F], F]:
    """At most ``max_attempts`` calls per client address (or ``key()``) in
    ``window_seconds``, counted in MongoDB so the limit holds across processes; then 429
    with ``Retry-After``."""
    if max_attempts < 1 or window_seconds < 1:
        raise ValueError("rate_limit_auth needs max_attempts >= 1 and window_seconds >= 1")

    def decorator(view: F) -> F:
        name = scope or f"view:{view.__module__}.{view.__qualname__}"

        def check() -> None:
            refused = hit_limit(name, max_attempts, window_seconds, key() if key else None)
            if refused is not None:
                raise refused

        return _wrap(check)(view)

    return decorator


def https_refusal() -> NoReturn:
    """Refuse plain HTTP: a redirect to HTTPS for safe methods, 403 for the others."""
    if request.method in ("GET", "HEAD"):
        abort(redirect(request.url.replace("http://", "https://", 1), 301))
    raise refusal(403, "HTTPS is required")


def token_security(enforce_https: bool = True, check_csrf: bool = True) -> Callable[[F], F]:
    """Require HTTPS and, for cookie-authenticated unsafe requests, a valid CSRF token
    (bearer-token requests are exempt: a browser never adds that header on its own)."""

    def check() -> None:
        if enforce_https and not request.is_secure:
            https_refusal()
        if check_csrf and request.method not in ("GET", "HEAD", "OPTIONS"):
            auth = require_service()
            if "Authorization" not in request.headers:
                problem = csrf_problem(auth)
                if problem is not None:
                    raise refusal(*problem)

    return _wrap(check)
