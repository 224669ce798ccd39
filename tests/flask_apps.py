"""Helpers of the Flask extension's tests: app factories and a real threaded WSGI server."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask

from flask_mdb import MDB
from flask_mdb.testing import LiveServer


class AppFactory:
    """Builds Flask apps on the test's server and database, and shuts their engines down."""

    def __init__(self, mongo_uri: str, db_name: str, recorder: Any = None) -> None:
        self.mongo_uri = mongo_uri
        self.db_name = db_name
        self.recorder = recorder
        self._made: list[tuple[MDB, Flask]] = []

    def config(self, **config: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "TESTING": True,
            "MDB_MONGO_URI": self.mongo_uri,
            "MDB_DB_NAME": self.db_name,
        }
        if self.recorder is not None:
            base["MDB_CLIENT_OPTIONS"] = {"event_listeners": [self.recorder]}
        base.update(config)
        return base

    def __call__(self, mdb: MDB | None = None, name: str = "app", **config: Any) -> Flask:
        app = Flask(name)
        app.config.update(self.config(**config))
        mdb = mdb or MDB()
        mdb.init_app(app)
        self._made.append((mdb, app))
        return app

    def close(self) -> None:
        for mdb, app in self._made:
            mdb.shutdown(app)


def path_prefix_resolver(request: Any) -> str | None:
    """``/acme/...`` -> ``acme`` (an import-string resolver for the tests)."""
    return (request.view_args or {}).get("tenant")


def free_port() -> int:
    """A local TCP port nobody listens on (for now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Client options that make a connection to an unreachable server fail fast.
FAIL_FAST = {"serverSelectionTimeoutMS": 300}


def unreachable_uri(credentials: str = "") -> str:
    """A MongoDB URI of a local port nobody listens on."""
    return f"mongodb://{credentials}127.0.0.1:{free_port()}/?directConnection=true"


def write_manifest(directory: Path, slug: str, **keys: Any) -> Path:
    path = directory / f"{slug}.json"
    path.write_text(json.dumps({"slug": slug, "name": slug, **keys}), encoding="utf-8")
    return path


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server on 127.0.0.1; yield its base URL."""
    with LiveServer(app) as server:
        yield server.url


def http(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """A real HTTP request: ``(status, headers, JSON body or text)``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, head = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, head = exc.code, exc.read(), dict(exc.headers)
    text = raw.decode()
    try:
        return status, head, json.loads(text)
    except ValueError:
        return status, head, text
