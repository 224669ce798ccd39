"""The event bus of an engine: realtime messages that reach every process on the database.

``engine.events.publish(slug, message)`` hands the event at once to this process's
subscribers of ``slug`` (no database round trip before local delivery), then inserts it into
the engine-internal bounded collection ``mdb_events`` (capped, or plain and trimmed where
capped inserts are slow: :mod:`mdb_sync.realtime.store`). Every other process using the
database — web workers, Celery workers, scripts — that has subscribers for ``slug`` tails that
collection (:mod:`mdb_sync.realtime.listener`) and hands the event to its own subscribers.
A process never receives its own events twice: each bus has an ``origin`` id, and events of
its own origin are skipped by its listener.

Events are scoped like all data: every event document carries the ``app_id`` of the app it
was published for, listeners ask the server only for the apps they serve, and an event is
handed only to subscribers of its own ``app_id``. One publisher's events arrive in the order
it published them (a single insert stream, read in insertion order). Apps never see the
collection: ``mdb`` is a reserved slug, so no scoped database can name it.

``publish(slug, message, channel=name)`` makes a *channel* event: only the connections that
joined that channel of the app receive it (:mod:`mdb_sync.realtime.channels`).

Besides messages, the bus carries the server's *control* events (:meth:`EventBus.publish_control`:
e.g. "close the connections of these revoked credentials"), in the same stream and so in the
same order — a message published after a revocation reaches no process before the
revocation does. They go only to subscribers that asked for them and never to a client.

Each stored event also carries ``seq``, consecutive per bus and app (messages and control
events alike): listeners use it to hand over each event at most once across reconnects and
server restarts and to count the events that could not be recovered
(:mod:`mdb_sync.realtime.position`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pymongo.collection import Collection
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from .. import storage
from ..deprecation import renamed_parameters
from ..exceptions import ConfigurationError, InvalidMessageError, RealtimeError
from ..scoping.names import validate_slug
from . import store as _store
from .channels import validate_channel
from .codec import encode_message
from .events import CHANNEL, CONTROL, MESSAGE, Event, target_id, target_ids
from .listener import Listener
from .position import ResumePoint

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

#: The engine-internal collection holding every app's events.
EVENTS_COLLECTION = storage.EVENTS
#: How the listener tails it: ``auto`` (a change stream, else a tailable cursor),
#: ``change_stream`` or ``tailable``.
MODES = ("auto", "change_stream", "tailable")
#: Environment variable choosing the mode for every engine of the process.
MODE_ENV = "MDB_REALTIME_MODE"
DEFAULT_CAPPED_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_AWAIT_MS = 200
#: Seconds a listener waits for an event missing from its publisher's sequence before it
#: counts it as lost (events of one publisher can arrive slightly out of order).
DEFAULT_GAP_GRACE = 2.0
#: How long the first subscription waits for the listener to be listening.
OPEN_TIMEOUT = 10.0

Subscriber = Callable[[Event], None]


def _mode_from_env() -> str:
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigurationError(f"{MODE_ENV} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


class Subscription:
    """What :meth:`EventBus.subscribe` returns; :meth:`cancel` ends it (idempotent)."""

    @renamed_parameters(app_slug="slug")
    def __init__(
        self, bus: EventBus, slug: str, callback: Subscriber, control: bool = False
    ) -> None:
        self.bus, self.app_slug, self.callback = bus, slug, callback
        #: Whether the subscriber also gets the server's control events (``Event.kind``).
        self.control = control

    def cancel(self) -> None:
        self.bus.unsubscribe(self)

    @property
    def active(self) -> bool:
        """False once cancelled, or once the engine shut down (which ends every subscription)."""
        return self.bus.is_subscribed(self)


class EventBus:
    """Publishes and delivers one engine's realtime events (``engine.events``).

    Thread-safe. Subscribers are called on the publishing thread for local events and on the
    listener thread for other processes' events, so they must not block: hand the event to a
    queue (the websocket connection managers do).
    """

    def __init__(self, engine: MongoDBEngine) -> None:
        self._engine = engine
        self._lock = threading.RLock()
        self._subscribers: dict[str, tuple[Subscription, ...]] = {}
        self._listener: Listener | None = None
        self._resume_point: ResumePoint | None = None
        self._collection_ready = False
        #: This bus's id in the events it publishes (new in every process).
        self.origin = uuid.uuid4().hex
        self.mode = _mode_from_env()
        self.collection_name = EVENTS_COLLECTION
        self.capped_bytes = DEFAULT_CAPPED_BYTES
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self.max_await_ms = DEFAULT_MAX_AWAIT_MS
        self.gap_grace = DEFAULT_GAP_GRACE
        #: ``auto``, ``capped`` or ``plain``: the kind of ``mdb_events`` this bus creates
        #: (see :mod:`mdb_sync.realtime.store`).
        self.store = "auto"
        self.max_events = _store.DEFAULT_MAX_EVENTS
        #: Whether ``mdb_events`` is a plain collection this bus trims (known once ready).
        self._plain = False
        self._trimmer = _store.Trimmer()
        #: Next sequence number per app of the events this bus stores.
        self._sequences: dict[str, int] = {}
        self._sequence_lock = threading.Lock()

    def configure(
        self,
        *,
        mode: str | None = None,
        capped_bytes: int | None = None,
        max_message_bytes: int | None = None,
        max_await_ms: int | None = None,
        gap_grace: float | None = None,
        store: str | None = None,
        max_events: int | None = None,
    ) -> EventBus:
        """Change settings: ``mode`` (``auto``, ``change_stream``,
        ``tailable``; default ``MDB_REALTIME_MODE`` or ``auto``), ``capped_bytes`` (size of
        ``mdb_events`` when this bus creates it, default 16 MiB), ``max_message_bytes`` (of a
        message's JSON, default 1 MiB), ``max_await_ms`` (longest idle wait of the listener,
        which bounds how long stopping it takes; default 200), ``gap_grace`` (seconds an
        event missing from its publisher's sequence is waited for before it is counted in
        ``realtime.gaps``; default 2), ``store`` (the kind of ``mdb_events`` this bus creates
        if it does not exist: ``auto``, ``capped`` or ``plain``, see
        :mod:`~mdb_sync.realtime.store`) and ``max_events`` (events a plain store keeps,
        default 20,000, besides ``capped_bytes``). A new ``mode`` restarts a running
        listener."""
        if mode is not None and mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if store is not None and store not in _store.STORES:
            raise ConfigurationError(
                f"store must be one of {', '.join(_store.STORES)}, not {store!r}"
            )
        if gap_grace is not None and (
            isinstance(gap_grace, bool)
            or not isinstance(gap_grace, int | float)
            or not 0 <= gap_grace <= 3600
        ):
            raise ConfigurationError("gap_grace must be a number of seconds from 0 to 3600")
        sizes = {"capped_bytes": capped_bytes, "max_message_bytes": max_message_bytes}
        sizes["max_await_ms"] = max_await_ms
        sizes["max_events"] = max_events
        for name, value in sizes.items():
            minimum = 4096 if name == "capped_bytes" else 1
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < minimum
            ):
                raise ConfigurationError(f"{name} must be an integer >= {minimum}")
        restart = False
        with self._lock:
            if mode is not None:
                restart = mode != self.mode and self._listener is not None
                self.mode = mode
            for name, value in sizes.items():
                if value is not None:
                    setattr(self, name, value)
            if gap_grace is not None:
                self.gap_grace = float(gap_grace)
            if store is not None:
                self.store = store
        if restart:  # listen again, the new way
            self.stop()
            self.start()
        return self

    # --- publishing ---------------------------------------------------------------------------

    @renamed_parameters(app_slug="slug")
    def publish(
        self,
        slug: str,
        message: Any,
        *,
        user_id: Any = None,
        connection_id: str | None = None,
        channel: str | None = None,
        exclude: Any = None,
        local_only: bool = False,
    ) -> Event:
        """Send ``message`` to the live connections of ``slug`` in every process.

        ``user_id`` limits it to that user's connections, ``connection_id`` to one
        connection, ``channel`` to the connections that joined that channel of the app
        (:func:`~mdb_sync.realtime.channels.validate_channel`; not with ``user_id`` or
        ``connection_id``); ``exclude`` (a connection id or several) skips connections. The
        message
        is encoded as JSON now (:class:`~mdb_sync.exceptions.InvalidMessageError` if it
        cannot be, :class:`~mdb_sync.exceptions.ResourceLimitExceeded` above
        ``max_message_bytes``) and delivered in this process before this returns; other
        processes receive it through the database unless ``local_only``.
        :class:`~mdb_sync.exceptions.RealtimeError` means the database refused or could not
        be reached: this process's connections got the message, other processes' did not.
        """
        engine = self._engine
        engine.require_initialized()
        engine.registry.require_usable(slug)
        if channel is not None:
            channel = validate_channel(channel)
            if user_id is not None or connection_id is not None:
                raise InvalidMessageError(
                    "a channel message goes to the channel's members: it takes no user_id "
                    "or connection_id"
                )
        event = Event(
            app_id=slug,
            data=encode_message(message, self.max_message_bytes),
            origin=self.origin,
            user_id=None if user_id is None else target_id(user_id, "user_id"),
            connection_id=None
            if connection_id is None
            else target_id(connection_id, "connection_id"),
            exclude=target_ids(exclude, "exclude"),
            kind=MESSAGE if channel is None else CHANNEL,
            channel=channel,
        )
        if channel is not None:
            engine.metrics.increment(
                "realtime.channel_published", slug=slug, labels={"channel": channel}
            )
        return self._send(event, local_only)

    @renamed_parameters(app_slug="slug")
    def publish_control(
        self, slug: str, control: Mapping[str, Any], *, user_id: Any = None
    ) -> Event:
        """Tell the connection managers of ``slug`` in every process to act (e.g. close
        the connections of revoked credentials, :mod:`mdb_sync.auth.revocation`).

        A control event goes only to subscribers that asked for them
        (``subscribe(..., control=True)``) and is never sent to a client. Only server-side
        code can publish one: :meth:`publish` — which app code and message handlers use —
        always makes a plain message, whatever it contains. ``user_id`` names the user it is
        about (managers then look at that user's connections only)."""
        engine = self._engine
        engine.require_initialized()
        engine.registry.require_usable(slug)
        event = Event(
            app_id=slug,
            data=encode_message(dict(control), self.max_message_bytes),
            origin=self.origin,
            user_id=None if user_id is None else target_id(user_id, "user_id"),
            kind=CONTROL,
        )
        return self._send(event, local_only=False)

    def _send(self, event: Event, local_only: bool) -> Event:
        engine, app_slug = self._engine, event.app_id
        self.deliver(event)
        engine.metrics.increment("realtime.published", slug=app_slug)
        if local_only:
            return event
        document = event.to_document()
        document["seq"] = self._next_sequence(app_slug)
        document["size"] = len(event.data)  # what trimming a plain store counts
        try:
            raw = self.collection()
            raw.insert_one(document)
            if self._plain:
                self._trimmer.stored(raw, self.max_events, self.capped_bytes)
        except PyMongoError as exc:
            self._collection_ready = False  # a restarted server may have lost the collection
            engine.metrics.increment("realtime.publish_errors", slug=app_slug)
            raise RealtimeError(
                f"the event for app {app_slug!r} reached this process's subscribers but could "
                f"not be stored for the other processes: {exc}",
                context={"app": app_slug},
            ) from exc
        return event

    def _next_sequence(self, app_slug: str) -> int:
        """This bus's next number for ``app_slug``: listeners find a missing or repeated
        event by it (see :mod:`mdb_sync.realtime.position`)."""
        with self._sequence_lock:
            seq = self._sequences.get(app_slug, 0) + 1
            self._sequences[app_slug] = seq
            return seq

    def deliver(self, event: Event) -> int:
        """Hand ``event`` to this process's subscribers of its app; return how many got it.
        A failing subscriber is logged and does not stop the others. Control events go only
        to the subscribers that asked for them."""
        subscribers = self._subscribers.get(event.app_id, ())
        if event.kind == CONTROL:
            subscribers = tuple(s for s in subscribers if s.control)
        for subscription in subscribers:
            try:
                subscription.callback(event)
            except Exception:
                log.exception("realtime subscriber of app %r failed", event.app_id)
        return len(subscribers)

    def receive(self, doc: dict[str, Any]) -> None:
        """An event document from the listener: deliver it unless this bus published it."""
        if doc.get("origin") == self.origin:
            return
        event = Event.from_document(doc)
        if event is None:
            return
        self.increment("realtime.received", slug=event.app_id)
        self.deliver(event)

    # --- subscribing --------------------------------------------------------------------------

    @renamed_parameters(app_slug="slug")
    def subscribe(
        self,
        slug: str,
        callback: Subscriber,
        *,
        wait: float | None = OPEN_TIMEOUT,
        control: bool = False,
    ) -> Subscription:
        """Call ``callback(event)`` for each event of ``slug``, from this process and
        others (with ``control``, the server's control events too: see
        :meth:`publish_control`). The first subscription starts the listener and waits up
        to ``wait`` seconds until it listens (so events published after this returns are not
        missed); if the server cannot be reached meanwhile, it keeps trying in the
        background."""
        validate_slug(slug)
        self._engine.require_initialized()
        subscription = Subscription(self, slug, callback, control)
        version = None
        with self._lock:
            new_app = slug not in self._subscribers
            self._subscribers[slug] = (*self._subscribers.get(slug, ()), subscription)
            listener = self._listener
            if listener is None or not listener.alive:
                listener = self._listener = self._start_listener()
            elif new_app:
                version = listener.apps_changed()
        # Until the stream is open again with this app in its filter, the app's events could
        # pass unseen (the old stream's position moves past events it filters out).
        listening = listener.opened.wait(wait) if wait else True
        if wait and version is not None:
            listening = listener.wait_listening(version, wait)
        if not listening:
            log.warning("realtime listener not listening after %.1f s; retrying", wait)
        if listener.error is not None:
            self.unsubscribe(subscription)
            raise RealtimeError(f"cannot listen for events: {listener.error}") from listener.error
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            current = self._subscribers.get(subscription.app_slug, ())
            remaining = tuple(s for s in current if s is not subscription)
            if remaining:
                self._subscribers[subscription.app_slug] = remaining
            else:
                self._subscribers.pop(subscription.app_slug, None)
            if remaining != current and self._listener is not None:
                self._listener.apps_changed()

    def subscribed_apps(self) -> list[str]:
        """The apps this process has subscribers for (the listener's filter)."""
        with self._lock:
            return sorted(self._subscribers)

    def _start_listener(self) -> Listener:
        mode = "tailable" if self.mode == "tailable" else "change_stream"
        listener = Listener(self, mode, self._resume_point)
        listener.start()
        return listener

    @property
    def listening_mode(self) -> str | None:
        """``change_stream`` or ``tailable`` while the listener runs, else None."""
        listener = self._listener
        return listener.mode if listener is not None and listener.alive else None

    def status(self) -> dict[str, Any]:
        """What the listener is doing, for health checks (no I/O): ``state`` — ``listening``
        (a stream or cursor is open), ``starting``, ``retrying`` (reading fails and is being
        retried: ``error`` and ``failing_seconds`` say why and for how long), ``failed`` (it
        gave up: change streams required but unavailable), ``stopped`` (:meth:`stop`) or
        ``idle`` (nothing subscribed) — with the ``mode``, the ``subscribed_apps`` and how
        long the last catch-up after a reconnect took (``catch_up_seconds``)."""
        with self._lock:
            listener, apps = self._listener, sorted(self._subscribers)
        status: dict[str, Any] = {
            "state": "idle" if not apps else "stopped",
            "mode": self.mode,
            "subscribed_apps": apps,
            "error": None,
            "failing_seconds": None,
            "catch_up_seconds": None,
        }
        if listener is None:
            return status
        status["mode"] = listener.mode
        if listener.last_catch_up is not None:
            status["catch_up_seconds"] = round(listener.last_catch_up, 4)
        since = listener.failing_since
        if listener.error is not None:
            status["state"] = "failed"
            status["error"] = f"{type(listener.error).__name__}: {str(listener.error)[:300]}"
        elif not listener.alive:
            pass  # stopped
        elif since is not None:
            status["state"] = "retrying"
            status["error"] = listener.last_error
            status["failing_seconds"] = round(max(time.time() - since, 0.0), 3)
        else:
            status["state"] = "listening" if listener.opened.is_set() else "starting"
        return status

    def start(self, wait: float | None = OPEN_TIMEOUT) -> None:
        """Start the listener again after :meth:`stop`, if anything is subscribed."""
        with self._lock:
            if not self._subscribers or (self._listener is not None and self._listener.alive):
                return
            listener = self._listener = self._start_listener()
        if wait:
            listener.opened.wait(wait)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the listener; subscriptions stay. :meth:`start` (or the next subscription)
        starts it again from where it stopped: events published meanwhile are delivered
        then, none twice, as long as the server still has them (the oplog's window for a
        change stream, the capped collection's for a tailable cursor)."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(timeout)
            self._resume_point = listener.point  # a restart resumes from there

    def close(self) -> None:
        """Stop listening and forget every subscription (the engine's shutdown)."""
        with self._lock:
            self._subscribers.clear()
            self._collection_ready = False
        self.stop()
        self._resume_point = None

    def after_fork_in_child(self) -> None:
        """The parent's listener thread and subscribers stay in the parent; the child starts
        afresh with an origin of its own."""
        self._lock = threading.RLock()
        self._subscribers = {}
        self._listener = None
        self._resume_point = None
        self._collection_ready = False
        self._sequences = {}
        self._sequence_lock = threading.Lock()
        self._plain = False
        self._trimmer = _store.Trimmer()
        self.origin = uuid.uuid4().hex

    # --- the collection -----------------------------------------------------------------------

    @property
    def engine(self) -> MongoDBEngine:
        return self._engine

    def is_subscribed(self, subscription: Subscription) -> bool:
        return subscription in self._subscribers.get(subscription.app_slug, ())

    def collection_lost(self) -> None:
        """The server may have lost ``mdb_events``: create it again on next use."""
        self._collection_ready = False

    def collection(self, require_capped: bool = False) -> Collection[Any]:
        """``mdb_events``, created on first use by whichever process comes first — capped,
        or plain and trimmed where capped inserts are slow (:mod:`.store`)."""
        raw = self._engine.storage.collection(self.collection_name)
        if not self._collection_ready:
            kind = _store.choose_store(self.store, self.mode, raw)
            options: dict[str, Any] = (
                {"capped": True, "size": self.capped_bytes} if kind == "capped" else {}
            )
            try:
                raw.database.create_collection(self.collection_name, check_exists=False, **options)
            except CollectionInvalid:
                pass
            except OperationFailure as exc:
                if exc.code != 48:  # NamespaceExists
                    raise
            self._plain = not raw.options().get("capped")
            if self._plain:  # trimmed newest-first by date
                raw.create_index("created_at")
            self._collection_ready = True
        if require_capped and not raw.options().get("capped"):
            raise RealtimeError(
                f"{self.collection_name!r} is not a capped collection, which tailing needs: "
                "drop it (it holds only transient events) and it is created capped"
            )
        return raw

    def trim(self) -> int:
        """Trim ``mdb_events`` now when it is a plain collection (publishers do it in the
        background every few hundred events): delete what lies beyond the newest
        ``max_events`` events or ``capped_bytes`` bytes. Returns how many were deleted (0
        for a capped collection, which bounds itself)."""
        raw = self.collection()
        if not self._plain:
            return 0
        return _store.trim(raw, self.max_events, self.capped_bytes)

    @property
    def store_kind(self) -> str | None:
        """``capped`` or ``plain`` once ``mdb_events`` was used by this bus, else None."""
        if not self._collection_ready:
            return None
        return "plain" if self._plain else "capped"

    # --- metrics ------------------------------------------------------------------------------

    @renamed_parameters(app="slug")
    def increment(self, name: str, slug: str | None = None, value: int = 1) -> None:
        self._engine.metrics.increment(name, value, slug=slug)
