"""Re-authentication for sensitive actions: ``@fresh_login_required``.

A session remembers when its user last *proved* who they are (``authenticated_at``: the
password and second factor at sign-in, a provider's sign-in, the hub's sign-in for a platform
hand-off, or a re-authentication); a bearer token carries it as ``auth_time`` (kept through
refreshes). A view wrapped with :func:`fresh_login_required` runs only when that was within
``auth.users.fresh_login_seconds`` (900 by default; ``within=`` per view): otherwise API
clients get 401 with ``error.reason: "reauthentication_required"`` and browsers are sent to
``/auth/reauthenticate?next=...``, which asks for the password again (counted by the account
lockout like a sign-in). Token clients re-authenticate by signing in again (``/auth/token``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

from flask import abort, jsonify, redirect, render_template, request, url_for
from werkzeug.routing import BuildError

from mdb_sync.auth.store import aware
from mdb_sync.exceptions import AuthenticationError, RateLimitExceeded

from . import current
from .decorators import unauthorized, view_check
from .responses import auth_error, refusal, wants_html
from .urls import safe_next
from .user import AuthUser
from .view_helpers import (
    check_csrf,
    home,
    limit,
    payload,
    refusal_status,
    service_or_404,
    text_field,
)

F = TypeVar("F", bound=Callable[..., Any])
#: ``error.reason`` of a refusal for want of a fresh sign-in.
REAUTHENTICATION_REQUIRED = "reauthentication_required"


def authenticated_at(user: AuthUser) -> float | None:
    """When (epoch seconds) ``user`` last proved who they are, as its session or token
    says; None when unknown (a Flask-Login session)."""
    if user.via == "session" and user.session is not None:
        when = aware(user.session.get("authenticated_at") or user.session.get("created_at"))
        return when.timestamp() if when is not None else None
    if user.via == "token" and user.claims is not None:
        value = user.claims.get("auth_time")
        return float(value) if isinstance(value, int | float) else None
    return None


def is_fresh(user: AuthUser | None = None, within: int | None = None) -> bool:
    """Whether the signed-in user proved who they are within ``within`` seconds (default
    ``auth.users.fresh_login_seconds``)."""
    user = user or current.get_current_user()
    auth = current.current_service()
    if user is None or auth is None:
        return False
    when = authenticated_at(user)
    window = auth.config.fresh_login_seconds if within is None else within
    return when is not None and time.time() - when <= window


def reauthentication_required() -> NoReturn:
    """Refuse a stale sign-in: the re-authentication page for browsers (when the user has a
    session to refresh), 401 with the reason otherwise."""
    user = current.get_current_user()
    if wants_html() and user is not None and user.via == "session":
        try:
            page = url_for("mdb_auth.reauthenticate", **(request.view_args or {}))
        except BuildError:
            page = None
        if page is not None:
            abort(redirect(f"{page}?{urlencode({'next': request.full_path.rstrip('?')})}"))
    raise refusal(
        401,
        "this needs a recent sign-in: confirm your password",
        reason=REAUTHENTICATION_REQUIRED,
    )


def fresh_login_required(view: F | None = None, *, within: int | None = None) -> Any:
    """Only signed-in users who proved who they are within ``within`` seconds (default
    ``auth.users.fresh_login_seconds``): for changing an address, enrolling a second factor,
    deleting an account... With or without arguments."""
    if within is not None and within < 1:
        raise ValueError("within must be at least 1 second")

    def check() -> None:
        user = current.get_current_user()
        if user is None:
            unauthorized()
        if not is_fresh(user, within):
            reauthentication_required()

    decorator = view_check(check)
    return decorator(view) if view is not None else decorator


# --- the view ----------------------------------------------------------------------------------


def reauthenticate(**_view_args: Any) -> Any:
    """``GET/POST /auth/reauthenticate``: confirm the password of the signed-in session."""
    auth = service_or_404()
    user = current.get_current_user()
    if user is None:
        return unauthorized()
    if user.via != "session" or user.session is None:
        abort(auth_error(400, "re-authenticate a token by signing in again (/auth/token)"))
    next_url = safe_next(request.values.get("next"), home())
    html = not request.is_json and wants_html()
    if request.method == "GET":
        return render_template(
            "mdb_auth/reauthenticate.html", auth=auth, next=next_url, error=None, user=user
        )
    data = payload()
    check_csrf(auth)
    limit(auth, "login")
    try:
        auth.reauthenticate(user.session["_id"], user.id, text_field(data, "password"))
    except (AuthenticationError, RateLimitExceeded) as exc:
        status, headers = refusal_status(exc)
        if html:
            page = render_template(
                "mdb_auth/reauthenticate.html", auth=auth, next=next_url, error=str(exc), user=user
            )
            return page, status, headers
        return auth_error(status, str(exc), headers=headers)
    if html:
        return redirect(safe_next(data.get("next"), home()), 303)
    now = dt.datetime.now(dt.timezone.utc)
    return jsonify(reauthenticated=True, authenticated_at=now.isoformat())
