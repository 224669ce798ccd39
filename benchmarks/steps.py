"""The Python steps (bytecode instructions) one call executes, scoped against a plain
``MongoClient()``: a count that does not move with the machine's load.

CPU time per call (``benchmarks/scoping.py``) is what users pay, but on a shared machine one
run's ratio strays by ±0.05 (its A/A row shows how far), as much as what a change to the hot
path saves. The number of bytecode instructions a call runs — pymongo's and ours, counted with
``sys.settrace`` opcode events on the calling thread — is the same on every run, so a change's
effect on the sandbox's own work shows exactly. It is a proxy, not a time: a step inside a long
call path costs more than one in a tight loop, and C work (BSON encoding) is not counted.

The operations are ``scoping.py``'s, on the same kind of data; the baseline writes the tenant
filter by hand, as there.

    .venv/bin/python benchmarks/steps.py

With ``MDB_MONGO_URI`` set it uses that server, else a private in-memory embedded server.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import InsertOne, MongoClient, UpdateOne

from mdb_sync import MongoDBEngine, embedded

APP = "bench"
#: ``_id``s of written documents, never the same twice (both sides write to one collection).
IDS = itertools.count(10_000)
PIPELINE = [
    {"$match": {"n": {"$lt": 200}}},
    {"$group": {"_id": "$tag", "total": {"$sum": "$n"}}},
    {"$sort": {"_id": 1}},
    {"$limit": 10},
]


def steps(call: Callable[[], Any]) -> int:
    """The bytecode instructions one ``call()`` runs on this thread (after two warm-ups)."""
    call(), call()
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def cases(items: Any, log: Any, tag: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The calls, on ``items`` (reads and updates) and ``log`` (writes); ``tag`` is the scope
    a plain caller writes by hand (nothing for the scoped API)."""
    stages = [{"$match": {**PIPELINE[0]["$match"], **tag}}, *PIPELINE[1:]]

    def insert() -> Any:
        return log.insert_one({"_id": next(IDS), "n": 1, "tag": "c", **tag})

    def bulk() -> Any:
        base = next(IDS) * 1000
        requests: list[Any] = [InsertOne({"_id": base + k, "n": k, **tag}) for k in range(250)]
        requests += [UpdateOne({"_id": base + k, **tag}, {"$set": {"m": 1}}) for k in range(250)]
        return log.bulk_write(requests, ordered=False)

    return {
        "find_one by _id": lambda: items.find_one({"_id": 5, **tag}),
        "insert_one": insert,
        "update_one": lambda: items.update_one({"_id": 5, **tag}, {"$inc": {"n": 1}}),
        "find().to_list(100)": lambda: items.find({"n": {"$gte": 0}, **tag}).limit(100).to_list(),
        "aggregate (4 stages)": lambda: items.aggregate(stages).to_list(),
        "bulk_write (500 ops)": bulk,
    }


def main() -> None:
    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    db_name = f"bench_steps_{uuid.uuid4().hex[:8]}"
    client: MongoClient[Any] = MongoClient(uri)
    engine = MongoDBEngine(uri, db_name).initialize()
    try:
        scoped = engine.get_scoped_db(APP, auto_index=False)
        scoped.items.insert_many([{"_id": i, "n": i, "tag": "ab"[i % 2]} for i in range(1000)])
        raw = client[db_name]
        plain = cases(raw[f"{APP}_items"], raw[f"{APP}_log"], {"app_id": APP})
        ours = cases(scoped.items, scoped.log, {})
        print("Python steps per call (bytecode instructions on the calling thread)")
        print(f"| {'operation':<22} | {'plain':>7} | {'scoped':>7} | {'added':>6} | {'ratio':>5} |")
        print(f"|{'-' * 24}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 7}|")
        for name, call in plain.items():
            base, scoped_steps = steps(call), steps(ours[name])
            print(
                f"| {name:<22} | {base:>7} | {scoped_steps:>7} | {scoped_steps - base:>6} "
                f"| {scoped_steps / base:>5.2f} |"
            )
    finally:
        client.drop_database(db_name)
        client.close()
        engine.shutdown()
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
