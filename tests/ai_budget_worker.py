"""A separate process spending an app's LLM budget, for the cross-process budget tests.

    python tests/ai_budget_worker.py MONGO_URI DB_NAME APP THREADS [--lease S --now ISO]

Each of ``THREADS`` threads calls ``chat`` until the budget refuses it; the process prints
one JSON line: ``{"ok": <successful calls>, "refused": <refusals>, "errors": [...]}``.
With ``--lease`` it builds the service with a ledger whose reservations expire after that
many seconds, on a clock fixed at ``--now``, and makes a single call (the fault test kills
it during that call).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading

from mdb_sync import MongoDBEngine
from mdb_sync.ai import LLMConfig, LLMService
from mdb_sync.ai.spend import SpendLedger
from mdb_sync.exceptions import AIBudgetExceededError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("db")
    parser.add_argument("app")
    parser.add_argument("threads", type=int)
    parser.add_argument("--lease", type=float)
    parser.add_argument("--now")
    args = parser.parse_args()
    engine = MongoDBEngine(args.uri, args.db)
    engine.initialize()
    if args.lease:
        config = LLMConfig.from_section(engine.get_app(args.app)["llm_config"], slug=args.app)
        now = dt.datetime.fromisoformat(args.now)
        ledger = SpendLedger(engine, args.app, lease_seconds=args.lease, clock=lambda: now)
        llm = LLMService(config, metrics=engine.metrics, app=args.app, ledger=ledger)
        print(json.dumps({"started": True}), flush=True)
        llm.chat("go")
        print(json.dumps({"finished": True}), flush=True)
        return
    llm = engine.get_llm_service(args.app)
    counts = {"ok": 0, "refused": 0, "errors": []}
    lock = threading.Lock()
    barrier = threading.Barrier(args.threads)

    def spend() -> None:
        barrier.wait()
        while True:
            try:
                llm.chat("go")
            except AIBudgetExceededError:
                with lock:
                    counts["refused"] += 1
                return
            except Exception as exc:  # reported to the test, which fails on any
                with lock:
                    counts["errors"].append(repr(exc))
                return
            with lock:
                counts["ok"] += 1

    threads = [threading.Thread(target=spend) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.shutdown()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
