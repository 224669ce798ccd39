"""Export / import throughput (documents per second), against raw pymongo in the same run.

For small and large documents it times:

* ``export``: ``engine.export_app`` (raw BSON batches to files, metadata, summary), against
  raw pymongo ``find_raw_batches`` written to a file — the floor of any exporter;
* ``import``: ``engine.import_app`` under a new slug (byte-level app_id rewrite, raw inserts,
  indexes), against raw pymongo ``decode_file_iter`` + ``insert_many`` of decoded dicts —
  what a hand-written restore does;
* ``import --drop-app-id``: a standalone import into a database of its own;
* ``import --drop``: replacing the data of the app in use (staged under ``mdb_import_*``
  names and renamed over it at the end — the embedded server copies on rename).

    .venv/bin/python benchmarks/portability.py [--docs 20000]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bson
from pymongo import MongoClient

from mdb_sync import MongoDBEngine, embedded

DB = "bench_portability"


def timed(func) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def raw_export(client: MongoClient, collection: str, path: Path) -> None:
    with open(path, "wb") as fh:
        for batch in client[DB][collection].find_raw_batches({"app_id": "bench"}):
            fh.write(batch)


def raw_import(client: MongoClient, path: Path, target: str) -> None:
    coll = client[DB + "_raw"][target]
    batch = []
    with open(path, "rb") as fh:
        for document in bson.decode_file_iter(fh):
            batch.append(document)
            if len(batch) == 1000:
                coll.insert_many(batch)
                batch = []
    if batch:
        coll.insert_many(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000, help="documents per data set")
    args = parser.parse_args()
    server = None
    uri = os.environ.get("MDB_MONGO_URI")
    if not uri:
        server = embedded.start_private()
        uri = server.uri
    workdir = Path(tempfile.mkdtemp(prefix="mdb-bench-"))
    client: MongoClient = MongoClient(uri)
    try:
        for name in (DB, DB + "_copy", DB + "_alone", DB + "_raw"):
            client.drop_database(name)
        with MongoDBEngine(uri, DB) as engine:
            db = engine.get_scoped_db("bench")
            sets = {
                "small": (args.docs, {"status": "todo", "n": 0, "tags": ["a", "b"]}),
                "large": (max(args.docs // 10, 1), {"body": "x" * 8000, "n": 0}),
            }
            rows = []
            for label, (count, template) in sets.items():
                coll = db[label]
                for start in range(0, count, 1000):
                    coll.insert_many(
                        [{**template, "n": i} for i in range(start, min(start + 1000, count))]
                    )
                engine._raw_collection(f"bench_{label}").create_index([("app_id", 1), ("n", 1)])
                size = sum(
                    len(b) for b in engine._raw_collection(f"bench_{label}").find_raw_batches()
                )
                rows.append((label, count, size))

            out = workdir / "export"
            t_raw_export = sum(
                timed(lambda label=label: raw_export(client, f"bench_{label}", workdir / label))
                for label, _, _ in rows
            )
            t_export = timed(lambda: engine.export_app("bench", out))
            with MongoDBEngine(uri, DB + "_copy") as copy:
                t_import = timed(lambda: copy.import_app("bench", out, target_slug="benchcopy"))
            with MongoDBEngine(uri, DB + "_alone") as alone:
                t_alone = timed(lambda: alone.import_app("bench", out, drop_app_id=True))
            t_replace = timed(lambda: engine.import_app("bench", out, drop=True))
            t_raw_import = sum(
                timed(lambda label=label: raw_import(client, workdir / label, label))
                for label, _, _ in rows
            )

        docs = sum(count for _, count, _ in rows)
        megabytes = sum(size for _, _, size in rows) / 1e6
        print(
            f"export / import of one app: {docs} documents, {megabytes:.1f} MB "
            f"({', '.join(f'{c} {label}' for label, c, _ in rows)}), "
            f"server {engine.describe_server()}\n"
        )
        header = f"{'step':<26} {'seconds':>8} {'docs/s':>9} {'MB/s':>7} {'vs raw':>7}"
        print(header)
        print("-" * len(header))

        def row(name: str, seconds: float, raw: float | None) -> None:
            ratio = f"{seconds / raw:>7.2f}" if raw else f"{'':>7}"
            print(
                f"{name:<26} {seconds:>8.2f} {docs / seconds:>9.0f} "
                f"{megabytes / seconds:>7.1f} {ratio}"
            )

        row("raw find_raw_batches", t_raw_export, None)
        row("mdb export", t_export, t_raw_export)
        row("raw decode + insert_many", t_raw_import, None)
        row("mdb import (new slug)", t_import, t_raw_import)
        row("mdb import --drop-app-id", t_alone, t_raw_import)
        row("mdb import --drop (in use)", t_replace, t_raw_import)
        print(
            "\nvs raw: time relative to the raw pymongo baseline of the same direction "
            "(< 1 is faster).\nmdb import also builds the exported indexes and registers the app."
        )
    finally:
        for name in (DB, DB + "_copy", DB + "_alone", DB + "_raw"):
            client.drop_database(name)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            embedded.stop_private(server)


if __name__ == "__main__":
    main()
