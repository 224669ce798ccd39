"""Helpers of the websocket attack tests: the app under attack, a browser over real HTTP
from a loopback address of its own, an attacker's websocket from another, and reading what
the attacker's socket receives until the server closes it.

The app is built the same way in the test process and in a second server process
(``python -c SECOND_SERVER ...``), so a socket can live in another process than the one
where the victim acts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import websocket
from auth_apps import PASSWORD, auth_config, auth_manifest, header_resolver, write
from flask import Flask, request

from flask_mdb import db
from flask_mdb.auth import require_role
from flask_mdb.auth.current import require_service
from flask_mdb.websockets import register_message_handler

VICTIM_ADDRESS = "127.0.0.2"
ATTACKER_ADDRESS = "127.0.0.3"
ADMIN_ADDRESS = "127.0.0.4"


def ws_manifest(slug: str, **users: Any) -> dict[str, Any]:
    """An app with users, tokens, an access policy (roles ``user`` or ``admin`` may use it)
    and a websocket endpoint that requires sign-in."""
    manifest = auth_manifest(slug)
    manifest["auth"]["policy"]["allowed_roles"] = ["user", "admin"]
    manifest["auth"]["users"].update(users)
    manifest["websockets"] = {"live": {"path": f"/{slug}/ws", "auth": {"required": True}}}
    return manifest


def write_manifests(directory: Path, *manifests: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for manifest in manifests:
        write(directory, manifest)
    return directory


def app_config(mongo_uri: str, db_name: str, manifests: Path, **config: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "MDB_MONGO_URI": mongo_uri,
        "MDB_DB_NAME": db_name,
        "MDB_MANIFESTS": str(manifests),
        "MDB_APP_RESOLVER": header_resolver,
        **auth_config(**config),
    }


def note(connection: Any, message: Any) -> dict[str, Any]:
    """The message handler under attack: it acts as the connection's user (records a note
    in the app's database)."""
    db.notes.insert_one({"user_id": connection.user_id, "text": message.get("text")})
    return {"type": "noted"}


def install(app: Flask, slugs: list[str]) -> Flask:
    """The handler and the administration views of the app under attack."""
    for slug in slugs:
        register_message_handler(slug, note, message_type="note")

    @app.post("/admin/users/<user_id>/deactivate")
    @require_role("admin")
    def admin_deactivate(user_id: str) -> Any:
        require_service().deactivate(user_id)
        return {"deactivated": True}

    @app.post("/admin/users/<user_id>/roles")
    @require_role("admin")
    def admin_roles(user_id: str) -> Any:
        user = require_service().set_roles(user_id, (request.get_json() or {})["roles"])
        return {"roles": user["roles"]}

    return app


#: A second server process: the same app on the same database, on a port of its own
#: (printed on its first line). argv: mongo_uri db_name manifests_dir tests_dir slugs...
SECOND_SERVER = """
import sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/security"]
from flask import Flask
from werkzeug.serving import make_server
from ws_security_support import app_config, install
from flask_mdb import MDB
app = Flask("second")
app.config.update(app_config(sys.argv[1], sys.argv[2], sys.argv[3]))
MDB(app)
install(app, sys.argv[5:])
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.port, flush=True)
server.serve_forever()
"""


# --- a browser over real HTTP -------------------------------------------------------------------


class Browser:
    """An HTTP client with a cookie jar, connecting from its own loopback ``address``; sends
    ``X-App: slug`` (the app resolver of the tests) and the CSRF token on unsafe requests."""

    def __init__(self, base: str, slug: str, address: str = VICTIM_ADDRESS) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port, self.slug, self.address = host, int(port), slug, address
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        sent = {"X-App": self.slug, "Accept": "application/json", **(headers or {})}
        if method not in ("GET", "HEAD") and token is None:
            sent["X-CSRF-Token"] = self.csrf()  # first: it may set the CSRF seed cookie
        if self.cookies and token is None:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=30, source_address=(self.address, 0)
        )
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            self._keep(response.msg.get_all("Set-Cookie") or [])
            status = response.status
        finally:
            conn.close()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def _keep(self, headers: list[str]) -> None:
        for header in headers:
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if not morsel.value or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def csrf(self) -> str:
        status, body = self.request("GET", "/auth/csrf")
        assert status == 200, body
        return str(body["csrf_token"])

    def register(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = self.request(
            "POST", "/auth/register", {"email": email, "password": password}
        )
        assert status == 201, body
        return body  # type: ignore[no-any-return]

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = self.request("POST", "/auth/login", {"email": email, "password": password})
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def token(self, email: str, password: str = PASSWORD) -> str:
        status, body = self.request("POST", "/auth/token", {"email": email, "password": password})
        assert status == 200, body
        return str(body["access_token"])

    @property
    def session(self) -> str:
        return self.cookies[f"{self.slug}_session"]


# --- the attacker's websocket ---------------------------------------------------------------------


def open_socket(
    base: str,
    path: str,
    *,
    address: str = ATTACKER_ADDRESS,
    cookies: dict[str, str] | None = None,
    token: str | None = None,
) -> tuple[websocket.WebSocket, dict[str, Any]]:
    """A real websocket client from ``address``, after the server's ``connected`` frame
    (AssertionError with the close frame if the server refused it)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10, source_address=(address, 0))
    options: dict[str, Any] = {}
    if cookies:
        options["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if token is not None:
        options["header"] = [f"Authorization: Bearer {token}"]
    ws = websocket.create_connection(
        f"ws://{host}:{port}{path}", socket=sock, timeout=10, **options
    )
    frames, closed = read_frames(ws, 1)
    assert closed is None and frames, f"refused: {closed}"
    hello = frames[0]
    assert hello["type"] == "connected", hello
    return ws, hello


def read_frames(
    ws: websocket.WebSocket, count: int | None = None, timeout: float = 10.0
) -> tuple[list[Any], tuple[int | None, str] | None]:
    """What the server sends — JSON messages, and ``{"pong": ...}`` for each protocol pong —
    until ``count`` of them, the server's close frame, or ``timeout`` seconds of silence
    (never longer); with the close ``(code, reason)`` if it came."""
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while count is None or len(frames) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            return frames, None
        ws.settimeout(left)
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return frames, None
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return frames, (None, "connection dropped without a close frame")
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            if len(data) < 2:
                return frames, (None, "")
            return frames, (struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace"))
        if opcode == websocket.ABNF.OPCODE_PONG:
            frames.append({"pong": data.decode("utf-8", "replace")})
        elif opcode == websocket.ABNF.OPCODE_TEXT:
            frames.append(json.loads(data))
    return frames, None


def refused(base: str, path: str, **options: Any) -> tuple[int | None, str]:
    """The close frame of a handshake the server refuses (after the upgrade)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection(
        (host, int(port)), timeout=10, source_address=(ATTACKER_ADDRESS, 0)
    )
    extra: dict[str, Any] = {}
    if options.get("cookies"):
        extra["cookie"] = "; ".join(f"{k}={v}" for k, v in options["cookies"].items())
    if options.get("token"):
        extra["header"] = [f"Authorization: Bearer {options['token']}"]
    ws = websocket.create_connection(f"ws://{host}:{port}{path}", socket=sock, timeout=10, **extra)
    try:
        frames, closed = read_frames(ws)
    finally:
        ws.close()
    assert closed is not None, f"not refused: {frames}"
    return closed


def try_send(ws: websocket.WebSocket, message: Any) -> None:
    """Send as the attacker would, whether or not the server has shut the socket yet."""
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.send(json.dumps(message))


def try_ping(ws: websocket.WebSocket, payload: str) -> None:
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.ping(payload)
