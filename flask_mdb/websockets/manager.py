"""The connection manager of one app in one process: its live connections, and sending to them.

Sending goes through the engine's event bus (:mod:`mdb_sync.realtime`), so
``manager.broadcast(...)`` reaches the app's connections in this process at once and those in
every other process through MongoDB; ``local_only=True`` keeps a message in this process.
The manager subscribes to its app's events when its first client connects — the server's
control events included: when credentials are revoked (:mod:`mdb_sync.auth.revocation`,
from any process) it closes the connections resting on them with code 4401
(:data:`~.connection.CREDENTIALS_REVOKED`), and when a role change makes the app's access
policy refuse a user, that user's connections with 4403 (:data:`~.connection.ACCESS_REVOKED`).
Control events are never sent to a client.

Channels: :meth:`WebSocketManager.join` / :meth:`~WebSocketManager.leave` put a connection in
or out of a named channel of the app (:mod:`.channels` says who may join;
:mod:`.membership` keeps who is in), and a channel message (``broadcast_to_channel``) reaches
the members in every process. A connection leaves its channels when it closes — whatever
closes it, a revocation included — and when its user's roles change, its channels are
authorized again at once (in stream order: a channel message published after the change
reaches it only if the new roles allow).

Limits: per process by default; with ``slots`` (:class:`mdb_sync.realtime.slots.
ConnectionSlots`, ``MDB_WEBSOCKET_LIMITS_SCOPE = "cluster"``) counted in the database across
every process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from mdb_sync.auth import revocation
from mdb_sync.deprecation import renamed_parameters
from mdb_sync.exceptions import ChannelRefused, ConnectionLimitExceeded
from mdb_sync.realtime import Event, Subscription
from mdb_sync.realtime.channels import validate_channel
from mdb_sync.realtime.events import CONTROL
from mdb_sync.realtime.slots import ConnectionSlots, Slot

from . import channels as _channels
from .connection import (
    ACCESS_REVOKED,
    CREDENTIALS_REVOKED,
    GOING_AWAY,
    NORMAL_CLOSURE,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Connection,
    text_frame,
)
from .membership import ChannelTable

if TYPE_CHECKING:
    from mdb_sync import MongoDBEngine

log = logging.getLogger("flask_mdb.websockets")


def connection_ids(exclude: Any) -> Any:
    """``exclude`` may name connections by id or by object."""
    if exclude is None or isinstance(exclude, str):
        return exclude
    if isinstance(exclude, Connection):
        return exclude.id
    return [c.id if isinstance(c, Connection) else c for c in exclude]


class WebSocketManager:
    """Thread-safe registry of an app's live connections in this process.

    :param app_slug: the app.
    :param engine: the engine whose event bus carries the app's events.
    :param queue_size: frames each connection may have waiting before it is dropped.
    :param send_timeout: seconds one frame may take to be written before the client is dropped.
    :param max_connections: live connections the app may have in this process (None: no limit).
    :param max_per_user: live connections one signed-in user may have (None: no limit).
    :param max_per_address: live anonymous connections one client address may have (None: no
        limit). Behind a proxy every client has the proxy's address unless the app trusts the
        proxy's forwarded headers (werkzeug's ``ProxyFix``).
    :param max_channels_per_connection: channels one connection may be in (None: no limit).
    :param max_channels: channels with members the app may have in this process.
    :param slots: count the connection limits in the database, across every process (the
        limits are then totals over all processes), instead of in this process only.
    :param app_context: a callable entering the app's context (channel authorizers need it
        when a role change arrives on the event listener's thread).

    Each connection holds a thread (two while frames are queued), so the limits are what stops
    one client, or a flood of anonymous ones, from exhausting the server.
    """

    @renamed_parameters(app_slug="slug")
    def __init__(
        self,
        slug: str,
        engine: MongoDBEngine,
        *,
        queue_size: int = 256,
        send_timeout: float = 10.0,
        max_connections: int | None = None,
        max_per_user: int | None = None,
        max_per_address: int | None = None,
        max_channels_per_connection: int | None = 64,
        max_channels: int | None = 10_000,
        slots: ConnectionSlots | None = None,
        app_context: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.app_slug = slug
        self.engine = engine
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        self.max_per_address = max_per_address
        self._lock = threading.Lock()
        self._connections: dict[str, Connection] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_address: dict[str, int] = {}
        self._channels = ChannelTable(max_channels_per_connection, max_channels)
        self.slots = slots
        #: Enters the app's context, where channel authorizers run when a role change
        #: arrives on the listener's thread (``flask_mdb`` passes its Flask app's).
        self._app_context = app_context
        self._subscription: Subscription | None = None
        self._subscribe_lock = threading.Lock()
        self._controls = 0  # control events received (see control_mark)

    def __repr__(self) -> str:
        return f"<WebSocketManager {self.app_slug!r}: {self.connection_count} connection(s)>"

    # --- connections --------------------------------------------------------------------------

    def connect(
        self,
        ws: Any,
        *,
        identity: dict[str, Any] | None = None,
        user_id: Any = None,
        user_email: str | None = None,
        endpoint: str | None = None,
        remote_addr: str | None = None,
    ) -> Connection:
        """Register the accepted websocket ``ws`` (a simple-websocket/flask-sock object) and
        return its :class:`Connection`. The manifest's endpoints do this themselves; call it
        from your own flask-sock routes to give them broadcasts too (and :meth:`disconnect`
        when they end).

        A client over one of the manager's limits is closed at once — code 1013 (try again
        later) when the app is full, 1008 (policy violation) when its user or address is —
        and :class:`~mdb_sync.exceptions.ConnectionLimitExceeded` is raised. With limits
        counted in the database, one that cannot be checked (the database is unreachable)
        refuses the client with 1013."""
        self._ensure_subscribed()
        connection = Connection(
            ws,
            manager=self,
            slug=self.app_slug,
            endpoint=endpoint,
            identity=identity,
            user_id=user_id,
            user_email=user_email,
            remote_addr=remote_addr,
            queue_size=self.queue_size,
            send_timeout=self.send_timeout,
            on_drop=self._dropped,
        )
        refusal = None
        if self.slots is not None:
            with self._lock:  # over already in this process alone: no need to ask
                refusal = self._over_limit(connection)
            if refusal is None:
                refusal = self._reserve(connection)
        with self._lock:
            if refusal is None and self.slots is None:
                refusal = self._over_limit(connection)
            if refusal is None:
                self._connections[connection.id] = connection
                if connection.user_id is not None:
                    self._by_user.setdefault(connection.user_id, set()).add(connection.id)
                elif connection.remote_addr is not None:
                    address = connection.remote_addr
                    self._by_address[address] = self._by_address.get(address, 0) + 1
        if refusal is not None:
            limit, message = refusal
            # Counted before the close frame leaves: a client that saw it finds it counted.
            self._count("ws.refused")
            log.warning("websocket of app %r refused: %s", self.app_slug, message)
            connection.close(TRY_AGAIN_LATER if limit == "app" else POLICY_VIOLATION, message)
            raise ConnectionLimitExceeded(
                f"app {self.app_slug!r}: {message}", limit=limit, context={"app": self.app_slug}
            )
        self._count("ws.connected")
        return connection

    def _slots_of(self, connection: Connection) -> list[Slot]:
        """The limited things ``connection`` counts in: its user (or anonymous address), then
        the app."""
        slots = []
        if connection.user_id is not None:
            if self.max_per_user is not None:
                slots.append(Slot("user", connection.user_id, self.max_per_user))
        elif self.max_per_address is not None and connection.remote_addr is not None:
            slots.append(Slot("address", connection.remote_addr, self.max_per_address))
        if self.max_connections is not None:
            slots.append(Slot("app", "", self.max_connections))
        return slots

    def _reserve(self, connection: Connection) -> tuple[str, str] | None:
        """Take the connection's slots in the database (cross-process limits)."""
        assert self.slots is not None
        try:
            full = self.slots.reserve(self.app_slug, connection.id, self._slots_of(connection))
        except PyMongoError as exc:
            log.warning("websocket of app %r: cannot count connections: %s", self.app_slug, exc)
            return "app", "the server cannot take connections now, try again later"
        if full is None:
            return None
        return full.kind, self._limit_reason(full.kind)

    def _limit_reason(self, limit: str) -> str:
        if limit == "user":
            return f"too many connections for this user (at most {self.max_per_user})"
        if limit == "address":
            return f"too many connections from this address (at most {self.max_per_address})"
        return "too many connections, try again later"

    def _over_limit(self, connection: Connection) -> tuple[str, str] | None:
        """``(limit, reason)`` if ``connection`` would exceed a limit (called under the lock).
        The client's own limits come first: waiting will not lift them. The reason is sent to
        the client, so it names the limit, never other clients."""
        if connection.user_id is not None:
            if (
                self.max_per_user is not None
                and len(self._by_user.get(connection.user_id, ())) >= self.max_per_user
            ):
                return "user", self._limit_reason("user")
        elif (
            self.max_per_address is not None
            and connection.remote_addr is not None
            and self._by_address.get(connection.remote_addr, 0) >= self.max_per_address
        ):
            return "address", self._limit_reason("address")
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            return "app", self._limit_reason("app")
        return None

    def disconnect(
        self, connection: Connection, code: int = NORMAL_CLOSURE, reason: str = ""
    ) -> None:
        """Close ``connection`` (if still open) and forget it: its channels, its slots."""
        with self._lock:
            known = self._connections.pop(connection.id, None) is not None
            channels_left = self._channels.drop(connection.id) if known else []
            if known and connection.user_id is not None:
                ids = self._by_user.get(connection.user_id)
                if ids is not None:
                    ids.discard(connection.id)
                    if not ids:
                        del self._by_user[connection.user_id]
            elif known and connection.remote_addr is not None:
                left = self._by_address.pop(connection.remote_addr, 1) - 1
                if left > 0:
                    self._by_address[connection.remote_addr] = left
        connection.close(code, reason)
        if known:
            self._count("ws.disconnected")
            for channel in channels_left:
                self.count_channel("ws.channel_left", channel)
            if self.slots is not None:
                self.slots.release(connection.id)

    def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> int:
        """Close every connection (server shutdown); return how many there were."""
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            self.disconnect(connection, code, reason)
        return len(connections)

    def _dropped(self, connection: Connection, reason: str) -> None:
        self._count("ws.dropped")

    def after_fork_in_child(self) -> None:
        """Connections belong to the parent process (their sockets and threads are there)."""
        self._lock = threading.Lock()
        self._subscribe_lock = threading.Lock()
        self._connections = {}
        self._by_user = {}
        self._by_address = {}
        self._channels = ChannelTable(
            self._channels.max_per_connection, self._channels.max_channels
        )
        self._subscription = None

    # --- introspection ------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Live connections of the app in this process."""
        return len(self._connections)

    count = connection_count

    @property
    def user_count(self) -> int:
        """Distinct authenticated users connected in this process."""
        return len(self._by_user)

    def get_connection(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def connections(self, user_id: Any = None) -> list[Connection]:
        """The live connections in this process (of ``user_id`` only, if given)."""
        with self._lock:
            if user_id is None:
                return list(self._connections.values())
            ids = self._by_user.get(str(user_id), ())
            return [self._connections[i] for i in ids if i in self._connections]

    def user_ids(self) -> list[str]:
        """The authenticated users connected in this process."""
        with self._lock:
            return sorted(self._by_user)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            connections = list(self._connections.values())
            users = len(self._by_user)
        return {
            "app": self.app_slug,
            "connections": len(connections),
            "users": users,
            "anonymous": sum(1 for c in connections if c.user_id is None),
            "queued_frames": sum(c.queued for c in connections),
            "channels": self.channel_counts(),
        }

    # --- channels -----------------------------------------------------------------------------

    def join(self, connection: Connection, channel: str) -> bool:
        """Put ``connection`` in ``channel`` of the app — no authorization: the server
        decides (a client's ``subscribe`` goes through :meth:`subscribe`). False if it was a
        member already. Raises :class:`~mdb_sync.exceptions.InvalidChannelError` (a bad
        name), :class:`~mdb_sync.exceptions.ChannelLimitExceeded`, or
        :class:`~mdb_sync.exceptions.ChannelRefused` for a connection that is not a live
        connection of this app (membership never crosses apps)."""
        name = validate_channel(channel)
        with self._lock:
            if self._connections.get(connection.id) is not connection:
                raise ChannelRefused(
                    f"{connection!r} is not a live connection of app {self.app_slug!r}"
                )
            joined = self._channels.join(connection.id, name)
        if joined:
            self.count_channel("ws.channel_joined", name)
        return joined

    def subscribe(self, connection: Connection, channel: str) -> bool:
        """What a client's ``subscribe`` message does: join ``channel`` if its authorizer
        lets the connection (:mod:`.channels`), else raise
        :class:`~mdb_sync.exceptions.ChannelRefused` (counted in ``ws.channel_refused``).
        Runs the authorizer on the calling thread, which needs the app's context (message
        handlers have it)."""
        name = validate_channel(channel)
        if name in self.channels_of(connection):
            return False
        if not _channels.authorized(connection, name):
            self._count("ws.channel_refused")  # never labelled: the name is the client's
            raise ChannelRefused(_channels.REFUSED)
        return self.join(connection, name)

    def leave(self, connection: Connection, channel: str) -> bool:
        """Take ``connection`` out of ``channel``; False if it was not in it."""
        name = validate_channel(channel)
        with self._lock:
            left = self._channels.leave(connection.id, name)
        if left:
            self.count_channel("ws.channel_left", name)
        return left

    def channels_of(self, connection: Connection) -> frozenset[str]:
        """The channels ``connection`` is in."""
        with self._lock:
            return self._channels.channels_of(connection.id)

    def channel_members(self, channel: str) -> list[Connection]:
        """The connections of ``channel`` in this process."""
        with self._lock:
            ids = self._channels.members(channel)
            return [self._connections[i] for i in ids if i in self._connections]

    def channel_counts(self) -> dict[str, int]:
        """Members per channel, in this process."""
        with self._lock:
            return self._channels.counts()

    def reauthorize(self, connection: Connection) -> list[str]:
        """Authorize the connection's channels again (its roles changed): it leaves those it
        may no longer join, and the client is told (``{"type": "unsubscribed", "channel",
        "reason": "forbidden"}``). Returns the channels it left. An authorizer that fails
        counts as a refusal. The authorizers run in the app's context with the app bound
        (``app_context``), whichever thread calls this."""
        names = sorted(self.channels_of(connection))
        allowed: dict[str, bool] = dict.fromkeys(names, False)  # fails closed
        try:
            with self._app_context() if self._app_context is not None else nullcontext():
                for name in names:
                    try:
                        allowed[name] = bool(_channels.authorized(connection, name))
                    except Exception:  # a refusal (MessageError) or a failing authorizer
                        log.warning(
                            "channel authorizer of app %r failed", self.app_slug, exc_info=True
                        )
        except Exception:  # the app's context could not be entered (the app is disabled...)
            log.warning("channels of app %r not re-authorized", self.app_slug, exc_info=True)
        left = []
        for name in names:
            if not allowed[name] and self.leave(connection, name):
                left.append(name)
                connection.send({"type": "unsubscribed", "channel": name, "reason": "forbidden"})
        return left

    def count_channel(self, name: str, channel: str, value: int = 1) -> None:
        """Count ``name`` for ``channel`` (a label: at most 100 channels per app and counter
        are named, the rest count as ``_other``)."""
        self.engine.metrics.increment(name, value, slug=self.app_slug, labels={"channel": channel})

    # --- sending ------------------------------------------------------------------------------

    def broadcast(self, message: Any, exclude: Any = None, *, local_only: bool = False) -> Event:
        """Send ``message`` to every connection of the app — in this process at once, in the
        others through MongoDB unless ``local_only``. ``exclude``: connection(s) to skip."""
        return self.engine.events.publish(
            self.app_slug, message, exclude=connection_ids(exclude), local_only=local_only
        )

    def send_to_user(
        self, user_id: Any, message: Any, *, exclude: Any = None, local_only: bool = False
    ) -> Event:
        """Send ``message`` to every connection of ``user_id``, whichever process holds it."""
        return self.engine.events.publish(
            self.app_slug,
            message,
            user_id=user_id,
            exclude=connection_ids(exclude),
            local_only=local_only,
        )

    def send_to_connection(
        self, connection_id: str, message: Any, *, local_only: bool = False
    ) -> bool:
        """Send ``message`` to one connection: directly if it is in this process (True when
        queued), else through MongoDB to the process that has it (False; nothing is sent
        with ``local_only``)."""
        connection = self._connections.get(connection_id)
        if connection is not None:
            return connection.send(message)
        if not local_only:
            self.engine.events.publish(self.app_slug, message, connection_id=connection_id)
        return False

    def broadcast_to_channel(
        self, channel: str, message: Any, exclude: Any = None, *, local_only: bool = False
    ) -> Event:
        """Send ``message`` to the members of ``channel`` — in this process at once, in the
        others through MongoDB unless ``local_only``."""
        return self.engine.events.publish(
            self.app_slug,
            message,
            channel=validate_channel(channel),  # None is no channel: never the whole app
            exclude=connection_ids(exclude),
            local_only=local_only,
        )

    def _on_event(self, event: Event) -> None:
        """An event of the app (from this process or another): queue it for its recipients.
        Runs on the publishing or the listening thread, so it only appends to queues."""
        if event.kind == CONTROL:
            self._on_control(event)
            return
        if event.channel is not None:
            with self._lock:
                ids = self._channels.members(event.channel)
                recipients = [self._connections[i] for i in ids if i in self._connections]
            if recipients:
                self.count_channel("ws.channel_delivered", event.channel, len(recipients))
        elif event.connection_id is not None:
            connection = self._connections.get(event.connection_id)
            recipients = [connection] if connection is not None else []
        elif event.user_id is not None:
            recipients = self.connections(event.user_id)
        else:
            with self._lock:
                recipients = list(self._connections.values())
        frame = text_frame(event.data) if len(recipients) > 1 else None
        for connection in recipients:
            if event.reaches(connection.id, connection.user_id):
                connection.send_text(event.data, frame)

    def control_mark(self) -> tuple[Subscription | None, int]:
        """Where the control events stand now (subscribing first): taken before a handshake
        reads its login, :meth:`controls_since` says later whether a revocation may have
        arrived meanwhile — one that reached no connection because the new one was not
        registered yet."""
        self._ensure_subscribed()
        with self._lock:
            return self._subscription, self._controls

    def controls_since(self, mark: tuple[Subscription | None, int]) -> bool:
        """Whether a control event arrived since ``mark`` (or the subscription changed, so
        nothing can be told)."""
        subscription, count = mark
        with self._lock:
            current, seen = self._subscription, self._controls
        return (
            subscription is None
            or subscription is not current
            or not current.active
            or (seen != count)
        )

    def _on_control(self, event: Event) -> None:
        """A control event: close the connections whose login it revokes — at once (no
        frame leaves for them any more), without waiting for their close to complete."""
        with self._lock:  # first: a handshake under way learns that one arrived
            self._controls += 1
        roles = revocation.parse_roles(event.data)
        if roles is not None:
            self._on_roles(event.user_id, roles)
            return
        control = revocation.parse_control(event.data)
        if control is None:
            return
        for connection in self.connections(event.user_id):
            standing = revocation.verdict(control, connection.identity)
            if standing is None:
                continue
            code = ACCESS_REVOKED if standing.forbidden else CREDENTIALS_REVOKED
            self.revoke(connection, code, standing.problem or revocation.REVOKED)

    def _on_roles(self, user_id: str | None, roles: list[str]) -> None:
        """A user's roles changed (and the app's access policy still admits them): their
        connections' channels are authorized again now — on the thread handing over the
        event, before any later event — so what was published after the change reaches
        them only if the new roles allow."""
        if user_id is None:
            return
        for connection in self.connections(user_id):
            connection.identity["roles"] = list(roles)
            if self.channels_of(connection):
                self.reauthorize(connection)

    def revoke(self, connection: Connection, code: int, reason: str) -> None:
        """Close ``connection`` because its login ended (:meth:`Connection.revoke`: at once,
        nothing more sent or handled), counting ``ws.revoked``."""
        if connection.revoke(code, reason):
            self._count("ws.revoked")

    def _ensure_subscribed(self) -> None:
        subscription = self._subscription
        if subscription is not None and subscription.active:
            return
        with self._subscribe_lock:  # the first subscription may wait for the listener
            subscription = self._subscription
            if subscription is None or not subscription.active:
                self._subscription = self.engine.events.subscribe(
                    self.app_slug, self._on_event, control=True
                )

    def _count(self, name: str) -> None:
        self.engine.metrics.increment(name, slug=self.app_slug)
