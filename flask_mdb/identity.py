"""Who is making the current request: the seam between authentication and other features.

Authentication (sessions, bearer tokens) registers *resolvers* and *token verifiers* here;
features that need the caller's identity (websocket connections, audit logs, per-user data)
ask here, without depending on how the identity was established. An identity is a dict
with at least ``user_id`` and ``app`` (the slug it belongs to), and usually ``email`` and
``roles``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

Identity = dict[str, Any]
Resolver = Callable[[], Identity | None]
TokenVerifier = Callable[[str, str], Identity | None]

_RESOLVERS = "mdb_identity_resolvers"
_VERIFIERS = "mdb_token_verifiers"


def register_identity_resolver(app: Flask, resolver: Resolver) -> None:
    """Add ``resolver`` (called in a request context, returns an identity or None)."""
    app.extensions.setdefault(_RESOLVERS, []).append(resolver)


def register_token_verifier(app: Flask, verifier: TokenVerifier) -> None:
    """Add ``verifier(token, app_slug)`` returning the token's identity, or None when the
    token is not valid for that app (bad signature, expired, revoked, another app's)."""
    app.extensions.setdefault(_VERIFIERS, []).append(verifier)


def current_identity() -> Identity | None:
    """The identity of the current request, from the first resolver that knows it."""
    for resolver in current_app.extensions.get(_RESOLVERS, ()):
        identity = resolver()
        if identity is not None:
            return identity
    return None


def verify_token(token: str, app_slug: str) -> Identity | None:
    """The identity a bearer token carries for ``app_slug``, or None if no verifier accepts it
    (for transports that cannot send an ``Authorization`` header, e.g. websockets)."""
    for verifier in current_app.extensions.get(_VERIFIERS, ()):
        identity = verifier(token, app_slug)
        if identity is not None:
            return identity
    return None
