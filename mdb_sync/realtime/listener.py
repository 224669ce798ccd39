"""The listening thread of an event bus: it tails ``mdb_events`` and hands each new event of a
subscribed app to the bus.

Two ways to tail, chosen per server:

* **Change stream** (replica sets, sharded clusters, Atlas, the embedded server): a
  ``watch()`` on the collection, filtered on the server to inserts of the subscribed apps,
  resumed from its last token when it breaks or is reopened for a new set of apps.
* **Tailable cursor** (a standalone ``mongod``, where change streams do not exist): an
  ``awaitData`` cursor on the capped collection, read in insertion order.

Either way, the collection itself is the record of what was published: whenever a stream
or cursor is opened again — after a network error, a killed cursor, a server that crashed
and restarted (seen from its new process id even when pymongo resumed the stream by
itself), or a new set of apps — the listener first catches up from ``mdb_events``, after the
newest document it had read that is still there (see :mod:`.position`). Every event is
handed over at most once (by id and by its publisher's sequence number), and events that
can no longer be recovered — pushed out of the capped collection, or lost by a server that
was not durable — are counted per app in ``realtime.gaps`` once missing for ``gap_grace``
seconds.

Both wake a waiting read within milliseconds of an insert, and check for shutdown at least
every ``max_await_ms``.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pymongo import CursorType
from pymongo.errors import OperationFailure, PyMongoError

from .position import RECENT_IDS, STALE_SKEW, ResumePoint

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .bus import EventBus

log = logging.getLogger(__name__)

#: Server error codes meaning "this deployment has no change streams".
_NO_CHANGE_STREAMS = frozenset({40573, 40324, 115})
_MIN_BACKOFF, _MAX_BACKOFF = 0.05, 2.0
#: Documents per batch of a catch-up read.
_CATCH_UP_BATCH = 500
#: Seconds between two checks for missing events (while reading works).
_FLUSH_EVERY = 0.1

__all__ = ["RECENT_IDS", "Listener", "ResumePoint", "change_streams_unsupported"]


def change_streams_unsupported(exc: OperationFailure) -> bool:
    text = str(exc).lower()
    return exc.code in _NO_CHANGE_STREAMS or "replica set" in text or "changestream" in text


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
        #: Seconds the last catch-up took (None before the first).
        self.last_catch_up: float | None = None
        #: Whether the next stream must first catch up from the collection: after an error,
        #: a restart or a refused position — not when it is reopened for a new set of apps
        #: (the token then covers everything, and a catch-up would hand a newly subscribed
        #: app its events from before the subscription).
        self._catch_up_needed = True
        self._flushed = 0.0
        self._stop = threading.Event()
        self._version = 0
        self._open_version = -1  # the version of the app set the open stream filters on
        self._version_lock = threading.Condition()
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

    def apps_changed(self) -> int:
        """The set of subscribed apps changed: reopen the stream with the new filter (it
        resumes from the last token, so the other apps' events are not missed meanwhile).
        Returns the version to pass to :meth:`wait_listening`."""
        with self._version_lock:
            self._version += 1
            return self._version

    def wait_listening(self, version: int, timeout: float) -> bool:
        """Wait until the stream filters on the app set of ``version`` (a tailable cursor
        reads every app: at once)."""
        with self._version_lock:
            return self._version_lock.wait_for(
                lambda: (
                    self.mode != "change_stream"
                    or self._open_version >= version
                    or not self.alive
                    or self.error is not None
                ),
                timeout,
            )

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
                        self.point.mode = "tailable"
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
        self.bus.increment("realtime.listener_errors")
        self._catch_up_needed = True
        self.bus.collection_lost()  # the server may have lost it: create it again
        (log.debug if failing else log.warning)("realtime listener: %s; reconnecting", exc)
        return True

    def _current_apps(self) -> tuple[int, list[str]]:
        with self._version_lock:
            version = self._version
        return version, self.bus.subscribed_apps()

    # --- change streams -----------------------------------------------------------------------

    def _tail_change_stream(self) -> None:
        raw = self._events_collection()
        version, apps = self._current_apps()
        self.point.forget_apps_except(set(apps))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.point.app_since = {app: self.point.app_since.get(app, now) for app in apps}
        scope = {"app_id": {"$in": apps}}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"operationType": "insert", "fullDocument.app_id": {"$in": apps}}},
            {"$project": {"fullDocument": 1}},
        ]
        session = raw.database.client.start_session(causal_consistency=False)
        with session, self._open_stream(raw, pipeline, session) as stream:
            servers = self._server_ids()  # known for sure now: the stream was opened there
            resumed = self.point.token is not None or self.point.op_time is not None
            if resumed and self._restarted(self.point.servers, servers):
                # A server that crashed may have lost the end of its history, and then its
                # positions after it name other events: go on from the collection (in
                # order, within its capped window), not from the token.
                log.info("realtime listener: the server restarted; catching up from it")
                self.point.token = self.point.op_time = None
                self.point.servers = servers
                self._catch_up_needed = True
                return  # reopened at once, from now
            self.point.servers = servers
            # The stream is open before the collection is read: nothing falls in between.
            if not self.point.positioned:
                self._position(raw, scope)
            elif self._catch_up_needed:
                self._catch_up(raw, scope)
            self._catch_up_needed = False
            if self.point.token is None:
                self.point.token = stream.resume_token
            self._listening()
            with self._version_lock:
                self._open_version = version
                self._version_lock.notify_all()
            while not self._stop.is_set() and stream.alive:
                change = stream.try_next()
                if change is not None:
                    self._handle(change.get("fullDocument") or {})
                token = stream.resume_token
                if token is not None:
                    self.point.token = token
                if session.operation_time is not None:
                    self.point.op_time = session.operation_time
                if self._restarted(servers, self._server_ids()):
                    self._catch_up_needed = True
                    return  # pymongo resumed the stream by itself: catch up instead
                self._flush_lost()
                if change is None and self._version != version:
                    return  # reopen with the new set of apps, from the last token

    def _open_stream(self, raw: Any, pipeline: list[dict[str, Any]], session: Any) -> Any:
        """The stream, resumed after the last token — or, if the server refuses that token
        (some servers stamp an idle stream's token with another namespace; a restarted one
        may have lost its history), from the last operation time seen, else from now.
        Whatever falls between is read from the collection by :meth:`_catch_up`, and events
        seen twice are skipped by :meth:`_handle`."""
        options: dict[str, Any] = {"max_await_time_ms": self.bus.max_await_ms, "session": session}
        if self.point.token is not None:
            try:
                return raw.watch(pipeline, resume_after=self.point.token, **options)
            except OperationFailure as exc:
                if change_streams_unsupported(exc):
                    raise
                how = "by time" if self.point.op_time is not None else "from the collection"
                log.info("realtime listener: resuming %s, the token was refused: %s", how, exc)
                self.point.token = None
                self._catch_up_needed = True
        if self.point.op_time is not None:
            try:
                return raw.watch(pipeline, start_at_operation_time=self.point.op_time, **options)
            except OperationFailure as exc:
                if change_streams_unsupported(exc):
                    raise
                log.info("realtime listener: resuming from the collection: %s", exc)
                self.point.op_time = None
                self._catch_up_needed = True
        return raw.watch(pipeline, **options)

    def _server_ids(self) -> dict[Any, Any]:
        """The process id each known server reports (``topologyVersion``; no I/O)."""
        ids = {}
        description = self.bus.engine.client.topology_description
        for address, server in description.server_descriptions().items():
            version = server.topology_version
            if version and version.get("processId") is not None:
                ids[address] = version["processId"]
        return ids

    @staticmethod
    def _restarted(before: dict[Any, Any], now: dict[Any, Any]) -> bool:
        """Whether a server known in ``before`` runs as another process in ``now``."""
        return any(address in before and before[address] != pid for address, pid in now.items())

    # --- tailable cursors ---------------------------------------------------------------------

    def _tail_capped(self) -> None:
        raw = self._events_collection()
        gap = False
        if self.point.positioned:
            # Go on after the newest document read that is still there.
            after, gap, _ = self._find_anchor(raw, {}, keep=False)
        else:
            after = self._position(raw, {})
        skipping = after is not None
        stale_before = self.point.stale_before() if gap else None
        catching_up, started = True, time.monotonic()
        cursor = raw.find({}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(
            self.bus.max_await_ms
        )
        try:
            self._listening()
            while not self._stop.is_set() and cursor.alive:
                try:
                    doc = cursor.next()
                except StopIteration:  # read all there is: live from here on
                    if catching_up:
                        if skipping:  # the anchor was pushed out meanwhile
                            self._gap_found()
                            skipping = False
                        catching_up, stale_before = False, None
                        self.last_catch_up = time.monotonic() - started
                    self._flush_lost()
                    continue
                if skipping:
                    skipping = doc.get("_id") != after
                    continue
                self._handle(doc, stale_before)
                self._flush_lost()
        finally:
            cursor.close()
        # A dead cursor (an empty collection, on some servers): the caller reopens it shortly.

    def _events_collection(self) -> Collection[Any]:
        """``mdb_events``, capped. A server that crashed before the collection was durable
        loses it, and the next publisher's insert creates it again, plain (unbounded, and
        untailable): once it was capped here, its events are handed over and it is made
        capped again. A collection never seen capped is left alone (tailing refuses it)."""
        raw = self.bus.collection(require_capped=self.mode == "tailable" and not self.point.capped)
        if raw.options().get("capped"):
            self.point.capped = True
            return raw
        if not self.point.capped:
            return raw
        log.warning(
            "realtime listener: %r is no longer capped (the server lost it); making it "
            "capped again",
            self.bus.collection_name,
        )
        for doc in raw.find({}).hint([("$natural", 1)]).batch_size(_CATCH_UP_BATCH):
            self._handle(doc)
        raw.drop()
        self.bus.collection_lost()
        return self.bus.collection(require_capped=True)

    # --- positions and catching up ------------------------------------------------------------

    def _newest_first(self, raw: Collection[Any], scope: dict[str, Any], fields: Any) -> Any:
        return raw.find(scope, fields).hint([("$natural", -1)]).batch_size(_CATCH_UP_BATCH)

    def _position(self, raw: Collection[Any], scope: dict[str, Any]) -> Any:
        """Start at the end: the newest document now (its id is returned; None when there is
        none) is the last one not for us."""
        fields = {"_id": 1, "created_at": 1}
        newest = next(iter(self._newest_first(raw, scope, fields).limit(1)), None)
        if newest is not None:
            self.point.remember(newest)
        self.point.positioned = True
        return None if newest is None else newest.get("_id")

    def _find_anchor(
        self, raw: Collection[Any], scope: dict[str, Any], keep: bool
    ) -> tuple[Any, bool, list[dict[str, Any]]]:
        """Read ``scope``'s documents newest first until one already read (the anchor).

        Returns the anchor's id (None when there is none), whether that is a gap (documents
        had been read and none of them is left) and, with ``keep``, the documents after the
        anchor, oldest first (bounded by the capped collection's size)."""
        backlog: list[dict[str, Any]] = []
        for doc in self._newest_first(raw, scope, None if keep else {"_id": 1}):
            if self.point.seen(doc.get("_id")):
                return doc.get("_id"), False, backlog[::-1]
            if keep:
                backlog.append(doc)
        gap = bool(self.point.recent)
        if gap:
            self._gap_found()
        return None, gap, backlog[::-1]

    def _catch_up(self, raw: Collection[Any], scope: dict[str, Any]) -> None:
        """Hand over, in order, what ``scope``'s part of the collection holds after the
        newest document already read."""
        started = time.monotonic()
        _anchor, gap, backlog = self._find_anchor(raw, scope, keep=True)
        gap_cutoff = self.point.stale_before() if gap else None
        for doc in backlog:
            # A publisher not heard of yet: not its events from before the app was listened
            # to (nor, after a gap, from before the listener's position).
            publisher = doc.get("app_id")
            since = self.point.app_since.get(publisher) if isinstance(publisher, str) else None
            cutoffs = [c for c in (gap_cutoff, since and since - STALE_SKEW) if c is not None]
            self._handle(doc, max(cutoffs) if cutoffs else None)
        self.last_catch_up = time.monotonic() - started

    def _gap_found(self) -> None:
        self.bus.increment("realtime.overflows")
        log.warning(
            "realtime listener: %r no longer holds any event this listener read; events "
            "published meanwhile may be lost (increase its size); counted in realtime.gaps "
            "as their publishers' next events show them missing",
            self.bus.collection_name,
        )

    def _look_up(self, wanted: list[tuple[str, str, list[int]]]) -> None:
        """Hand over the missing events that the collection holds after all, in order."""
        query = {
            "$or": [
                {"origin": origin, "app_id": app, "seq": {"$in": seqs}}
                for origin, app, seqs in wanted
            ]
        }
        raw = self.bus.collection()
        found = list(raw.find(query).hint([("$natural", 1)]))
        for doc in found:
            self._handle(doc)
        if found:
            self.bus.increment("realtime.looked_up", value=len(found))

    def _listening(self) -> None:
        """A stream or cursor is open: events of other processes arrive again."""
        self.last_error = self.failing_since = None
        self.opened.set()

    def _handle(self, doc: dict[str, Any], stale_before: Any = None) -> None:
        """Hand ``doc`` to the bus once: resumes and catch-ups may read it again."""
        if self.point.admit(doc, self.bus.origin, stale_before):
            self.bus.receive(doc)
        elif doc.get("origin") != self.bus.origin:
            self.bus.increment("realtime.replays_skipped")

    def _flush_lost(self) -> None:
        """Look for missing events in the collection, then count those given up on (missing
        for longer than ``gap_grace``). Only while reading works: while the server is away,
        nothing is looked up and nothing given up."""
        now = time.monotonic()
        if now - self._flushed < _FLUSH_EVERY:
            return
        self._flushed = now
        wanted = self.point.to_look_up(self.bus.gap_grace / 2)
        if wanted:
            try:
                self._look_up(wanted)
            except PyMongoError as exc:
                log.debug("realtime listener: cannot look up missing events: %s", exc)
        self.point.expire(self.bus.gap_grace)
        for app, count in self.point.take_lost().items():
            self.bus.increment("realtime.gaps", slug=app, value=count)
            log.warning("realtime listener: %d event(s) of app %r were lost", count, app)
