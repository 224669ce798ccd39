"""One live websocket connection: who it is, and a bounded queue with a writer thread.

Sending never blocks the sender. A frame goes straight into the socket when the socket takes
it at once (the common case: no thread switch per client); otherwise it waits in the
connection's own bounded queue for the connection's writer thread. So a broadcast never
waits for anyone, and a client that reads slowly — or not at all — only fills its own queue.
When that queue is full, or one frame has been stuck in the socket for longer than the send
timeout, the connection is dropped: its socket is shut down, which also frees the writer
and the reader blocked on it. Frames always leave in the order they were sent, whole.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import queue
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsproto.events import TextMessage

from mdb_sync.deprecation import renamed_parameters
from mdb_sync.realtime import encode_message

if TYPE_CHECKING:
    from .credentials import Credentials
    from .manager import WebSocketManager

log = logging.getLogger("flask_mdb.websockets")

#: Close codes (RFC 6455).
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
#: Close codes of our own (the 4000-4999 range is the application's), mirroring HTTP: the
#: login the connection rests on was revoked or lapsed — sign in again (or refresh the
#: token) and reconnect; the login holds but the app's access policy now refuses the user.
CREDENTIALS_REVOKED = 4401
ACCESS_REVOKED = 4403
_MAX_REASON = 120  # close reasons are at most 123 bytes


class LockedSocket:
    """The server's socket as simple-websocket uses it, with every write whole and one at a
    time: the library writes from its reader thread (pings, pongs, close replies) while the
    connection's writer thread sends messages, and a frame must never be cut by another."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        #: Held while a frame is written (by whichever thread, until its last byte).
        self.lock = threading.Lock()
        #: Set by :meth:`seal`: only a close frame may be written any more.
        self.sealed = False

    def seal(self) -> None:
        """From now on write nothing but a close frame: a connection whose login was
        revoked answers nothing more — not even the pongs simple-websocket sends by itself
        — while its close frame is on the way."""
        self.sealed = True

    def send(self, data: bytes) -> int:
        with self.lock:
            # A server's frame starts with FIN and its opcode; 0x8 is a close frame.
            if not self.sealed or (data[:1] and (data[0] & 0x0F) == 0x8):
                self._sock.sendall(data)
        return len(data)

    sendall = send

    def send_now(self, data: bytes) -> int:
        """Write what fits in the socket buffer without waiting (the caller holds ``lock``)."""
        try:
            return self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0

    def finish(self, data: bytes) -> None:
        """Write the rest of a frame begun with :meth:`send_now`, then release ``lock``."""
        try:
            self._sock.sendall(data)
        finally:
            self.lock.release()

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)  # never under the lock: it is what frees a stuck writer

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_STOP = object()


