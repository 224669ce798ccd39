"""Where a listener is in the event stream and what it has handed over: the state that keeps
delivery at most once across reconnects, server restarts and capped-collection overflows,
and that counts the events that could not be recovered.

Two kinds of memory, both bounded:

* **Anchors** — the ``_id`` of the last :data:`RECENT_IDS` documents the listener read (in
  ``mdb_events``'s insertion order). After a reconnect the listener looks, newest first, for
  the newest of them still in the collection: everything after it is what it missed. Many
  anchors rather than one, because the last document read may be gone (pushed out of the
  capped collection, or lost with a server that crashed before it was durable).
* **Sequences** — every stored event carries ``seq``, numbered per publishing bus
  (``origin``) and app without gaps. For each (origin, app) the listener keeps the highest
  number handed over and the numbers below it still missing. So a replay is recognised
  whatever the id window holds (a number already handed over is never handed over again),
  and a number still missing after the bus's ``gap_grace`` is an event that will not come:
  it is counted as lost (``realtime.gaps``). Halfway through the grace, the listener looks
  for the missing numbers in the collection itself (a stream resumed from a position a
  crashed server reused may have passed over them). A missing event that turns up later is
  still delivered, once.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

#: How many of the last documents' ids a listener remembers as anchors (and replay filter
#: for documents without a sequence number).
RECENT_IDS = 1024
#: (origin, app) pairs whose sequence a listener tracks; the least recently seen go first.
MAX_SOURCES = 10_000
#: Missing numbers kept per (origin, app); beyond that the oldest are counted lost at once.
MAX_MISSING = 1024
#: After a gap (no anchor left), an event from a publisher never seen before is taken as
#: new only if it was created at most this long before the newest event read: older ones
#: were published before the listener's position, not after.
STALE_SKEW = _dt.timedelta(seconds=10)


def _utc(value: Any) -> _dt.datetime | None:
    if not isinstance(value, _dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)


class _Source:
    """One publisher's events for one app: the highest number handed over, and the lower
    ones not seen yet (number -> when it was first missed, ``time.monotonic()``)."""

    __slots__ = ("high", "looked_up", "missing")

    def __init__(self, high: int) -> None:
        self.high = high
        self.missing: dict[int, float] = {}
        #: Missing numbers already searched for in the collection.
        self.looked_up: set[int] = set()


class ResumePoint:
    """Where a listener is — kept by the bus when a listener stops, so the next one goes on
    from there instead of from "now". Used by one listener thread at a time."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        #: Change streams: the last resume token, and the last operation time seen.
        self.token: Any = None
        self.op_time: Any = None
        #: The process id of each server when the stream was opened (see ``topologyVersion``).
        self.servers: dict[Any, Any] = {}
        #: Whether ``mdb_events`` was seen capped (see ``Listener._events_collection``).
        self.capped = False
        #: False until the listener took its starting position (the newest event then).
        self.positioned = False
        self.recent: deque[Any] = deque(maxlen=RECENT_IDS)
        self.recent_ids: set[Any] = set()
        self.newest_created: _dt.datetime | None = None
        #: Change streams: since when each subscribed app has been listened to (UTC).
        self.app_since: dict[str, _dt.datetime] = {}
        self._sources: OrderedDict[tuple[str, str], _Source] = OrderedDict()
        self._holes: dict[tuple[str, str], _Source] = {}
        #: Lost events counted but not yet reported, per app (see :meth:`take_lost`).
        self._lost: dict[str, int] = {}

    # --- anchors --------------------------------------------------------------------------

    def seen(self, event_id: Any) -> bool:
        return event_id in self.recent_ids

    def remember(self, doc: Mapping[str, Any]) -> None:
        """Note ``doc`` as read (an anchor for the next catch-up)."""
        event_id = doc.get("_id")
        if event_id in self.recent_ids:
            return
        if len(self.recent) == self.recent.maxlen:
            self.recent_ids.discard(self.recent[0])
        self.recent.append(event_id)
        self.recent_ids.add(event_id)
        created = _utc(doc.get("created_at"))
        if created is not None and (self.newest_created is None or created > self.newest_created):
            self.newest_created = created

    def stale_before(self) -> _dt.datetime | None:
        """After a gap: events of unknown publishers created before this are old ones."""
        return None if self.newest_created is None else self.newest_created - STALE_SKEW

    # --- sequences ------------------------------------------------------------------------

    def admit(
        self,
        doc: Mapping[str, Any],
        own_origin: str,
        stale_before: _dt.datetime | None = None,
    ) -> bool:
        """Record ``doc`` as read; True when it is to be handed over (new, and not this
        bus's own), False for a replay, an own event or (with ``stale_before``, after a
        gap) an event from before the listener's position."""
        if self.seen(doc.get("_id")):
            return False
        self.remember(doc)
        origin, app, seq = doc.get("origin"), doc.get("app_id"), doc.get("seq")
        if origin == own_origin:
            return False
        if not isinstance(origin, str) or not isinstance(app, str):
            return True  # not an event: the bus drops it
        if isinstance(seq, bool) or not isinstance(seq, int):
            return True  # an event without a number: the id window is its replay filter
        key = (origin, app)
        source = self._sources.get(key)
        if source is None:
            created = _utc(doc.get("created_at"))
            if stale_before is not None and (created is None or created < stale_before):
                return False
            self._add_source(key, seq)
            return True
        self._sources.move_to_end(key)
        if seq > source.high:
            self._open_holes(key, source, seq)
            source.high = seq
            return True
        if source.missing.pop(seq, None) is not None:
            source.looked_up.discard(seq)
            if not source.missing:
                self._holes.pop(key, None)
            return True
        return False

    def _add_source(self, key: tuple[str, str], seq: int) -> None:
        self._sources[key] = _Source(seq)
        while len(self._sources) > MAX_SOURCES:
            old_key, old = self._sources.popitem(last=False)
            self._holes.pop(old_key, None)
            self._count_lost(old_key[1], len(old.missing))

    def _open_holes(self, key: tuple[str, str], source: _Source, seq: int) -> None:
        first = source.high + 1
        if seq == first:
            return
        if seq - first > MAX_MISSING:  # far behind: the oldest of them are lost already
            self._count_lost(key[1], seq - first - MAX_MISSING)
            first = seq - MAX_MISSING
        now = time.monotonic()
        source.missing.update(dict.fromkeys(range(first, seq), now))
        while len(source.missing) > MAX_MISSING:
            source.missing.pop(next(iter(source.missing)))
            self._count_lost(key[1], 1)
        self._holes[key] = source

    def to_look_up(self, age: float, limit: int = 1000) -> list[tuple[str, str, list[int]]]:
        """Missing numbers first missed more than ``age`` seconds ago and not looked up yet
        (each is looked up once): ``[(origin, app, [seq, ...])]``, at most ``limit``."""
        found: list[tuple[str, str, list[int]]] = []
        deadline = time.monotonic() - age
        left = limit
        for key, source in self._holes.items():
            due = [
                seq
                for seq, since in source.missing.items()
                if since <= deadline and seq not in source.looked_up
            ][:left]
            if due:
                source.looked_up.update(due)
                found.append((key[0], key[1], due))
                left -= len(due)
            if left <= 0:
                break
        return found

    def expire(self, grace: float) -> None:
        """Count as lost every number missing for more than ``grace`` seconds."""
        if not self._holes:
            return
        deadline = time.monotonic() - grace
        for key, source in list(self._holes.items()):
            expired = [seq for seq, since in source.missing.items() if since <= deadline]
            for seq in expired:
                del source.missing[seq]
                source.looked_up.discard(seq)
            self._count_lost(key[1], len(expired))
            if not source.missing:
                del self._holes[key]

    def forget_apps_except(self, apps: set[str]) -> None:
        """Stop tracking apps no longer listened to (their numbers move on unseen; tracking
        them would count those events as lost)."""
        for key in [k for k in self._sources if k[1] not in apps]:
            del self._sources[key]
            self._holes.pop(key, None)

    def _count_lost(self, app: str, count: int) -> None:
        if count > 0:
            self._lost[app] = self._lost.get(app, 0) + count

    def take_lost(self) -> dict[str, int]:
        """Lost events counted since the last call, per app."""
        lost, self._lost = self._lost, {}
        return lost
