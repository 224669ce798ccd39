"""An app's LLM spending per month, counted in MongoDB so a budget holds across processes.

One document per app and month (UTC) in ``mdb_llm_spend`` (the ``mdb`` prefix is reserved:
no scoped database reaches it) holds what was ``spent``, what calls in flight have
``reserved``, and those reservations. Amounts are integers of nano-dollars (1e-9 USD), so
``$inc`` is exact and never drifts.

A budgeted call **reserves** its worst case before it is sent: one conditional update adds
the amount to ``reserved`` only if ``spent + reserved + amount <= budget``, atomically on the
server — so no number of threads or processes can commit more than the budget between
them. When the call returns, it **settles**: its reservation is removed and its actual cost
(from the provider's token counts) added to ``spent``; a call that failed releases its
reservation. The worst case is priced from the prompt's token count (with a margin) and the
call's ``max_tokens`` (which a budget makes mandatory), so a settled cost stays within its
reservation and the month's ``spent`` within the budget; a provider counting more tokens
than estimated can overshoot by at most that one call's difference.

A process killed between reserve and settle leaves its reservation behind. Each expires
after ``lease_seconds`` (15 minutes by default); the next reservation of the app reclaims
expired ones and charges them in full (the provider may have billed the call), so a crash
costs at most its reservation and holds the budget no longer than the lease. A late settle
of a reclaimed reservation changes nothing (it was charged already).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from .. import storage
from ..exceptions import AIBudgetExceededError

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

SPEND_COLLECTION = storage.LLM_SPEND
#: Nano-dollars per dollar: the ledger's integer unit.
NANO = 1_000_000_000
#: Seconds a reservation holds before a crashed caller's share is reclaimed.
RESERVATION_LEASE_SECONDS = 900.0
#: Calls in flight per app and month (the reservations array's bound).
MAX_IN_FLIGHT = 500
#: Months are kept this long after they end (TTL on ``expires_at``).
KEEP_DAYS = 400


def to_nano(usd: float, *, up: bool = False) -> int:
    value = usd * NANO
    return math.ceil(value) if up else round(value)


def to_usd(nano: int | float | None) -> float:
    return (nano or 0) / NANO


def month_of(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m")


def next_month(when: dt.datetime) -> dt.datetime:
    when = when.astimezone(dt.timezone.utc)
    year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Reservation:
    """A budgeted call's hold on the month's budget (nano-dollars)."""

    id: str
    doc_id: str
    month: str
    amount: int


class SpendLedger:
    """Reserve, settle and record the LLM spending of app ``app`` in its engine's database.

    :param lease_seconds: how long a reservation holds before it may be reclaimed.
    :param clock: the current time (aware UTC); for tests of month boundaries.
    """

    def __init__(
        self,
        engine: MongoDBEngine,
        app: str,
        *,
        lease_seconds: float = RESERVATION_LEASE_SECONDS,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.engine = engine
        self.app = app
        self.lease_seconds = lease_seconds
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    # --- storage --------------------------------------------------------------------------------

    @property
    def collection(self) -> Any:
        return self.engine.storage.system(SPEND_COLLECTION)

    def _doc_id(self, month: str) -> str:
        return f"{self.app}:{month}"

    def _create(self, doc_id: str, month: str, now: dt.datetime) -> None:
        fields = {
            "app_id": self.app,
            "month": month,
            "spent": 0,
            "reserved": 0,
            "reclaimed": 0,
            "calls": 0,
            "reservations": [],
            "expires_at": next_month(now) + dt.timedelta(days=KEEP_DAYS),
        }
        with contextlib.suppress(DuplicateKeyError):  # a concurrent first call created it
            self.collection.update_one({"_id": doc_id}, {"$setOnInsert": fields}, upsert=True)

    # --- the budget ----------------------------------------------------------------------------

    def reserve(self, amount_usd: float, budget_usd: float) -> Reservation:
        """Hold ``amount_usd`` of this month's ``budget_usd``, or raise
        :class:`AIBudgetExceededError` (nothing held). Database errors propagate: a budget
        that cannot be checked refuses the call."""
        now = self._clock()
        month = month_of(now)
        doc_id = self._doc_id(month)
        amount = max(1, to_nano(amount_usd, up=True))
        budget = to_nano(budget_usd)
        reservation_id = uuid.uuid4().hex
        entry = {
            "id": reservation_id,
            "amount": amount,
            "expires_at": now + dt.timedelta(seconds=self.lease_seconds),
        }
        condition = {
            "_id": doc_id,
            "$expr": {"$lte": [{"$add": ["$spent", "$reserved", amount]}, budget]},
            f"reservations.{MAX_IN_FLIGHT - 1}": {"$exists": False},
        }
        update = {
            "$inc": {"reserved": amount},
            "$push": {"reservations": entry},
            "$set": {"updated_at": now},
        }
        doc = None
        for _ in range(4):
            after = self.collection.find_one_and_update(
                condition,
                update,
                projection={"reservations": 1},
                return_document=ReturnDocument.AFTER,
            )
            if after is not None:
                # Tidy up after crashed callers while we are here (rare: a read of the
                # in-flight list, which the update returned anyway).
                with contextlib.suppress(PyMongoError):
                    self._reclaim(after, now)
                return Reservation(reservation_id, doc_id, month, amount)
            doc = self.collection.find_one({"_id": doc_id})
            if doc is None:
                self._create(doc_id, month, now)
                continue
            if self._reclaim(doc, now):
                continue
            break
        raise self._refusal(doc or {}, amount, budget, month, now)

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """Replace ``reservation`` by the call's actual cost (0 to release it). Never raises:
        the call has happened; a settle that cannot be written leaves the reservation to be
        reclaimed (charged in full) after the lease."""
        cost = max(0, to_nano(cost_usd))
        try:
            result = self.collection.update_one(
                {"_id": reservation.doc_id, "reservations.id": reservation.id},
                {
                    "$inc": {"reserved": -reservation.amount, "spent": cost, "calls": 1},
                    "$pull": {"reservations": {"id": reservation.id}},
                    "$set": {"updated_at": self._clock()},
                },
            )
        except PyMongoError:
            log.warning(
                "could not settle an LLM budget reservation of app %r (it will be charged in "
                "full when its lease ends)",
                self.app,
                exc_info=True,
            )
            return
        if not result.matched_count:
            log.info(
                "LLM budget reservation %s of app %r was reclaimed before it settled: charged "
                "its reserved amount",
                reservation.id,
                self.app,
            )

    def release(self, reservation: Reservation) -> None:
        """Give ``reservation`` back (the call failed before costing anything)."""
        try:
            self.collection.update_one(
                {"_id": reservation.doc_id, "reservations.id": reservation.id},
                {
                    "$inc": {"reserved": -reservation.amount},
                    "$pull": {"reservations": {"id": reservation.id}},
                    "$set": {"updated_at": self._clock()},
                },
            )
        except PyMongoError:
            log.warning(
                "could not release an LLM budget reservation of app %r (it will be charged "
                "when its lease ends)",
                self.app,
                exc_info=True,
            )

    def record(self, cost_usd: float) -> None:
        """Add a call's cost to the month (an app without a budget: no reservation)."""
        cost = to_nano(cost_usd)
        if cost <= 0:
            return
        now = self._clock()
        month = month_of(now)
        doc_id = self._doc_id(month)
        try:
            for _ in range(2):
                if self.collection.update_one(
                    {"_id": doc_id},
                    {"$inc": {"spent": cost, "calls": 1}, "$set": {"updated_at": now}},
                ).matched_count:
                    return
                self._create(doc_id, month, now)
        except PyMongoError:
            log.warning("could not record LLM spending of app %r", self.app, exc_info=True)

    def _reclaim(self, doc: dict[str, Any], now: dt.datetime) -> bool:
        """Charge and drop the expired reservations of ``doc``; True if there were any (the
        caller re-reads: a concurrent settle or reclaim may have won)."""
        expired = [
            r for r in doc.get("reservations") or [] if (_aware(r.get("expires_at")) or now) <= now
        ]
        if not expired:
            return False
        ids = [r["id"] for r in expired]
        total = sum(int(r.get("amount") or 0) for r in expired)
        result = self.collection.update_one(
            {"_id": doc["_id"], "$and": [{"reservations.id": i} for i in ids]},
            {
                "$pull": {"reservations": {"id": {"$in": ids}}},
                "$inc": {"reserved": -total, "spent": total, "reclaimed": total},
                "$set": {"updated_at": now},
            },
        )
        if result.matched_count:
            log.warning(
                "reclaimed %d expired LLM budget reservation(s) of app %r ($%.6f charged): a "
                "process ended between a call and its settlement",
                len(ids),
                self.app,
                to_usd(total),
            )
        return True

    def _refusal(
        self, doc: dict[str, Any], amount: int, budget: int, month: str, now: dt.datetime
    ) -> AIBudgetExceededError:
        spent, reserved = int(doc.get("spent") or 0), int(doc.get("reserved") or 0)
        resets = next_month(now)
        in_flight = len(doc.get("reservations") or [])
        values: dict[str, Any] = {
            "budget_usd": to_usd(budget),
            "spent_usd": to_usd(spent),
            "reserved_usd": to_usd(reserved),
            "needed_usd": to_usd(amount),
            "month": month,
            "resets_at": resets,
        }
        context = {"app": self.app, **{k: v for k, v in values.items() if k != "resets_at"}}
        if in_flight >= MAX_IN_FLIGHT:
            message = (
                f"app {self.app!r} has {in_flight} budgeted LLM calls in flight, the most a "
                f"budget tracks ({MAX_IN_FLIGHT}); retry when some have finished"
            )
        elif amount > budget:
            message = (
                f"this LLM call could cost up to ${to_usd(amount):.6f}, more than app "
                f"{self.app!r}'s whole monthly budget (${to_usd(budget):.2f}): lower its "
                "max_tokens or shorten the prompt, or raise llm_config.monthly_budget_usd"
            )
        else:
            message = (
                f"app {self.app!r} has used its monthly LLM budget for {month}: "
                f"${to_usd(spent):.6f} spent and ${to_usd(reserved):.6f} reserved by calls in "
                f"flight, of ${to_usd(budget):.2f}; this call needs up to "
                f"${to_usd(amount):.6f}. The budget resets on {resets:%Y-%m-%d} (UTC); raise "
                "llm_config.monthly_budget_usd to continue sooner"
            )
        return AIBudgetExceededError(message, context=context, **values)

    # --- reading ------------------------------------------------------------------------------

    def month(self, month: str | None = None) -> dict[str, Any]:
        """This (or ``month``'s, ``YYYY-MM``) spending: ``spent_usd``, ``reserved_usd``,
        ``in_flight``, ``calls``, ``reclaimed_usd``."""
        month = month or month_of(self._clock())
        doc = self.collection.find_one({"_id": self._doc_id(month)}) or {}
        return {
            "app": self.app,
            "month": month,
            "spent_usd": to_usd(doc.get("spent")),
            "reserved_usd": to_usd(doc.get("reserved")),
            "reclaimed_usd": to_usd(doc.get("reclaimed")),
            "in_flight": len(doc.get("reservations") or []),
            "calls": int(doc.get("calls") or 0),
        }
