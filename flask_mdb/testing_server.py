"""The WSGI server behind :class:`flask_mdb.testing.LiveServer`: werkzeug's server, with every
connection's thread known so that stopping it can be complete and bounded.

werkzeug's threaded server starts a daemon thread per connection and forgets it: stopping
the server stops accepting, but a request still in flight — or a keep-alive connection
waiting for its next request, or a websocket — runs on past the end of the test, and a late
request then touches an engine the next test has shut down (or starts it again). Here each
connection is recorded with its thread, the request it is serving (method and path) and the
threads that read its socket besides its own (simple-websocket's reader), so
:meth:`TrackedWSGIServer.stop` can wait for them, close what would never end by itself, and
name what still runs when the bound is reached.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

__all__ = ["InFlightRequest", "RequestsStillRunning", "TrackedWSGIServer"]

#: Seconds the websockets still open when the server stops get to end by themselves (the
#: app's close frames, 1001, are on their way) before their sockets are shut down.
WEBSOCKET_GRACE = 1.0
#: How often the accept loop looks whether it was asked to stop.
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class InFlightRequest:
    """A request (or websocket) whose thread was still running when :meth:`stop` gave up."""

    method: str
    path: str  # without the query string, which may carry a token
    seconds: float  # how long it had been running
    thread: threading.Thread
    websocket: bool = False

    def __str__(self) -> str:
        kind = "websocket " if self.websocket else ""
        return (
            f"{kind}{self.method} {self.path} (thread {self.thread.name!r}, "
            f"running for {self.seconds:.1f} s)"
        )


class RequestsStillRunning(RuntimeError):
    """:meth:`LiveServer.stop <flask_mdb.testing.LiveServer.stop>` reached its bound while
    request threads of the server still ran; ``requests`` names them (method, path, thread).

    The server no longer accepts anything and their sockets are shut down, but their code
    may still touch the app (and its engine) when it resumes."""

    def __init__(self, requests: list[InFlightRequest], timeout: float) -> None:
        self.requests = requests
        self.timeout = timeout
        listed = "; ".join(str(request) for request in requests)
        super().__init__(
            f"{len(requests)} request thread(s) of the live server still running "
            f"{timeout:g} s after stop(): {listed}"
        )


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    client_address: Any
    thread: threading.Thread | None = None
    #: ``(method, path)`` of the request being served; None between requests.
    request: tuple[str, str] | None = None
    websocket: bool = False
    #: The response was written whole: werkzeug may still be reading away the rest of the
    #: request body (after an early 413, say) for as long as the client keeps it open.
    responded: bool = False
    started: float = 0.0
    last_request: tuple[str, str] | None = None
    #: Threads besides ``thread`` that read the socket: simple-websocket's reader.
    helpers: set[threading.Thread] = field(default_factory=set)

    def threads(self) -> list[threading.Thread]:
        own = [self.thread] if self.thread is not None else []
        return own + list(self.helpers)

    def shut_down(self) -> None:
        """Wake whatever blocks on the socket: reads see its end, writes fail."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class _TrackedSocket:
    """The connection's socket as the app sees it (``environ["werkzeug.socket"]``): the same
    socket, noting which other threads read it — a websocket library's reader thread belongs
    to the connection and must end with it. (Writers are not noted: any thread may send to
    a websocket, the test's own included.)"""

    def __init__(self, sock: socket.socket, note: Callable[[], None]) -> None:
        self._sock = sock
        self._note = note

    def recv(self, *args: Any) -> bytes:
        self._note()
        return self._sock.recv(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Handler(WSGIRequestHandler):
    """werkzeug's handler, telling the server when a request begins and ends."""

    protocol_version = "HTTP/1.1"  # keep-alive, as werkzeug's threaded server serves
    server: TrackedWSGIServer

    def run_wsgi(self) -> None:
        upgrade = self.headers.get("Upgrade", "").lower() == "websocket"
        path = urlsplit(self.path).path
        if not self.server.begin_request(self.connection, self.command, path, upgrade):
            self.close_connection = True  # stopping: no app code runs any more
            return
        try:
            super().run_wsgi()
        finally:
            if self.server.end_request(self.connection):
                self.close_connection = True  # stopping: no next request on this one

    def make_environ(self) -> WSGIEnvironment:
        environ = super().make_environ()
        connection = self.server.connection_of(self.connection)
        if connection is not None:
            environ["werkzeug.socket"] = _TrackedSocket(
                self.connection, lambda: self.server.note_helper(connection)
            )
            environ[_CONNECTION_KEY] = connection
        return environ


_CONNECTION_KEY = "flask_mdb.testing.connection"


def _noting_responses(app: WSGIApplication) -> WSGIApplication:
    """``app``, marking its connection ``responded`` once the response body is all out."""

    def respond(environ: WSGIEnvironment, start_response: Any) -> Iterable[bytes]:
        connection = environ.get(_CONNECTION_KEY)
        body = app(environ, start_response)
        if connection is None:
            return body
        return _Body(body, connection)

    return respond


class _Body:
    def __init__(self, body: Iterable[bytes], connection: _Connection) -> None:
        self._body = body
        self._connection = connection

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._connection.responded = True

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class TrackedWSGIServer(BaseWSGIServer):
    """werkzeug's server on a thread per connection (``threads=None``) or a pool of
    ``threads`` reused threads, every connection tracked until its thread ends."""

    multithread = True

    def __init__(self, host: str, port: int, app: WSGIApplication, threads: int | None) -> None:
        super().__init__(host, port, _noting_responses(app), handler=_Handler)
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._stopping = False
        self._count = 0
        self._queue: queue.SimpleQueue[_Connection | None] | None = None
        self._workers: list[threading.Thread] = []
        self._accepting: threading.Thread | None = None
        #: Threads that used a finished connection's socket and still ran when it finished.
        self._helpers: set[threading.Thread] = set()
        if threads is not None:
            self._queue = queue.SimpleQueue()
            for number in range(threads):
                worker = threading.Thread(
                    target=self._work, name=f"flask-mdb-live-pool-{number}", daemon=True
                )
                worker.start()
                self._workers.append(worker)

    # --- serving -------------------------------------------------------------------------------

    def start(self) -> None:
        self._accepting = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="flask-mdb-live-server",
            daemon=True,
        )
        self._accepting.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        connection = _Connection(request, client_address)
        with self._lock:
            if self._stopping:
                refused = True
            else:
                refused = False
                self._connections[request] = connection
                self._count += 1
                number = self._count
        if refused:
            self.shutdown_request(request)
        elif self._queue is not None:
            self._queue.put(connection)
        else:
            thread = threading.Thread(
                target=self._serve,
                args=(connection,),
                name=f"flask-mdb-live-request-{number}",
                daemon=True,
            )
            connection.thread = thread
            thread.start()

    def _work(self) -> None:
        assert self._queue is not None
        while (connection := self._queue.get()) is not None:
            connection.thread = threading.current_thread()
            self._serve(connection)

    def _serve(self, connection: _Connection) -> None:
        try:
            if not self._stopping:  # else a connection queued for the pool, never started
                self.finish_request(connection.sock, connection.client_address)
        except Exception:
            if not self._stopping:
                self.handle_error(connection.sock, connection.client_address)
        finally:
            self.shutdown_request(connection.sock)
            with self._lock:
                self._connections.pop(connection.sock, None)
                # A websocket's reader may outlive the serving thread by a moment: it is
                # still the server's until it ends.
                self._helpers = {t for t in self._helpers | connection.helpers if t.is_alive()}

    def begin_request(self, sock: socket.socket, method: str, path: str, upgrade: bool) -> bool:
        """Note the request ``sock`` serves; False once stopping (it must not run)."""
        with self._lock:
            connection = self._connections.get(sock)
            if self._stopping or connection is None:
                return False
            connection.request = connection.last_request = (method, path)
            connection.websocket = upgrade
            connection.responded = False
            connection.started = time.monotonic()
            return True

    def end_request(self, sock: socket.socket) -> bool:
        """Note that ``sock``'s request is done; True once stopping (close the connection)."""
        with self._lock:
            connection = self._connections.get(sock)
            if connection is not None:
                connection.request = None
            return self._stopping

    def connection_of(self, sock: socket.socket) -> _Connection | None:
        with self._lock:
            return self._connections.get(sock)

    def note_helper(self, connection: _Connection) -> None:
        current = threading.current_thread()
        if current is not connection.thread and current not in connection.helpers:
            with self._lock:
                connection.helpers.add(current)

    # --- stopping ------------------------------------------------------------------------------

    def stop(self, timeout: float, close_app_connections: Callable[[], object]) -> None:
        """Stop accepting, let requests in flight finish and close idle connections; close the
        app's websockets (``close_app_connections``, then their sockets after
        :data:`WEBSOCKET_GRACE`); wait until every thread of the server has ended, at most
        ``timeout`` seconds in all. :class:`RequestsStillRunning` names those that had not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
        if self._accepting is not None:
            self.shutdown()  # the accept loop ends within POLL_INTERVAL and closes the listener
        for _ in self._workers:
            assert self._queue is not None
            self._queue.put(None)  # after the connections already queued: those are closed
        close_app_connections()
        self._shut_down(lambda connection: connection.request is None)  # idle keep-alive
        self._wait(min(time.monotonic() + WEBSOCKET_GRACE, deadline), websockets=True)
        self._shut_down(
            lambda connection: (
                connection.websocket or connection.responded or connection.request is None
            )
        )
        self._wait(deadline, websockets=False)
        self.server_close()
        running = self._running()
        if running:
            self._shut_down(lambda connection: True)  # its code fails at its next read or write
            raise RequestsStillRunning(running, timeout)

    def _shut_down(self, which: Callable[[_Connection], bool]) -> None:
        with self._lock:
            chosen = [connection for connection in self._connections.values() if which(connection)]
        for connection in chosen:
            connection.shut_down()

    def _threads(self, websockets: bool) -> list[threading.Thread]:
        """The live threads of the websockets (and of responses reading away a request body:
        shut down with them), or of the whole server."""
        with self._lock:
            connections = list(self._connections.values())
            threads = [] if websockets else [*self._helpers, *self._workers]
        if self._accepting is not None and not websockets:
            threads.append(self._accepting)
        for connection in connections:
            if connection.websocket or connection.responded or not websockets:
                threads += connection.threads()
        current = threading.current_thread()
        return [thread for thread in threads if thread.is_alive() and thread is not current]

    def _wait(self, deadline: float, *, websockets: bool) -> None:
        """Until ``deadline``, wait for the threads :meth:`_threads` names to end."""
        while alive := self._threads(websockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            alive[0].join(min(remaining, POLL_INTERVAL))

    def _running(self) -> list[InFlightRequest]:
        """What still runs: each live thread, with the request it serves (or served last)."""
        now = time.monotonic()
        with self._lock:
            connections = list(self._connections.values())
            helpers = set(self._helpers)
        running: list[InFlightRequest] = []
        owned: set[threading.Thread] = set()
        for connection in connections:
            method, path = connection.request or connection.last_request or ("-", "(none yet)")
            seconds = now - connection.started if connection.started else 0.0
            for thread in connection.threads():
                owned.add(thread)
                if thread.is_alive():
                    running.append(
                        InFlightRequest(method, path, seconds, thread, connection.websocket)
                    )
        for thread in self._threads(websockets=False):
            if thread not in owned:  # a finished websocket's reader, a pool worker, ...
                kind = "websocket reader" if thread in helpers else "server thread"
                running.append(InFlightRequest("-", f"({kind})", 0.0, thread))
        return running
