"""Absolute links the library hands out — password-reset links now, e-mail verification and
OAuth callbacks later — built from the configured public address, never from the request.

A link that leaves the site (in an e-mail, to an identity provider) must point to the site
itself. The request's ``Host`` and ``X-Forwarded-*`` headers are whatever the client, or
anything between it and the server, wrote: ``url_for(..., _external=True)`` inside a request
lets an attacker choose the host of a link mailed to someone else (password-reset
poisoning). So the base is ``MDB_EXTERNAL_URL`` (one URL, or one per app slug), else Flask's
``SERVER_NAME`` with ``PREFERRED_URL_SCHEME`` and ``APPLICATION_ROOT``; with neither,
:func:`require_external_base` raises a :class:`ConfigurationError` naming the key.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from mdb_sync.exceptions import ConfigurationError

from .config import external_url_value
from .state import current_flask_app, get_state

#: The option this module reads first, named in every error.
OPTION = "MDB_EXTERNAL_URL"


def external_base(slug: str | None = None, app: Flask | None = None) -> str | None:
    """The public base URL of ``app`` (default: the current app) for app ``slug``, without a
    trailing ``/``; None when nothing is configured."""
    app = app or current_flask_app()
    configured = get_state(app).config[OPTION]
    if isinstance(configured, dict):
        configured = configured.get(slug) if slug is not None else None
    if configured:
        return str(configured)
    server_name = app.config.get("SERVER_NAME")
    if not server_name:
        return None
    if not isinstance(server_name, str) or any(c in server_name for c in "/\\@?#"):
        raise ConfigurationError(
            f"SERVER_NAME must be a host (and port), not {server_name!r}",
            context={"option": "SERVER_NAME"},
        )
    scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"PREFERRED_URL_SCHEME must be 'http' or 'https', not {scheme!r}",
            context={"option": "PREFERRED_URL_SCHEME"},
        )
    root = app.config.get("APPLICATION_ROOT") or "/"
    if not isinstance(root, str) or not root.startswith("/"):
        raise ConfigurationError(
            f"APPLICATION_ROOT must be a path starting with '/', not {root!r}",
            context={"option": "APPLICATION_ROOT"},
        )
    base = external_url_value("SERVER_NAME", f"{scheme}://{server_name}")
    return base + root.rstrip("/")


def require_external_base(
    slug: str | None = None, app: Flask | None = None, *, needed_by: str = "absolute links"
) -> str:
    """:func:`external_base`, or a :class:`ConfigurationError` naming ``MDB_EXTERNAL_URL``."""
    base = external_base(slug, app)
    if base is None:
        where = f"app {slug!r}: " if slug else ""
        raise ConfigurationError(
            f"{where}{needed_by} need the site's public address, and it is never taken from the "
            f"request's Host or X-Forwarded-* headers: set {OPTION} (e.g. "
            "'https://example.com', or a dict by app slug), or SERVER_NAME with "
            "PREFERRED_URL_SCHEME",
            context={"option": OPTION, "app": slug},
        )
    return base


def external_url(
    endpoint: str,
    *,
    slug: str | None = None,
    app: Flask | None = None,
    needed_by: str = "absolute links",
    **values: Any,
) -> str:
    """The absolute URL of ``endpoint`` (with ``values``, extra ones as the query string):
    the configured base, then the endpoint's path within the app. Needs an app context,
    not a request: the request plays no part in it."""
    app = app or current_flask_app()
    base = require_external_base(slug, app, needed_by=needed_by)
    adapter = app.url_map.bind("external.invalid", script_name="/", url_scheme="https")
    path = adapter.build(endpoint, values, force_external=False)
    if not path.startswith("/"):  # a rule bound to another host or subdomain
        raise ConfigurationError(
            f"{endpoint!r} is served on another host ({path}): {OPTION} cannot describe it",
            context={"option": OPTION},
        )
    return base + path
