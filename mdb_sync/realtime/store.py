"""How ``mdb_events`` is kept bounded: a capped collection, or a plain one trimmed in the
background.

A capped collection is the natural store of a bounded event stream, and MongoDB inserts into
one in constant time. The embedded server (SecantusDB) does not: it enforces a capped
collection's bounds by scanning the whole collection on every insert, so each publish
costs time proportional to the events held — 3 ms with 1,000 events, ~25 ms with 5,000,
hundreds of milliseconds once the default 16 MiB are full — on the publisher's thread, and
every other process receives the event that much later (``benchmarks/broadcast.py`` shows
it). There, and only where change streams carry the events (a tailable cursor needs a capped
collection), the bus stores events in a plain collection instead and trims it in the
background: after its first event and every :data:`TRIM_EVERY` events, a bus deletes what
lies beyond the newest ``max_events`` events or ``capped_bytes`` bytes of messages. The
window a listener can catch up from after a reconnect is then about the same as the capped
collection's (and losses beyond it are counted the same way, from the publishers' sequence
numbers).

Whichever process creates the collection decides its kind; the others use it as it is.
``engine.events.configure(store="capped"|"plain"|"auto")`` chooses (``auto``: plain on the
embedded server when listening with change streams, capped elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

STORES = ("auto", "capped", "plain")
#: A bus trims a plain store after its first stored event and then every this many.
TRIM_EVERY = 256
#: Events a plain store keeps at most (besides ``capped_bytes``).
DEFAULT_MAX_EVENTS = 20_000
#: Bytes counted per stored event besides its message (ids, origin, dates, numbers).
EVENT_OVERHEAD = 160


def server_scans_capped_inserts(raw: Collection[Any]) -> bool:
    """Whether the server enforces capped bounds by scanning (SecantusDB: its build info has
    ``secantusVersion``). One ``buildInfo`` round trip."""
    try:
        info = raw.database.client.server_info()
    except PyMongoError:
        return False
    return "secantusVersion" in info


def choose_store(requested: str, mode: str, raw: Collection[Any]) -> str:
    """The kind of collection to create: ``capped`` or ``plain``."""
    if requested != "auto":
        return requested
    if mode == "tailable":
        return "capped"
    return "plain" if server_scans_capped_inserts(raw) else "capped"


def _cost(doc: dict[str, Any]) -> int:
    """What one stored event counts against ``max_bytes``."""
    size = doc.get("size")
    return (size if isinstance(size, int) and size > 0 else 0) + EVENT_OVERHEAD


def trim(raw: Collection[Any], max_events: int, max_bytes: int) -> int:
    """Delete the events beyond the newest ``max_events`` or ``max_bytes`` (messages plus
    :data:`EVENT_OVERHEAD` each); return how many. Reads the newest events' dates and sizes
    only, newest first, up to the first one beyond either bound.

    Dates have millisecond precision, so several events can share the date where a bound
    falls. Deleting every event of that date would delete events within the bound (and
    which ones survived would depend on the server's order of equal keys), so the events
    of that date are ordered by ``_id`` — a process makes its events' ids in increasing
    order — and only those beyond the bound in that order are deleted."""
    kept = total = 0
    date: Any = None  # the date of the last event counted, and
    same = same_bytes = 0  # how many (and how many bytes) of those counted have it
    boundary: dict[str, Any] | None = None
    cursor = raw.find({}, {"created_at": 1, "size": 1}).sort("created_at", -1).batch_size(1000)
    try:
        for doc in cursor:
            cost = _cost(doc)
            if kept + 1 > max_events or total + cost > max_bytes:
                boundary = doc
                break
            if kept == 0 or doc.get("created_at") != date:
                date, same, same_bytes = doc.get("created_at"), 0, 0
            kept, total = kept + 1, total + cost
            same, same_bytes = same + 1, same_bytes + cost
    finally:
        cursor.close()
    if boundary is None:
        return 0
    at = boundary.get("created_at")
    if kept and at == date:  # kept and deleted events share this date: newer ids first
        kept, total = kept - same, total - same_bytes
    cut = None
    # At most the events of that date that can still be kept, and the first one beyond.
    tied = raw.find({"created_at": at}, {"size": 1}).sort("_id", -1)
    for doc in tied.limit(max(1, max_events - kept + 1)):
        cost = _cost(doc)
        if kept + 1 > max_events or total + cost > max_bytes:
            cut = doc["_id"]
            break
        kept, total = kept + 1, total + cost
    older: dict[str, Any] = {"created_at": {"$lt": at}}
    if cut is not None:
        older = {"$or": [older, {"created_at": at, "_id": {"$lte": cut}}]}
    return raw.delete_many(older).deleted_count


class Trimmer:
    """Trims a plain store in a background thread, one trim at a time per bus, so a publish
    never waits for it.

    A trim that falls due while another runs is not dropped: the running one trims again
    when it is done (once, with the newest bounds). Dropping it would leave the store
    unbounded for another :data:`TRIM_EVERY` events each time a trim is slow."""

    def __init__(self, every: int = TRIM_EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._stored = 0
        self._running = False
        #: What the next trim uses (``raw, max_events, max_bytes``), while one is due.
        self._due: tuple[Collection[Any], int, int] | None = None
        #: Events deleted by this bus's trims (for tests and metrics).
        self.deleted = 0

    def stored(self, raw: Collection[Any], max_events: int, max_bytes: int) -> bool:
        """Note one stored event; start a trim when one is due. True if one started (a trim
        due while one runs is run by that one when it is done)."""
        with self._lock:
            self._stored += 1
            if self._stored % self.every != 1 and self.every != 1:
                return False
            self._due = (raw, max_events, max_bytes)
            if self._running:
                return False
            self._running = True
        thread = threading.Thread(target=self._run, name="mdb-realtime-trim")
        thread.daemon = True
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._running = False
            raise
        return True

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    due, self._due = self._due, None
                    if due is None:
                        self._running = False
                        return
                try:
                    deleted = trim(*due)
                    with self._lock:
                        self.deleted += deleted
                except PyMongoError as exc:  # the next one tries again
                    log.debug("realtime: could not trim %r: %s", due[0].name, exc)
        except BaseException:
            with self._lock:
                self._running = False
            raise

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no trim runs or is due (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.005)
        return False
