"""Broadcast latency to 100 connected websocket clients, against the seeds' "< 10 ms" claim —
before and after, interleaved, and where the time goes.

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
* ``other process, channel`` — the same to a channel all 100 clients joined (code that has
  channels only).
* ``raw change stream (no websockets)`` — pymongo alone: insert in one process, ``watch()``
  in another; the floor for the cross-process rows.

**Before and after.** ``--baseline REF`` (default: the commit this work started from) is
exported with ``git archive`` and measured in the same way, in separate processes, rounds
interleaved (before, after, after, before, ...) so that the load other programs put on the
machine falls on both alike. Reported per scenario and code: the median over the rounds of
each round's p50 and p99, and the p99 of every delivery of every round pooled.

**Where the time goes** (other process, change stream): the publisher records how long its
publish call takes; in the web process a subscriber registered before the connection
manager records when the listener hands the event over, one registered after it when the
manager has written it to the 100 sockets (or queued it); the clients record when they
read it. Each stage is measured from the publisher's stamp.

**Why the "before" was slow.** The embedded server (SecantusDB) enforces a capped
collection's bounds by scanning the whole collection on every insert, so publishing into the
capped ``mdb_events`` cost time proportional to the events it held; the last table measures
an insert into a capped and into a plain collection holding N events. The bus now keeps
events in a plain collection, trimmed in the background, on such servers
(:mod:`mdb_sync.realtime.store`).

    .venv/bin/python benchmarks/broadcast.py [--clients 100] [--messages 200]
        [--interval 0.02] [--rounds 3] [--baseline REF|none]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLUG = "bench_live"
#: The main branch before channels, cross-process limits and the plain event store (as merged
#: into: main at the 'context' merge; d7b40f4 is where this work started).
DEFAULT_BASELINE = "3aa010f"


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[index]


# --- the clients' process -------------------------------------------------------------------------


def run_clients(url: str, count: int, channel: str | None) -> None:
    """Open ``count`` connections (joining ``channel``), say "ready", record (seq, receive
    time) until "stop"."""
    import websocket

    received: list[list[tuple[int, float]]] = [[] for _ in range(count)]
    sockets = []
    for _ in range(count):
        ws = websocket.create_connection(url, timeout=60)
        if "/bench-naive" not in url:
            ws.recv()  # the "connected" frame
        if channel:
            ws.send(json.dumps({"type": "subscribe", "channel": channel}))
            assert json.loads(ws.recv())["type"] == "subscribed"
        sockets.append(ws)

    def read(i: int, ws: Any) -> None:
        while True:
            try:
                data = ws.recv()
            except Exception:
                return
            stamp = now()
            if data:
                message = json.loads(data)
                if "seq" in message:
                    received[i].append((message["seq"], stamp))

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


def run_publisher(
    uri: str, db: str, messages: int, interval: float, mode: str, channel: str
) -> None:
    """Publish stamped messages; print how long each publish call took (ms)."""
    from mdb_sync import MongoDBEngine, realtime

    calls = []
    with MongoDBEngine(uri, db) as engine:
        engine.events.configure(mode=mode)
        for seq in range(messages):
            stamp = now()
            message = {"seq": seq, "t": stamp, "run": mode + (":" + channel if channel else "")}
            if channel:
                realtime.broadcast_to_channel(SLUG, channel, message)
            else:
                realtime.broadcast_to_app(SLUG, message)
            calls.append((now() - stamp) * 1000.0)
            time.sleep(interval)
    print(json.dumps(calls), flush=True)


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


# --- one measurement run (in the code under test) -----------------------------------------------


class Clients:
    """The clients' process."""

    def __init__(self, url: str, count: int, channel: str | None = None) -> None:
        argv = [
            sys.executable,
            __file__,
            "--role",
            "clients",
            "--url",
            url,
            "--clients",
            str(count),
        ]
        if channel:
            argv += ["--channel", channel]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def finish(self, settle: float = 1.0) -> list[list[list[float]]]:
        time.sleep(settle)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        received = json.loads(self.proc.stdout.readline())
        self.proc.wait(30)
        return received  # type: ignore[no-any-return]


