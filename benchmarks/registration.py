"""Registration and auto-index bookkeeping, measured against raw pymongo in the same run.

Prints three tables:

1. Registering a manifest with 10 indexes on 2 collections: the first registration (indexes
   built) and a repeated, unchanged one — next to raw pymongo sending the same
   ``create_indexes`` calls (which the server answers as no-ops the second time).
2. The commands a repeated registration sends, by name (none of them builds an index).
3. The auto-index bookkeeping cost per query: ``AutoIndexManager.observe`` alone, and the
   client-side CPU of a scoped ``find_one`` with auto-indexing on and off.
4. Registration against the size of the registry: a new app, an unchanged re-registration
   and a refused overlapping slug, with 100 and with 2,000 apps registered (every look-up by
   slug is indexed, so the times should not grow with the registry).

Run: ``.venv/bin/python benchmarks/registration.py`` (a private embedded server is started
unless ``MDB_MONGO_URI`` is set).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

from pymongo import IndexModel, MongoClient, monitoring

from mdb_sync import MongoDBEngine, embedded
from mdb_sync.indexes import plan_indexes
from mdb_sync.manifest import validate_manifest

RUNS = 15
REGISTRY_SIZES = (100, 2_000)
SCALE_SAMPLES = 40
OBSERVE_CALLS = 200_000
FIND_CALLS = 1_000
ROUNDS = 7

MANIFEST: dict[str, Any] = {
    "slug": "bench",
    "managed_indexes": {
        "orders": [
            {"name": "by_customer", "keys": {"customer": 1, "created_at": -1}},
            {"name": "by_status", "keys": {"status": 1}},
            {"name": "by_total", "keys": {"total": -1}},
            {"name": "by_sku", "keys": {"items.sku": 1}},
            {"name": "uniq_number", "keys": {"number": 1}, "unique": True},
            {"name": "open_only", "keys": {"due": 1}, "partialFilterExpression": {"open": True}},
            {
                "name": "expire",
                "type": "ttl",
                "keys": {"expires_at": 1},
                "expireAfterSeconds": 3600,
            },
        ],
        "places": [
            {"name": "geo", "keys": {"location": "2dsphere"}},
            {"name": "by_city", "keys": {"city": 1, "name": 1}},
            {"name": "nocase", "keys": {"name": 1}, "collation": {"locale": "en", "strength": 2}},
        ],
    },
}


class Counter_(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: Counter[str] = Counter()
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self.lock:
            self.names[event.command_name] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def raw_models() -> dict[str, list[IndexModel]]:
    """The same indexes as pymongo IndexModels (what a hand-written setup would send)."""
    normalized = validate_manifest(MANIFEST)
    return {
        coll: [spec.model() for d in defs for spec in plan_indexes(coll, d)]
        for coll, defs in normalized["managed_indexes"].items()
    }


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.2f} ms"


def bench_registration(uri: str) -> tuple[list[list[str]], Counter[str]]:
    first, repeat, raw_first, raw_repeat = [], [], [], []
    listener = Counter_()
    client: MongoClient[Any] = MongoClient(uri, retryWrites=False)
    models = raw_models()
    last_commands: Counter[str] = Counter()
    for _ in range(RUNS):
        db_name = f"bench_{uuid.uuid4().hex[:8]}"
        with MongoDBEngine(uri, db_name, event_listeners=[listener]) as engine:
            t = time.perf_counter()
            engine.register_app(MANIFEST)
            first.append(time.perf_counter() - t)
            engine.register_app(MANIFEST)  # outcomes go from "created" to "exists" once
            listener.names.clear()
            t = time.perf_counter()
            engine.register_app(MANIFEST)
            repeat.append(time.perf_counter() - t)
            last_commands = Counter(listener.names)
        client.drop_database(db_name)

        raw_db = client[f"raw_{uuid.uuid4().hex[:8]}"]
        t = time.perf_counter()
        for coll, ms_ in models.items():
            raw_db[f"bench_{coll}"].create_indexes(ms_)
        raw_first.append(time.perf_counter() - t)
        # Sending create_indexes again is no baseline: servers differ on whether an identical
        # spec is a no-op (the embedded server refuses a 2dsphere index it filled defaults
        # into). The least a hand-written check does is list each collection's indexes.
        t = time.perf_counter()
        for coll in models:
            raw_db[f"bench_{coll}"].index_information()
        raw_repeat.append(time.perf_counter() - t)
        client.drop_database(raw_db.name)
    client.close()
    rows = [
        [
            "first registration (10 indexes)",
            ms(first),
            ms(raw_first),
            f"{statistics.median(first) / statistics.median(raw_first):5.2f}x",
        ],
        [
            "repeated registration (raw: listIndexes only)",
            ms(repeat),
            ms(raw_repeat),
            f"{statistics.median(repeat) / statistics.median(raw_repeat):5.2f}x",
        ],
    ]
    return rows, last_commands


def bench_observe(uri: str) -> list[list[str]]:
    rows = []
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    with MongoDBEngine(uri, db_name) as engine:
        engine.register_app({"slug": "obs", "auto_index": {"threshold": 1_000_000}})
        manager = engine.auto_indexes
        raw = engine._raw_collection("obs_tasks")
        cases = [
            ("observe: {status} + sort", {"status": "todo"}, {"created_at": -1}),
            ("observe: 3 eq + range", {"a": 1, "b": "x", "c": True, "d": {"$gt": 5}}, None),
            ("observe: {_id} lookup", {"_id": 42}, None),
        ]
        for label, flt, sort in cases:
            manager.observe("obs", "tasks", raw, flt, sort)  # warm: the shape exists
            t = time.perf_counter()
            for _ in range(OBSERVE_CALLS):
                manager.observe("obs", "tasks", raw, flt, sort)
            per = (time.perf_counter() - t) / OBSERVE_CALLS
            rows.append([label, f"{per * 1e6:6.2f} µs", "-", "-"])
        db_on = engine.get_scoped_db("obs")
        db_off = engine.get_scoped_db("obs", auto_index=False)
        db_on.tasks.insert_many([{"status": "todo", "n": i} for i in range(10)])
        samples: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(ROUNDS):  # interleaved rounds: the machine's noise hits both alike
            for label, db in (("on", db_on), ("off", db_off)):
                t = time.process_time()
                for _ in range(FIND_CALLS):
                    db.tasks.find_one({"status": "todo", "n": 3})
                samples[label].append((time.process_time() - t) / FIND_CALLS)
        results = {label: statistics.median(values) for label, values in samples.items()}
        added = (results["on"] - results["off"]) * 1e6
        rows.append(
            [
                "scoped find_one CPU, auto-index on vs off",
                f"{results['on'] * 1e6:6.1f} µs",
                f"{results['off'] * 1e6:6.1f} µs",
                f"{results['on'] / results['off']:5.3f}x ({added:+.1f} µs)",
            ]
        )
        engine.auto_indexes.persist = False
    MongoClient(uri).drop_database(db_name)
    return rows


def bench_registry_size(uri: str) -> list[list[str]]:
    """Median time per registration in a registry of each of ``REGISTRY_SIZES`` apps: one
    database per size, samples interleaved between them (so the machine's load drifts alike
    over both)."""
    from mdb_sync.exceptions import AppConflictError

    labels = ("new app", "re-registration", "overlap refused")
    samples: dict[int, dict[str, list[float]]] = {
        n: {k: [] for k in labels} for n in REGISTRY_SIZES
    }
    engines = {}
    for size in REGISTRY_SIZES:
        engine = MongoDBEngine(uri, f"bench_{uuid.uuid4().hex[:8]}").initialize()
        for i in range(size):
            engine.register_app({"slug": f"tenant{i:05d}"})
        engines[size] = engine
    try:
        for i in range(SCALE_SAMPLES):
            for size, engine in engines.items():
                slug = f"probe{i}"
                t = time.perf_counter()
                engine.register_app({"slug": slug})
                samples[size]["new app"].append(time.perf_counter() - t)
                t = time.perf_counter()
                engine.register_app({"slug": slug})
                samples[size]["re-registration"].append(time.perf_counter() - t)
                refused = False
                t = time.perf_counter()
                try:
                    engine.register_app({"slug": f"{slug}_sub"})
                except AppConflictError:
                    refused = True
                samples[size]["overlap refused"].append(time.perf_counter() - t)
                assert refused, "an overlapping slug was accepted"
                engine.unregister_app(slug)  # keep the registry at `size` apps
    finally:
        client: MongoClient[Any] = MongoClient(uri)
        for engine in engines.values():
            client.drop_database(engine.db_name)
            engine.shutdown()
        client.close()
    rows = []
    for label in labels:
        medians = [statistics.median(samples[n][label]) for n in REGISTRY_SIZES]
        rows.append(
            [label, *(f"{m * 1000:8.2f} ms" for m in medians), f"{medians[-1] / medians[0]:5.2f}x"]
        )
    return rows


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    uri = os.environ.get("MDB_MONGO_URI")
    server = None
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    try:
        rows, commands = bench_registration(uri)
        table(
            f"Registration (median of {RUNS} runs)",
            ["operation", "mdb-sync", "raw pymongo", "ratio"],
            rows,
        )
        table(
            "Commands sent by a repeated, unchanged registration",
            ["command", "count"],
            [[name, str(n)] for name, n in sorted(commands.items())]
            + [["total", str(sum(commands.values()))]],
        )
        table(
            "Auto-index bookkeeping per query",
            ["measure", "with", "without", "ratio"],
            bench_observe(uri),
        )
        table(
            f"Registration vs registry size (median of {SCALE_SAMPLES}, interleaved)",
            ["operation", *(f"{n:,} apps" for n in REGISTRY_SIZES), "ratio"],
            bench_registry_size(uri),
        )
    finally:
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
