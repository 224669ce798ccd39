"""Anonymous visitors' identities in Flask (``auth.policy.allow_anonymous: true``).

::

    from flask_mdb.auth import get_anonymous, get_current_user

    @app.post("/notes")
    def add_note():
        owner = get_current_user() or get_anonymous()   # an account, or this visitor
        db.notes.insert_one({"owner": owner.id, ...})

``get_anonymous()`` creates the visitor's identity on first use — one document in
``mdb_auth_anonymous``, and a cookie ``<session cookie>_anon`` (HttpOnly, SameSite, ``__Host-``
over HTTPS) holding a random token — at most ``auth.anonymous.max_new_per_address`` per
client address (20 an hour by default; beyond, it returns None). Its ``id`` (``anon:...``)
is what the visitor's data, rate limits (``rate_limit_auth(key=caller_key)``), websocket
connections (the identity seam) and AI memories are keyed by.

Registering or signing in — a password, a provider, a platform hand-off — upgrades it in
the same request (:func:`flask_mdb.auth.login_user`): ``MDB_ANONYMOUS_UPGRADE(anonymous_id,
user)`` runs with the app bound (re-own the visitor's documents there), then the identity
ends: its cookie is cleared and refused from then on, its websockets close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import request

from mdb_sync.auth import AuthService

from ..request_state import current_state
from . import current
from .current import anonymous_cookie_name
from .decorators import hit_limit


@dataclass(frozen=True)
class AnonymousVisitor:
    """The anonymous identity of the request's visitor."""

    id: str
    app: str
    key: str  # the stored key (digest of the token): what a connection re-checks
    expires_at: Any

    def identity(self) -> dict[str, Any]:
        """The identity for :mod:`flask_mdb.identity` (websockets): re-checkable and
        revoked when the visitor signs in."""
        return {
            "user_id": self.id,
            "app": self.app,
            "anonymous": True,
            "via": "anonymous",
            "roles": [],
            "email": None,
            "session": {"id": self.key, "expires_at": self.expires_at},
        }


def _visitor(auth: AuthService, doc: dict[str, Any]) -> AnonymousVisitor:
    return AnonymousVisitor(doc["anonymous_id"], auth.slug, doc["_id"], doc.get("expires_at"))


def get_anonymous(create: bool = True) -> AnonymousVisitor | None:
    """The request's anonymous visitor (created when ``create`` and there is none yet), or
    None: someone is signed in, the app has no anonymous identities, or the client address
    made too many of them lately."""
    auth = current.current_service()
    if auth is None or auth.anonymous is None or current.get_current_user() is not None:
        return None
    state = current_state()
    if state is not None and state.anonymous is not None:
        return state.anonymous
    doc = auth.anonymous.get(request.cookies.get(anonymous_cookie_name(auth)))
    if doc is None and create:
        limit = auth.config.limit("anonymous")
        if (
            limit is not None
            and hit_limit("anonymous", limit.max_attempts, limit.window_seconds) is not None
        ):
            return None
        token, doc = auth.anonymous.create()
        current.queue_cookie(anonymous_cookie_name(auth), token, auth.config.anonymous_ttl)
    if doc is None:
        return None
    visitor = _visitor(auth, doc)
    if state is not None:
        state.anonymous = visitor
    return visitor


def anonymous_identity() -> dict[str, Any] | None:
    """The identity resolver: the visitor's anonymous identity, when it has one already
    (never created here)."""
    visitor = get_anonymous(create=False)
    return visitor.identity() if visitor is not None else None


def caller_key() -> str:
    """Who is calling, for rate limits: the user's id, else the anonymous visitor's id,
    else the client address (``rate_limit_auth(key=caller_key)``)."""
    user = current.get_current_user()
    if user is not None:
        return f"user:{user.id}"
    visitor = get_anonymous(create=False)
    return visitor.id if visitor is not None else f"ip:{current.client_ip()}"
