"""Broadcast latency to 100 connected websocket clients, against the seeds' "< 10 ms" claim.

A Flask app with a manifest websocket endpoint runs on werkzeug's threaded server on
127.0.0.1; a second process holds the clients (one thread each, real websocket-client
connections) and stamps every message it receives with the system's monotonic clock, which
every process shares. Each message carries its publish time, so a delivery's latency is
receive time minus publish time. Scenarios, in the same run:

* ``naive flask-sock loop`` — the baseline users write by hand: a plain flask-sock route
  keeping its sockets in a list, and the publisher calling ``ws.send`` on each in turn.
* ``local (local_only)`` — ``broadcast_to_app(..., local_only=True)`` in the web process:
  the connection manager's queues and writer threads, no database.
* ``local`` — ``broadcast_to_app`` in the web process: delivered locally at once, and also
  stored for other processes.
* ``other process, change stream`` / ``other process, tailable`` — a second process (a
  script, a Celery worker) publishes; the web process's listener picks the event up from
  MongoDB and delivers it.
* ``raw change stream (no websockets)`` — pymongo alone: insert in one process, ``watch()``
  in another; the floor for the cross-process rows.

Reported per scenario: p50 and p99 of every delivery, and p50/p99 of the time until *all* 100
clients had the message ("fan-out").

    .venv/bin/python benchmarks/broadcast.py [--clients 100] [--messages 200] [--interval 0.02]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SLUG = "bench_live"


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- the clients' process -------------------------------------------------------------------------


def run_clients(url: str, count: int) -> None:
    """Open ``count`` connections, say "ready", record (seq, receive time) until "stop"."""
    import websocket

    received: list[list[tuple[int, float]]] = [[] for _ in range(count)]
    sockets = []
    for _ in range(count):
        ws = websocket.create_connection(url, timeout=60)
        if "/bench-naive" not in url:
            ws.recv()  # the "connected" frame
        sockets.append(ws)

    def read(i: int, ws: Any) -> None:
        while True:
            try:
                data = ws.recv()
            except Exception:
                return
            stamp = now()
            if data:
                received[i].append((json.loads(data)["seq"], stamp))

    threads = [
        threading.Thread(target=read, args=(i, ws), daemon=True) for i, ws in enumerate(sockets)
    ]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    sys.stdin.readline()  # "stop"
    for ws in sockets:
        ws.close()
    print(json.dumps(received), flush=True)


# --- a publisher in another process -------------------------------------------------------------


def run_publisher(uri: str, db: str, messages: int, interval: float, mode: str) -> None:
    from mdb_sync import MongoDBEngine
    from mdb_sync.realtime import broadcast_to_app

    with MongoDBEngine(uri, db) as engine:
        engine.events.configure(mode=mode)
        for seq in range(messages):
            broadcast_to_app(SLUG, {"seq": seq, "t": now(), "run": mode})
            time.sleep(interval)


def run_raw_watcher(uri: str, db: str, messages: int) -> None:
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(uri)
    latencies = []
    with client[db]["raw_events"].watch([{"$match": {"operationType": "insert"}}]) as stream:
        print("ready", flush=True)
        for change in stream:
            latencies.append(now() - change["fullDocument"]["t"])
            if len(latencies) == messages:
                break
    print(json.dumps(latencies), flush=True)


# --- the web process ------------------------------------------------------------------------------


class Clients:
    """The clients' process."""

    def __init__(self, url: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", "clients", "--url", url, "--clients", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def finish(self, sent: dict[int, float], settle: float = 1.0) -> dict[str, float]:
        time.sleep(settle)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        received = json.loads(self.proc.stdout.readline())
        self.proc.wait(30)
        return summarize(sent, received)


def summarize(sent: dict[int, float], received: list[list[list[float]]]) -> dict[str, float]:
    deliveries: list[float] = []
    fanout: dict[int, float] = {}
    for client in received:
        for seq, stamp in client:
            if int(seq) in sent:
                latency = (stamp - sent[int(seq)]) * 1000.0
                deliveries.append(latency)
                fanout[int(seq)] = max(fanout.get(int(seq), 0.0), latency)
    expected = len(sent) * len(received)
    return {
        "p50": percentile(deliveries, 50),
        "p99": percentile(deliveries, 99),
        "fan_p50": percentile(list(fanout.values()), 50),
        "fan_p99": percentile(list(fanout.values()), 99),
        "delivered": len(deliveries) / expected if expected else 0.0,
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="main")
    parser.add_argument("--url")
    parser.add_argument("--uri")
    parser.add_argument("--db")
    parser.add_argument("--mode", default="change_stream")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    if args.role == "clients":
        return run_clients(args.url, args.clients)
    if args.role == "publisher":
        return run_publisher(args.uri, args.db, args.messages, args.interval, args.mode)
    if args.role == "raw_watcher":
        return run_raw_watcher(args.uri, args.db, args.messages)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from flask import Flask
    from pymongo import MongoClient
    from werkzeug.serving import make_server

    from flask_mdb import MDB, broadcast_to_app, get_websocket_manager
    from mdb_sync import embedded

    uri = os.environ.get("MDB_MONGO_URI")
    server = None
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    db_name = f"bench_broadcast_{os.getpid()}"
    manifests = Path(tempfile.mkdtemp())
    (manifests / "bench.json").write_text(
        json.dumps({"slug": SLUG, "websockets": {"live": {"path": "/ws", "ping_interval": 0}}})
    )
    app = Flask("bench")
    app.config.update(MDB_MONGO_URI=uri, MDB_DB_NAME=db_name, MDB_MANIFESTS=str(manifests))
    mdb = MDB(app)
    naive: list[Any] = []
    naive_lock = threading.Lock()

    sock = app.extensions["mdb_websockets"].sock

    @sock.route("/bench-naive")
    def naive_route(ws: Any) -> None:
        with naive_lock:
            naive.append(ws)
        while ws.receive() is not None:
            pass

    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"ws://127.0.0.1:{http.port}"
    engine = mdb.get_engine(app)
    rows: list[tuple[str, dict[str, float]]] = []

    def stamp_and(publish: Any) -> dict[int, float]:
        sent = {}
        for seq in range(args.messages):
            sent[seq] = now()
            publish({"seq": seq, "t": sent[seq]}, seq)
            time.sleep(args.interval)
        return sent

    try:
        # Baseline: the naive loop over flask-sock sockets.
        clients = Clients(f"{base}/bench-naive", args.clients)

        def naive_send(message: dict[str, Any], seq: int) -> None:
            text = json.dumps(message)
            for ws in list(naive):
                ws.send(text)

        rows.append(("naive flask-sock loop", clients.finish(stamp_and(naive_send))))
        for ws in naive:
            with contextlib.suppress(Exception):  # the clients closed them already
                ws.close()

        with app.app_context():
            manager = get_websocket_manager(SLUG)
        for label, local_only in (("local (local_only)", True), ("local", False)):
            clients = Clients(f"{base}/ws", args.clients)
            sent = stamp_and(
                lambda m, s, lo=local_only: broadcast_to_app(SLUG, m, local_only=lo, app=app)
            )
            rows.append((label, clients.finish(sent)))

        for mode in ("change_stream", "tailable"):
            engine.events.configure(mode=mode)  # restarts the web process's listener
            clients = Clients(f"{base}/ws", args.clients)
            assert manager.connection_count == args.clients
            assert engine.events.listening_mode == mode
            publisher = subprocess.Popen(
                [
                    sys.executable, __file__, "--role", "publisher", "--uri", uri,
                    "--db", db_name, "--messages", str(args.messages),
                    "--interval", str(args.interval), "--mode", mode,
                ]
            )  # fmt: skip
            publisher.wait(300)
            # The publisher stamped its messages: read the stamps back from the events.
            sent = {}
            for doc in engine._raw_collection("mdb_events").find({"app_id": SLUG}):
                message = json.loads(doc["data"])
                if message.get("run") == mode:
                    sent[message["seq"]] = message["t"]
            rows.append((f"other process, {mode}", clients.finish(sent)))

        # The floor: pymongo's change stream alone, process to process.
        watcher = subprocess.Popen(
            [
                sys.executable, __file__, "--role", "raw_watcher", "--uri", uri,
                "--db", db_name, "--messages", str(args.messages),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
        raw = MongoClient(uri)[db_name]["raw_events"]
        for _ in range(args.messages):
            raw.insert_one({"t": now()})
            time.sleep(args.interval)
        latencies = [x * 1000.0 for x in json.loads(watcher.stdout.readline())]
        watcher.wait(30)
        raw.database.client.close()
        rows.append(
            (
                "raw change stream (no websockets)",
                {
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "fan_p50": float("nan"),
                    "fan_p99": float("nan"),
                    "delivered": 1.0,
                },
            )
        )
    finally:
        mdb.shutdown(app)
        http.shutdown()
        MongoClient(uri).drop_database(db_name)
        if server is not None:
            embedded.stop_private(server)

    print(
        f"\nBroadcast latency to {args.clients} websocket clients, {args.messages} messages "
        f"every {args.interval * 1000:g} ms (ms; the seeds claim < 10 ms)\n"
    )
    header = (
        f"{'scenario':<36}{'p50':>8}{'p99':>8}{'fan-out p50':>13}{'fan-out p99':>13}"
        f"{'delivered':>11}{'< 10 ms (p99 fan-out)':>23}"
    )
    print(header)
    print("-" * len(header))
    for label, row in rows:
        fan = row["fan_p99"] if row["fan_p99"] == row["fan_p99"] else row["p99"]
        print(
            f"{label:<36}{row['p50']:>8.2f}{row['p99']:>8.2f}{row['fan_p50']:>13.2f}"
            f"{row['fan_p99']:>13.2f}{row['delivered']:>10.0%} {'yes' if fan < 10 else 'no':>22}"
        )


if __name__ == "__main__":
    main()
