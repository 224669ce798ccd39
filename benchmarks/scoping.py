"""What the sandbox costs on the client, against what a user writes without us: a plain
``MongoClient()`` (no event listeners), in the same run.

For each operation, client-side CPU microseconds per call (``time.thread_time()``: the
server is another process, and the calling thread does all of an operation's work — only
pymongo's monitors and the engine's background jobs run on other threads), the ratio scoped/plain,
the absolute microseconds the scoped API adds, and the commands each call sends. Each round
runs plain, scoped, scoped, plain (so that a load that drifts during the round weighs on both
alike); the medians over the rounds are reported — of each side's µs, and of the per-round
ratios and differences.

"plain" is pymongo on a ``MongoClient(uri)`` of its own — no listeners, no engine — on the
same physical collection, with the scope written by hand (``{"_id": 5, "app_id": "bench"}``,
documents carrying ``app_id``): the tenant filter a user would write without the sandbox.
"scoped" is the engine's scoped API with its default observability (operation metrics on),
so "added" is everything mdb-sync costs per call: scoping, guards, metrics.

The command counts come from a separate, untimed pass on clients with a recording listener
(a listener would tax the timed clients).

    .venv/bin/python benchmarks/scoping.py [--rounds 7] [--scale 1.0]

With ``MDB_MONGO_URI`` set it uses that server, else a private in-memory embedded server.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import InsertOne, MongoClient, UpdateOne, monitoring

from mdb_sync import MongoDBEngine, embedded

APP = "bench"


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


def cpu_us_per_call(fn: Callable[[int], Any], calls: int) -> float:
    start = time.thread_time()
    for i in range(calls):
        fn(i)
    return (time.thread_time() - start) / calls * 1e6


Make = Callable[[Any, Any, bool], Callable[[int], Any]]


def make_cases(scale: float) -> list[tuple[str, Make, int]]:
    """``(name, make(items, log, plain) -> call(i), calls per round)``: reads and updates
    use ``items`` (1,000 documents, never more), inserts go to ``log`` (so that the reads'
    cost does not drift as the benchmark writes)."""
    pipeline = [
        {"$match": {"n": {"$lt": 200}}},
        {"$group": {"_id": "$tag", "total": {"$sum": "$n"}}},
        {"$sort": {"_id": 1}},
        {"$limit": 10},
    ]
    next_id = [10_000]
    bulk_base = [10_000_000]

    def tag(plain: bool) -> dict[str, Any]:
        """The scope a plain caller must write by hand (nothing for the scoped API)."""
        return {"app_id": APP} if plain else {}

    def find_one(c: Any, _log: Any, plain: bool) -> Callable[[int], Any]:
        t = tag(plain)
        return lambda i: c.find_one({"_id": i % 1000, **t})

    def insert(_items: Any, c: Any, plain: bool) -> Callable[[int], Any]:
        t = tag(plain)

        def run(_i: int) -> Any:
            next_id[0] += 1
            return c.insert_one({"_id": next_id[0], "n": next_id[0], "tag": "c", **t})

        return run

    def update(c: Any, _log: Any, plain: bool) -> Callable[[int], Any]:
        t = tag(plain)
        return lambda i: c.update_one({"_id": i % 1000, **t}, {"$inc": {"n": 1}})

    def find(c: Any, _log: Any, plain: bool) -> Callable[[int], Any]:
        t = tag(plain)
        return lambda i: c.find({"n": {"$gte": 0}, **t}).limit(100).to_list(100)

    def aggregate(c: Any, _log: Any, plain: bool) -> Callable[[int], Any]:
        stages = [{"$match": {**pipeline[0]["$match"], **tag(plain)}}, *pipeline[1:]]
        return lambda i: c.aggregate(stages).to_list()

    def bulk(_items: Any, c: Any, plain: bool) -> Callable[[int], Any]:
        t = tag(plain)

        def run(_i: int) -> Any:
            bulk_base[0] += 1000
            base = bulk_base[0]
            requests: list[Any] = [InsertOne({"_id": base + k, "n": k, **t}) for k in range(250)]
            requests += [UpdateOne({"_id": base + k, **t}, {"$set": {"m": 1}}) for k in range(250)]
            return c.bulk_write(requests, ordered=False)

        return run

    return [
        ("find_one by _id", find_one, int(2000 * scale)),
        ("insert_one", insert, int(2000 * scale)),
        ("update_one", update, int(2000 * scale)),
        ("find().to_list(100)", find, int(300 * scale)),
        ("aggregate (4 stages)", aggregate, int(300 * scale)),
        ("bulk_write (500 ops)", bulk, max(1, int(10 * scale))),
    ]


def count_commands(uri: str, db_name: str, scale: float) -> list[tuple[float, float]]:
    """Commands per call of each case, plain and scoped, on separate recording clients."""
    plain_counter, scoped_counter = Counter(), Counter()
    client: MongoClient[Any] = MongoClient(uri, event_listeners=[plain_counter])
    engine = MongoDBEngine(uri, db_name, event_listeners=[scoped_counter]).initialize()
    try:
        plain = client[db_name][f"{APP}_items"], client[db_name][f"{APP}_log"]
        scoped_db = engine.get_scoped_db(APP, auto_index=False)
        scoped = scoped_db.items, scoped_db.log
        out = []
        for _name, make, _calls in make_cases(scale):
            counts = []
            sides = ((plain, True, plain_counter), (scoped, False, scoped_counter))
            for (items, log), is_plain, counter in sides:
                fn = make(items, log, is_plain)
                fn(0)  # first calls may ensure an index once
                before = counter.count
                for i in range(1, 11):
                    fn(i)
                counts.append((counter.count - before) / 10)
            out.append((counts[0], counts[1]))
        return out
    finally:
        client.close()
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the call counts")
    args = parser.parse_args()

    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    plain_client: MongoClient[Any] = MongoClient(uri)
    engine = MongoDBEngine(uri, db_name)
    engine.initialize()
    scoped_db = engine.get_scoped_db(APP, auto_index=False)
    scoped, scoped_log = scoped_db.items, scoped_db.log
    plain, plain_log = plain_client[db_name][f"{APP}_items"], plain_client[db_name][f"{APP}_log"]
    try:
        docs = [{"_id": i, "n": i, "tag": "ab"[i % 2], "payload": "x" * 100} for i in range(1000)]
        scoped.insert_many([dict(d) for d in docs])
        plain.create_index([("app_id", 1), ("n", 1)])
        rows = []
        for name, make, calls in make_cases(args.scale):
            plain_fn = make(plain, plain_log, True)
            scoped_fn = make(scoped, scoped_log, False)
            plain_fn(0), scoped_fn(0)  # warm up
            plain_times, scoped_times = [], []
            for _ in range(args.rounds):
                first = cpu_us_per_call(plain_fn, calls)
                scoped_times.append(
                    (cpu_us_per_call(scoped_fn, calls) + cpu_us_per_call(scoped_fn, calls)) / 2
                )
                plain_times.append((first + cpu_us_per_call(plain_fn, calls)) / 2)
            pairs = list(zip(scoped_times, plain_times, strict=True))
            ratio = statistics.median(s / p for s, p in pairs)
            added = statistics.median(s - p for s, p in pairs)
            p, s = statistics.median(plain_times), statistics.median(scoped_times)
            rows.append((name, p, s, ratio, added))
        commands = count_commands(uri, f"{db_name}_count", args.scale)
        print(
            f"server: {engine.describe_server()}  rounds: {args.rounds}, interleaved, medians "
            "(client CPU µs per call)"
        )
        header = (
            f"| {'operation':<22} | {'plain µs':>9} | {'scoped µs':>9} | {'ratio':>5} "
            f"| {'added µs':>8} | {'commands plain/scoped':>21} |"
        )
        print(header)
        print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
        for (name, p, s, ratio, added), (cp, cs) in zip(rows, commands, strict=True):
            print(
                f"| {name:<22} | {p:>9.1f} | {s:>9.1f} | {ratio:>5.2f} | {added:>8.1f} "
                f"| {f'{cp:g} / {cs:g}':>21} |"
            )
        print(
            "targets: ratio <= 1.10 (bulk_write <= 1.15) and <= 15 µs added per simple op "
            "(first three rows)"
        )
    finally:
        plain_client.drop_database(db_name)
        plain_client.drop_database(f"{db_name}_count")
        plain_client.close()
        engine.shutdown()
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