def deliveries(sent: dict[int, float], received: list[list[list[float]]]) -> dict[str, Any]:
    """Every delivery's latency, each message's fan-out (all clients), the share delivered."""
    latencies: list[float] = []
    fanout: dict[int, float] = {}
    for client in received:
        for seq, stamp in client:
            if int(seq) in sent:
                latency = (stamp - sent[int(seq)]) * 1000.0
                latencies.append(latency)
                fanout[int(seq)] = max(fanout.get(int(seq), 0.0), latency)
    expected = len(sent) * len(received)
    return {
        "latencies": latencies,
        "fanout": list(fanout.values()),
        "delivered": len(latencies) / expected if expected else 0.0,
    }


class Probe:
    """A bus subscriber recording when each benchmark message reaches it."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[int, float]] = {}

    def __call__(self, event: Any) -> None:
        stamp = now()
        try:
            message = json.loads(event.data)
        except (ValueError, AttributeError):
            return
        if isinstance(message, dict) and "run" in message:
            self.seen.setdefault(message["run"], {})[message["seq"]] = stamp


def run_measure(uri: str, args: argparse.Namespace) -> None:
    """Measure every scenario with the library on ``sys.path`` (the code under test); print
    one JSON document."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from flask import Flask
    from pymongo import MongoClient
    from werkzeug.serving import make_server

    import flask_mdb
    from flask_mdb import MDB, broadcast_to_app, get_websocket_manager

    has_channels = hasattr(flask_mdb, "broadcast_to_channel")
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
    engine.registry.get_record(SLUG)
    # Called before the connection manager (subscribed at the first connection): when the
    # listener hands an event over (other processes' events; local ones: at publishing).
    handoff = Probe()
    engine.events.subscribe(SLUG, handoff)
    written = Probe()
    results: dict[str, Any] = {"scenarios": {}, "stages": {}}

    def stamp_and(publish: Any) -> dict[int, float]:
        sent = {}
        for seq in range(args.messages):
            sent[seq] = now()
            publish({"seq": seq, "t": sent[seq]}, seq)
            time.sleep(args.interval)
        return sent

    try:
        clients = Clients(f"{base}/bench-naive", args.clients)

        def naive_send(message: dict[str, Any], seq: int) -> None:
            text = json.dumps(message)
            for ws in list(naive):
                ws.send(text)

        sent = stamp_and(naive_send)
        results["scenarios"]["naive flask-sock loop"] = deliveries(sent, clients.finish())
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
            results["scenarios"][label] = deliveries(sent, clients.finish())

        runs = [("change_stream", "")]
        if has_channels:
            runs.append(("change_stream", "bench/room"))
        runs.append(("tailable", ""))  # last: it may make mdb_events capped
        for mode, channel in runs:
            if mode == "tailable":  # a tailable cursor needs a capped collection
                events = engine._raw_collection("mdb_events")
                if not events.options().get("capped"):
                    events.drop()
                    events.database.create_collection("mdb_events", capped=True, size=16 << 20)
            engine.events.configure(mode=mode)  # restarts the web process's listener
            clients = Clients(f"{base}/ws", args.clients, channel or None)
            assert manager.connection_count == args.clients
            assert engine.events.listening_mode == mode
            # Called after the manager: when it has written (or queued) the 100 frames.
            after = engine.events.subscribe(SLUG, written)
            publisher = subprocess.Popen(
                [
                    sys.executable, __file__, "--role", "publisher", "--uri", uri,
                    "--db", db_name, "--messages", str(args.messages),
                    "--interval", str(args.interval), "--mode", mode, "--channel", channel,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            calls = json.loads(publisher.communicate(timeout=600)[0].strip().splitlines()[-1])
            run = mode + (":" + channel if channel else "")
            sent = {}  # the publisher stamped its messages: read the stamps back
            for doc in engine._raw_collection("mdb_events").find({"app_id": SLUG}):
                message = json.loads(doc["data"])
                if message.get("run") == run:
                    sent[message["seq"]] = message["t"]
            label = f"other process, {'channel' if channel else mode}"
            result = deliveries(sent, clients.finish())
            results["scenarios"][label] = result
            after.cancel()
            if mode == "change_stream" and not channel:
                results["stages"] = {
                    "publish call": calls,
                    "listener hands the event over": [
                        (t - sent[s]) * 1000.0 for s, t in handoff.seen.get(run, {}).items()
                    ],
                    f"manager wrote all {args.clients} frames": [
                        (t - sent[s]) * 1000.0 for s, t in written.seen.get(run, {}).items()
                    ],
                    "read by a client (each delivery)": result["latencies"],
                    f"read by all {args.clients} clients": result["fanout"],
                }

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
        results["scenarios"]["raw change stream (no websockets)"] = {
            "latencies": latencies,
            "fanout": [],
            "delivered": 1.0,
        }
        results["store"] = (
            engine.events.store_kind if hasattr(engine.events, "store_kind") else ("capped")
        )
    finally:
        mdb.shutdown(app)
        http.shutdown()
        MongoClient(uri).drop_database(db_name)
        shutil.rmtree(manifests, ignore_errors=True)
    print(json.dumps(results), flush=True)


# --- capped vs plain inserts ----------------------------------------------------------------------


def insert_costs(uri: str, sizes: tuple[int, ...] = (0, 1000, 3000), samples: int = 40) -> list:
    """Insert latency (ms, p50/p99) into a capped and a plain collection holding N events."""
    from bson import ObjectId
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(uri, retryWrites=False)
    db = client[f"bench_store_{os.getpid()}"]
    rows = []

    def event(i: int) -> dict[str, Any]:
        return {
            "_id": ObjectId(), "app_id": SLUG, "data": json.dumps({"seq": i, "t": 1.0}),
            "origin": "x" * 32, "seq": i, "size": 20,
            "created_at": datetime.datetime.now(datetime.timezone.utc),
        }  # fmt: skip

    try:
        for held in sizes:
            row: list[Any] = [held]
            for kind in ("capped", "plain"):
                name = f"{kind}_{held}"
                options = {"capped": True, "size": 16 * 1024 * 1024} if kind == "capped" else {}
                db.create_collection(name, **options)
                collection = db[name]
                if held:
                    collection.insert_many([event(i) for i in range(held)])
                times = []
                for i in range(samples):
                    started = time.perf_counter()
                    collection.insert_one(event(held + i))
                    times.append((time.perf_counter() - started) * 1000.0)
                row += [percentile(times, 50), percentile(times, 99)]
            rows.append(row)
    finally:
        client.drop_database(db.name)
        client.close()
    return rows


# --- the orchestrator -----------------------------------------------------------------------------


def export(ref: str) -> Path:
    """The library at ``ref`` (git archive), in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="mdb-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "mdb_sync", "flask_mdb"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def measure(code: Path, uri: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    argv = [sys.executable, __file__, "--role", "measure", "--uri", uri]
    argv += ["--clients", str(args.clients), "--messages", str(args.messages)]
    argv += ["--interval", str(args.interval)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], scenario: str) -> dict[str, float] | None:
    results = [r["scenarios"][scenario] for r in runs if scenario in r["scenarios"]]
    if not results:
        return None
    pooled = [x for r in results for x in r["latencies"]]
    pooled_fan = [x for r in results for x in r["fanout"]]
    return {
        "p50": median([percentile(r["latencies"], 50) for r in results]),
        "p99": median([percentile(r["latencies"], 99) for r in results]),
        "p99_all": percentile(pooled, 99),
        "fan_p99": median([percentile(r["fanout"], 99) for r in results]),
        "fan_p99_all": percentile(pooled_fan, 99),
        "delivered": min(r["delivered"] for r in results),
    }


def fmt(value: float | None) -> str:
    return "   n/a" if value is None or value != value else f"{value:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="main")
    parser.add_argument("--url")
    parser.add_argument("--uri")
    parser.add_argument("--db")
    parser.add_argument("--mode", default="change_stream")
    parser.add_argument("--channel", default="")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    args = parser.parse_args()
    if args.role == "clients":
        return run_clients(args.url, args.clients, args.channel or None)
    if args.role == "publisher":
        return run_publisher(
            args.uri, args.db, args.messages, args.interval, args.mode, args.channel
        )
    if args.role == "raw_watcher":
        return run_raw_watcher(args.uri, args.db, args.messages)
    if args.role == "measure":
        return run_measure(args.uri, args)

    sys.path.insert(0, str(ROOT))
    from mdb_sync import embedded

    uri = os.environ.get("MDB_MONGO_URI")
    server = None
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    codes: dict[str, Path] = {"after": ROOT}
    baseline = None
    if args.baseline != "none":
        baseline = export(args.baseline)
        codes = {"before": baseline, "after": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    try:
        for index in range(args.rounds):
            order = list(codes) if index % 2 == 0 else list(codes)[::-1]
            for name in order:
                print(f"round {index + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                runs[name].append(measure(codes[name], uri, args))
        store_rows = insert_costs(uri)
    finally:
        if server is not None:
            embedded.stop_private(server)
        if baseline is not None:
            shutil.rmtree(baseline, ignore_errors=True)

    names = list(codes)
    print(
        f"\nBroadcast latency to {args.clients} websocket clients, {args.messages} messages "
        f"every {args.interval * 1000:g} ms, {args.rounds} rounds of each code, interleaved "
        f"(ms; the seeds claim < 10 ms). Per code: median over rounds of p50 and p99, the p99 "
        f"of all rounds pooled, the median p99 of the fan-out (all {args.clients} clients), "
        "and the share of deliveries that arrived (worst round)."
    )
    if baseline is not None:
        print(f"before = {args.baseline}, after = this checkout")
    scenarios: list[str] = []
    for name in names:
        for run in runs[name]:
            scenarios += [s for s in run["scenarios"] if s not in scenarios]
    header = f"{'scenario':<36}" + "".join(
        f"{name + ' p50':>12}{'p99':>8}{'p99 all':>9}{'fan p99':>9}{'got':>6}" for name in names
    )
    print("\n" + header)
    print("-" * len(header))
    for scenario in scenarios:
        line = f"{scenario:<36}"
        for name in names:
            row = summarize(runs[name], scenario)
            if row is None:
                line += f"{'n/a':>12}{'':>8}{'':>9}{'':>9}{'':>6}"
            else:
                line += f"{fmt(row['p50']):>12}{fmt(row['p99']):>8}{fmt(row['p99_all']):>9}"
                line += f"{fmt(row['fan_p99']):>9}{row['delivered']:>6.0%}"
        print(line)

    print(
        "\nWhere the time goes (other process, change stream): ms from the publisher's stamp "
        "to each stage, median over rounds of p50 / p99"
    )
    header = f"{'stage':<36}" + "".join(f"{name + ' p50':>12}{'p99':>8}" for name in names)
    print(header)
    print("-" * len(header))
    for stage in runs[names[-1]][0]["stages"]:
        line = f"{stage:<36}"
        for name in names:
            series = [r["stages"].get(stage, []) for r in runs[name]]
            line += f"{fmt(median([percentile(s, 50) for s in series])):>12}"
            line += f"{fmt(median([percentile(s, 99) for s in series])):>8}"
        print(line)
    for name in names:
        print(f"  {name}: mdb_events was {runs[name][0].get('store', 'capped')}")

    print("\nOne insert into a collection holding N events (ms, p50 / p99): the server's cost")
    header = f"{'N':>8}{'capped p50':>12}{'p99':>8}{'plain p50':>12}{'p99':>8}"
    print(header)
    print("-" * len(header))
    for held, capped50, capped99, plain50, plain99 in store_rows:
        print(f"{held:>8}{fmt(capped50):>12}{fmt(capped99):>8}{fmt(plain50):>12}{fmt(plain99):>8}")


if __name__ == "__main__":
    main()
