"""Pending sign-ins: what a callback must match, kept between the redirect and the callback.

When a browser is sent to a provider, the server keeps (in ``mdb_auth_oauth_states``, so any
process may receive the callback) the ``state`` it sent — only its hash, as the ``_id`` —
with the ``nonce`` the ID token must carry, the PKCE ``code_verifier``, the exact
``redirect_uri``, where to go afterwards, and the hash of a random value held in the
*browser's* cookie. A callback is accepted once (the record is deleted atomically, so a
replayed callback finds nothing), before its expiry, and only from the browser that started
the sign-in: a callback URL carried to another browser (login CSRF: an attacker's own
authorization code slipped into the victim's browser) finds no record for that browser.
Records expire after ``auth.oauth.state_ttl_seconds`` (TTL index; readers check too).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any, TypeGuard

from .. import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ...engine import MongoDBEngine

#: Length bounds of a ``state`` or browser key accepted from a request.
MIN_KEY, MAX_KEY = 20, 128


def new_key() -> str:
    """A random value for a ``state``, a nonce, a PKCE verifier or a browser key."""
    return secrets.token_urlsafe(32)


def valid_key(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and MIN_KEY <= len(value) <= MAX_KEY and value.isascii()


class PendingSignIns:
    """The pending sign-ins of one app."""

    def __init__(self, engine: MongoDBEngine, slug: str, ttl: int = 600) -> None:
        self.engine = engine
        self.slug = slug
        self.ttl = ttl

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.OAUTH_STATES)

    def _id(self, state: str) -> str:
        return store.digest("oauth-state", self.slug, state)

    def _browser(self, browser_key: str) -> str:
        return store.digest("oauth-browser", self.slug, browser_key)

    def create(self, provider: str, browser_key: str, **fields: Any) -> str:
        """Record a sign-in about to start at ``provider`` for the browser holding
        ``browser_key``; returns its ``state``."""
        state = new_key()
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._id(state),
                "app_id": self.slug,
                "provider": provider,
                "browser": self._browser(browser_key),
                **fields,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=self.ttl),
            }
        )
        return state

    def consume(self, state: Any, provider: str, browser_key: Any) -> dict[str, Any] | None:
        """The pending sign-in of ``state`` — deleted, so it cannot be used again — when it
        is this app's, for ``provider``, started by this browser and not expired; else None
        (and a record that is not this browser's stays for its own browser)."""
        if not valid_key(state) or not valid_key(browser_key):
            return None
        doc = self.coll.find_one_and_delete(
            {
                "_id": self._id(state),
                "app_id": self.slug,
                "provider": provider,
                "browser": self._browser(browser_key),
            }
        )
        expires = store.aware((doc or {}).get("expires_at"))
        if doc is None or expires is None or expires <= store.now():
            return None
        return doc
