"""Two-factor sign-in on the auth blueprint (``auth.users.two_factor``; see
:mod:`mdb_sync.auth.twofactor`):

==============================  ===========================================================
``GET/POST  /2fa``              the second step of a sign-in: ``{code}`` (or
                                ``{recovery_code}``), ``remember_device``
``GET   /2fa/status``           (signed in) ``{enabled, recovery_codes_left}``
``POST  /2fa/setup``            (fresh sign-in) ``{secret, provisioning_uri}``, shown once
``POST  /2fa/confirm``          (fresh) ``{code}`` -> ``{recovery_codes}``, shown once
``POST  /2fa/recovery-codes``   (fresh) new recovery codes (the old ones stop working)
``POST  /2fa/disable``          (fresh) ``{code}`` or ``{recovery_code}``
==============================  ===========================================================

After a right password, an account with a second factor gets no session: the response sets
a cookie (``<session cookie>_2fa``) naming a pending sign-in that only a code completes
(JSON: ``{"two_factor_required": true}``; browsers: the code page). ``/auth/token`` takes the
code in the same request (``{email, password, code}``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request

from mdb_sync.auth import AuthService
from mdb_sync.auth.twofactor import SecondFactor
from mdb_sync.exceptions import AuthenticationError, RateLimitExceeded, UserInputError

from . import current
from .decorators import public, unauthorized
from .fresh import fresh_login_required
from .responses import auth_error, wants_html
from .urls import auth_url, safe_next
from .view_helpers import (
    check_csrf,
    flag,
    home,
    limit,
    payload,
    refusal_status,
    service_or_404,
)

PENDING_SUFFIX = "2fa"
DEVICE_SUFFIX = "device"


def _second_factor(auth: AuthService) -> SecondFactor:
    if auth.second_factor is None:
        abort(auth_error(404, "two-factor sign-in is off for this app"))
    return auth.second_factor


def needs_second_step(auth: AuthService, user: dict[str, Any]) -> bool:
    """Whether ``user``'s sign-in needs a code: enrolled, and not on a remembered device."""
    factor = auth.second_factor
    if factor is None or not user.get("two_factor_enabled"):
        return False
    device = request.cookies.get(current.extra_cookie_name(auth, DEVICE_SUFFIX))
    return not factor.remembered(device, user)


def start_second_step(
    auth: AuthService, user: dict[str, Any], remember: bool, next_url: str
) -> Any:
    """The answer to a right password of an enrolled account: a pending sign-in (cookie),
    the code page for browsers, ``{"two_factor_required": true}`` otherwise."""
    factor = _second_factor(auth)
    token = factor.start(user, remember=bool(remember), next=next_url)
    current.queue_cookie(current.extra_cookie_name(auth, PENDING_SUFFIX), token, 300)
    if not request.is_json and wants_html():
        return redirect(_url("two_factor"), 303)
    return jsonify(two_factor_required=True, methods=["totp", "recovery_code"])


def _url(name: str) -> str:
    return auth_url(name)


def _codes(data: dict[str, Any]) -> dict[str, Any]:
    code, recovery = data.get("code"), data.get("recovery_code")
    if isinstance(recovery, str) and recovery:
        return {"recovery_code": recovery}
    if isinstance(code, str) and code:
        return {"code": code}
    abort(auth_error(400, "code (or recovery_code): a string is required"))


@public
def two_factor(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    html = not request.is_json and wants_html()
    if request.method == "GET":
        return render_template("mdb_auth/two_factor.html", auth=auth, error=None)
    data = payload()
    check_csrf(auth)
    limit(auth, "two_factor")
    cookie = current.extra_cookie_name(auth, PENDING_SUFFIX)
    token = request.cookies.get(cookie)
    pending = factor.attempt(token)
    if pending is None:
        current.queue_cookie(cookie, None)
        message = "this sign-in has expired or used up its attempts: sign in again"
        if html:
            return render_template("mdb_auth/two_factor.html", auth=auth, error=message), 401
        return auth_error(401, message, reason="sign_in_again")
    user = auth.get_user(pending["user_id"])
    if user is None or not user["active"] or user["auth_version"] != pending["auth_version"]:
        current.queue_cookie(cookie, None)
        return auth_error(401, "sign in again", reason="sign_in_again")
    try:
        factor.verify(user["user_id"], **_codes(data))
    except (AuthenticationError, RateLimitExceeded) as exc:
        status, headers = refusal_status(exc)
        if html:
            page = render_template("mdb_auth/two_factor.html", auth=auth, error=str(exc))
            return page, status, headers
        return auth_error(status, str(exc), headers=headers, reason="wrong_code")
    if not factor.finish(str(token)):
        return auth_error(401, "sign in again", reason="sign_in_again")
    current.queue_cookie(cookie, None)
    logged_in = current.login_user(user, remember=bool(pending.get("remember")))
    if flag(data.get("remember_device")):
        remembered = factor.remember(user)
        if remembered is not None:
            current.queue_cookie(current.extra_cookie_name(auth, DEVICE_SUFFIX), *remembered)
    next_url = safe_next(pending.get("next"), home())
    if html:
        return redirect(next_url, 303)
    body: dict[str, Any] = {"user": logged_in.to_json()}
    if auth.config.csrf_enabled:
        body["csrf_token"] = current.csrf_token()
    return jsonify(body)


def _signed_in(auth: AuthService) -> Any:
    user = current.get_current_user()
    if user is None:
        abort(unauthorized())
    if user.via != "token":
        check_csrf(auth)
    return user


def status(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    user = current.get_current_user()
    if user is None:
        return unauthorized()
    state = factor.public(user.id)
    return jsonify(enabled=state["enabled"], recovery_codes_left=state["recovery_codes_left"])


@fresh_login_required
def setup(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    user = _signed_in(auth)
    return jsonify(factor.begin(user.id))


@fresh_login_required
def confirm(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    user = _signed_in(auth)
    data = payload()
    try:
        codes = factor.confirm(user.id, data.get("code"))
    except UserInputError as exc:
        return auth_error(400, str(exc))
    except (AuthenticationError, RateLimitExceeded) as exc:
        status_code, headers = refusal_status(exc)
        return auth_error(status_code, str(exc), headers=headers, reason="wrong_code")
    return jsonify(enabled=True, recovery_codes=codes)


@fresh_login_required
def recovery_codes(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    user = _signed_in(auth)
    try:
        return jsonify(recovery_codes=factor.new_recovery_codes(user.id))
    except UserInputError as exc:
        return auth_error(400, str(exc))


@fresh_login_required
def disable(**_view_args: Any) -> Any:
    auth = service_or_404()
    factor = _second_factor(auth)
    user = _signed_in(auth)
    data = payload()
    try:
        factor.verify(user.id, **_codes(data))
    except (AuthenticationError, RateLimitExceeded) as exc:
        status_code, headers = refusal_status(exc)
        return auth_error(status_code, str(exc), headers=headers, reason="wrong_code")
    factor.disable(user.id)
    return jsonify(enabled=False)


def register_two_factor_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/2fa", "two_factor", two_factor, methods=["GET", "POST"])
    bp.add_url_rule("/2fa/status", "two_factor_status", status, methods=["GET"])
    bp.add_url_rule("/2fa/setup", "two_factor_setup", setup, methods=["POST"])
    bp.add_url_rule("/2fa/confirm", "two_factor_confirm", confirm, methods=["POST"])
    bp.add_url_rule(
        "/2fa/recovery-codes", "two_factor_recovery_codes", recovery_codes, methods=["POST"]
    )
    bp.add_url_rule("/2fa/disable", "two_factor_disable", disable, methods=["POST"])
