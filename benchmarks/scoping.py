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
(a listener would tax the timed clients). The last row, "A/A", times plain pymongo against
itself (a second ``MongoClient``) the same way: how far a ratio strays with nothing to find.
``--runs 3`` repeats the whole measurement in fresh processes and prints each cell's median
(see ``benchmarks/compare.py``).

    .venv/bin/python benchmarks/scoping.py [--rounds 7] [--scale 1.0] [--runs 1]

With ``MDB_MONGO_URI`` set it uses that server, else a private in-memory embedded server.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compare import (
    CommandCounter,
    Row,
    arguments,
    commands_per_call,
    compare,
    print_table,
    repeated,
)
from pymongo import InsertOne, MongoClient, UpdateOne

from mdb_sync import MongoDBEngine, embedded

APP = "bench"


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
    plain_counter, scoped_counter = CommandCounter(), CommandCounter()
    client: MongoClient[Any] = MongoClient(uri, event_listeners=[plain_counter])
    engine = MongoDBEngine(uri, db_name, event_listeners=[scoped_counter]).initialize()
    try:
        plain = client[db_name][f"{APP}_items"], client[db_name][f"{APP}_log"]
        scoped_db = engine.get_scoped_db(APP, auto_index=False)
        scoped = scoped_db.items, scoped_db.log
        return [
            (
                commands_per_call(make(*plain, True), plain_counter),
                commands_per_call(make(*scoped, False), scoped_counter),
            )
            for _name, make, _calls in make_cases(scale)
        ]
    finally:
        client.close()
        engine.shutdown()


def measure(rounds: int, scale: float) -> list[Row]:
    """One run: every case, then the A/A row (see the module docstring)."""
    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    plain_client: MongoClient[Any] = MongoClient(uri)
    other_client: MongoClient[Any] = MongoClient(uri)
    engine = MongoDBEngine(uri, db_name)
    engine.initialize()
    scoped_db = engine.get_scoped_db(APP, auto_index=False)
    scoped, scoped_log = scoped_db.items, scoped_db.log
    plain, plain_log = plain_client[db_name][f"{APP}_items"], plain_client[db_name][f"{APP}_log"]
    try:
        docs = [{"_id": i, "n": i, "tag": "ab"[i % 2], "payload": "x" * 100} for i in range(1000)]
        scoped.insert_many([dict(d) for d in docs])
        plain.create_index([("app_id", 1), ("n", 1)])
        rows = [
            compare(
                name, make(plain, plain_log, True), make(scoped, scoped_log, False), calls, rounds
            )
            for name, make, calls in make_cases(scale)
        ]
        for row, commands in zip(rows, count_commands(uri, f"{db_name}_count", scale), strict=True):
            row.commands = commands
        # The noise floor: plain pymongo against itself (a second client), measured alike.
        find_one, _insert, *_ = make_cases(scale)
        other = other_client[db_name][f"{APP}_items"]
        aa = compare(
            "A/A: find_one, plain", find_one[1](plain, None, True), find_one[1](other, None, True),
            find_one[2], rounds,
        )  # fmt: skip
        aa.commands = (1, 1)
        return [*rows, aa]
    finally:
        plain_client.drop_database(db_name)
        plain_client.drop_database(f"{db_name}_count")
        plain_client.close()
        other_client.close()
        engine.shutdown()
        if server is not None:
            embedded.stop_private(server)


def main() -> None:
    parser = arguments(__doc__, scale=(float, 1.0, "multiply the call counts"))
    args, _ = parser.parse_known_args()
    rows = repeated(args.runs, lambda: measure(args.rounds, args.scale))
    print(
        f"scoped API against a plain MongoClient(), {args.rounds} rounds interleaved, "
        f"{args.runs} run(s), medians (client CPU µs per call)"
    )
    print_table(("operation", "plain", "scoped"), rows)
    print(
        "targets: ratio <= 1.10 (bulk_write <= 1.15) and <= 15 µs added per simple op "
        "(first three rows); the A/A row is plain pymongo against itself: the noise floor"
    )


if __name__ == "__main__":
    main()
