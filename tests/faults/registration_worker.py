"""A process for tests/faults/test_registration_races.py to kill at the moment that matters.

``hold-lock URI DB SLUG``: take the registration lock of SLUG's segment (the real
``segment_lock``), print ``locked`` and wait to be killed.
``register-slow URI DB SLUG``: register SLUG with many declared indexes, so the registration
spends a while between claiming the slug and its final write.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pymongo import MongoClient

from mdb_sync import MongoDBEngine
from mdb_sync.registry_claims import LOCKS_COLLECTION, segment_lock


def main() -> None:
    mode, uri, db, slug = sys.argv[1:5]
    if mode == "hold-lock":
        client: MongoClient[Any] = MongoClient(uri, retryWrites=False)
        with segment_lock(client[db][LOCKS_COLLECTION], slug):
            print("locked", flush=True)
            time.sleep(600)
    elif mode == "register-slow":
        engine = MongoDBEngine(uri, db).initialize()
        indexes = {
            f"c{c}": [{"name": f"i{i}", "keys": {f"f{i}": 1, "g": -1}} for i in range(12)]
            for c in range(12)
        }
        engine.register_app({"slug": slug, "managed_indexes": indexes})
        print("registered", flush=True)
    else:  # pragma: no cover
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
