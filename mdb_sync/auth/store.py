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
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from .. import storage

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

log = logging.getLogger("mdb_sync.auth")

# The names (and indexes) are declared in the storage service's naming table.
SESSIONS = storage.AUTH_SESSIONS
REFRESH_FAMILIES = storage.AUTH_REFRESH
DENYLIST = storage.AUTH_DENYLIST
RATE_LIMITS = storage.AUTH_RATE_LIMITS
GLOBAL_USERS = storage.AUTH_USERS
POLICY_VERSIONS = storage.AUTH_POLICY_VERSIONS
RESETS = storage.AUTH_RESETS
OAUTH_STATES = storage.AUTH_OAUTH_STATES
IDENTITIES = storage.AUTH_IDENTITIES
HANDOFFS = storage.AUTH_HANDOFFS
ANONYMOUS = storage.AUTH_ANONYMOUS
EMAIL_TOKENS = storage.AUTH_EMAIL_TOKENS
SECOND_FACTOR = storage.AUTH_SECOND_FACTOR


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
    if kind is list:  # roles, identities...: plain items kept without a call each
        return [item if type(item) in _NO_DATETIME else aware_values(item) for item in value]
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
    """An engine-internal collection, with its indexes ensured once per process and client
    (see :meth:`mdb_sync.storage.Storage.system`)."""
    return engine.storage.system(name)
