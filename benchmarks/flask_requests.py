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

    .venv/bin/python benchmarks/flask_requests.py [--requests 2000] [--rounds 7]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bson import ObjectId
from flask import Flask
from pymongo import MongoClient, monitoring

from flask_mdb import MDB, db
from mdb_sync import embedded

ROUTES = (
    ("/empty", "route without database"),
    ("/find", "find_one by _id"),
    ("/insert", "insert_one"),
)


class Counter(monitoring.CommandListener):
    """Counts the commands a client sends (for the untimed pass only)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


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


def _call(app: Flask, path: str) -> Callable[[], Any]:
    client = app.test_client()
    call: Callable[[], Any] = partial(client.post if path == "/insert" else client.get, path)
    for _ in range(50):  # warm up (the first request connects and registers)
        assert call().status_code == 200
    return call


def _cpu_us(call: Callable[[], Any], requests: int) -> float:
    started = time.thread_time()
    for _ in range(requests):
        call()
    return (time.thread_time() - started) / requests * 1e6


def _compare(plain: Flask, ours: Flask, path: str, requests: int, rounds: int) -> tuple[float, ...]:
    """``(plain µs, flask_mdb µs, median per-round ratio)``, rounds interleaved."""
    plain_call, ours_call = _call(plain, path), _call(ours, path)
    samples: tuple[list[float], list[float]] = ([], [])
    half = max(1, requests // rounds // 2)
    for _ in range(rounds):
        first = _cpu_us(plain_call, half)
        samples[1].append((_cpu_us(ours_call, half) + _cpu_us(ours_call, half)) / 2)
        samples[0].append((first + _cpu_us(plain_call, half)) / 2)
    ratio = statistics.median(o / p for p, o in zip(*samples, strict=True))
    return statistics.median(samples[0]), statistics.median(samples[1]), ratio


def _commands(app: Flask, path: str, counter: Counter, requests: int = 50) -> float:
    call = _call(app, path)
    before = counter.count
    for _ in range(requests):
        call()
    return (counter.count - before) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per route")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    db_name = f"bench_flask_requests_{uuid.uuid4().hex[:8]}"
    plain, client = _plain_app(uri, db_name, [])
    ours, mdb = _mdb_app(uri, db_name, [])
    plain_counter, ours_counter = Counter(), Counter()
    plain_counted, counted_client = _plain_app(uri, db_name, [plain_counter])
    ours_counted, mdb_counted = _mdb_app(uri, db_name, [ours_counter])
    try:
        rows = []
        for path, what in ROUTES:
            measured = _compare(plain, ours, path, args.requests, args.rounds)
            commands = (
                _commands(plain_counted, path, plain_counter),
                _commands(ours_counted, path, ours_counter),
            )
            rows.append((what, *measured, commands))
        print(
            f"flask_mdb per request, {args.requests} requests per route, {args.rounds} rounds "
            "interleaved, medians (client CPU µs per request)\n"
        )
        header = (
            f"| {'route':<24} | {'plain Flask+pymongo':>19} | {'flask_mdb':>10} | {'ratio':>5} "
            f"| {'commands plain/ours':>19} |"
        )
        print(header)
        print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
        for what, base, ours_us, ratio, (plain_n, ours_n) in rows:
            print(
                f"| {what:<24} | {base:>16.1f} µs | {ours_us:>7.1f} µs | {ratio:>5.2f} "
                f"| {f'{plain_n:g} / {ours_n:g}':>19} |"
            )
    finally:
        for app, extension in ((ours, mdb), (ours_counted, mdb_counted)):
            extension.shutdown(app)
        client.drop_database(db_name)
        client.close()
        counted_client.close()
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
