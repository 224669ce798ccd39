"""Per-request cost of flask_mdb: the same routes with and without the extension.

Each route runs in-process through Flask's test client (no sockets, so the numbers are the
framework's and the driver's, not the network's), once on a plain Flask app using a raw
pymongo collection (a plain ``MongoClient()``), once on a Flask app with ``MDB`` (request
binding and correlation id, CORS, request metrics; no auth) using ``flask_mdb.db``. Both talk
to the same server in the same run.

For each route: client CPU µs per request (``time.thread_time()``; the server is another
process, and the test client runs the request on the calling thread); each round runs
plain, flask_mdb, flask_mdb, plain (a load drifting during the round weighs on both alike);
the medians over the rounds (of each side's µs, and of the per-round ratios); and the
database commands each request sends (from a separate, untimed pass on clients with a
recording listener).

    .venv/bin/python benchmarks/flask_requests.py [--requests 2000] [--rounds 7] [--runs 1]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bson import ObjectId
from compare import (
    CommandCounter,
    Row,
    arguments,
    commands_per_call,
    compare,
    print_table,
    repeated,
)
from flask import Flask
from pymongo import MongoClient

from flask_mdb import MDB, db
from mdb_sync import embedded

ROUTES = (
    ("/empty", "route without database"),
    ("/find", "find_one by _id"),
    ("/insert", "insert_one"),
)


def _plain_app(uri: str, db_name: str, listeners: list[Any]) -> tuple[Flask, MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(uri, event_listeners=listeners)
    tasks = client[db_name]["plain_tasks"]
    app = Flask("plain")
    known = tasks.insert_one({"title": "x", "app_id": "plain"}).inserted_id

    app.add_url_rule("/empty", "empty", lambda: "ok")
    app.add_url_rule("/find", "find", lambda: {"found": tasks.find_one({"_id": known}) is not None})
    app.add_url_rule(
        "/insert",
        "insert",
        lambda: {"id": str(tasks.insert_one({"title": "y", "app_id": "plain"}).inserted_id)},
        methods=["POST"],
    )
    return app, client


def _mdb_app(uri: str, db_name: str, listeners: list[Any]) -> tuple[Flask, MDB]:
    app = Flask("mdb")
    app.config.update(
        MDB_MONGO_URI=uri,
        MDB_DB_NAME=db_name,
        MDB_APP_SLUG="bench",
        MDB_CLIENT_OPTIONS={"event_listeners": listeners} if listeners else {},
    )
    mdb = MDB(app)
    known: list[ObjectId] = []

    def find() -> dict[str, bool]:
        if not known:
            known.append(db.tasks.insert_one({"title": "x"}).inserted_id)
        return {"found": db.tasks.find_one({"_id": known[0]}) is not None}

    app.add_url_rule("/empty", "empty", lambda: "ok")
    app.add_url_rule("/find", "find", find)
    app.add_url_rule(
        "/insert",
        "insert",
        lambda: {"id": str(db.tasks.insert_one({"title": "y"}).inserted_id)},
        methods=["POST"],
    )
    return app, mdb


def _call(app: Flask, path: str) -> Callable[[int], Any]:
    """``call(i)``: one request to ``path`` on a test client of ``app`` (``i`` unused)."""
    client = app.test_client()
    send = client.post if path == "/insert" else client.get

    def call(_i: int = 0) -> Any:
        return send(path)

    for _ in range(50):  # warm up (the first request connects and registers)
        assert call().status_code == 200
    return call


def measure(requests: int, rounds: int) -> list[Row]:
    """One run: every route, then its commands per request."""
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    db_name = f"bench_flask_requests_{uuid.uuid4().hex[:8]}"
    plain, client = _plain_app(uri, db_name, [])
    ours, mdb = _mdb_app(uri, db_name, [])
    plain_counter, ours_counter = CommandCounter(), CommandCounter()
    plain_counted, counted_client = _plain_app(uri, db_name, [plain_counter])
    ours_counted, mdb_counted = _mdb_app(uri, db_name, [ours_counter])
    try:
        rows = []
        for path, what in ROUTES:
            per_block = max(1, requests // rounds // 2)
            row = compare(what, _call(plain, path), _call(ours, path), per_block, rounds)
            row.commands = (
                commands_per_call(_call(plain_counted, path), plain_counter, 50),
                commands_per_call(_call(ours_counted, path), ours_counter, 50),
            )
            rows.append(row)
        return rows
    finally:
        for app, extension in ((ours, mdb), (ours_counted, mdb_counted)):
            extension.shutdown(app)
        client.drop_database(db_name)
        client.close()
        counted_client.close()
        if server is not None:
            embedded.stop_private(server)


def main() -> None:
    parser = arguments(__doc__, requests=(int, 2000, "requests per route"))
    args, _ = parser.parse_known_args()
    rows = repeated(args.runs, lambda: measure(args.requests, args.rounds))
    print(
        f"flask_mdb per request, {args.requests} requests per route, {args.rounds} rounds "
        f"interleaved, {args.runs} run(s), medians (client CPU µs per request)\n"
    )
    print_table(("route", "plain Flask+pymongo", "flask_mdb"), rows)


if __name__ == "__main__":
    main()
