"""Helpers of the realtime tests: collecting events, waiting with a deadline, websocket
clients (real ones, and a raw one that never reads)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import websocket

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
