"""Cost of recording metrics per operation: pymongo listeners against the scoped API's own.

Compares, in the same run and on the same server:

* raw pymongo without any listener,
* raw pymongo with do-nothing listeners (pymongo's own cost of publishing events),
* raw pymongo with mdb-sync's listeners (command metrics + pool monitor: what an engine
  with ``command_metrics=True`` installs),
* the scoped API as configured by default (it records its own operations, no listener),
* the scoped API of an engine with ``command_metrics=True``,

and measures the listeners' own CPU time on the calling thread directly, by replaying each
operation's real events into them. Prints microseconds per operation (median of rounds).

    .venv/bin/python benchmarks/metrics.py [--ops 2000] [--rounds 5]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import MongoClient, monitoring

from mdb_sync import MongoDBEngine, embedded
from mdb_sync.observability.listeners import CommandMetricsListener, PoolMonitor


class Capture(PoolMonitor, monitoring.CommandListener):
    """Keeps the last events of each kind, to replay them into our listeners."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, Any] = {}

    def started(self, event: Any) -> None:
        self.events[f"started:{event.command_name}"] = event

    def succeeded(self, event: Any) -> None:
        self.events[f"succeeded:{event.command_name}"] = event

    def failed(self, event: Any) -> None:
        pass

    def connection_check_out_started(self, event: Any) -> None:
        self.events["connection_check_out_started"] = event

    def connection_checked_out(self, event: Any) -> None:
        self.events["connection_checked_out"] = event

    def connection_checked_in(self, event: Any) -> None:
        self.events["connection_checked_in"] = event


class NoOp(PoolMonitor, monitoring.CommandListener):
    """Listens to the same events and does nothing: isolates pymongo's cost of publishing."""

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass

    def connection_check_out_started(self, event: Any) -> None:
        pass

    def connection_checked_out(self, event: Any) -> None:
        pass

    def connection_checked_in(self, event: Any) -> None:
        pass


def callback_cost(engine: MongoDBEngine, capture: Capture, command: str, n: int) -> float:
    """Microseconds our listeners spend on the calling thread for one ``command``: its
    started/succeeded events and the pool's check-out/check-in events, replayed ``n`` times."""
    listener, monitor = CommandMetricsListener(engine), PoolMonitor()
    started, succeeded = (
        capture.events[f"started:{command}"],
        capture.events[f"succeeded:{command}"],
    )
    check_out = capture.events["connection_check_out_started"]
    checked_out = capture.events["connection_checked_out"]
    checked_in = capture.events["connection_checked_in"]
    t = time.perf_counter()
    for _ in range(n):
        monitor.connection_check_out_started(check_out)
        monitor.connection_checked_out(checked_out)
        listener.started(started)
        listener.succeeded(succeeded)
        monitor.connection_checked_in(checked_in)
    return (time.perf_counter() - t) / n * 1e6


def run_ops(coll, n: int) -> dict[str, float]:
    """Microseconds per insert_one / find_one / update_one on ``coll``."""
    out = {}
    t = time.perf_counter()
    for i in range(n):
        coll.insert_one({"i": i, "status": "todo"})
    out["insert_one"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(n):
        coll.find_one({"i": i})
    out["find_one"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(n):
        coll.update_one({"i": i}, {"$set": {"status": "done"}})
    out["update_one"] = (time.perf_counter() - t) / n * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    try:
        engine = MongoDBEngine(uri, "bench_metrics").initialize()
        engine.client.drop_database("bench_metrics")
        engine.get_scoped_db("bench")  # registers app "bench": bench_* belongs to it
        listening = MongoDBEngine(uri, "bench_metrics", command_metrics=True).initialize()
        plain = MongoClient(uri)
        listened = MongoClient(uri, event_listeners=[CommandMetricsListener(engine), PoolMonitor()])
        capture = Capture()
        captured = MongoClient(uri, event_listeners=[capture])
        noop = MongoClient(uri, event_listeners=[NoOp()])
        raw_plain = plain["bench_metrics"]["bench_plain"]
        raw_noop = noop["bench_metrics"]["bench_noop"]
        raw_listened = listened["bench_metrics"]["bench_listened"]
        scoped = engine.get_scoped_db("bench").scoped
        scoped_listened = listening.get_scoped_db("bench").scoped_listened
        for coll in (raw_plain, raw_noop, raw_listened):
            coll.create_index("i")
        for name in ("bench_scoped", "bench_scoped_listened"):
            engine._raw_collection(name).create_index([("app_id", 1), ("i", 1)])
        run_ops(captured["bench_metrics"]["bench_captured"], 1)

        results: dict[str, dict[str, list[float]]] = {}
        commands = {"insert_one": "insert", "find_one": "find", "update_one": "update"}
        for _ in range(args.rounds):
            for label, coll in (
                ("raw", raw_plain),
                ("raw+noop", raw_noop),
                ("raw+listener", raw_listened),
            ):
                coll.delete_many({})
                for op, us in run_ops(coll, args.ops).items():
                    results.setdefault(op, {}).setdefault(label, []).append(us)
            for label, coll in (("scoped", scoped), ("scoped+listeners", scoped_listened)):
                coll.delete_many({})
                for op, us in run_ops(coll, args.ops).items():
                    results[op].setdefault(label, []).append(us)
            for op, command in commands.items():
                cost = callback_cost(engine, capture, command, args.ops * 10)
                results[op].setdefault("callbacks", []).append(cost)

        print(
            f"metrics listener cost, {args.ops} ops x {args.rounds} rounds, "
            f"server {engine.describe_server()} (median us/op)\n"
        )
        header = (
            f"{'operation':<12} {'raw':>8} {'raw+noop':>9} {'raw+ours':>9} {'ours/raw':>9} "
            f"{'ours-noop':>10} {'callbacks':>10} {'scoped':>9} {'scoped/raw':>11} "
            f"{'scoped+listeners':>17}"
        )
        print(header)
        print("-" * len(header))
        for op, by in results.items():
            raw, noop_us, ours, cb, sc, sl = (
                statistics.median(by[k])
                for k in (
                    "raw", "raw+noop", "raw+listener", "callbacks", "scoped", "scoped+listeners"
                )
            )  # fmt: skip
            print(
                f"{op:<12} {raw:>8.1f} {noop_us:>9.1f} {ours:>9.1f} {ours / raw:>9.3f} "
                f"{ours - noop_us:>+10.1f} {cb:>10.2f} {sc:>9.1f} {sc / raw:>11.3f} "
                f"{sl:>17.1f}"
            )
        print(
            "\nraw+noop: a client with do-nothing listeners (pymongo's own cost of publishing "
            "events).\nraw+ours: a client with our command listener and pool monitor.\n"
            "callbacks: CPU time of our listeners per operation on the calling thread, measured "
            "by\n  replaying the operation's real events into them (ours-noop is the same, "
            "wall-clock, with noise).\nscoped: the full sandboxed call (scoping, guards, "
            "metrics, no listener) on a collection indexed {app_id: 1, i: 1};\n"
            "scoped+listeners: the same with command_metrics=True (pymongo listeners instead)."
        )
        plain.close()
        noop.close()
        listened.close()
        captured.close()
        engine.client.drop_database("bench_metrics")
        listening.shutdown()
        engine.shutdown()
    finally:
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
