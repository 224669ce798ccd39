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


def trim(raw: Collection[Any], max_events: int, max_bytes: int) -> int:
    """Delete the events beyond the newest ``max_events`` or ``max_bytes`` (messages plus
    :data:`EVENT_OVERHEAD` each); return how many. Reads the newest events' dates and sizes
    only, newest first, up to the first one beyond either bound."""
    total = 0
    boundary = None
    cursor = raw.find({}, {"created_at": 1, "size": 1}).sort("created_at", -1).batch_size(1000)
    try:
        for count, doc in enumerate(cursor, 1):
            size = doc.get("size")
            total += (size if isinstance(size, int) and size > 0 else 0) + EVENT_OVERHEAD
            if count > max_events or total > max_bytes:
                boundary = doc.get("created_at")
                break
    finally:
        cursor.close()
    if boundary is None:
        return 0
    return raw.delete_many({"created_at": {"$lte": boundary}}).deleted_count


class Trimmer:
    """Trims a plain store in a background thread, one trim at a time per bus, so a publish
    never waits for it."""

    def __init__(self, every: int = TRIM_EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._stored = 0
        self._running = False
        #: Events deleted by this bus's trims (for tests and metrics).
        self.deleted = 0

    def stored(self, raw: Collection[Any], max_events: int, max_bytes: int) -> bool:
        """Note one stored event; start a trim when one is due. True if one started."""
        with self._lock:
            self._stored += 1
            due = self._stored % self.every == 1 or self.every == 1
            if not due or self._running:
                return False
            self._running = True
        thread = threading.Thread(
            target=self._run, args=(raw, max_events, max_bytes), name="mdb-realtime-trim"
        )
        thread.daemon = True
        thread.start()
        return True

    def _run(self, raw: Collection[Any], max_events: int, max_bytes: int) -> None:
        try:
            deleted = trim(raw, max_events, max_bytes)
            with self._lock:
                self.deleted += deleted
        except PyMongoError as exc:  # the next one tries again
            log.debug("realtime: could not trim %r: %s", raw.name, exc)
        finally:
            with self._lock:
                self._running = False

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no trim runs (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.005)
        return False
