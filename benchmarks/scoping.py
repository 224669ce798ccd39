"""What the sandbox costs on the client: raw pymongo vs the scoped API, in the same run.

For each operation, client-side CPU microseconds per call (``time.process_time()``: the
server is another process, so this is the work our process does), the ratio scoped/raw and
the absolute microseconds the sandbox adds. Rounds alternate raw and scoped; the median of
the rounds is reported.

"raw" is pymongo on the engine's own client (same event listeners), on the same physical
collection, with the scope written by hand (``{"_id": 5, "app_id": "bench"}``, documents
carrying ``app_id``): what the sandbox does for you, done without it. So "added" is the cost of
the sandbox itself; the metrics listeners' cost is reported by ``benchmarks/metrics.py``.

    .venv/bin/python benchmarks/scoping.py [--rounds 7] [--scale 1.0]

With ``MDB_MONGO_URI`` set it uses that server, else a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo import InsertOne, MongoClient, UpdateOne

from mdb_sync import MongoDBEngine, embedded


def cpu_us_per_call(fn: Callable[[int], Any], calls: int) -> float:
    start = time.process_time()
    for i in range(calls):
        fn(i)
    return (time.process_time() - start) / calls * 1e6


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
    raw_client: MongoClient[Any] = MongoClient(uri)
    engine = MongoDBEngine(uri, db_name)
    engine.initialize()
    scoped = engine.get_scoped_db("bench", auto_index=False).items
    raw = engine.client[db_name]["bench_items"]
    try:
        docs = [{"_id": i, "n": i, "tag": "ab"[i % 2], "payload": "x" * 100} for i in range(1000)]
        scoped.insert_many([dict(d) for d in docs])
        raw.create_index([("app_id", 1), ("n", 1)])
        scope = {"app_id": "bench"}
        pipeline = [
            {"$match": {"n": {"$lt": 200}}},
            {"$group": {"_id": "$tag", "total": {"$sum": "$n"}}},
            {"$sort": {"_id": 1}},
            {"$limit": 10},
        ]
        next_id = [10_000]

        def tag(coll: Any) -> dict[str, Any]:
            """The scope a raw caller must write by hand (nothing for the scoped API)."""
            return scope if coll is raw else {}

        def insert(coll: Any) -> Callable[[int], Any]:
            def run(_i: int) -> Any:
                next_id[0] += 1
                return coll.insert_one(
                    {"_id": next_id[0], "n": next_id[0], "tag": "c", **tag(coll)}
                )

            return run

        bulk_base = [100_000]

        def bulk(coll: Any) -> Callable[[int], Any]:
            def run(_i: int) -> Any:
                bulk_base[0] += 1000
                base = bulk_base[0]
                t = tag(coll)
                requests: list[Any] = [
                    InsertOne({"_id": base + k, "n": k, **t}) for k in range(250)
                ]
                requests += [
                    UpdateOne({"_id": base + k, **t}, {"$set": {"m": 1}}) for k in range(250)
                ]
                return coll.bulk_write(requests, ordered=False)

            return run

        scale = args.scale
        cases: list[tuple[str, Callable[[Any], Callable[[int], Any]], int, bool]] = [
            (
                "find_one by _id",
                lambda c: lambda i: c.find_one({"_id": i % 1000, **tag(c)}),
                int(2000 * scale),
                True,
            ),
            ("insert_one", insert, int(2000 * scale), True),
            (
                "update_one",
                lambda c: lambda i: c.update_one({"_id": i % 1000, **tag(c)}, {"$inc": {"n": 1}}),
                int(2000 * scale),
                True,
            ),
            (
                "find().to_list(100)",
                lambda c: lambda i: c.find({"n": {"$gte": 0}, **tag(c)}).limit(100).to_list(100),
                int(300 * scale),
                False,
            ),
            (
                "aggregate (4 stages)",
                lambda c: (
                    lambda i: c.aggregate(
                        [{"$match": {**pipeline[0]["$match"], **tag(c)}}, *pipeline[1:]]
                    ).to_list()
                ),
                int(300 * scale),
                False,
            ),
            ("bulk_write (500 ops)", bulk, max(1, int(10 * scale)), False),
        ]
        rows = []
        for name, make, calls, simple in cases:
            raw_fn, scoped_fn = make(raw), make(scoped)
            raw_fn(0), scoped_fn(0)  # warm up
            raw_times, scoped_times = [], []
            for _ in range(args.rounds):
                raw_times.append(cpu_us_per_call(raw_fn, calls))
                scoped_times.append(cpu_us_per_call(scoped_fn, calls))
            r, s = statistics.median(raw_times), statistics.median(scoped_times)
            rows.append((name, r, s, s / r, s - r, simple))
        print(
            f"server: {engine.describe_server()}  rounds: {args.rounds}  (client CPU µs per call)"
        )
        print(f"{'operation':<24}{'raw µs':>10}{'scoped µs':>12}{'ratio':>8}{'added µs':>10}")
        for name, r, s, ratio, added, _simple in rows:
            print(f"{name:<24}{r:>10.1f}{s:>12.1f}{ratio:>8.2f}{added:>10.1f}")
        print("target: ratio <= 1.10 and <= 15 µs added per simple op (first three rows)")
    finally:
        raw_client.drop_database(db_name)
        raw_client.close()
        engine.shutdown()
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
