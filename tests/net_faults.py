"""Misbehaving servers on 127.0.0.1, for the tests of bounded network calls.

:func:`fault_server` accepts connections and hands each (after reading the first bytes of its
request) to a handler in a thread: one that never answers, one that drips its answer's body
or its status line and headers a byte at a time, one that serves a fixed answer. It records
the first bytes of each request and when each handler ended — for the handlers that wait on
the client, the moment the client hung up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

#: How long a misbehaving handler keeps at it (the tests' bounds are far shorter).
HOLD = 60.0


@dataclass
class FaultServer:
    port: int
    #: The first bytes of each request received (up to 4 KiB).
    requests: list[bytes] = field(default_factory=list)
    #: ``time.monotonic()`` when each handler ended (the client hung up, or it gave up).
    ended: list[float] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ended(self, count: int, timeout: float) -> bool:
        """Whether ``count`` handlers ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.ended) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


#: ``handle(connection, first bytes of its request, server)``.
Handler = Callable[[socket.socket, bytes, FaultServer], None]


@contextmanager
def fault_server(handle: Handler) -> Iterator[FaultServer]:
    """A TCP server on 127.0.0.1 handing each connection to ``handle`` (in a thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    server = FaultServer(listener.getsockname()[1])
    stop = threading.Event()
    held: list[socket.socket] = []

    def run(conn: socket.socket, request: bytes) -> None:
        try:
            handle(conn, request, server)
        except OSError:
            pass
        finally:
            server.ended.append(time.monotonic())
            with suppress(OSError):
                conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            conn.settimeout(5)
            try:
                request = conn.recv(4096)
            except OSError:
                request = b""
            server.requests.append(request)
            threading.Thread(target=run, args=(conn, request), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        server.release.set()
        thread.join(5)
        listener.close()
        for conn in held:
            with suppress(OSError):
                conn.close()


def never_answer(conn: socket.socket, request: bytes, server: FaultServer) -> None:
    """Reads on and answers nothing until the client hangs up (or :data:`HOLD` passes)."""
    conn.settimeout(HOLD)
    while conn.recv(65536):
        pass


def hold_until_released(conn: socket.socket, request: bytes, server: FaultServer) -> None:
    """Answers nothing and keeps the connection until the test sets ``server.release``
    (then closes it)."""
    server.release.wait(HOLD)


def drip_body(conn: socket.socket, request: bytes, server: FaultServer) -> None:
    """Valid headers at once, then a body of 4 MB announced, sent a byte per 0.1 s."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n")
    drip(conn, b"x" * int(HOLD * 10))


def drip_headers(conn: socket.socket, request: bytes, server: FaultServer) -> None:
    """The status line and headers a byte per 0.1 s (each byte well within any socket
    timeout), never finished."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 40) for i in range(100))
    drip(conn, head + filler)


def drip(conn: socket.socket, data: bytes, every: float = 0.1) -> None:
    """Send ``data`` a byte per ``every`` seconds (until the client hangs up)."""
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        time.sleep(every)


def serve(body: bytes, status: str = "200 OK") -> Handler:
    """A handler answering ``body`` at once."""

    def handle(conn: socket.socket, request: bytes, server: FaultServer) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)

    return handle
