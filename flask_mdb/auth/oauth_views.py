"""OAuth 2.0 / OpenID Connect sign-in on the auth blueprint (apps with ``auth.oauth``; the
``oauth`` extra: :mod:`.views` registers these routes only where it is installed, and
:mod:`.oauth_support` refuses an app with providers where it is not):

=====================================  ==========================================================
``GET   /oauth/providers``             ``{providers: [{name, label, login_url}]}``
``GET   /oauth/<provider>/login``      to the provider (302), or ``{authorization_url}`` for
                                       JSON clients; ``next``, ``remember``, ``tokens``
``GET   /oauth/<provider>/callback``   where the provider sends the browser back: signed in
                                       (303 to ``next``), or JSON (the user; tokens when asked)
``POST  /oauth/<provider>/link``       a signed-in user adds this provider (to the provider)
``POST  /oauth/<provider>/unlink``     ... or removes it (never the account's last way in)
``GET   /oauth/identities``            the signed-in user's linked identities
=====================================  ==========================================================

The callback URL sent to the provider is built from the configured public address
(``MDB_EXTERNAL_URL``, or ``SERVER_NAME``), never from the request's ``Host`` or
``X-Forwarded-*`` headers. Starting a sign-in sets a short-lived cookie (``<session
cookie>_oauth``: random, HttpOnly, ``SameSite=Lax`` so it comes back with the provider's
redirect) whose hash the pending sign-in keeps: only the browser that started a sign-in can
finish it. A sign-in ends in the same server-side session as a password login (a new
session id, CSRF as usual). Redirects and callbacks count against the ``oauth`` rate limit
per client address (``token_management.security.rate_limiting.oauth``; 30 per 5 minutes by
default).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request

from mdb_sync.auth import AuthService
from mdb_sync.auth.oauth import OAuthError, OAuthSignIn, oauth_for
from mdb_sync.auth.oauth.states import new_key, valid_key

from ..links import external_url
from . import current
from .decorators import hit_limit, public, unauthorized
from .responses import auth_error, wants_html
from .twofactor_views import needs_second_step, start_second_step
from .urls import AUTH_BLUEPRINT, auth_url, safe_next

log = logging.getLogger("flask_mdb.auth")

#: Appended to the session cookie's name for the cookie that ties a sign-in to its browser.
BROWSER_COOKIE_SUFFIX = "_oauth"


def browser_cookie_name(auth: AuthService) -> str:
    """The cookie holding this browser's key for pending sign-ins (``__Host-`` prefixed
    like the session cookie over HTTPS)."""
    return current.session_cookie_name(auth) + BROWSER_COOKIE_SUFFIX


# --- helpers -------------------------------------------------------------------------------------


def _service() -> tuple[AuthService, OAuthSignIn]:
    auth = current.current_service()
    if auth is None or auth.users is None or auth.config.oauth is None:
        abort(auth_error(404, "this app has no sign-in through other providers"))
    return auth, oauth_for(auth)


def _home() -> str:
    return str(current_app.extensions["mdb"].config["MDB_AUTH_HOME"])


def _flag(value: Any) -> bool:
    return isinstance(value, str) and value.lower() in ("1", "true", "on", "yes")


def _limit(auth: AuthService) -> None:
    limit = auth.config.limit("oauth")
    if limit is not None:
        refused = hit_limit("oauth", limit.max_attempts, limit.window_seconds)
        if refused is not None:
            raise refused


def _callback_url(auth: AuthService, provider: str) -> str:
    values = {**(request.view_args or {}), "provider": provider}
    return external_url(
        f"{AUTH_BLUEPRINT}.oauth_callback",
        slug=auth.slug,
        needed_by="OAuth callback URLs",
        **values,
    )


def _browser_key(auth: AuthService) -> str:
    value = request.cookies.get(browser_cookie_name(auth))
    return value if valid_key(value) else new_key()


def _with_browser_cookie(response: Any, auth: AuthService, key: str) -> Any:
    response.set_cookie(
        browser_cookie_name(auth),
        key,
        max_age=auth.config.oauth.state_ttl if auth.config.oauth else 600,
        path="/",
        secure=current.cookie_secure(auth),
        httponly=True,
        samesite="Lax",  # sent with the provider's top-level redirect back, never with posts
    )
    return response


def _html() -> bool:
    return not request.is_json and wants_html()


def _refused(auth: AuthService, exc: OAuthError, next_url: str | None = None) -> Any:
    """An OAuth refusal: the login page with the message for browsers, JSON otherwise
    (``error.reason`` says what failed)."""
    log.info("app %r: OAuth refused (%s)", auth.slug, exc.reason)
    if _html() and exc.status != 404:
        page = render_template(
            "mdb_auth/login.html",
            next=next_url or _home(),
            auth=auth,
            error=exc.message,
            notice=None,
        )
        return page, exc.status, {"Cache-Control": "no-store"}
    response = auth_error(exc.status, exc.message, type="OAuthError")
    if response.is_json:
        body = response.get_json()
        body["error"]["reason"] = exc.reason
        response.set_data(current_app.json.dumps(body))
    return response


def _start(auth: AuthService, oauth: OAuthSignIn, provider: str, **options: Any) -> Any:
    key = _browser_key(auth)
    try:
        start = oauth.begin(
            provider, redirect_uri=_callback_url(auth, provider), browser_key=key, **options
        )
    except OAuthError as exc:
        return _refused(auth, exc, options.get("next_url"))
    if _html():
        response = redirect(start.url, 303 if request.method == "POST" else 302)
    else:
        response = jsonify(
            authorization_url=start.url, provider=start.provider, expires_in=start.expires_in
        )
    return _with_browser_cookie(response, auth, key)


# --- views ---------------------------------------------------------------------------------------


@public
def oauth_providers(**_view_args: Any) -> Any:
    _auth, oauth = _service()
    return jsonify(
        providers=[
            {
                "name": p.name,
                "label": p.label,
                "login_url": auth_url("oauth_login", provider=p.name),
            }
            for p in oauth.providers.values()
        ]
    )


@public
def oauth_login(provider: str, **_view_args: Any) -> Any:
    auth, oauth = _service()
    _limit(auth)
    return _start(
        auth,
        oauth,
        provider,
        next_url=safe_next(request.args.get("next"), _home()),
        remember=_flag(request.args.get("remember")),
        tokens=_flag(request.args.get("tokens")) and auth.tokens is not None,
    )


@public
def oauth_callback(provider: str, **_view_args: Any) -> Any:
    auth, oauth = _service()
    _limit(auth)
    signed_in = current.get_current_user()
    try:
        result = oauth.complete(
            provider,
            state=request.args.get("state"),
            code=request.args.get("code"),
            error=request.args.get("error"),
            browser_key=request.cookies.get(browser_cookie_name(auth)),
            signed_in_user_id=(
                signed_in.id if signed_in is not None and signed_in.via != "token" else None
            ),
        )
    except OAuthError as exc:
        return _refused(auth, exc)
    next_url = safe_next(result.next_url, _home())
    if (
        result.outcome == "linked"
        and signed_in is not None
        and signed_in.id == result.user["user_id"]
    ):
        if _html():
            return redirect(next_url, 303)
        return jsonify(linked=result.provider, identity=result.identity)
    if result.tokens and auth.tokens is not None and not needs_second_step(auth, result.user):
        body = {**auth.issue_tokens(result.user), "outcome": result.outcome}
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response
    if needs_second_step(auth, result.user):  # the provider is one factor, the code another
        return start_second_step(auth, result.user, result.remember, next_url)
    logged_in = current.login_user(result.user, remember=result.remember)
    if _html():
        return redirect(next_url, 303)
    body = {"user": logged_in.to_json(), "outcome": result.outcome, "provider": result.provider}
    if auth.config.csrf_enabled:
        body["csrf_token"] = current.csrf_token()
    return jsonify(body)


def _signed_in_browser() -> Any:
    user = current.get_current_user()
    if user is None:
        abort(unauthorized())
    if user.via == "token":
        abort(auth_error(400, "link and unlink providers from a browser session, not a token"))
    return user


def _form_value(name: str) -> Any:
    if request.is_json:
        data = request.get_json(silent=True)
        return data.get(name) if isinstance(data, dict) else None
    return request.form.get(name)


def oauth_link(provider: str, **_view_args: Any) -> Any:
    auth, oauth = _service()
    user = _signed_in_browser()
    _limit(auth)
    return _start(
        auth,
        oauth,
        provider,
        next_url=safe_next(_form_value("next"), _home()),
        link_user_id=user.id,
    )


def oauth_unlink(provider: str, **_view_args: Any) -> Any:
    auth, oauth = _service()
    user = _signed_in_browser()
    try:
        oauth.unlink(user.id, provider)
    except OAuthError as exc:
        return _refused(auth, exc)
    if _html():
        return redirect(safe_next(_form_value("next"), _home()), 303)
    return jsonify(unlinked=provider, identities=oauth.identities_of(user.id))


def oauth_identities(**_view_args: Any) -> Any:
    _auth, oauth = _service()
    user = current.get_current_user()
    if user is None:
        return unauthorized()
    return jsonify(identities=oauth.identities_of(user.id))


def register_oauth_routes(bp: Blueprint) -> None:
    """Add the OAuth routes to the auth blueprint (they answer 404 for apps without
    ``auth.oauth``)."""
    bp.add_url_rule("/oauth/providers", "oauth_providers", oauth_providers, methods=["GET"])
    bp.add_url_rule("/oauth/identities", "oauth_identities", oauth_identities, methods=["GET"])
    bp.add_url_rule("/oauth/<provider>/login", "oauth_login", oauth_login, methods=["GET"])
    bp.add_url_rule("/oauth/<provider>/callback", "oauth_callback", oauth_callback, methods=["GET"])
    bp.add_url_rule("/oauth/<provider>/link", "oauth_link", oauth_link, methods=["POST"])
    bp.add_url_rule("/oauth/<provider>/unlink", "oauth_unlink", oauth_unlink, methods=["POST"])
