"""Verification and change-of-address mails: asked for in the request, made and sent outside
it, on the same background sender as password-reset links (:mod:`.reset_links`,
:class:`~flask_mdb.outbox.Outbox`), so neither the answer nor its timing says whether an
address has an account or whether a mail server is slow.

Senders: ``MDB_EMAIL_VERIFICATION_SENDER(user, url)`` delivers a link to ``user["email"]``
(for a change of address that is the *new* address, and ``user["previous_email"]`` the old
one); ``MDB_EMAIL_CHANGE_NOTICE_SENDER(user, new_email)`` tells the old address
(``user["email"]``) that the account is moving — without any link. Either may be a Celery
task. Links are built from ``MDB_EXTERNAL_URL`` only (:mod:`flask_mdb.links`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlencode

from flask import request

from mdb_sync.auth import AuthService
from mdb_sync.exceptions import ConfigurationError, UserExistsError, UserInputError

from ..binding import Binding, current_binding, pop_binding, push_binding
from ..links import external_url
from ..outbox import get_outbox
from ..state import current_flask_app, get_state
from .reset_links import MAX_EMAIL_LENGTH, send_reset_link

log = logging.getLogger("flask_mdb.auth")

SENDER = "MDB_EMAIL_VERIFICATION_SENDER"
NOTICE_SENDER = "MDB_EMAIL_CHANGE_NOTICE_SENDER"


def _sender(auth: AuthService, key: str) -> Any:
    sender = get_state().config[key]
    if sender is None:
        raise ConfigurationError(
            f"app {auth.slug!r} enables auth.users.require_verification but {key} is not set",
            context={"option": key, "app": auth.slug},
        )
    return sender


def _link(auth: AuthService) -> str:
    return external_url(
        "mdb_auth.verify",
        slug=auth.slug,
        needed_by="e-mail verification links",
        **(request.view_args or {}),
    )


def _submit(auth: AuthService, job: Any, what: str) -> bool:
    state = get_state()
    app = current_flask_app()
    outbox = get_outbox(app, state.config["MDB_PASSWORD_RESET_QUEUE_SIZE"], "password-reset")
    return outbox.submit(job, f"{what} of app {auth.slug!r}")


def queue_verification(auth: AuthService, email: str) -> bool:
    """Queue a verification link for the account with ``email`` (if it has one, unverified,
    under the hourly cap). The same cost for every address."""
    job = functools.partial(
        _deliver_verification,
        auth,
        current_binding(),
        email[: MAX_EMAIL_LENGTH + 1],
        _link(auth),
        _sender(auth, SENDER),
    )
    return _submit(auth, job, "a verification link")


def _deliver_verification(
    auth: AuthService, binding: Binding | None, email: str, link: str, sender: Any
) -> None:
    bound = push_binding(binding)
    try:
        started = auth.request_verification(email) if len(email) <= MAX_EMAIL_LENGTH else None
        if started is None:
            return
        user, token = started
        send_reset_link(sender, user, f"{link}?{urlencode({'token': token})}")
    finally:
        pop_binding(bound)


def queue_email_change(auth: AuthService, user_id: str, new_email: str) -> bool:
    """Queue the confirmation link to ``new_email`` and the notice to the account's current
    address. Taken addresses get nothing (the requester's answer is the same)."""
    job = functools.partial(
        _deliver_change,
        auth,
        current_binding(),
        user_id,
        new_email,
        _link(auth),
        _sender(auth, SENDER),
        _sender(auth, NOTICE_SENDER),
    )
    return _submit(auth, job, "a change of e-mail address")


def _deliver_change(
    auth: AuthService,
    binding: Binding | None,
    user_id: str,
    new_email: str,
    link: str,
    sender: Any,
    notice: Any,
) -> None:
    bound = push_binding(binding)
    try:
        try:
            started = auth.request_email_change(user_id, new_email)
        except (UserExistsError, UserInputError) as exc:
            log.info("app %r: a change of e-mail address was not started: %s", auth.slug, exc)
            return
        if started is None:
            return
        user, token = started
        send_reset_link(sender, user, f"{link}?{urlencode({'token': token})}")
        old = {**user, "email": user["previous_email"], "new_email": user["email"]}
        send_reset_link(notice, old, user["email"])
    finally:
        pop_binding(bound)
