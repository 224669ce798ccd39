"""Account lockout: at most ``max_failed_attempts`` wrong passwords are *checked* for one
account within ``lockout_duration_seconds`` — whichever client, process or machine the
attempts come from and however many arrive at once. The per-address rate limits stop one
client; this stops a guesser spread over many addresses.

A password check is *reserved* before the (slow, ~65 ms) hash is computed and *settled*
after: one atomic update grants a reservation only while the account is not locked and
fewer than ``max_failed_attempts`` checks are pending or failed in the current window, so a
burst of simultaneous guesses gets at most that many checks and every other request is
refused without one. A wrong password settles as a failure (the last allowed one locks the
account for ``lockout_duration_seconds``); a correct one settles as a success, which looks
at the lock again, so a correct password is never accepted once a lock is set. A
reservation whose request dies before settling keeps its slot until the window ends
(it fails closed).

Counted per (app, email) whether or not an account has that email, so a lockout reveals
nothing about which emails exist; a ``global_users`` account is counted once for every app
sharing it (``shared=True``), so N apps do not give N times the guesses. State lives in
``mdb_auth_rate_limits`` (keys hashed, TTL index).
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..exceptions import RateLimitExceeded
from ..manifest.fields import field_default
from ..manifest.model_auth import AccountLockoutSection
from ..manifest.schema_auth import AccountLockoutSchema
from . import store

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

SCOPE = "lockout"
#: The key space of ``global_users`` accounts (one counter per account, for every app).
SHARED = "global_users"
#: Attempts at a reservation when a concurrent first write makes the upsert collide.
_UPSERT_TRIES = 5


@dataclass(frozen=True)
class LockoutPolicy:
    """``token_management.security.account_lockout``; its defaults are the manifest's."""

    max_failed_attempts: int = field_default(AccountLockoutSchema, "max_failed_attempts")
    duration_seconds: int = field_default(AccountLockoutSchema, "lockout_duration_seconds")
    reset_on_success: bool = field_default(AccountLockoutSchema, "reset_on_success")

    @classmethod
    def from_section(cls, section: AccountLockoutSection | None) -> LockoutPolicy | None:
        """The policy of a typed ``account_lockout`` block; None when absent or disabled."""
        if section is None or not section.enabled:
            return None
        return cls(
            max_failed_attempts=section.max_failed_attempts,
            duration_seconds=section.lockout_duration_seconds,
            reset_on_success=section.reset_on_success,
        )

    @classmethod
    def for_shared_accounts(cls, policy: LockoutPolicy | None) -> LockoutPolicy:
        """The policy of a ``global_users`` app: its accounts' one counter is shared by
        every app, so no app may loosen it (nor leave it off) — an app's manifest may only
        make it stricter than the defaults (fewer attempts, longer locks)."""
        floor = cls()
        if policy is None:
            return floor
        return cls(
            max_failed_attempts=min(policy.max_failed_attempts, floor.max_failed_attempts),
            duration_seconds=max(policy.duration_seconds, floor.duration_seconds),
            reset_on_success=policy.reset_on_success,
        )


@dataclass(frozen=True)
class Reservation:
    """The right to check one password of ``email`` (settle it with
    :meth:`AccountLockout.failed` or :meth:`AccountLockout.succeeded`)."""

    email: str
    grant: str