def text_frame(text: str) -> bytes:
    """A server's text frame carrying ``text`` (RFC 6455: final, unmasked). Without an
    extension (compression) negotiated, every connection sends these same bytes, so a
    broadcast builds them once for all its recipients instead of once per connection."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class _Rest(bytes):
    """The unwritten end of a frame the sender began: the writer finishes it first."""


class Connection:
    """A client connected to one of an app's websocket endpoints — what message, connect
    and disconnect handlers receive (``from flask_mdb import Connection, MessageError``).

    * ``id``: unique across processes (events can target it from anywhere; pass the
      connection as ``exclude=`` to ``broadcast_to_app`` / ``send_to_user`` to skip it).
    * ``app_slug``: the app; ``endpoint``: the manifest's endpoint name.
    * ``user_id``, ``user_email``, ``identity``: from authentication (None when anonymous).
    * ``state``: a dict for the app's own per-connection data. The values of URL variables
      of the endpoint's path (``"path": "/rooms/<room>/ws"``) are in
      ``state["path_args"]`` (``{}`` for a path without variables).
    * ``remote_addr``, ``connected_at`` (aware UTC).
    * :meth:`send` queues a JSON message to this client only (never blocks).
    * :meth:`join` / :meth:`leave` put it in or out of a channel of its app (no
      authorization: the server decides; a client's ``subscribe`` message is authorized),
      ``channels`` the channels it is in; ``manager`` its app's connection manager.

    ``credentials`` (set by the manifest endpoints for identities the app's auth issued)
    re-checks the login the connection rests on; ``revoked`` is ``(code, reason)`` once
    :meth:`revoke` closed it.
    """

    @renamed_parameters(app_slug="slug")
    def __init__(
        self,
        ws: Any,
        *,
        slug: str,
        manager: WebSocketManager | None = None,
        endpoint: str | None = None,
        identity: dict[str, Any] | None = None,
        user_id: Any = None,
        user_email: str | None = None,
        remote_addr: str | None = None,
        queue_size: int = 256,
        send_timeout: float = 10.0,
        on_drop: Callable[[Connection, str], None] | None = None,
    ) -> None:
        identity = dict(identity or {})
        self.id = uuid.uuid4().hex
        self.app_slug = slug
        self._manager = manager
        self.endpoint = endpoint
        self.identity = identity
        uid = user_id if user_id is not None else identity.get("user_id")
        self.user_id: str | None = None if uid is None else str(uid)
        self.user_email: str | None = user_email or identity.get("email")
        self.remote_addr = remote_addr
        self.connected_at = _dt.datetime.now(_dt.timezone.utc)
        self.state: dict[str, Any] = {}
        self.ws = ws
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._send_timeout = send_timeout
        self._sending_since: float | None = None
        # Order between direct writes and the queue: the writer is "busy" from the moment
        # something is queued until the queue is empty again, and nothing is written
        # directly meanwhile.
        self._order_lock = threading.Lock()
        self._writer_busy = False
        sock = getattr(ws, "sock", None)
        self._direct = isinstance(sock, LockedSocket) and hasattr(ws, "ws")
        # The handshake offered no compression, so none was negotiated: this connection's
        # text frames are plain, the same bytes as every other such connection's.
        offered = (getattr(ws, "environ", None) or {}).get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
        self._plain_frames = self._direct and "permessage-deflate" not in str(offered).lower()
        self._closed = threading.Event()
        #: Set once closing is complete (close frame written or socket shut down).
        self._finished = threading.Event()
        self._close_lock = threading.Lock()
        self._on_drop = on_drop
        self.close_reason: str | None = None
        self.credentials: Credentials | None = None
        self.revoked: tuple[int, str] | None = None
        self._writer = threading.Thread(
            target=self._write_loop, name=f"mdb-ws-writer-{self.id[:8]}", daemon=True
        )
        self._writer.start()

    def __repr__(self) -> str:
        return f"<Connection {self.id[:8]} app={self.app_slug!r} user={self.user_id!r}>"

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def manager(self) -> WebSocketManager:
        """The connection manager of its app in this process."""
        if self._manager is None:
            raise RuntimeError(f"{self!r} is not registered with a connection manager")
        return self._manager

    # --- channels -----------------------------------------------------------------------------

    @property
    def channels(self) -> frozenset[str]:
        """The channels of its app this connection is in."""
        return self.manager.channels_of(self) if self._manager is not None else frozenset()

    def join(self, channel: str) -> bool:
        """Join ``channel`` of the app (see :meth:`WebSocketManager.join`); False if it was
        in it already."""
        return self.manager.join(self, channel)

    def leave(self, channel: str) -> bool:
        """Leave ``channel``; False if it was not in it."""
        return self.manager.leave(self, channel)

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return self._queue.qsize()

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: Any) -> bool:
        """Queue ``message`` (JSON-encoded now) for this connection; False if the connection
        is closed or was just dropped because its queue is full."""
        return self.send_text(encode_message(message))

    send_json = send

    def send_text(self, text: str, frame: bytes | None = None) -> bool:
        """Queue a frame that is already JSON text (a broadcast encodes once for all;
        ``frame``: its :func:`text_frame`, which a connection without compression sends as
        it is)."""
        if self._closed.is_set():
            return False
        started = self._sending_since
        if started is not None and time.monotonic() - started > self._send_timeout:
            self.drop(f"a frame was stuck for more than {self._send_timeout:g} s")
            return False
        with self._order_lock:
            if self._closed.is_set():
                return False
            if self._direct and not self._writer_busy and self._write_directly(text, frame):
                return True
            try:
                self._queue.put_nowait(text)
            except queue.Full:
                full = True
            else:
                full = False
                self._writer_busy = True
        if full:
            self.drop(f"its send queue is full ({self._queue.maxsize} frames)")
            return False
        return True

    def _write_directly(self, text: str, frame: bytes | None = None) -> bool:
        """Write the frame on the caller's thread if the socket takes it at once — the usual
        case, which spares a thread switch per client and per message. What the socket
        cannot take now is left to the writer thread, with the socket still reserved for
        this frame. False: the socket is busy, queue the frame instead."""
        sock: LockedSocket = self.ws.sock
        if not sock.lock.acquire(blocking=False):
            return False
        try:
            if not self.ws.connected:
                raise OSError("closed")
            if frame is None or not self._plain_frames:
                frame = self.ws.ws.send(TextMessage(data=text))
            written = sock.send_now(frame)
        except Exception as exc:  # the client went away
            sock.lock.release()
            self._closed_by_peer(exc)
            return True
        if written == len(frame):
            sock.lock.release()
        else:  # the queue is empty (the writer is idle): the rest goes first
            self._writer_busy = True
            self._queue.put_nowait(_Rest(frame[written:]))
        return True

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._sending_since = time.monotonic()
            try:
                if isinstance(item, _Rest):
                    self.ws.sock.finish(item)
                else:
                    self.ws.send(item)
            except Exception as exc:  # the client went away (ConnectionClosed, OSError)
                self._closed_by_peer(exc)
                return
            finally:
                self._sending_since = None
            with self._order_lock:
                if self._queue.empty():
                    self._writer_busy = False

    # --- closing ------------------------------------------------------------------------------

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0) -> None:
        """Close the connection with ``code`` and ``reason`` once the frames already queued
        are written; a client that does not take them within ``timeout`` seconds is cut."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self.close_reason = reason or None
            self._closed.set()
        self._close_after_writer(code, reason, timeout)

    def revoke(self, code: int, reason: str) -> bool:
        """Close because the login the connection rests on is revoked (or lapsed), without
        waiting on the caller's thread (a request, or the event listener): from now on
        nothing more is sent to the client — frames still queued are discarded — and no
        message of its is handled; the close frame (``code``, ``reason``) is written by a
        short-lived thread. False if the connection was closed already."""
        # Under the order lock: once this returns, no sender is still writing a frame.
        with self._order_lock, self._close_lock:
            if self._closed.is_set():
                return False
            self.close_reason = reason
            self.revoked = (code, reason)
            self._closed.set()
            sock = getattr(self.ws, "sock", None)
            if isinstance(sock, LockedSocket):
                sock.seal()
        log.info("websocket %s of app %r closed: %s", self.id[:8], self.app_slug, reason)
        self._discard_queued()
        threading.Thread(
            target=self._close_after_writer,
            args=(code, reason),
            name=f"mdb-ws-revoke-{self.id[:8]}",
            daemon=True,
        ).start()
        return True

    def _discard_queued(self) -> None:
        """Forget the whole frames waiting for the writer; a frame already begun (always
        first in the queue) is kept: the close frame must not cut it."""
        begun = []
        try:
            while True:
                item = self._queue.get_nowait()
                if isinstance(item, _Rest):
                    begun.append(item)
        except queue.Empty:
            pass
        for item in begun:
            self._queue.put_nowait(item)

    def _close_after_writer(self, code: int, reason: str, timeout: float = 5.0) -> None:
        """The rest of :meth:`close`, once the connection is marked closed."""
        self._stop_writer(drain=False)
        self._writer.join(timeout)
        sock = getattr(self.ws, "sock", None)
        if self._writer.is_alive():
            self._shutdown_socket()
        else:
            try:
                if sock is not None:
                    sock.settimeout(timeout)  # the close frame must not wait forever either
                self.ws.close(
                    reason=code,
                    message=reason.encode()[:_MAX_REASON].decode("utf-8", "ignore") or None,
                )
            except Exception:  # closed by the client meanwhile
                pass
        self._finish()

    def drop(self, reason: str) -> None:
        """Cut a client that cannot keep up: shut its socket down (no close frame could get
        through a full buffer) and free every thread blocked on it."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self.close_reason = reason
            self._closed.set()
        log.warning("websocket %s of app %r dropped: %s", self.id[:8], self.app_slug, reason)
        self._shutdown_socket()
        self._stop_writer(drain=True)
        self._finish()
        if self._on_drop is not None:
            self._on_drop(self, reason)

    def _closed_by_peer(self, exc: BaseException) -> None:
        with self._close_lock:
            if self._closed.is_set():
                return
            self.close_reason = f"write failed: {exc.__class__.__name__}"
            self._closed.set()
        self._finish()

    def _shutdown_socket(self) -> None:
        sock = getattr(self.ws, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _stop_writer(self, drain: bool) -> None:
        """Queue the writer's stop; ``drain`` discards what is still queued (and so does a
        full queue, since waiting for room could take forever)."""
        while True:
            if drain:
                try:
                    while True:
                        if isinstance(self._queue.get_nowait(), _Rest):
                            self.ws.sock.lock.release()  # that frame is abandoned
                except queue.Empty:
                    pass
            try:
                self._queue.put_nowait(_STOP)
                return
            except queue.Full:
                drain = True

    def _wake_reader(self) -> None:
        # simple-websocket's receive() waits on this event; wake it so the serving thread sees
        # the connection is gone at once.
        event = getattr(self.ws, "event", None)
        if event is not None:
            event.set()

    def _finish(self) -> None:
        self._finished.set()
        self._wake_reader()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until closing is complete — whichever thread closes — so nothing else writes
        to the socket meanwhile (flask-sock sends its own close frame when the route
        returns; two close frames written at once would garble the stream)."""
        return self._finished.wait(timeout)
