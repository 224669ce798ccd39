"""The listening thread of an event bus: it tails ``mdb_events`` and hands each new event of a
subscribed app to the bus.

Two ways to tail, chosen per server:

* **Change stream** (replica sets, sharded clusters, Atlas, the embedded server): a
  ``watch()`` on the collection, filtered on the server to inserts of the subscribed apps.
  The stream's resume token is kept after every batch, so when the stream breaks (a network
  error, a failover, a killed cursor) or is reopened for a new set of apps, it resumes right
  after the last event handed over: nothing twice, nothing lost within the oplog's window.
* **Tailable cursor** (a standalone ``mongod``, where change streams do not exist): an
  ``awaitData`` cursor on the capped collection, read in insertion order. The position is the
  ``_id`` of the last document read; a reopened cursor skips up to and including it. If that
  document was already pushed out of the capped collection, the events in between are lost:
  the gap is logged and counted (``realtime.gaps``), and reading goes on.

Both wake a waiting read within milliseconds of an insert, and check for shutdown at least
every ``max_await_ms``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pymongo import CursorType
from pymongo.errors import OperationFailure, PyMongoError

if TYPE_CHECKING:
    from .bus import EventBus

log = logging.getLogger(__name__)

#: Server error codes meaning "this deployment has no change streams".
_NO_CHANGE_STREAMS = frozenset({40573, 40324, 115})
_MIN_BACKOFF, _MAX_BACKOFF = 0.05, 2.0
#: How many of the last events' ids a listener remembers, to skip replays after a resume.
RECENT_IDS = 1024


def change_streams_unsupported(exc: OperationFailure) -> bool:
    text = str(exc).lower()
    return exc.code in _NO_CHANGE_STREAMS or "replica set" in text or "changestream" in text


class ResumePoint:
    """Where a listener is in the event stream — kept by the bus when a listener stops, so
    the next one (same mode) goes on from there instead of from "now"."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        #: Change streams: the last resume token, and the last operation time seen.
        self.token: Any = None
        self.op_time: Any = None
        #: Tailable cursors: the ``_id`` of the last document read (None: the start).
        self.last_id: Any = None
        self.positioned = False
        #: Ids of the last events handed over, to skip replays after a resume.
        self.recent: deque[Any] = deque(maxlen=RECENT_IDS)
        self.recent_ids: set[Any] = set()


