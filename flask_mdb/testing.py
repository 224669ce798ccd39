"""Testing websockets for real: Flask's ``app.test_client()`` cannot open one, so this serves
the app on 127.0.0.1 and connects real websocket clients to it.

::

    from flask_mdb.testing import LiveServer

    def test_live_updates(app):
        with LiveServer(app) as server, server.websocket("/ws", token=token) as ws:
            assert ws.receive_json()["type"] == "connected"   # the manifest endpoints' hello
            ws.send_json({"type": "ping", "id": 1})
            assert ws.receive_json() == {"type": "pong", "id": 1}
            broadcast_to_app("my_app", {"type": "news"})       # from the test's thread
            assert ws.receive_json(type="news") == {"type": "news"}

``LiveServer(app, threads=1)`` serves every request on a pool of reused threads instead of
a new thread per request — as gunicorn's ``gthread`` workers or waitress do — so a test
can show that nothing of one request (its app, its correlation id) stays with the thread
for the next.

A client the server closes reports the close code and reason (``ws.wait_closed()`` →
``(1008, "authentication required")``); a handshake the server refuses (an ``Origin`` not
allowed: 403) raises :class:`HandshakeRefused` (a :class:`ConnectionError` with its
``status``). Stopping the server is complete and bounded: it stops accepting, closes the
app's websockets (1001) and idle connections, waits for requests in flight (5 s by default,
``stop(timeout=...)``) and raises :class:`RequestsStillRunning` naming any request still
running then — so no test leaves threads or sockets behind for the next one to meet.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from flask import Flask
from simple_websocket import Client, ConnectionClosed
from simple_websocket import ConnectionError as SimpleConnectionError

from .testing_server import InFlightRequest, RequestsStillRunning, TrackedWSGIServer
from .websockets.routes import close_all

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "HandshakeRefused",
    "InFlightRequest",
    "LiveServer",
    "RequestsStillRunning",
    "WebSocketTestClient",
]

#: Seconds a receive waits by default before raising TimeoutError: long enough for a slow CI
#: machine, short enough that a missing message fails the test rather than hanging it.
DEFAULT_TIMEOUT = 10.0
#: Seconds :meth:`LiveServer.stop` waits for requests in flight by default: a view a test
#: left waiting fails that test soon, a slow request on a loaded CI machine still finishes.
STOP_TIMEOUT = 5.0
#: Seconds a client's close waits for the server to hang up before it stops reading itself.
CLOSE_WAIT = 5.0


class _Client(Client):
    """simple-websocket's client, keeping the frames that arrive in the same read as the
    handshake's response (a refusal's close frame, often): its reader thread would only look
    at them after its next read, which a closed socket never gives."""

    def handshake(self) -> None:
        super().handshake()
        # attr-defined: _handle_events is a private step of simple-websocket's reader, absent
        # from its stubs (types-simple-websocket); the docstring says why it is called here.
        if not self._handle_events():  # type: ignore[attr-defined]
            # Closed already: say "connected" so the constructor finishes; the reader thread
            # then stops at the end of the socket, and the close code stays recorded.
            self.connected = True


class HandshakeRefused(ConnectionError):
    """The server answered the upgrade with an HTTP error (``status``) instead of accepting."""

    def __init__(self, url: str, status: Any) -> None:
        super().__init__(f"{url}: the server refused the websocket (HTTP {status})")
        self.status = status


class WebSocketTestClient:
    """A real websocket client (simple-websocket) with JSON helpers and close reporting.

    :param url: ``ws://`` URL.
    :param token: a bearer token, sent as ``Authorization: Bearer <token>``.
    :param cookies: cookies to send (e.g. ``{"my_app_session": sid}`` after a login).
    :param headers: more handshake headers (``Origin``, ...).
    :param subprotocols: subprotocols to offer.
    :param timeout: default seconds for :meth:`receive` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cookies: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: list[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        self.url = url
        self.timeout = timeout
        #: ``(code, reason)`` once the server closed the connection, else None.
        self.closed: tuple[int | None, str] | None = None
        try:
            self._ws = _Client.connect(
                url,
                subprotocols=subprotocols,
                headers=[(k.encode("ascii"), v.encode("ascii")) for k, v in sent.items()],
            )
        except SimpleConnectionError as exc:
            raise HandshakeRefused(url, exc.status_code) from exc

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose."""
        return self._ws.subprotocol

    def send(self, data: str | bytes) -> None:
        self._ws.send(data)

    def send_json(self, message: Any) -> None:
        self._ws.send(json.dumps(message))

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message; :class:`TimeoutError` if none comes within ``timeout`` seconds,
        :class:`ConnectionError` if the server closed the connection (see :attr:`closed`)."""
        wait = self.timeout if timeout is None else timeout
        try:
            data = self._ws.receive(timeout=wait)
        except ConnectionClosed as exc:
            self.closed = (exc.reason, exc.message or "")
            raise ConnectionError(f"closed by the server: {self.closed}") from exc
        if data is None:
            if not self._ws.connected:
                self.closed = (self._ws.close_reason, self._ws.close_message or "")
                raise ConnectionError(f"closed by the server: {self.closed}")
            raise TimeoutError(f"no message from {self.url} within {wait:g} s")
        return data

    def receive_json(self, timeout: float | None = None, *, type: str | None = None) -> Any:
        """The next JSON message (with ``type``: the next one of that ``"type"``, skipping
        others) within ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = json.loads(self.receive(max(deadline - time.monotonic(), 0.001)))
            if type is None or (isinstance(message, dict) and message.get("type") == type):
                return message

    def wait_closed(self, timeout: float | None = None) -> tuple[int | None, str]:
        """Read until the server closes the connection; its ``(code, reason)``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.closed is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.url} was not closed within the timeout")
            try:
                self.receive(remaining)
            except ConnectionError:
                break
        assert self.closed is not None
        return self.closed

    def close(self) -> None:
        """Close the connection (nothing to send when the server has closed it already) and
        wait, at most :data:`CLOSE_WAIT` seconds, for the client's reader thread to end: a
        test leaves no thread of its clients behind either."""
        with contextlib.suppress(ConnectionClosed):
            self._ws.close()
        # The stubs type the reader as "a thread class's instance", without join().
        reader = cast(threading.Thread, self._ws.thread)
        reader.join(CLOSE_WAIT)
        sock = self._ws.sock
        if reader.is_alive() and sock is not None:  # the server never hung up: stop reading
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            reader.join(CLOSE_WAIT)

    def __enter__(self) -> WebSocketTestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LiveServer:
    """``app`` (a Flask app, or any WSGI callable) served by werkzeug's server on 127.0.0.1,
    accepting in a background thread, each connection on its own thread.

    Use as a context manager (or :meth:`start` / :meth:`stop`). ``url`` is its base URL;
    :meth:`websocket` connects a :class:`WebSocketTestClient`. With ``threads``, requests
    are served by a pool of that many reused threads (a new thread per connection otherwise).
    ``stop_timeout`` is the bound of :meth:`stop` when the ``with`` block ends.
    """

    def __init__(
        self,
        app: Flask | WSGIApplication,
        port: int = 0,
        *,
        threads: int | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.app = app
        self.port = port
        self.threads = threads
        self.stop_timeout = stop_timeout
        self._server: TrackedWSGIServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running: use `with LiveServer(app)`")
        return f"http://127.0.0.1:{self._server.port}"

    def websocket(self, path: str, **options: Any) -> WebSocketTestClient:
        """Connect to ``path`` (options: see :class:`WebSocketTestClient`)."""
        return WebSocketTestClient("ws" + self.url[4:] + path, **options)

    def start(self) -> LiveServer:
        if self._server is None:
            server = TrackedWSGIServer("127.0.0.1", self.port, self.app, self.threads)
            server.start()
            self._server = server
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server completely, within ``timeout`` seconds (``stop_timeout``, 5 s, by
        default).

        It stops accepting at once (a request that has not begun gets its connection closed,
        unanswered), closes idle keep-alive connections and the app's websockets (1001),
        waits for the requests in flight to finish, then shuts down the sockets of websockets
        still open (plain flask-sock routes) so their handlers end. When it returns, no
        thread of the server is left. If some request thread still runs at the bound, it
        raises :class:`RequestsStillRunning` naming each one (method, path, thread): the
        test that left it running fails, rather than a later one it disturbs."""
        server = self._server
        if server is None:
            return
        limit = self.stop_timeout if timeout is None else timeout
        if not (limit >= 0 and math.isfinite(limit)):
            raise ValueError(f"stop(timeout=...) must be a finite number >= 0, not {limit!r}")
        self._server = None
        app = self.app
        server.stop(limit, lambda: close_all(app) if isinstance(app, Flask) else 0)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        # The block failed already: its error is the one to see, so a request it left
        # running is reported as a warning instead of replacing that error.
        try:
            self.stop()
        except RequestsStillRunning as still_running:
            warnings.warn(str(still_running), RuntimeWarning, stacklevel=2)
