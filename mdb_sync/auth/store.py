"""The engine-internal collections of :mod:`mdb_sync.auth`.

Security state that app code must neither read nor rewrite — login sessions, refresh-token
families, the token deny-list, rate-limit counters, password-reset tokens, global users, policy
versions, pending OAuth sign-ins, the provider identities linked to users, platform hand-offs,
anonymous identities, e-mail links and second-factor state — lives
in collections named ``mdb_auth_*``. No app slug can produce an ``mdb_*`` physical name (the
``mdb`` prefix is reserved), so no scoped database reaches them; only this package, through
the engine's own client. Every document carries ``app_id`` (or ``app_ids``) so an app's
share can be found, and expiring state has a TTL index on ``expires_at``. The server sweeps
TTL indexes about once a minute, so every reader also checks expiry itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.errors import OperationFailure, PyMongoError

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

log = logging.getLogger("mdb_sync.auth")

SESSIONS = "mdb_auth_sessions"
REFRESH_FAMILIES = "mdb_auth_refresh"
DENYLIST = "mdb_auth_denylist"
RATE_LIMITS = "mdb_auth_rate_limits"
GLOBAL_USERS = "mdb_auth_users"
POLICY_VERSIONS = "mdb_auth_policy_versions"
RESETS = "mdb_auth_resets"
OAUTH_STATES = "mdb_auth_oauth_states"
IDENTITIES = "mdb_auth_identities"
HANDOFFS = "mdb_auth_handoffs"
ANONYMOUS = "mdb_auth_anonymous"
EMAIL_TOKENS = "mdb_auth_email_tokens"
SECOND_FACTOR = "mdb_auth_second_factor"

_INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    SESSIONS: [
        ([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0}),
        ([("app_id", ASCENDING), ("user_id", ASCENDING)], {"name": "app_user"}),
    ],
    REFRESH_FAMILIES: [
        ([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0}),
        ([("app_id", ASCENDING), ("user_id", ASCENDING)], {"name": "app_user"}),
    ],
    DENYLIST: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    RATE_LIMITS: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    RESETS: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    GLOBAL_USERS: [([("email", ASCENDING)], {"name": "email_unique", "unique": True})],
    OAUTH_STATES: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    IDENTITIES: [([("scope", ASCENDING), ("user_id", ASCENDING)], {"name": "scope_user"})],
    HANDOFFS: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    ANONYMOUS: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    EMAIL_TOKENS: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
    SECOND_FACTOR: [([("expires_at", ASCENDING)], {"name": "ttl", "expireAfterSeconds": 0})],
}

_lock = threading.Lock()
_ensured: weakref.WeakKeyDictionary[Any, set[tuple[int, str]]] = weakref.WeakKeyDictionary()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def aware(value: Any) -> dt.datetime | None:
    """A datetime read back from the server (naive UTC unless ``tz_aware``) as aware UTC."""
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


#: Types that hold no datetime (skipped without a call, by exact type).
_NO_DATETIME = frozenset({str, int, float, bool, type(None), bytes, ObjectId})
_UTC = dt.timezone.utc


def aware_values(value: Any) -> Any:
    """``value`` with every datetime in it (dicts and lists included) as aware UTC: what the
    auth APIs return, whether the document was just written or read back from the server."""
    kind = type(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            item_kind = type(item)
            if item_kind in _NO_DATETIME:
                out[key] = item
            elif item_kind is dt.datetime:
                out[key] = item if item.tzinfo else item.replace(tzinfo=_UTC)
            else:
                out[key] = aware_values(item)
        return out
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dict):
        return {k: aware_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [aware_values(v) for v in value]
    return value


def digest(*parts: str) -> str:
    """A stable key for secrets and personal data (session ids, client addresses, emails):
    stored hashed, so reading the collection yields nothing usable."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def collection(engine: MongoDBEngine, name: str) -> Collection[dict[str, Any]]:
    """An engine-internal collection, with its indexes ensured once per client."""
    coll = engine._raw_collection(name)
    key = (id(engine.client), name)
    done = _ensured.get(engine)
    if done is not None and key in done:  # the common case, without the lock
        return coll
    with _lock:
        done = _ensured.setdefault(engine, set())
        if key in done:
            return coll
    for keys, options in _INDEXES.get(name, ()):
        try:
            coll.create_index(keys, **options)
        except OperationFailure as exc:
            if exc.code not in (85, 86):  # an equivalent index exists: fine
                raise
        except PyMongoError:
            log.warning("could not create index %s on %s", options.get("name"), name, exc_info=True)
            return coll
    with _lock:
        done.add(key)
    return coll