class Listener:
    """One thread tailing the bus's collection in ``mode`` (``change_stream``/``tailable``)."""

    def __init__(self, bus: EventBus, mode: str, point: ResumePoint | None = None) -> None:
        self.bus = bus
        self.mode = mode
        self.point = point if point is not None and point.mode == mode else ResumePoint(mode)
        self.opened = threading.Event()
        #: Set when the listener gave up for good (change streams required but unavailable).
        self.error: BaseException | None = None
        #: While reading fails and is being retried: the latest error, and since when
        #: (``time.time()``); both None once a stream or cursor is open again.
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self._stop = threading.Event()
        self._version = 0
        self._version_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"mdb-realtime-{bus.origin[:8]}", daemon=True
        )

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def apps_changed(self) -> None:
        """The set of subscribed apps changed: reopen the stream with the new filter (it
        resumes from the last token, so the new apps' events are not missed meanwhile)."""
        with self._version_lock:
            self._version += 1

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = _MIN_BACKOFF
        failing = False
        while not self._stop.is_set():
            try:
                if self.mode == "change_stream":
                    self._tail_change_stream()
                else:
                    self._tail_capped()
                backoff, failing = _MIN_BACKOFF, False
            except OperationFailure as exc:
                if self.mode == "change_stream" and change_streams_unsupported(exc):
                    if self.bus.mode == "auto":
                        log.info(
                            "change streams unavailable (%s): tailing a capped collection", exc
                        )
                        self.mode = "tailable"
                        continue
                    self.error = exc
                    self.opened.set()
                    log.error("realtime listener stopped: change streams unavailable: %s", exc)
                    return
                failing = self._report(exc, failing)
            except PyMongoError as exc:
                failing = self._report(exc, failing)
            except Exception as exc:  # never let the thread die silently
                log.exception("realtime listener failed; restarting")
                failing = self._report(exc, True)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _report(self, exc: BaseException, failing: bool) -> bool:
        self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        if self.failing_since is None:
            self.failing_since = time.time()
        self.bus._count("realtime.listener_errors")
        (log.debug if failing else log.warning)("realtime listener: %s; reconnecting", exc)
        return True

    def _current_apps(self) -> tuple[int, list[str]]:
        with self._version_lock:
            version = self._version
        return version, self.bus.subscribed_apps()

    def _tail_change_stream(self) -> None:
        raw = self.bus._collection()
        version, apps = self._current_apps()
        pipeline = [
            {"$match": {"operationType": "insert", "fullDocument.app_id": {"$in": apps}}},
            {"$project": {"fullDocument": 1}},
        ]
        session = raw.database.client.start_session(causal_consistency=False)
        with session, self._open_stream(raw, pipeline, session) as stream:
            if self.point.token is None:
                self.point.token = stream.resume_token
            self._listening()
            while not self._stop.is_set() and stream.alive:
                change = stream.try_next()
                if change is not None:
                    self._handle(change.get("fullDocument") or {})
                token = stream.resume_token
                if token is not None:
                    self.point.token = token
                if session.operation_time is not None:
                    self.point.op_time = session.operation_time
                if change is None and self._version != version:
                    return  # reopen with the new set of apps, from the last token

    def _open_stream(self, raw: Any, pipeline: list[dict[str, Any]], session: Any) -> Any:
        """The stream, resumed after the last token — or, if the server refuses that token
        (some servers stamp an idle stream's token with another namespace), from the last
        operation time seen (events seen twice that way are skipped by :meth:`_handle`)."""
        options: dict[str, Any] = {"max_await_time_ms": self.bus.max_await_ms, "session": session}
        if self.point.token is not None:
            try:
                return raw.watch(pipeline, resume_after=self.point.token, **options)
            except OperationFailure as exc:
                if change_streams_unsupported(exc) or self.point.op_time is None:
                    raise
                log.info("realtime listener: resuming by time, the token was refused: %s", exc)
                self.point.token = None
        if self.point.op_time is not None:
            options["start_at_operation_time"] = self.point.op_time
        return raw.watch(pipeline, **options)

    def _tail_capped(self) -> None:
        raw = self.bus._collection(require_capped=True)
        if not self.point.positioned:
            # Start at the end: the newest document now is the last one not for us.
            last = next(iter(raw.find({}, {"_id": 1}).hint([("$natural", -1)]).limit(1)), None)
            self.point.last_id = last["_id"] if last else None
            self.point.positioned = True
        skipping = self.point.last_id is not None
        if skipping and raw.count_documents({"_id": self.point.last_id}, limit=1) == 0:
            self._gap()
            skipping = False
        cursor = raw.find({}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(
            self.bus.max_await_ms
        )
        try:
            self._listening()
            while not self._stop.is_set() and cursor.alive:
                try:
                    doc = cursor.next()
                except StopIteration:
                    if skipping:  # read everything without meeting our position
                        self._gap()
                        skipping = False
                    continue
                if skipping:
                    skipping = doc.get("_id") != self.point.last_id
                    continue
                self.point.last_id = doc.get("_id")
                self._handle(doc)
        finally:
            cursor.close()
        # A dead cursor (an empty collection, on some servers): the caller reopens it shortly.

    def _listening(self) -> None:
        """A stream or cursor is open: events of other processes arrive again."""
        self.last_error = self.failing_since = None
        self.opened.set()

    def _handle(self, doc: dict[str, Any]) -> None:
        """Hand ``doc`` to the bus once: a resume may replay the last few events."""
        event_id, point = doc.get("_id"), self.point
        if event_id in point.recent_ids:
            return
        if len(point.recent) == point.recent.maxlen:
            point.recent_ids.discard(point.recent[0])
        point.recent.append(event_id)
        point.recent_ids.add(event_id)
        self.bus._receive(doc)

    def _gap(self) -> None:
        self.bus._count("realtime.gaps")
        log.warning(
            "realtime listener: the capped collection %r no longer holds the last event read; "
            "events published meanwhile were missed (increase its size)",
            self.bus.collection_name,
        )
