"""Per-request cost of flask_mdb: the same routes with and without the extension.

Each route runs in-process through Flask's test client (no sockets, so the numbers are the
framework's and the driver's, not the network's), once on a plain Flask app using a raw
pymongo collection, once on a Flask app with ``MDB`` (request binding, CORS hooks, request
metrics) using ``flask_mdb.db``. Both talk to the same server in the same run.

    .venv/bin/python benchmarks/flask_requests.py [--requests 2000]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bson import ObjectId
from flask import Flask
from pymongo import MongoClient

from flask_mdb import MDB, db
from mdb_sync import embedded

DB_NAME = "mdb_bench_flask"


def _plain_app(uri: str) -> tuple[Flask, MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(uri)
    tasks = client[DB_NAME]["plain_tasks"]
    app = Flask("plain")
    known = tasks.insert_one({"title": "x", "app_id": "plain"}).inserted_id

    app.add_url_rule("/empty", "empty", lambda: "ok")
    app.add_url_rule("/find", "find", lambda: {"found": tasks.find_one({"_id": known}) is not None})
    app.add_url_rule(
        "/insert",
        "insert",
        lambda: {"id": str(tasks.insert_one({"title": "y"}).inserted_id)},
        methods=["POST"],
    )
    return app, client


def _mdb_app(uri: str) -> tuple[Flask, MDB]:
    app = Flask("mdb")
    app.config.update(MDB_MONGO_URI=uri, MDB_DB_NAME=DB_NAME, MDB_APP_SLUG="bench")
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


def _compare(plain: Flask, ours: Flask, path: str, requests: int) -> tuple[float, float]:
    """Median µs per request of each app; the two alternate in rounds so that drift (the
    collection growing, other load on the machine) hits both alike."""
    calls = []
    for app in (plain, ours):
        client = app.test_client()
        call: Callable[[], Any] = partial(client.post if path == "/insert" else client.get, path)
        for _ in range(50):  # warm up (the first request connects and registers)
            assert call().status_code == 200
        calls.append(call)
    samples: list[list[float]] = [[], []]
    rounds = 10
    for _ in range(rounds):
        for i, call in enumerate(calls):
            started = time.perf_counter()
            for _ in range(requests // rounds):
                call()
            samples[i].append((time.perf_counter() - started) / (requests // rounds) * 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    plain, client = _plain_app(uri)
    mdb_app, mdb = _mdb_app(uri)
    try:
        rows = []
        for path, what in (
            ("/empty", "route without database"),
            ("/find", "find_one by _id"),
            ("/insert", "insert_one"),
        ):
            rows.append((what, *_compare(plain, mdb_app, path, args.requests)))
        print(f"flask_mdb per request, {args.requests} requests each (median of 10 rounds)\n")
        print(f"| {'route':<24} | {'plain Flask+pymongo':>19} | {'flask_mdb':>10} | {'ratio':>5} |")
        print(f"|{'-' * 26}|{'-' * 21}|{'-' * 12}|{'-' * 7}|")
        for what, base, ours in rows:
            print(f"| {what:<24} | {base:>16.1f} µs | {ours:>7.1f} µs | {ours / base:>5.2f} |")
    finally:
        client.drop_database(DB_NAME)
        client.close()
        mdb.shutdown(mdb_app)
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
