"""Server-side login sessions (the cookie holds a random id; the server holds the rest).

A signed-cookie session cannot be revoked: a copied cookie works until it expires, logout
or not. These sessions live in ``mdb_auth_sessions`` keyed by the SHA-256 of their id, so
logout, a password change or deactivation end them everywhere at once, every process sees
the same state, and reading the collection reveals no usable id. A new id is issued at
every login (no session fixation). Each session records the user's ``auth_version`` at
login: a later password change or deactivation bumps it, which invalidates the session
even before its document is deleted.

A request learns its session and its user in one round trip (:meth:`SessionStore.get_with_user`:
the session with a ``$lookup`` of its user), read fresh every time: no per-process cache
stands between a revocation and the next request. What is kept between requests is only
what never changes for a store: the fixed stages of that pipeline.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from pymongo import DESCENDING

from . import revocation, store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine
    from .users import AppUserStore

#: How stale ``last_seen`` may get before a request writes it again (limits writes).
TOUCH_EVERY = dt.timedelta(seconds=60)
#: How many sessions one user keeps in an app, at most, once one of them outlives the app's
#: ``session_ttl`` (a Flask-Login remember cookie's login, up to a year) and the manifest sets
#: no ``max_sessions_per_user``: the oldest end first.
LONG_LIVED_PER_USER = 100
#: Fields the combined session + user read adds (removed before the session is returned).
_USER_OID, _USER_DOCS = "_mdb_user_oid", "_mdb_user_docs"


class SessionStore:
    """The login sessions of one app."""

    def __init__(
        self,
        engine: MongoDBEngine,
        slug: str,
        *,
        ttl: int = 86_400,
        inactivity_timeout: int | None = None,
        max_per_user: int | None = None,
    ) -> None:
        self.engine = engine
        self.slug = slug
        self.ttl = ttl
        self.inactivity_timeout = inactivity_timeout
        self.max_per_user = max_per_user
        #: ``users.source`` and the pipeline stages that look the session's user up in it.
        self._lookup: tuple[str, tuple[dict[str, Any], ...]] | None = None

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.SESSIONS)

    def _lookup_stages(self, source: str) -> tuple[dict[str, Any], ...]:
        """The stages after ``$match`` of :meth:`get_with_user`, for the users collection
        ``source`` (built once: only the session key changes from one request to the next)."""
        cached = self._lookup
        if cached is not None and cached[0] == source:
            return cached[1]
        stages: tuple[dict[str, Any], ...] = (
            {
                "$addFields": {
                    _USER_OID: {
                        "$convert": {
                            "input": "$user_id",
                            "to": "objectId",
                            "onError": None,
                            "onNull": None,
                        }
                    }
                }
            },
            {
                "$lookup": {
                    "from": source,
                    "localField": _USER_OID,
                    "foreignField": "_id",
                    "as": _USER_DOCS,
                }
            },
        )
        self._lookup = (source, stages)
        return stages

    def create(
        self,
        user: dict[str, Any],
        *,
        remember: bool = False,
        fingerprint: dict[str, str] | None = None,
        authenticated_at: dt.datetime | None = None,
        platform_session: str | None = None,
        ttl: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new session for ``user`` (a public user dict): ``(session id, document)``.

        ``authenticated_at``: when the user last proved who they are (default now; a session
        born from a platform hand-off carries the hub's), what ``fresh_login_required``
        reads; ``platform_session``: the hub session it derives from (logout everywhere);
        ``ttl``: its lifetime in seconds when not the store's (a login held by a cookie of
        another lifetime, such as Flask-Login's remember cookie)."""
        sid = secrets.token_urlsafe(32)
        now = store.now()
        lifetime = dt.timedelta(seconds=self.ttl if ttl is None else ttl)
        doc = {
            "_id": store.digest("session", sid),
            "app_id": self.slug,
            "user_id": user["user_id"],
            "auth_version": int(user.get("auth_version", 0)),
            "remember": bool(remember),
            "csrf": secrets.token_hex(16),
            "created_at": now,
            "authenticated_at": min(authenticated_at or now, now),
            "last_seen": now,
            "absolute_expires_at": now + lifetime,
            "expires_at": self._expiry(now, now + lifetime),
            **({"fingerprint": fingerprint} if fingerprint else {}),
            **({"platform_session": platform_session} if platform_session else {}),
        }
        self.coll.insert_one(doc)
        limit = self.max_per_user
        if not limit and ttl is not None and ttl > self.ttl:
            limit = LONG_LIVED_PER_USER  # long-lived logins pile up: keep the table bounded
        if limit:
            self._trim(user["user_id"], limit)
        return sid, doc

    def _expiry(self, last_seen: dt.datetime, absolute: dt.datetime) -> dt.datetime:
        if self.inactivity_timeout:
            return min(absolute, last_seen + dt.timedelta(seconds=self.inactivity_timeout))
        return absolute

    def _trim(self, user_id: str, limit: int) -> None:
        """Keep the user's newest ``limit`` sessions in this app."""
        old = self.coll.find(
            {"app_id": self.slug, "user_id": user_id}, {"_id": 1}, sort=[("created_at", DESCENDING)]
        ).skip(limit)
        ids = [d["_id"] for d in old]
        if ids:
            self.coll.delete_many({"_id": {"$in": ids}})
            revocation.session_ended(self.engine, self.slug, ids)

    def get(self, sid: Any, fingerprint: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The live session of this app with id ``sid``, or None (unknown, expired, another
        app's, or presented from another address/browser when the session is bound)."""
        key = self.key_of(sid)
        return self.get_by_digest(key, fingerprint) if key is not None else None

    @staticmethod
    def key_of(sid: Any) -> str | None:
        """The stored key of session id ``sid``, or None when ``sid`` cannot be one."""
        if not isinstance(sid, str) or not (20 <= len(sid) <= 100):
            return None
        return store.digest("session", sid)

    def get_by_digest(
        self, key: str, fingerprint: dict[str, str] | None = None, *, touch: bool = True
    ) -> dict[str, Any] | None:
        """:meth:`get` by the stored key (what a connection remembers instead of the id);
        ``touch=False`` for a check that is no activity of the user's."""
        doc = self.coll.find_one({"_id": key, "app_id": self.slug})
        return self._live(doc, fingerprint, touch)

    def get_with_user(
        self,
        key: str,
        users: AppUserStore,
        fingerprint: dict[str, str] | None = None,
        *,
        touch: bool = True,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(session, user document)`` of the session stored as ``key``, read together in
        one round trip (a ``$lookup`` of the session's user in ``users``' collection): the
        session as :meth:`get_by_digest` has it (None when it is not live), and the user's
        stored document (None when there is none in this app). Nothing is cached: a
        deactivation, password change or logout in any process shows at the next read."""
        pipeline = [
            {"$match": {"_id": key, "app_id": self.slug}},
            *self._lookup_stages(users.source),
        ]
        # At most one document (``_id`` is unique): the first batch holds it and the server
        # has closed the cursor, so the first ``next`` is all there is to read.
        doc = next(self.coll.aggregate(pipeline), None)
        if doc is None:
            return None, None
        doc.pop(_USER_OID, None)
        user = next((u for u in doc.pop(_USER_DOCS, None) or () if users.owns(u)), None)
        return self._live(doc, fingerprint, touch), user

    def _live(
        self, doc: dict[str, Any] | None, fingerprint: dict[str, str] | None, touch: bool
    ) -> dict[str, Any] | None:
        """``doc`` if it is a live session presented from where it is bound (an expired one
        is deleted), its activity time renewed at most every :data:`TOUCH_EVERY`."""
        if doc is None:
            return None
        now = store.now()
        expires = store.aware(doc.get("expires_at"))
        if expires is None or expires <= now:
            self.coll.delete_one({"_id": doc["_id"]})
            return None
        if fingerprint:
            stored = doc.get("fingerprint") or {}
            if any(stored.get(k) != v for k, v in fingerprint.items()):
                return None
        last_seen = store.aware(doc.get("last_seen")) or now
        if touch and now - last_seen > TOUCH_EVERY:
            absolute = store.aware(doc.get("absolute_expires_at")) or expires
            self.coll.update_one(
                {"_id": doc["_id"]},
                {"$set": {"last_seen": now, "expires_at": self._expiry(now, absolute)}},
            )
        live: dict[str, Any] = store.aware_values(doc)
        return live

    def reauthenticated(self, key: str) -> dt.datetime | None:
        """The user of the session stored as ``key`` proved who they are again (password,
        code): its ``authenticated_at`` is now; None when the session is gone."""
        now = store.now()
        done = self.coll.update_one(
            {"_id": key, "app_id": self.slug}, {"$set": {"authenticated_at": now}}
        )
        return now if done.matched_count else None

    def delete(self, sid: Any) -> bool:
        if not isinstance(sid, str):
            return False
        result = self.coll.delete_one({"_id": store.digest("session", sid), "app_id": self.slug})
        return result.deleted_count == 1

    def delete_for_user(self, user_id: str, *, all_apps: bool = False) -> int:
        """End every session of ``user_id`` (in this app, or in every app for shared users)."""
        query: dict[str, Any] = {"user_id": user_id}
        if not all_apps:
            query["app_id"] = self.slug
        return int(self.coll.delete_many(query).deleted_count)

    def count_for_user(self, user_id: str) -> int:
        return int(self.coll.count_documents({"app_id": self.slug, "user_id": user_id}))
