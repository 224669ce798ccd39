"""E-mail verification and change of address on the auth blueprint
(``auth.users.require_verification``):

=========================  ===============================================================
``GET/POST  /verify``      the link's page (``?token=``; no referrer), which posts
                           ``{token}``: the address is proven (or the change done)
``POST  /verify/resend``   ``{email}``: another link, queued (the same answer for every
                           address)
``POST  /email``           ``{new_email}`` (signed in, fresh sign-in): a link to the new
                           address, a notice to the old one
=========================  ===============================================================

Following a link never signs anyone in: it proves a mailbox, nothing more. The page is a
form rather than a GET that acts, so a mail scanner fetching the link spends nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request

from mdb_sync.auth import AuthService
from mdb_sync.auth.users import normalize_email
from mdb_sync.exceptions import TokenError, UserExistsError, UserInputError

from . import current
from .decorators import public
from .email_links import queue_email_change, queue_verification
from .fresh import fresh_login_required
from .responses import auth_error, wants_html
from .urls import auth_url
from .view_helpers import check_csrf, limit, payload, service_or_404, text_field

#: What a resend answers, whether or not the address has an unverified account.
RESENT = "if an account with this address awaits verification, a new link is on its way"
#: What a change of address answers.
CHANGE_SENT = "a confirmation link is on its way to the new address"


def _verification(auth: AuthService) -> None:
    if auth.email_links is None:
        abort(auth_error(404, "e-mail verification is off for this app"))


@public
def verify(**_view_args: Any) -> Any:
    auth = service_or_404()
    _verification(auth)
    html = not request.is_json and wants_html()
    if request.method == "GET":
        token = request.args.get("token", "")
        return render_template("mdb_auth/verify.html", auth=auth, token=token, error=None)
    data = payload()
    check_csrf(auth)
    token = text_field(data, "token")
    try:
        user, purpose = auth.confirm_email(token)
    except (TokenError, UserExistsError) as exc:
        status = 409 if isinstance(exc, UserExistsError) else 400
        if html:
            page = render_template("mdb_auth/verify.html", auth=auth, token=token, error=str(exc))
            return page, status
        return auth_error(status, str(exc), reason="invalid_link" if status == 400 else None)
    if html:
        return redirect(auth_url("login", verified="done"), 303)
    return jsonify(
        verified=True,
        purpose=purpose,
        user={"user_id": user["user_id"], "email": user["email"], "email_verified": True},
    )


@public
def resend(**_view_args: Any) -> Any:
    auth = service_or_404()
    _verification(auth)
    data = payload()
    check_csrf(auth)
    limit(auth, "verify")
    queue_verification(auth, text_field(data, "email"))
    return jsonify(sent=True, message=RESENT), 202


@fresh_login_required
def change_email(**_view_args: Any) -> Any:
    auth = service_or_404()
    _verification(auth)
    user = current.get_current_user()
    assert user is not None  # fresh_login_required
    data = payload()
    if user.via != "token":
        check_csrf(auth)
    limit(auth, "verify")
    try:
        new_email = normalize_email(text_field(data, "new_email"))
    except UserInputError as exc:
        return auth_error(400, str(exc))
    if new_email == user.email:
        return auth_error(400, "this is already the account's e-mail address")
    queue_email_change(auth, user.id, new_email)
    return jsonify(sent=True, message=CHANGE_SENT), 202


def register_verify_routes(bp: Blueprint) -> None:
    bp.add_url_rule("/verify", "verify", verify, methods=["GET", "POST"])
    bp.add_url_rule("/verify/resend", "verify_resend", resend, methods=["POST"])
    bp.add_url_rule("/email", "change_email", change_email, methods=["POST"])
