"""Connection limits that hold across processes: live connections counted in MongoDB.

Each limited thing — an app, one user of an app, one client address of an app — has a
document in the engine-internal collection ``mdb_ws_slots`` holding the *leases* of its live
connections: ``{"c": connection id, "p": the holding process's id, "t": last renewal}``.

* **Reserving** is one atomic update of that document (an aggregation-pipeline update):
  drop the leases not renewed for ``ttl`` seconds, then add the new one only if fewer than
  the limit remain. Two processes reserving the last slot at once cannot both get it: a
  single document's update is atomic. A connection needing several slots (its user's and
  its app's) takes them one after the other and gives back what it got if one is refused.
* **Renewing**: a thread of each process renews its leases every ``ttl / 3`` seconds (one
  ``update_many`` for all of them), and in the same update removes its own leases that no
  live connection holds any more (a release that failed).
* **A process that dies** (SIGKILL, a lost machine) renews nothing: its leases count no
  more ``ttl`` seconds after their last renewal, so its slots are free within ``ttl``
  seconds (``MDB_WEBSOCKET_LEASE_TTL``, 15 by default). Documents whose leases all lapsed
  long ago are deleted by the renewals.

Times are the processes' own clocks (UTC): hosts must keep them within a few seconds of each
other (NTP), or a host ahead of the others sees their leases lapse early.

When the database cannot be reached, :meth:`ConnectionSlots.reserve` raises (the caller
refuses the connection: a limit that cannot be checked is not waived) and leases are not
renewed — after ``ttl`` seconds other processes no longer count them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from .. import storage
from ..deprecation import renamed_parameters
from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

SLOTS_COLLECTION = storage.WS_SLOTS
DEFAULT_TTL = 15.0
MIN_TTL = 1.0
#: Longest any one call on ``mdb_ws_slots`` may take (a connection waits for its reserve).
DB_TIMEOUT = 5.0
#: Documents whose every lease lapsed this many ``ttl`` ago are deleted.
_FORGET_AFTER = 4


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass(frozen=True)
class Slot:
    """One limited thing: ``kind`` (``app``, ``user`` or ``address``), its ``key`` (the
    user id, the address; ``""`` for the app) and its ``limit``."""

    kind: str
    key: str
    limit: int

    @renamed_parameters(app_slug="slug")
    def doc_id(self, slug: str) -> str:
        # The slug has no ':' and the kind is fixed, so the key (anything) cannot make one
        # thing's id collide with another's.
        return f"{slug}:{self.kind}:{self.key}"


class ConnectionSlots:
    """The leases of one process's connections (thread-safe; one per engine is enough).

    :param engine: whose database holds ``mdb_ws_slots``.
    :param ttl: seconds a lease counts without being renewed.
    """

    def __init__(self, engine: MongoDBEngine, ttl: float = DEFAULT_TTL) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < MIN_TTL:
            raise ConfigurationError(f"the lease ttl must be a number of seconds >= {MIN_TTL:g}")
        self.engine = engine
        self.ttl = float(ttl)
        #: This process's id in its leases (new in every process).
        self.process = uuid.uuid4().hex
        self._lock = threading.Lock()
        #: connection id -> (app slug, the document ids it holds a lease in)
        self._held: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_renewed: float | None = None  # time.monotonic() of the last renewal
        self.renewals = 0

    def _collection(self) -> Collection[Any]:
        return self.engine.storage.system(SLOTS_COLLECTION)

    # --- reserving and releasing ------------------------------------------------------------

    @renamed_parameters(app_slug="slug")
    def reserve(self, slug: str, connection_id: str, slots: Sequence[Slot]) -> Slot | None:
        """Take a lease for ``connection_id`` in each of ``slots``, in order; return the
        first slot that is full (having given back the leases taken before it), or None
        when every one was taken. Raises :class:`pymongo.errors.PyMongoError` when the
        database cannot be reached (nothing is held then)."""
        taken: list[str] = []
        self._ensure_renewing()
        try:
            with pymongo.timeout(DB_TIMEOUT):  # the whole reservation, however many slots
                raw = self._collection()
                for slot in slots:
                    doc_id = slot.doc_id(slug)
                    # Held before the write: a renewal meanwhile must not take it for a leak.
                    with self._lock:
                        self._held[connection_id] = (slug, (*taken, doc_id))
                    if not self._take(raw, slug, doc_id, connection_id, slot.limit):
                        self._give_back(raw, connection_id, taken)
                        return slot
                    taken.append(doc_id)
        except PyMongoError:
            # No more waiting on the database: what was taken is no longer held, so the
            # next renewal removes it.
            with self._lock:
                self._held.pop(connection_id, None)
            raise
        return None

    def _take(
        self, raw: Collection[Any], app_slug: str, doc_id: str, connection_id: str, limit: int
    ) -> bool:
        now = _now()
        cutoff = now - _dt.timedelta(seconds=self.ttl)
        lease = {"c": connection_id, "p": self.process, "t": now}
        live = {
            "$filter": {
                "input": {"$ifNull": ["$leases", []]},
                "cond": {
                    "$and": [{"$gt": ["$$this.t", cutoff]}, {"$ne": ["$$this.c", connection_id]}]
                },
            }
        }
        room = {"$lt": [{"$size": "$leases"}, limit]}
        pipeline: list[dict[str, Any]] = [
            {"$set": {"app_id": app_slug, "leases": live}},
            {
                "$set": {
                    "leases": {"$cond": [room, {"$concatArrays": ["$leases", [lease]]}, "$leases"]}
                }
            },
        ]
        with pymongo.timeout(DB_TIMEOUT):
            for _attempt in range(3):
                doc = raw.find_one_and_update(
                    {"_id": doc_id},
                    pipeline,
                    projection={"_id": 0, "leases": {"$elemMatch": {"c": connection_id}}},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is not None:
                    return bool(doc.get("leases"))
                # The first connection of this thing: create its document, then reserve
                # (not one upsert: concurrent upserts of one new document race on some
                # servers — the embedded one answers some of them with no document).
                with contextlib.suppress(DuplicateKeyError):
                    raw.update_one(
                        {"_id": doc_id},
                        {"$setOnInsert": {"app_id": app_slug, "leases": []}},
                        upsert=True,
                    )
        raise OperationFailure(f"the slot document {doc_id!r} keeps disappearing")

    def release(self, connection_id: str) -> None:
        """Give back every lease of ``connection_id`` (idempotent). A failure is logged: the
        next renewal removes the lease (this process no longer holds it)."""
        with self._lock:
            held = self._held.pop(connection_id, None)
        if held is None:
            return
        try:
            with pymongo.timeout(DB_TIMEOUT):
                raw = self._collection()
            self._give_back(raw, connection_id, list(held[1]))
        except PyMongoError as exc:
            log.warning("websocket slots: could not release %s: %s", connection_id[:8], exc)

    def _give_back(
        self, raw: Collection[Any], connection_id: str, doc_ids: list[str], quiet: bool = False
    ) -> None:
        with self._lock:
            self._held.pop(connection_id, None)
        for doc_id in doc_ids:
            try:
                with pymongo.timeout(DB_TIMEOUT):
                    raw.update_one({"_id": doc_id}, {"$pull": {"leases": {"c": connection_id}}})
            except PyMongoError:
                if not quiet:
                    raise

    @property
    def held(self) -> int:
        """Connections of this process holding leases."""
        return len(self._held)

    # --- renewing -----------------------------------------------------------------------------

    def _ensure_renewing(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            if self._last_renewed is None:  # leases taken from now on are fresh
                self._last_renewed = time.monotonic()
            self._thread = threading.Thread(
                target=self._renew_loop, name=f"mdb-ws-slots-{self.process[:8]}", daemon=True
            )
            self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except PyMongoError as exc:
                log.warning("websocket slots: could not renew this process's leases: %s", exc)
            except Exception:  # never let the thread die silently
                log.exception("websocket slots: renewal failed")

    def renew(self) -> None:
        """Renew this process's leases, drop those no live connection holds, and delete the
        documents whose leases all lapsed long ago."""
        with self._lock:
            live = list(self._held)
            # A lease taken after this snapshot is not in ``live`` but is newer than it
            # (its connection is held before its lease is written): it is kept.
            now = _now()
        mine = {"$eq": ["$$this.p", self.process]}
        held = {"$or": [{"$in": ["$$this.c", live]}, {"$gte": ["$$this.t", now]}]}
        kept = {"$filter": {"input": "$leases", "cond": {"$or": [{"$not": [mine]}, held]}}}
        renewed = {"$cond": [mine, {"$mergeObjects": ["$$this", {"t": now}]}, "$$this"]}
        forgotten = now - _dt.timedelta(seconds=self.ttl * _FORGET_AFTER)
        with pymongo.timeout(DB_TIMEOUT):
            raw = self._collection()
            raw.update_many(
                {"leases.p": self.process},
                [{"$set": {"leases": {"$map": {"input": kept, "in": renewed}}}}],
            )
            raw.delete_many({"leases": {"$not": {"$elemMatch": {"t": {"$gte": forgotten}}}}})
            last, self._last_renewed = self._last_renewed, time.monotonic()
            if last is not None and self._last_renewed - last > self.ttl / 2:
                self._restore(raw, now)
        self.renewals += 1

    def _restore(self, raw: Collection[Any], now: _dt.datetime) -> None:
        """After renewals failed for a while (the database was away), other processes may
        have dropped this process's leases as lapsed: put back those of live connections, so
        they count again (the total may then be over a limit until enough of them close —
        the truth, rather than room for more)."""
        with self._lock:
            held = list(self._held.items())
        operations = []
        for connection_id, (app_slug, doc_ids) in held:
            lease = {"c": connection_id, "p": self.process, "t": now}
            ids = {"$map": {"input": {"$ifNull": ["$leases", []]}, "in": "$$this.c"}}
            leases = {"$ifNull": ["$leases", []]}
            restored = {
                "$cond": [
                    {"$in": [connection_id, ids]},
                    leases,
                    {"$concatArrays": [leases, [lease]]},
                ]
            }
            pipeline = [{"$set": {"app_id": app_slug, "leases": restored}}]
            operations += [UpdateOne({"_id": i}, pipeline, upsert=True) for i in doc_ids]
        if operations:
            raw.bulk_write(operations, ordered=False)
            log.info("websocket slots: restored the leases of %d connection(s)", len(held))

    def stop(self) -> None:
        """Stop renewing (the engine's shutdown); leases lapse after ``ttl``."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def after_fork_in_child(self) -> None:
        """The parent's connections and leases stay with the parent."""
        self._lock = threading.Lock()
        self._held = {}
        self._stop = threading.Event()
        self._thread = None
        self._last_renewed = None
        self.process = uuid.uuid4().hex
