"""Helpers of the realtime tests: collecting events, waiting with a deadline, websocket
clients (real ones, and a raw one that never reads)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from mdb_sync.realtime import Event


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Inbox:
    """A subscriber that keeps every event it is given (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return [e.message for e in self.events]

    def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        wait_for(lambda: len(self.events) >= count, timeout, f"{count} event(s)")
        return self.messages


# --- websocket clients ----------------------------------------------------------------------------


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1) + path


def connect(url: str, **options: Any) -> tuple[websocket.WebSocket, dict[str, Any]]:
    """A real websocket client, after the server's ``connected`` frame."""
    ws = websocket.create_connection(url, timeout=10, **options)
    hello = json.loads(ws.recv())
    assert hello["type"] == "connected", hello
    return ws, hello


def recv_json(ws: websocket.WebSocket) -> Any:
    """The next message (websocket-client answers pings itself, and returns them as "")."""
    while True:
        data = ws.recv()
        if data:
            return json.loads(data)


def close_frame(ws: websocket.WebSocket) -> tuple[int | None, str]:
    """Read until the server's close frame; return its code and reason."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(data) < 2:
                return None, ""
            return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace")


def raw_client(base: str, path: str, receive_buffer: int | None = None) -> socket.socket:
    """A websocket client that completes the handshake and then does nothing at all: it
    neither reads nor answers pings (``receive_buffer`` shrinks its socket buffer)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, "the server closed the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


# --- a second server process ----------------------------------------------------------------------


def token_identity(token: str, app_slug: str) -> dict[str, Any] | None:
    """The tests' token verifier: ``good-<user>`` is a valid token of ``<user>`` for any
    app (roles after a ``~``: ``good-ada~member~staff``)."""
    if not token.startswith("good-"):
        return None
    user, *roles = token.removeprefix("good-").split("~")
    return {"user_id": user, "email": f"{user}@example.com", "app": app_slug, "roles": roles}


def build_app(config: dict[str, Any], name: str = "second") -> Any:
    """A Flask app with the MDB extension, ``config`` and the tests' token verifier."""
    from flask import Flask

    from flask_mdb import MDB
    from flask_mdb.identity import register_token_verifier

    app = Flask(name)
    app.config.update(config)
    MDB(app)
    register_token_verifier(app, token_identity)
    return app


#: A second web process: :func:`build_app` with the JSON config of argv[2], served on a
#: port of its own (printed on its first line). argv[1]: the tests directory.
SERVER_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from werkzeug.serving import make_server
from realtime_support import build_app
app = build_app(json.loads(sys.argv[2]))
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.port, flush=True)
server.serve_forever()
"""


class ServerProcess:
    """:data:`SERVER_SCRIPT` running in a process of its own (``pid``, ``url``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        tests = str(Path(__file__).resolve().parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, tests, json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise AssertionError(f"the second server did not start: {self.proc.stderr.read()}")
        self.url = f"http://127.0.0.1:{line}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def open_from(
    base: str, path: str, address: str, token: str | None = None
) -> tuple[websocket.WebSocket, Any]:
    """A real websocket client connecting from loopback ``address`` (127.0.0.2, ...):
    ``(ws, hello)`` with the server's ``connected`` frame, or ``(ws, (code, reason))`` when
    the server closed the connection instead."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30, source_address=(address, 0))
    header = [f"Authorization: Bearer {token}"] if token else None
    ws = websocket.create_connection(
        f"ws://{host}:{port}{path}", socket=sock, timeout=30, header=header
    )
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(data) < 2:
                return ws, (None, "")
            return ws, (struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace"))
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return ws, json.loads(data)


class DeflateClient:
    """A websocket client that negotiates ``permessage-deflate``, as browsers do (wsproto's
    client side over a plain socket): the server compresses each frame for it."""

    def __init__(self, base: str, path: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self.ws.send(
                Request(host=f"{host}:{port}", target=path, extensions=[PerMessageDeflate()])
            )
        )
        self._pending: list[Any] = []
        accepted = self._next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        self.extensions = [e.name for e in accepted.extensions]

    def _next_event(self) -> Any:
        while not self._pending:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.ws.receive_data(data)
            self._pending.extend(self.ws.events())
        return self._pending.pop(0)

    def receive_json(self) -> Any:
        text = ""
        while True:
            event = self._next_event()
            if isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return json.loads(text)

    def close(self) -> None:
        self.sock.close()
