"""Columnar reads: what scoping costs pymongoarrow, and what a data frame read saves.

Three ways to get the same 10,000 documents of one app into a pandas DataFrame, in the same
run, on the same server, rounds interleaved, median wall-clock milliseconds per read:

* ``raw pymongoarrow`` — ``pymongoarrow.api.find_pandas_all`` on the raw collection with the
  scope written by hand (``{"app_id": "bench"}``): the floor.
* ``scoped find_pandas_all`` — ``db.rows.find_pandas_all({})``: the same through the
  sandbox (scoped raw batches, counted against ``max_result_docs``).
* ``scoped find().to_list() -> DataFrame`` — what one writes without the extra.

    .venv/bin/python benchmarks/frames.py [--rounds 7] [--docs 10000]

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

import pandas as pd
from pymongoarrow import api

from mdb_sync import MongoDBEngine, embedded


def ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--docs", type=int, default=10_000)
    args = parser.parse_args()

    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    engine = MongoDBEngine(uri, db_name).initialize()
    try:
        scoped = engine.get_scoped_db("bench", auto_index=False).rows
        scoped.insert_many(
            [
                {"n": i, "x": i * 0.5, "tag": "abc"[i % 3], "text": "y" * 40}
                for i in range(args.docs)
            ]
        )
        raw = engine.client[db_name]["bench_rows"]
        projection = {"_id": 0, "app_id": 0}
        ways: dict[str, Callable[[], Any]] = {
            "raw pymongoarrow": lambda: api.find_pandas_all(
                raw, {"app_id": "bench"}, projection=projection
            ),
            "scoped find_pandas_all": lambda: scoped.find_pandas_all({}, projection=projection),
            "scoped find().to_list() -> DataFrame": lambda: pd.DataFrame(
                scoped.find({}, projection).to_list()
            ),
        }
        for fn in ways.values():  # warm up, and check they agree
            assert len(fn()) == args.docs
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, fn in ways.items():
                times[name].append(ms(fn))
        floor = statistics.median(times["raw pymongoarrow"])
        print(f"{args.docs} documents, median of {args.rounds} rounds")
        print(f"{'read':<40} {'ms':>9} {'x raw':>7}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:<40} {median:>9.1f} {median / floor:>7.2f}")
    finally:
        engine.client.drop_database(db_name)
        engine.shutdown()
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
