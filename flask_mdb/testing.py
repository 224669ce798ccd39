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
``status``). Stopping the server closes its connections
(1001), so no test leaves threads or sockets behind.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flask import Flask
from simple_websocket import Client, ConnectionClosed
from simple_websocket import ConnectionError as SimpleConnectionError
from werkzeug.serving import BaseWSGIServer, make_server

from .websockets.routes import close_all

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["HandshakeRefused", "LiveServer", "WebSocketTestClient"]

#: Seconds a receive waits by default before raising TimeoutError: long enough for a slow CI
#: machine, short enough that a missing message fails the test rather than hanging it.
DEFAULT_TIMEOUT = 10.0


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
        """Close the connection; nothing to do when the server has closed it already."""
        with contextlib.suppress(ConnectionClosed):
            self._ws.close()

    def __enter__(self) -> WebSocketTestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _PooledWSGIServer(BaseWSGIServer):
    """werkzeug's server, each connection handled by one of a fixed pool of threads."""

    multithread = True

    def __init__(self, host: str, port: int, app: Any, threads: int) -> None:
        super().__init__(host, port, app)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="flask-mdb-live-pool")

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)


class LiveServer:
    """``app`` (a Flask app, or any WSGI callable) served by werkzeug's threaded server on
    127.0.0.1 in a background thread.

    Use as a context manager (or :meth:`start` / :meth:`stop`). ``url`` is its base URL;
    :meth:`websocket` connects a :class:`WebSocketTestClient`. With ``threads``, requests
    are served by a pool of that many reused threads (a new thread per request otherwise).
    """

    def __init__(
        self, app: Flask | WSGIApplication, port: int = 0, *, threads: int | None = None
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.app = app
        self.port = port
        self.threads = threads
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

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
            server: BaseWSGIServer
            if self.threads is None:
                server = make_server("127.0.0.1", self.port, self.app, threaded=True)
            else:
                server = _PooledWSGIServer("127.0.0.1", self.port, self.app, self.threads)
            thread = threading.Thread(
                target=server.serve_forever, name="flask-mdb-live-server", daemon=True
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Close the app's websockets (1001), then stop serving."""
        server, thread = self._server, self._thread
        if server is None:
            return
        if isinstance(self.app, Flask):
            close_all(self.app)
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