class AccountLockout:
    """The password checks of one app's emails (of every ``global_users`` app's, shared)."""

    def __init__(
        self, engine: MongoDBEngine, slug: str, policy: LockoutPolicy, *, shared: bool = False
    ) -> None:
        self.engine = engine
        self.slug = slug
        self.policy = policy
        self.shared = shared

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.engine, store.RATE_LIMITS)

    def _id(self, email: str) -> str:
        return store.digest("rate", SHARED if self.shared else self.slug, SCOPE, email)

    def _refusal(self, retry: float) -> RateLimitExceeded:
        # Capped: a lock or window set by a concurrent request may start a little after our
        # clock reading.
        seconds = min(max(1, math.ceil(retry)), self.policy.duration_seconds)
        return RateLimitExceeded(
            f"too many failed sign-ins for this account: retry in {seconds} s",
            retry_after=seconds,
            context={"app": self.slug, "scope": SCOPE},
        )

    def check(self, email: str) -> None:
        """Raise :class:`RateLimitExceeded` (with ``retry_after``) while ``email`` is locked
        (a read only: it reserves nothing)."""
        doc = self.coll.find_one({"_id": self._id(email)}, {"locked_until": 1})
        until = store.aware((doc or {}).get("locked_until"))
        now = store.now()
        if until is not None and until > now:
            raise self._refusal((until - now).total_seconds())

    def reserve(self, email: str) -> Reservation:
        """Reserve one password check for ``email``, or raise :class:`RateLimitExceeded`
        when it is locked or its checks for this window are all taken."""
        now = store.now()
        period = dt.timedelta(seconds=self.policy.duration_seconds)
        grant = secrets.token_hex(8)
        locked = {"$gt": ["$locked_until", now]}
        fresh = {
            "$and": [
                {"$not": ["$_locked"]},
                {
                    "$or": [
                        {"$not": ["$window_start"]},
                        {"$lte": ["$window_start", now - period]},
                    ]
                },
            ]
        }
        taken = {"$add": [{"$size": "$pending"}, "$failures"]}
        pipeline: list[dict[str, Any]] = [
            {"$set": {"_locked": locked}},
            {"$set": {"_fresh": fresh}},
            {
                "$set": {
                    "app_id": {"$ifNull": ["$app_id", self.slug]},
                    "scope": SCOPE,
                    "pending": {"$cond": ["$_fresh", [], {"$ifNull": ["$pending", []]}]},
                    "failures": {"$cond": ["$_fresh", 0, {"$ifNull": ["$failures", 0]}]},
                    "window_start": {"$cond": ["$_fresh", now, "$window_start"]},
                }
            },
            {
                "$set": {
                    "_granted": {
                        "$and": [
                            {"$not": ["$_locked"]},
                            {"$lt": [taken, self.policy.max_failed_attempts]},
                        ]
                    }
                }
            },
            {
                "$set": {
                    "pending": {
                        "$cond": ["$_granted", {"$concatArrays": ["$pending", [grant]]}, "$pending"]
                    },
                    # Kept until both the window and any lock are over.
                    "expires_at": {"$max": ["$expires_at", now + 2 * period]},
                }
            },
            {"$unset": ["_locked", "_fresh", "_granted"]},
        ]
        key = self._id(email)
        doc = None
        for attempt in range(_UPSERT_TRIES):
            try:
                doc = self.coll.find_one_and_update(
                    {"_id": key}, pipeline, upsert=True, return_document=ReturnDocument.AFTER
                )
                break
            except DuplicateKeyError:  # a concurrent first write inserted it: update that one
                if attempt == _UPSERT_TRIES - 1:
                    raise
        if doc is None:
            # Some servers answer a concurrent upsert without the document it wrote: the
            # update was applied, so look the grant up rather than writing again.
            doc = self.coll.find_one({"_id": key}) or {}
        if grant in (doc.get("pending") or ()):
            return Reservation(email, grant)
        until = store.aware(doc.get("locked_until"))
        start = store.aware(doc.get("window_start"))
        if until is not None and until > now:
            retry = (until - now).total_seconds()
        else:
            retry = ((start or now) + period - now).total_seconds()
        raise self._refusal(retry)

    def failed(self, reservation: Reservation) -> bool:
        """Settle a reservation as a wrong password; True if that locked the account (its
        ``max_failed_attempts``-th failure in the window). The lock lasts
        ``duration_seconds`` and counting starts afresh after it."""
        now = store.now()
        period = dt.timedelta(seconds=self.policy.duration_seconds)
        locks = {"$gte": ["$failures", self.policy.max_failed_attempts]}
        doc = self.coll.find_one_and_update(
            {"_id": self._id(reservation.email), "pending": reservation.grant},
            [
                {
                    "$set": {
                        "pending": {
                            "$filter": {
                                "input": "$pending",
                                "cond": {"$ne": ["$$this", reservation.grant]},
                            }
                        },
                        "failures": {"$add": [{"$ifNull": ["$failures", 0]}, 1]},
                    }
                },
                {"$set": {"_locks": locks}},
                {
                    "$set": {
                        "locked_until": {"$cond": ["$_locks", now + period, "$locked_until"]},
                        "locked_by": {"$cond": ["$_locks", reservation.grant, "$locked_by"]},
                        "pending": {"$cond": ["$_locks", [], "$pending"]},
                        "failures": {"$cond": ["$_locks", 0, "$failures"]},
                        "window_start": {"$cond": ["$_locks", None, "$window_start"]},
                        "expires_at": {"$max": ["$expires_at", now + 2 * period]},
                    }
                },
                {"$unset": "_locks"},
            ],
            return_document=ReturnDocument.AFTER,
        )
        return doc is not None and doc.get("locked_by") == reservation.grant

    def succeeded(self, reservation: Reservation) -> None:
        """Settle a reservation as a correct password: with ``reset_on_success`` the
        window's failures are forgotten, else only this check is given back. Raises
        :class:`RateLimitExceeded` if the account was locked meanwhile (a lock is never
        lifted, nor a password accepted under it, by a success)."""
        now = store.now()
        unlocked = {"_id": self._id(reservation.email), "locked_until": {"$not": {"$gt": now}}}
        if self.policy.reset_on_success:
            done = self.coll.delete_one(unlocked).deleted_count
        else:
            done = self.coll.update_one(
                unlocked, {"$pull": {"pending": reservation.grant}}
            ).matched_count
        if not done:
            self.check(reservation.email)  # locked: refused; gone (unlocked): fine

    def unlock(self, email: str) -> None:
        """Lift a lock and forget the failures (an administrator's action)."""
        self.coll.delete_one({"_id": self._id(email)})
