"""The auth blueprint (``MDB_AUTH_ROUTES``, under ``MDB_AUTH_URL_PREFIX``, ``/auth`` by
default) serving the bound app:

=========================  ===============================================================
``GET/POST  /login``       HTML form or JSON ``{email, password, remember, next}``
``GET/POST  /register``    when ``auth.users.allow_registration``
``POST      /logout``      ends the session, or revokes the bearer token's login
``POST      /token``       ``{email, password}`` -> access + refresh token (no cookie)
``POST      /refresh``     ``{refresh_token}`` -> the next pair (the old one is spent)
``GET       /me``          the signed-in user
``POST      /password``    ``{current_password, new_password}``
``GET       /csrf``        a CSRF token for JSON clients of cookie sessions
``GET/POST  /forgot``      ``{email}``: queued; the background sender mails the link
``GET/POST  /reset``       ``{token, new_password}`` (``auth.users.password_reset``)
``GET       /oauth/...``   sign-in through providers (``auth.oauth``): see :mod:`.oauth_views`
=========================  ===============================================================

The ``/oauth/...`` routes are served only where the ``oauth`` extra is installed (see
:mod:`.oauth_support`): the others need neither authlib nor joserfc.

Failed logins get one answer whatever failed, and so do reset requests whether or not the
email has an account — in the same time too (see :mod:`.reset_links`); every response here
is ``Cache-Control: no-store``; logins, registrations, reset requests and refreshes are
rate-limited per client address (``token_management.security.rate_limiting``); redirects
after login go only to paths of this site.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import flask_login
from flask import (
    Blueprint,
    abort,
    jsonify,
    redirect,
    request,
)

from mdb_sync.auth import AuthService
from mdb_sync.auth.platform import end_platform_session
from mdb_sync.auth.service import EmailNotVerified
from mdb_sync.exceptions import (
    AuthenticationError,
    RateLimitExceeded,
    TokenError,
    UserExistsError,
    UserInputError,
)

from . import current
from . import view_helpers as helpers
from .decorators import csrf_exempt, public, unauthorized
from .email_links import queue_verification
from .fresh import reauthenticate
from .oauth_support import oauth_available, require_oauth_routes
from .platform_views import register_platform_routes
from .reset_links import request_reset_link
from .responses import auth_error, wants_html
from .twofactor_views import needs_second_step, register_two_factor_routes, start_second_step
from .urls import AUTH_BLUEPRINT, auth_url, safe_next
from .user import AuthUser
from .verify_views import register_verify_routes

BLUEPRINT = AUTH_BLUEPRINT
#: What a registration answers when the address must be proven first.
VERIFY_SENT = "check your mailbox: a link to confirm the address is on its way"
#: What a reset request answers, whether or not the email has an account.
RESET_SENT = "if an account has this email, a link to reset its password is on its way"

log = logging.getLogger("flask_mdb.auth")


def _user_body(user: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"user": user.to_json()}
    auth = current.current_service()
    if user.via in ("session", "flask-session") and auth is not None and auth.config.csrf_enabled:
        body["csrf_token"] = current.csrf_token()
    return body


@public
def login(**_view_args: Any) -> Any:
    auth = helpers.service_or_404()
    require_oauth_routes(auth.slug, auth.config.oauth)  # the page links to its providers
    html = not request.is_json
    next_url = safe_next(request.values.get("next"), helpers.home())
    if request.method == "GET":
        if current.get_current_user() is not None and html:
            return redirect(next_url)
        notice = None
        if request.args.get("reset") == "done":
            notice = "your password was changed: sign in with the new one"
        elif request.args.get("verified") == "done":
            notice = "your e-mail address is confirmed"
        return helpers.form(
            "mdb_auth/login.html", next=next_url, auth=auth, error=None, notice=notice
        )
    data = helpers.payload()
    helpers.check_csrf(auth)
    helpers.limit(auth, "login")
    email, password = helpers.text_field(data, "email"), helpers.text_field(data, "password")
    try:
        user = auth.authenticate(email, password)
    except (AuthenticationError, RateLimitExceeded) as exc:
        status, headers = helpers.refusal_status(exc)
        if isinstance(exc, EmailNotVerified):
            status = 403
        if html and wants_html():
            page = helpers.form(
                "mdb_auth/login.html", status, next=next_url, auth=auth, error=str(exc)
            )
            return (*page, headers)
        reason = "unverified" if isinstance(exc, EmailNotVerified) else None
        return auth_error(status, str(exc), headers=headers, reason=reason)
    remember = helpers.flag(data.get("remember"))
    if needs_second_step(auth, user):  # no session until the code
        return start_second_step(auth, user, remember, safe_next(data.get("next"), helpers.home()))
    logged_in = current.login_user(user, remember=remember)
    if html and wants_html():
        return redirect(safe_next(data.get("next"), helpers.home()), 303)
    return jsonify(_user_body(logged_in))


@public
def register(**_view_args: Any) -> Any:
    """Create an account and sign it in at once: like a login, any session the browser had
    is ended and a new one starts (new session cookie), so the CSRF token changes too — the
    JSON answer (201) carries the new ``csrf_token`` for the next unsafe request."""
    auth = helpers.service_or_404()
    if not auth.config.allow_registration:
        abort(auth_error(404, "registration is closed for this app"))
    html = not request.is_json
    next_url = safe_next(request.values.get("next"), helpers.home())
    if request.method == "GET":
        return helpers.form("mdb_auth/register.html", next=next_url, auth=auth, error=None)
    data = helpers.payload()
    helpers.check_csrf(auth)
    helpers.limit(auth, "register")
    email = helpers.text_field(data, "email")
    hidden = auth.email_links is not None and auth.refuses_unverified({})
    try:
        user = auth.register_user(email, helpers.text_field(data, "password"))
    except UserExistsError:
        if not hidden:
            return _registration_refused(html, next_url, auth, 409, "an account with this "
                                         "email already exists")  # fmt: skip
        user = None  # answered like a new account: the address's owner learns it by mail
    except UserInputError as exc:
        return _registration_refused(html, next_url, auth, 400, str(exc))
    if auth.email_links is not None:
        queue_verification(auth, email)  # to the address itself: new or not, unverified or not
    if hidden or user is None:  # no session before the address is proven
        if html and wants_html():
            return helpers.form("mdb_auth/verify_sent.html", 202, auth=auth, message=VERIFY_SENT)
        return jsonify(verification_sent=True, message=VERIFY_SENT), 202
    logged_in = current.login_user(user)
    if html and wants_html():
        return redirect(safe_next(data.get("next"), helpers.home()), 303)
    return jsonify(_user_body(logged_in)), 201


def _registration_refused(html: bool, next_url: str, auth: AuthService, status: int,
                          message: str) -> Any:  # fmt: skip
    if html and wants_html():
        return helpers.form(
            "mdb_auth/register.html", status, next=next_url, auth=auth, error=message
        )
    return auth_error(status, message)


@public
def logout(**_view_args: Any) -> Any:
    auth = helpers.service_or_404(need_users=False)
    data = helpers.payload() if request.content_length else {}
    refresh_token = data.get("refresh_token")
    if isinstance(refresh_token, str) and auth.tokens is not None:
        with contextlib.suppress(TokenError):  # already expired or revoked: nothing to end
            auth.revoke_token(refresh_token)
    everywhere = helpers.flag(data.get("everywhere") or request.args.get("everywhere"))
    user = current.get_current_user()
    session = user.session if user is not None and user.via == "session" else None
    if everywhere and session is not None and auth.config.shared:
        # Logout everywhere: the platform sign-on this session belongs to, in every app.
        hub_session = session.get("platform_session") or (
            session["_id"] if auth.config.hub_slug is None else None
        )
        if hub_session:
            end_platform_session(auth, str(hub_session))
    if user is not None or current.cookie_identity(auth):
        # Outside a platform, "everywhere" is every login of the account in this app: every
        # browser's session and remember cookie, every token (the holder's own request).
        current.logout_user(everywhere=everywhere and not auth.config.shared)
    if wants_html() and not request.is_json:
        target = data.get("next") or request.args.get("next")
        return redirect(safe_next(target, helpers.home()), 303)
    return jsonify(logged_out=True)


@csrf_exempt
@public
def token(**_view_args: Any) -> Any:
    auth = helpers.service_or_404(need_users=True)
    if auth.tokens is None:
        abort(auth_error(404, "this app does not issue tokens"))
    data = helpers.payload()
    helpers.limit(auth, "login")
    try:
        user = auth.authenticate(
            helpers.text_field(data, "email"), helpers.text_field(data, "password")
        )
        if auth.second_factor is not None and user.get("two_factor_enabled"):
            code = data.get("code") if data.get("recovery_code") is None else None
            if code is None and data.get("recovery_code") is None:
                return auth_error(401, "this account needs its second factor: send code",
                                  html=False, reason="two_factor_required")  # fmt: skip
            auth.second_factor.verify(
                user["user_id"], code=code, recovery_code=data.get("recovery_code")
            )
    except (AuthenticationError, RateLimitExceeded) as exc:
        status, headers = helpers.refusal_status(exc)
        if isinstance(exc, EmailNotVerified):
            status = 403
        return auth_error(status, str(exc), headers=headers, html=False)
    auth.record_login(user, current.client_ip())
    response = jsonify(auth.issue_tokens(user))
    response.headers["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@public
def refresh(**_view_args: Any) -> Any:
    auth = helpers.service_or_404(need_users=False)
    if auth.tokens is None:
        abort(auth_error(404, "this app does not issue tokens"))
    data = helpers.payload()
    helpers.limit(auth, "refresh")
    try:
        pair = auth.refresh(helpers.text_field(data, "refresh_token"))
    except TokenError as exc:
        return auth_error(401, exc.message, html=False)
    response = jsonify(pair)
    response.headers["Cache-Control"] = "no-store"
    return response


def me(**_view_args: Any) -> Any:
    helpers.service_or_404(need_users=False)
    user = current.get_current_user()
    if user is None:
        return unauthorized()
    return jsonify(_user_body(user))


def password(**_view_args: Any) -> Any:
    auth = helpers.service_or_404()
    user = current.get_current_user()
    if user is None:
        return unauthorized()
    data = helpers.payload()
    if user.via != "token":
        helpers.check_csrf(auth)
    helpers.limit(auth, "login")
    try:
        updated = auth.change_password(
            user.id,
            helpers.text_field(data, "current_password"),
            helpers.text_field(data, "new_password"),
        )
    except AuthenticationError as exc:
        return auth_error(403, str(exc))
    except RateLimitExceeded as exc:  # the account is locked: current-password guesses count
        status, headers = helpers.refusal_status(exc)
        return auth_error(status, str(exc), headers=headers)
    except UserInputError as exc:
        return auth_error(400, str(exc))
    if user.via == "session":  # every session ended: give this browser a fresh one
        user = current.login_user(
            updated, remember=bool((user.session or {}).get("remember")), track=False
        )
        return jsonify(_user_body(user))
    if user.via == "flask-session":  # the old id (with the old version) no longer loads
        user = AuthUser(updated, "flask-session")
        # A browser that was remembered stays remembered (its old remember cookie is dead).
        flask_login.login_user(
            user, remember=bool(request.cookies.get(current.remember_cookie_name()))
        )
        return jsonify(_user_body(user))
    return jsonify(user=updated and {"user_id": updated["user_id"]}, tokens_revoked=True)


def _resets(auth: AuthService) -> None:
    if auth.resets is None:
        abort(auth_error(404, "password reset is off for this app"))


@public
def forgot(**_view_args: Any) -> Any:
    auth = helpers.service_or_404()
    _resets(auth)
    if request.method == "GET":
        return helpers.form("mdb_auth/forgot.html", auth=auth, sent=None, error=None)
    data = helpers.payload()
    helpers.check_csrf(auth)
    helpers.limit(auth, "reset")
    # The same work for every email: the lookup, the token, the link and the sending happen
    # on the background sender, so neither the answer nor its timing tells who has an account.
    request_reset_link(auth, helpers.text_field(data, "email"))
    if not request.is_json and wants_html():
        return helpers.form("mdb_auth/forgot.html", 202, auth=auth, sent=RESET_SENT, error=None)
    return jsonify(sent=True, message=RESET_SENT), 202


@public
def reset(**_view_args: Any) -> Any:
    auth = helpers.service_or_404()
    _resets(auth)
    html = not request.is_json and wants_html()
    if request.method == "GET":
        token = request.args.get("token", "")
        return helpers.form("mdb_auth/reset.html", auth=auth, token=token, error=None)
    data = helpers.payload()
    helpers.check_csrf(auth)
    token = helpers.text_field(data, "token")
    try:
        user = auth.reset_password(token, helpers.text_field(data, "new_password"))
    except (TokenError, UserInputError) as exc:
        if html:
            return helpers.form("mdb_auth/reset.html", 400, auth=auth, token=token, error=str(exc))
        return auth_error(400, str(exc))
    if html:
        return redirect(auth_url("login", reset="done"), 303)
    return jsonify(reset=True, user={"user_id": user["user_id"], "email": user["email"]})


@public
def csrf(**_view_args: Any) -> Any:
    helpers.service_or_404()
    response = jsonify(csrf_token=current.csrf_token())
    response.headers["Cache-Control"] = "no-store"
    return response


def make_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint(BLUEPRINT, __name__, url_prefix=url_prefix, template_folder="templates")
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/register", "register", register, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    bp.add_url_rule("/token", "token", token, methods=["POST"])
    bp.add_url_rule("/refresh", "refresh", refresh, methods=["POST"])
    bp.add_url_rule("/me", "me", me, methods=["GET"])
    bp.add_url_rule("/password", "password", password, methods=["POST"])
    bp.add_url_rule("/csrf", "csrf", csrf, methods=["GET"])
    bp.add_url_rule("/forgot", "forgot", forgot, methods=["GET", "POST"])
    bp.add_url_rule("/reset", "reset", reset, methods=["GET", "POST"])
    if oauth_available():  # the oauth extra: else /oauth/... is unknown here (404)
        from .oauth_views import register_oauth_routes

        register_oauth_routes(bp)  # /oauth/<provider>/login, /callback, ...
    bp.add_url_rule("/reauthenticate", "reauthenticate", reauthenticate, methods=["GET", "POST"])
    register_platform_routes(bp)  # /platform/login, /authorize, /callback
    register_verify_routes(bp)  # /verify, /verify/resend, /email
    register_two_factor_routes(bp)  # /2fa, /2fa/setup, ...
    return bp
