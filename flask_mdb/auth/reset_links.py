"""Password-reset links: asked for in the request, made and sent outside it.

``POST /auth/forgot`` must answer the same, in the same time, whether or not the email has an
account — and a mail server that takes 300 ms must not show. So the request does the same
work for every email (validate, count the client's attempt, queue) and the
:class:`~flask_mdb.outbox.Outbox` does the rest on its worker thread: look the account up,
issue the token, build the link and hand it to ``MDB_PASSWORD_RESET_SENDER``.

The link is ``MDB_EXTERNAL_URL`` (or ``SERVER_NAME``...) + the reset page's path + the
token — never the request's ``Host`` or ``X-Forwarded-*`` headers (see :mod:`flask_mdb.links`).

When the sender is a Celery task (it has ``apply_async``), the worker thread queues it with
``(user, url)`` — the user as JSON (ids and dates as strings) — and the Celery worker does
the sending; the lookup and the token stay on the web process's background sender.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import urlencode

from flask import request

from mdb_sync.auth import AuthService
from mdb_sync.bson_json import bson_json_default
from mdb_sync.exceptions import ConfigurationError

from ..binding import Binding, current_binding, pop_binding, push_binding
from ..links import external_url
from ..outbox import get_outbox
from ..state import current_flask_app, get_state

#: Longest email looked up (RFC 5321's path limit); longer ones are simply not found.
MAX_EMAIL_LENGTH = 320


def request_reset_link(auth: AuthService, email: str) -> bool:
    """Queue the reset link of ``email`` for the background sender; False when the queue
    was full and the request was dropped (logged). Costs the same for every email; a
    missing sender or public address raises :class:`ConfigurationError` for every email
    alike (configured manifests are checked at startup instead)."""
    state = get_state()
    sender = state.config["MDB_PASSWORD_RESET_SENDER"]
    if sender is None:  # an app registered after startup: refuse every email alike
        raise ConfigurationError(
            f"app {auth.slug!r} enables auth.users.password_reset but "
            "MDB_PASSWORD_RESET_SENDER is not set",
            context={"option": "MDB_PASSWORD_RESET_SENDER", "app": auth.slug},
        )
    link = external_url(
        "mdb_auth.reset",
        slug=auth.slug,
        needed_by="password-reset links",
        **(request.view_args or {}),
    )
    job = functools.partial(
        _deliver,
        auth,
        current_binding(),
        email[: MAX_EMAIL_LENGTH + 1],
        link,
        sender,
    )
    app = current_flask_app()
    outbox = get_outbox(app, state.config["MDB_PASSWORD_RESET_QUEUE_SIZE"], "password-reset")
    return outbox.submit(job, f"a password-reset request of app {auth.slug!r}")


def _deliver(
    auth: AuthService, binding: Binding | None, email: str, link: str, sender: Any
) -> None:
    """On the background sender: lookup, token, link, send (bound to the request's app, so
    a sender may use ``flask_mdb.db``)."""
    bound = push_binding(binding)
    try:
        started = auth.request_password_reset(email) if len(email) <= MAX_EMAIL_LENGTH else None
        if started is None:  # no active account, or its links are over the hourly cap
            return
        user, token = started
        send_reset_link(sender, user, f"{link}?{urlencode({'token': token})}")
    finally:
        pop_binding(bound)


def is_celery_task(sender: Any) -> bool:
    """True for a Celery task (duck-typed: Celery is not imported)."""
    return callable(getattr(sender, "apply_async", None)) and hasattr(sender, "name")


def send_reset_link(sender: Any, user: dict[str, Any], url: str) -> None:
    """Hand ``(user, url)`` to ``sender``: call it, or queue it when it is a Celery task."""
    if is_celery_task(sender):
        plain = json.loads(json.dumps(user, default=bson_json_default))
        sender.apply_async(args=(plain, url))
    else:
        sender(user, url)
