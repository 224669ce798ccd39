"""Account lockout: after ``max_failed_attempts`` wrong passwords for one email within
``lockout_duration_seconds``, sign-in for that email is refused for ``lockout_duration_seconds``
— whichever client, process or machine the attempts come from. The per-address rate limits
stop one client; this stops a guesser spread over many addresses.

Counted per (app, email) whether or not an account has that email, so a lockout reveals
nothing about which emails exist. State lives in ``mdb_auth_rate_limits`` (keys hashed, TTL
index), updated with one atomic pipeline per failure so concurrent processes never lose one.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from ..exceptions import RateLimitExceeded
from . import store

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

SCOPE = "lockout"


@dataclass(frozen=True)
class LockoutPolicy:
    """``token_management.security.account_lockout``."""

    max_failed_attempts: int = 5
    duration_seconds: int = 900
    reset_on_success: bool = True

    @classmethod
    def from_manifest(cls, block: Any) -> LockoutPolicy | None:
        if not block or not block.get("enabled", True):
            return None
        return cls(
            max_failed_attempts=int(block.get("max_failed_attempts", 5)),
            duration_seconds=int(block.get("lockout_duration_seconds", 900)),
            reset_on_success=bool(block.get("reset_on_success", True)),
        )


class AccountLockout:
    """The failed sign-ins of one app's emails."""

    def __init__(self, engine: MongoDBEngine, slug: str, policy: LockoutPolicy) -> None:
        self.engine = engine
        self.slug = slug
        self.policy = policy

    @property
    def coll(self) -> Any:
        return store.collection(self.engine, store.RATE_LIMITS)

    def _id(self, email: str) -> str:
        return store.digest("rate", self.slug, SCOPE, email)

    def check(self, email: str) -> None:
        """Raise :class:`RateLimitExceeded` (with ``retry_after``) while ``email`` is locked."""
        doc = self.coll.find_one({"_id": self._id(email)}, {"locked_until": 1})
        until = store.aware((doc or {}).get("locked_until"))
        now = store.now()
        if until is not None and until > now:
            retry = max(1, math.ceil((until - now).total_seconds()))
            raise RateLimitExceeded(
                f"too many failed sign-ins for this account: retry in {retry} s",
                retry_after=retry,
                context={"app": self.slug, "scope": SCOPE},
            )

    def failed(self, email: str) -> bool:
        """Count a wrong password for ``email``; True if that locked it. The count runs in a
        window of ``duration_seconds`` from the first failure; reaching the maximum locks the
        email for ``duration_seconds`` and starts counting afresh."""
        now = store.now()
        period = dt.timedelta(seconds=self.policy.duration_seconds)
        fresh = {"$or": [{"$not": ["$window_start"]}, {"$lte": ["$window_start", now - period]}]}
        count = {"$cond": ["$_fresh", 1, {"$add": ["$failures", 1]}]}
        locks = {"$gte": ["$failures", self.policy.max_failed_attempts]}
        doc = self.coll.find_one_and_update(
            {"_id": self._id(email)},
            [
                {"$set": {"_fresh": fresh}},
                {
                    "$set": {
                        "app_id": self.slug,
                        "scope": SCOPE,
                        "failures": count,
                        "window_start": {"$cond": ["$_fresh", now, "$window_start"]},
                    }
                },
                {"$set": {"_locks": locks}},
                {
                    "$set": {
                        "locked_until": {"$cond": ["$_locks", now + period, "$locked_until"]},
                        "failures": {"$cond": ["$_locks", 0, "$failures"]},
                        "window_start": {"$cond": ["$_locks", None, "$window_start"]},
                        # Kept until both the window and any lock are over.
                        "expires_at": now + 2 * period,
                    }
                },
                {"$unset": ["_fresh", "_locks"]},
            ],
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        until = store.aware(doc.get("locked_until"))
        return until is not None and until > now

    def succeeded(self, email: str) -> None:
        """A correct password: forget the failures (``reset_on_success``)."""
        if self.policy.reset_on_success:
            # Never lifts a lock that a concurrent failure has just set.
            unlocked = {"$not": {"$gt": store.now()}}
            self.coll.delete_one({"_id": self._id(email), "locked_until": unlocked})

    def unlock(self, email: str) -> None:
        """Lift a lock and forget the failures (an administrator's action)."""
        self.coll.delete_one({"_id": self._id(email)})
