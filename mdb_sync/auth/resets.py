"""Password-reset tokens: random, single use, expiring, stored hashed.

A token is what a "forgot password" link carries. ``mdb_auth_resets`` keeps only its SHA-256,
the app, the user and the user's ``auth_version`` at the time: any later password change or
deactivation bumps that version, which voids every outstanding token of the user; so does
using one (it is deleted atomically, so two requests cannot both spend it).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from . import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

#: Longest token accepted (``secrets.token_urlsafe(32)`` is 43 characters).
MAX_TOKEN_LENGTH = 128


class ResetTokens:
    """The password-reset tokens of one app."""

    def __init__(self, engine: MongoDBEngine, slug: str, ttl: int = 3600) -> None:
        self.engine = engine
        self.slug = slug
        self.ttl = ttl

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.RESETS)

    def _id(self, token: str) -> str:
        return store.digest("reset", self.slug, token)

    def issue(self, user_id: str, auth_version: int) -> str:
        token = secrets.token_urlsafe(32)
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._id(token),
                "app_id": self.slug,
                "user_id": user_id,
                "auth_version": auth_version,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=self.ttl),
            }
        )
        return token

    def peek(self, token: Any) -> dict[str, Any] | None:
        """The live record of ``token`` (this app's, not expired), or None."""
        if not isinstance(token, str) or not 20 <= len(token) <= MAX_TOKEN_LENGTH:
            return None
        doc = self.coll.find_one({"_id": self._id(token), "app_id": self.slug})
        expires = store.aware((doc or {}).get("expires_at"))
        if doc is None or expires is None or expires <= store.now():
            return None
        return doc

    def spend(self, token: str) -> bool:
        """Delete ``token``; False if another request spent it first."""
        result = self.coll.delete_one({"_id": self._id(token), "app_id": self.slug})
        return result.deleted_count == 1
