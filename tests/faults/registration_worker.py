"""A process for tests/faults/test_registration_races.py to kill at the moment that matters.

``hold-lock URI DB SLUG``: take the registration lock of SLUG's segment (the real
``segment_lock``), print ``locked`` and wait to be killed.
``register-until-killed URI DB SLUG``: register SLUG with a declared index and, once that index
is built — the slug is claimed (its record says ``registering``) and the record's final write
not yet made — print ``claimed`` and wait to be killed. It learns that moment from the
library's public ``index_created`` signal, sent on the registering thread between the claim
and the final write: the kill then always lands inside that window, however loaded the
machine (polling the record from outside could see it a moment before the registration
finished).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pymongo import MongoClient

from mdb_sync import MongoDBEngine
from mdb_sync.registry_claims import LOCKS_COLLECTION, segment_lock
from mdb_sync.signals import index_created


def main() -> None:
    mode, uri, db, slug = sys.argv[1:5]
    if mode == "hold-lock":
        client: MongoClient[Any] = MongoClient(uri, retryWrites=False)
        with segment_lock(client[db][LOCKS_COLLECTION], slug):
            print("locked", flush=True)
            time.sleep(600)
    elif mode == "register-until-killed":
        engine = MongoDBEngine(uri, db).initialize()

        def claimed(sender: Any, **_event: Any) -> None:
            print("claimed", flush=True)
            time.sleep(600)  # inside the registration, until killed

        index_created.connect(claimed, sender=engine, weak=False)
        indexes = {"items": [{"name": "by_n", "keys": {"n": 1}}]}
        engine.register_app({"slug": slug, "managed_indexes": indexes})
        print("registered", flush=True)  # never: the test kills it first
    else:  # pragma: no cover
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
