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
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from mdb_sync.auth import revocation
from mdb_sync.exceptions import ConnectionLimitExceeded
from mdb_sync.realtime import Event, Subscription
from mdb_sync.realtime.events import CONTROL

from .connection import (
    ACCESS_REVOKED,
    CREDENTIALS_REVOKED,
    GOING_AWAY,
    NORMAL_CLOSURE,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    Connection,
)

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

    Each connection holds a thread (two while frames are queued), so the limits are what stops
    one client, or a flood of anonymous ones, from exhausting the server.
    """

    def __init__(
        self,
        app_slug: str,
        engine: MongoDBEngine,
        *,
        queue_size: int = 256,
        send_timeout: float = 10.0,
        max_connections: int | None = None,
        max_per_user: int | None = None,
        max_per_address: int | None = None,
    ) -> None:
        self.app_slug = app_slug
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
        self._subscription: Subscription | None = None
        self._subscribe_lock = threading.Lock()

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
        and :class:`~mdb_sync.exceptions.ConnectionLimitExceeded` is raised."""
        self._ensure_subscribed()
        connection = Connection(
            ws,
            app_slug=self.app_slug,
            endpoint=endpoint,
            identity=identity,
            user_id=user_id,
            user_email=user_email,
            remote_addr=remote_addr,
            queue_size=self.queue_size,
            send_timeout=self.send_timeout,
            on_drop=self._dropped,
        )
        with self._lock:
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

    def _over_limit(self, connection: Connection) -> tuple[str, str] | None:
        """``(limit, reason)`` if ``connection`` would exceed a limit (called under the lock).
        The client's own limits come first: waiting will not lift them. The reason is sent to
        the client, so it names the limit, never other clients."""
        if connection.user_id is not None:
            if (
                self.max_per_user is not None
                and len(self._by_user.get(connection.user_id, ())) >= self.max_per_user
            ):
                return "user", f"too many connections for this user (at most {self.max_per_user})"
        elif (
            self.max_per_address is not None
            and connection.remote_addr is not None
            and self._by_address.get(connection.remote_addr, 0) >= self.max_per_address
        ):
            return "address", (
                f"too many connections from this address (at most {self.max_per_address})"
            )
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            return "app", "too many connections, try again later"
        return None

    def disconnect(
        self, connection: Connection, code: int = NORMAL_CLOSURE, reason: str = ""
    ) -> None:
        """Close ``connection`` (if still open) and forget it."""
        with self._lock:
            known = self._connections.pop(connection.id, None) is not None
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
        }

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

    def _on_event(self, event: Event) -> None:
        """An event of the app (from this process or another): queue it for its recipients.
        Runs on the publishing or the listening thread, so it only appends to queues."""
        if event.kind == CONTROL:
            self._on_control(event)
            return
        if event.connection_id is not None:
            connection = self._connections.get(event.connection_id)
            recipients = [connection] if connection is not None else []
        elif event.user_id is not None:
            recipients = self.connections(event.user_id)
        else:
            with self._lock:
                recipients = list(self._connections.values())
        for connection in recipients:
            if event.reaches(connection.id, connection.user_id):
                connection.send_text(event.data)

    def _on_control(self, event: Event) -> None:
        """A control event: close the connections whose login it revokes — at once (no
        frame leaves for them any more), without waiting for their close to complete."""
        control = revocation.parse_control(event.data)
        if control is None:
            return
        for connection in self.connections(event.user_id):
            standing = revocation.verdict(control, connection.identity)
            if standing is None:
                continue
            code = ACCESS_REVOKED if standing.forbidden else CREDENTIALS_REVOKED
            self.revoke(connection, code, standing.problem or revocation.REVOKED)

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
        self.engine.metrics.increment(name, app=self.app_slug)
