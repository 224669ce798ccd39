"""Platform sign-on on the auth blueprint (``auth.mode: "shared"``; see
:mod:`mdb_sync.auth.platform`):

=====================================  ==========================================================
``GET  /platform/login``               (a related app) to the hub's ``/platform/authorize``,
                                       with this app's callback URL and a ``state``
``GET  /platform/authorize``           (the hub) signed in here: a hand-off code to the
                                       related app's registered callback; else the hub's
                                       sign-in page first
``GET  /platform/callback``            (a related app) the code exchanged for this app's own
                                       session, then ``next``
=====================================  ==========================================================

A related app's browsers without a session are sent through ``/platform/login`` (instead of
the app's own sign-in page): a user signed in at the hub comes back signed in after three
redirects and no form. The related app's callback URL is built from ``MDB_EXTERNAL_URL``
(never the request) and must be exactly the one the hub registered (``related_apps``); the
hub never redirects anywhere else — a wrong ``app`` or ``return_to`` is an error page. The
``state`` ties the callback to the browser that started (a cookie ``<session
cookie>_platform``, as for OAuth), so a code carried to another browser does not sign it in.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, abort, jsonify, redirect, request

from mdb_sync.auth import AuthService
from mdb_sync.auth.oauth.states import PendingSignIns, new_key, valid_key
from mdb_sync.auth.platform import HandOffError, HandOffs, authorize_url, check_pair

from ..links import external_url
from . import current
from .decorators import public
from .responses import auth_error, wants_html
from .urls import AUTH_BLUEPRINT, auth_url, safe_next
from .view_helpers import flag, home, limit, service_or_404

log = logging.getLogger("flask_mdb.auth")

COOKIE_SUFFIX = "platform"
#: Seconds a started sign-on may take (the hub's sign-in page included).
STATE_TTL = 600
PROVIDER = "platform"


def _browser_cookie(auth: AuthService) -> str:
    return current.extra_cookie_name(auth, COOKIE_SUFFIX)


def _refused(exc: HandOffError) -> Any:
    log.info("platform sign-on refused (%s)", exc.reason)
    return auth_error(exc.status, exc.message, reason=exc.reason)


def _handoffs(auth: AuthService, role: str) -> HandOffs:
    cfg = auth.config
    is_role = cfg.hub_slug is not None if role == "related" else cfg.shared and not cfg.hub_url
    if auth.handoffs is None or not is_role:
        abort(auth_error(404, f"this app is not a platform sign-on {role} app"))
    return auth.handoffs


def callback_url(auth: AuthService) -> str:
    """This (related) app's callback URL, from its configured public address."""
    return external_url(
        f"{AUTH_BLUEPRINT}.platform_callback",
        slug=auth.slug,
        needed_by="platform sign-on",
        **(request.view_args or {}),
    )


@public
def platform_login(**_view_args: Any) -> Any:
    auth = service_or_404()
    _handoffs(auth, "related")
    limit(auth, "platform")
    key = request.cookies.get(_browser_cookie(auth))
    key = key if valid_key(key) else new_key()
    state = PendingSignIns(auth.engine, auth.slug, STATE_TTL).create(
        PROVIDER,
        key,
        next=safe_next(request.args.get("next"), home()),
        remember=flag(request.args.get("remember")),
    )
    query = urlencode({"app": auth.slug, "return_to": callback_url(auth), "state": state})
    response = redirect(f"{authorize_url(str(auth.config.hub_url))}?{query}", 302)
    # Lax whatever the session cookie's SameSite: it must come back with the hub's redirect.
    current.queue_cookie(_browser_cookie(auth), key, STATE_TTL, samesite="Lax")
    return response


@public
def platform_authorize(**_view_args: Any) -> Any:
    auth = service_or_404()
    handoffs = _handoffs(auth, "hub")
    limit(auth, "platform")
    target, return_to = request.args.get("app"), request.args.get("return_to")
    state = request.args.get("state")
    if not isinstance(target, str) or not isinstance(return_to, str) or not valid_key(state):
        return auth_error(400, "app, return_to and state are required", reason="bad_request")
    try:
        expected = check_pair(auth, auth.slug, target)
    except HandOffError as exc:
        return _refused(exc)
    if return_to != expected:  # never redirect anywhere but the registered callback
        return _refused(
            HandOffError("the return URL is not the one registered for this app", "bad_return_url")
        )
    user = current.get_current_user()
    if user is None or user.via != "session" or user.session is None:
        if wants_html():
            return redirect(auth_url("login", next=request.full_path.rstrip("?")))
        return auth_error(401, "sign in at the hub first", reason="sign_in_required")
    try:
        code = handoffs.issue(
            target,
            return_to,
            user.data,
            platform_session=user.session["_id"],
            authenticated_at=user.session.get("authenticated_at"),
        )
    except HandOffError as exc:
        return _refused(exc)
    response = redirect(f"{return_to}?{urlencode({'code': code, 'state': state})}", 302)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@public
def platform_callback(**_view_args: Any) -> Any:
    auth = service_or_404()
    handoffs = _handoffs(auth, "related")
    limit(auth, "platform")
    pending = PendingSignIns(auth.engine, auth.slug, STATE_TTL).consume(
        request.args.get("state"), PROVIDER, request.cookies.get(_browser_cookie(auth))
    )
    if pending is None:
        return auth_error(
            400,
            "this sign-on is unknown, expired, already used or was started in another "
            "browser: start again",
            reason="invalid_state",
        )
    try:
        handoff = handoffs.redeem(request.args.get("code"), callback_url(auth))
        user = handoffs.account(handoff)
    except HandOffError as exc:
        return _refused(exc)
    logged_in = current.login_user(
        user,
        remember=bool(pending.get("remember")),
        authenticated_at=handoff.authenticated_at,
        platform_session=handoff.platform_session,
    )
    current.queue_cookie(_browser_cookie(auth), None)
    next_url = safe_next(pending.get("next"), home())
    if wants_html():
        return redirect(next_url, 303)
    body: dict[str, Any] = {"user": logged_in.to_json(), "hub": handoff.hub, "next": next_url}
    if auth.config.csrf_enabled:
        body["csrf_token"] = current.csrf_token()
    return jsonify(body)


def register_platform_routes(bp: Blueprint) -> None:
    """Add the platform sign-on routes (404 for apps that are not part of a platform)."""
    bp.add_url_rule("/platform/login", "platform_login", platform_login, methods=["GET"])
    bp.add_url_rule(
        "/platform/authorize", "platform_authorize", platform_authorize, methods=["GET"]
    )
    bp.add_url_rule("/platform/callback", "platform_callback", platform_callback, methods=["GET"])
