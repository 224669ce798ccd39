"""Cost of the durable embedded server (``--sync-on-commit``, the default) in writes/s.

Starts two shared embedded servers the library's way (``embedded.ensure_running``), one
durable and one not, each with its own data directory on the same disk, and runs the same
write workloads through the scoped API against both, **interleaved** round by round (so a
busy machine slows both alike). Prints writes/s (median of rounds) and the ratio.

With ``--crash N`` it also SIGKILLs each server N times in the middle of a stream of
acknowledged single-document inserts and counts, after the engine restarted it, how many
acknowledged inserts are missing: what the durable default buys.

    .venv/bin/python benchmarks/durability.py [--ops 1000] [--rounds 5] [--crash 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mdb_sync import MongoDBEngine, embedded

MODES = (("not durable", False), ("durable (default)", True))


def _threads(n: int, ops: int, body: Callable[[int, int], None]) -> None:
    def run(t: int) -> None:
        for i in range(ops // n):
            body(t, i)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def workloads(db: Any, ops: int) -> dict[str, tuple[Callable[[], None], int]]:
    """name -> (run, number of documents written)."""
    items, counters = db.items, db.counters
    batch = [{"n": i, "payload": "x" * 100} for i in range(100)]
    return {
        "insert_one, 1 thread": (
            lambda: _threads(1, ops, lambda t, i: items.insert_one({"n": i})),
            ops,
        ),
        "insert_one, 4 threads": (
            lambda: _threads(4, ops, lambda t, i: items.insert_one({"n": i, "t": t})),
            ops,
        ),
        "update_one $inc, 1 thread": (
            lambda: _threads(
                1, ops, lambda t, i: counters.update_one({"_id": i % 10}, {"$inc": {"v": 1}}, True)
            ),
            ops,
        ),
        "insert_many x100, 1 thread": (
            lambda: [items.insert_many([dict(d) for d in batch]) for _ in range(ops // 100)],
            ops // 100 * 100,
        ),
    }


def crash_losses(engine: MongoDBEngine, runs: int, seconds: float) -> tuple[int, int]:
    """(acknowledged, lost) inserts over ``runs`` SIGKILLs of the engine's server."""
    db = engine.get_scoped_db("crash")
    acked_total = lost_total = 0
    for run in range(runs):
        acked: list[int] = []
        stop = threading.Event()

        def write(run: int = run, acked: list[int] = acked, stop: threading.Event = stop) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    db.items.insert_one({"_id": run * 10_000_000 + i})
                    acked.append(run * 10_000_000 + i)
                except Exception:
                    time.sleep(0.01)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(seconds)
        os.kill(engine.embedded_server.pid, signal.SIGKILL)
        time.sleep(0.05)
        stop.set()
        writer.join()
        # The engine restarts its server (same port, same data) on the next operation.
        deadline = time.monotonic() + 60
        while True:
            try:
                stored = {d["_id"] for d in db.items.find({"_id": {"$in": acked}}, {"_id": 1})}
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        acked_total += len(acked)
        lost_total += sum(1 for i in acked if i not in stored)
    return acked_total, lost_total


def main() -> None:
    logging.getLogger("mdb_sync").setLevel(logging.ERROR)  # the restarts are the point
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1000, help="writes per workload and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crash", type=int, default=0, help="SIGKILL runs per mode")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mdb-durability-") as tmp:
        engines = {}
        for label, durable in MODES:
            base = Path(tmp) / label.split()[0]
            embedded.ensure_running(base, durable=durable, pin=True)
            engine = MongoDBEngine(embedded_dir=base, db_name="bench", embedded_durable=durable)
            engines[label] = engine.initialize()
        try:
            loads = {
                label: workloads(e.get_scoped_db("bench"), args.ops) for label, e in engines.items()
            }
            rates: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for name in loads[MODES[0][0]]:
                    for label, _durable in MODES:
                        run, written = loads[label][name]
                        started = time.perf_counter()
                        run()
                        elapsed = time.perf_counter() - started
                        rates.setdefault((name, label), []).append(written / elapsed)
            print(f"writes/s, median of {args.rounds} interleaved rounds of {args.ops} writes")
            header = f"{'workload':<28}" + "".join(f"{label:>20}" for label, _ in MODES)
            print(header + f"{'durable / not':>16}")
            for name in loads[MODES[0][0]]:
                medians = [statistics.median(rates[(name, label)]) for label, _ in MODES]
                cells = "".join(f"{m:>20,.0f}" for m in medians)
                print(f"{name:<28}{cells}{medians[1] / medians[0]:>16.2f}")
            if args.crash:
                print(f"\nacknowledged inserts lost over {args.crash} SIGKILLs of the server")
                for label, engine in engines.items():
                    acked, lost = crash_losses(engine, args.crash, seconds=2.0)
                    print(f"{label:<28}{lost:>8,} of {acked:,}")
        finally:
            for label, engine in engines.items():
                engine.shutdown()
                embedded.stop(Path(tmp) / label.split()[0])


if __name__ == "__main__":
    main()
