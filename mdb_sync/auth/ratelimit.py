"""Attempt counters in MongoDB, so a limit holds across every process and machine.

Each (app, scope, key) has one document in ``mdb_auth_rate_limits``: a window that starts at
the first attempt and lasts ``window_seconds``, and the number of attempts in it. One atomic
pipeline update per attempt increments the count, or starts a new window when the old one
is over, so concurrent processes never lose an attempt. Keys (client addresses, emails) are
stored hashed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..exceptions import RateLimitExceeded
from . import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine


@dataclass(frozen=True)
class Attempt:
    allowed: bool
    count: int
    remaining: int
    retry_after: int  # seconds until the window ends (0 when allowed)


class RateLimiter:
    """Counts attempts per ``(app, scope, key)`` in fixed windows anchored at the first one."""

    def __init__(self, engine: MongoDBEngine) -> None:
        self.engine = engine

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.RATE_LIMITS)

    def hit(
        self, app: str, scope: str, key: str, max_attempts: int, window_seconds: int
    ) -> Attempt:
        """Record one attempt; ``allowed`` is false once more than ``max_attempts`` fell in
        the current window."""
        now = store.now()
        window = dt.timedelta(seconds=window_seconds)
        fresh = {"$or": [{"$not": ["$window_start"]}, {"$lte": ["$window_start", now - window]}]}
        key_id = store.digest("rate", app, scope, key)
        pipeline: list[dict[str, Any]] = [
            {"$set": {"_fresh": fresh}},
            {
                "$set": {
                    "app_id": app,
                    "scope": scope,
                    "count": {"$cond": ["$_fresh", 1, {"$add": ["$count", 1]}]},
                    "window_start": {"$cond": ["$_fresh", now, "$window_start"]},
                    "expires_at": {"$cond": ["$_fresh", now + window, "$expires_at"]},
                }
            },
            {"$unset": "_fresh"},
        ]
        doc = None
        for attempt in range(3):
            try:
                doc = self.coll.find_one_and_update(
                    {"_id": key_id}, pipeline, upsert=True, return_document=ReturnDocument.AFTER
                )
                break
            except DuplicateKeyError:  # a concurrent first write inserted it: count in that one
                if attempt == 2:
                    raise
        if doc is None:
            # Some servers answer a concurrent upsert without the document it wrote (the
            # attempt was counted): read the counter rather than counting again.
            doc = self.coll.find_one({"_id": key_id}) or {"count": 1, "window_start": now}
        count = int(doc["count"])
        ends = (store.aware(doc["window_start"]) or now) + window
        allowed = count <= max_attempts
        retry = 0 if allowed else max(1, math.ceil((ends - now).total_seconds()))
        return Attempt(allowed, count, max(0, max_attempts - count), retry)

    def check(
        self, app: str, scope: str, key: str, max_attempts: int, window_seconds: int
    ) -> Attempt:
        """:meth:`hit`, raising :class:`RateLimitExceeded` (with ``retry_after``) when over."""
        attempt = self.hit(app, scope, key, max_attempts, window_seconds)
        if not attempt.allowed:
            raise RateLimitExceeded(
                f"too many attempts ({scope}): retry in {attempt.retry_after} s",
                retry_after=attempt.retry_after,
                context={"app": app, "scope": scope},
            )
        return attempt

    def reset(self, app: str, scope: str, key: str) -> None:
        self.coll.delete_one({"_id": store.digest("rate", app, scope, key)})
