"""A listening process for the realtime fault tests: it subscribes to one app's events and
prints each one as a JSON line, so the test can stop it (SIGSTOP) while the server is
killed and restarted underneath it, and see exactly what it delivered.

    python realtime_listener.py URI DB MODE APP GAP_GRACE

stdout: ``{"ready": true}`` once listening, then ``{"i": ...}`` per event; a line ``metrics``
on stdin prints ``{"metrics": {counter: value}, "status": {...}}``; end of stdin exits.
"""

from __future__ import annotations

import json
import sys
import threading

from mdb_sync import MongoDBEngine

COUNTERS = ("realtime.gaps", "realtime.overflows", "realtime.replays_skipped")


def main() -> None:
    uri, db_name, mode, app, grace = sys.argv[1:6]
    lock = threading.Lock()

    def emit(record: dict) -> None:
        with lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    engine = MongoDBEngine(
        uri, db_name, registry_refresh_seconds=3600, socketTimeoutMS=15_000
    ).initialize()
    engine.events.configure(mode=mode, gap_grace=float(grace))
    engine.events.subscribe(app, lambda event: emit({"i": event.message["i"]}))
    emit({"ready": True, "mode": engine.events.listening_mode})
    for line in sys.stdin:
        if line.strip() == "metrics":
            counters = {}
            for name in COUNTERS:
                counters[name] = sum(
                    c.get("counters", {}).get(name, 0)
                    for c in engine.get_metrics()["apps"].values()
                )
            emit({"metrics": counters, "status": engine.events.status()})
    engine.shutdown()


if __name__ == "__main__":
    main()
