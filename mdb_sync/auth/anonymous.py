"""Anonymous identities: a server-side identity for a visitor who has not signed in.

An app that lets anonymous visitors act (``auth.policy.allow_anonymous: true``, with users)
can give each one an identity of its own — an id (``anon:<random>``, never a user id), what
its data, rate limits, websocket connections and AI memories are keyed by — kept in
``mdb_auth_anonymous`` like a session: the browser holds a random token (a cookie), the
database its hash, the app, the id and the expiry (``auth.anonymous.ttl_seconds``; TTL
index, checked on read too).

When the visitor registers or signs in, the identity is **upgraded**: claimed by the account
(one atomic update: an identity is claimed once, by one account), the app's hook carries over
what it chooses (re-owning the visitor's documents, say) and the identity ends — its token is
refused from then on and its websockets close. A claim whose hook failed (or whose process
died) can be completed by the same account later, never by another; hooks should therefore be
idempotent (``update_many({"owner": anon_id}, {"$set": {"owner": user_id}})`` is).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import revocation, store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

#: Every anonymous id starts so: it can never be taken for a user id (an ObjectId).
PREFIX = "anon:"
#: Length bounds of a token accepted from a request.
MIN_TOKEN, MAX_TOKEN = 20, 128
#: How stale ``last_seen`` may get before a request writes it again.
TOUCH_EVERY = dt.timedelta(seconds=60)

#: ``hook(anonymous_id, user)``: what an app carries over at an upgrade.
UpgradeHook = Callable[[str, Mapping[str, Any]], Any]


class AnonymousIdentities:
    """The anonymous identities of one app."""

    def __init__(self, engine: MongoDBEngine, slug: str, ttl: int = 604_800) -> None:
        self.engine = engine
        self.slug = slug
        self.ttl = ttl

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.ANONYMOUS)

    def key(self, token: str) -> str:
        """The stored key of ``token`` (what a connection keeps instead of the token)."""
        return store.digest("anonymous", self.slug, token)

    def create(self) -> tuple[str, dict[str, Any]]:
        """A new identity: ``(token for the browser, document)``."""
        token = secrets.token_urlsafe(32)
        now = store.now()
        doc = {
            "_id": self.key(token),
            "app_id": self.slug,
            "anonymous_id": PREFIX + secrets.token_urlsafe(16),
            "created_at": now,
            "last_seen": now,
            "expires_at": now + dt.timedelta(seconds=self.ttl),
        }
        self.coll.insert_one(doc)
        return token, doc

    def get(self, token: Any) -> dict[str, Any] | None:
        """The live, unclaimed identity of ``token``, or None."""
        if not isinstance(token, str) or not MIN_TOKEN <= len(token) <= MAX_TOKEN:
            return None
        return self.get_by_key(self.key(token))

    def get_by_key(self, key: str) -> dict[str, Any] | None:
        doc = self.coll.find_one({"_id": key, "app_id": self.slug})
        expires = store.aware((doc or {}).get("expires_at"))
        if doc is None or expires is None or expires <= store.now() or doc.get("claimed_by"):
            return None
        last_seen = store.aware(doc.get("last_seen")) or store.now()
        if store.now() - last_seen > TOUCH_EVERY:
            self.coll.update_one({"_id": key}, {"$set": {"last_seen": store.now()}})
        return doc

    def claim(self, token: Any, user_id: str) -> dict[str, Any] | None:
        """Claim the identity of ``token`` for ``user_id`` (atomic): the document, or None
        when there is none to claim — unknown, expired, or claimed by another account. An
        identity this account claimed before (an upgrade that did not finish) is returned
        again."""
        if not isinstance(token, str) or not MIN_TOKEN <= len(token) <= MAX_TOKEN:
            return None
        now = store.now()
        doc = self.coll.find_one_and_update(
            {
                "_id": self.key(token),
                "app_id": self.slug,
                "expires_at": {"$gt": now},
                "claimed_by": {"$in": [None, user_id]},
            },
            {"$set": {"claimed_by": user_id, "claimed_at": now}},
        )
        return doc

    def end(self, key: str) -> bool:
        """End the identity stored as ``key``: its token is refused, its websockets close."""
        ended = self.coll.delete_one({"_id": key, "app_id": self.slug}).deleted_count == 1
        revocation.session_ended(self.engine, self.slug, [key])
        return ended

    def upgrade(self, token: Any, user: Mapping[str, Any], hook: UpgradeHook | None) -> str | None:
        """Upgrade the identity of ``token`` to ``user``'s account: claim it, run ``hook``
        (its exceptions propagate: the identity stays claimed, for this account to finish
        later), end it. The anonymous id that was carried over, or None (nothing to
        upgrade)."""
        user_id = str(user["user_id"])
        doc = self.claim(token, user_id)
        if doc is None:
            return None
        anonymous_id = str(doc["anonymous_id"])
        if hook is not None:
            hook(anonymous_id, user)
        self.end(doc["_id"])
        return anonymous_id
