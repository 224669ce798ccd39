"""The storage service: one naming table of internal collections, out of every app's reach,
and the migration of renamed ones (through real servers and real processes)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import mdb_sync
from mdb_sync import MongoDBEngine, storage
from mdb_sync.auth import store as auth_store
from mdb_sync.exceptions import InvalidCollectionName, ScopeError
from mdb_sync.indexes.auto import SHAPES_COLLECTION
from mdb_sync.scoping.names import physical_name

OLD, NEW = "mdb.query_shapes", storage.QUERY_SHAPES


def test_every_internal_name_is_mdb_prefixed_except_the_design_fixed_registry():
    assert {"apps_config"} == storage.DESIGN_FIXED_NAMES
    for name in storage.INTERNAL_COLLECTIONS:
        assert name.startswith("mdb_") or name in storage.DESIGN_FIXED_NAMES, name
    assert dict(storage.LEGACY_NAMES) == {OLD: NEW}
    assert all(prefix.startswith("mdb_") for prefix in storage.INTERNAL_PREFIXES)


def test_every_internal_collection_constant_is_in_the_table():
    """The names each subsystem uses come from the table: every module-level ``*_COLLECTION``
    constant of the package naming an engine collection, and every auth collection."""
    constants = {}
    for info in pkgutil.walk_packages(mdb_sync.__path__, "mdb_sync."):
        if info.name.endswith(("__main__", "embedded_supervisor")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for attr, value in vars(module).items():
            if (
                attr.endswith("_COLLECTION")
                and isinstance(value, str)
                and (value.startswith(("mdb_", "mdb.")) or value == "apps_config")
            ):  # the others are apps' logical names (``casbin_policies``)
                constants[f"{info.name}.{attr}"] = value
    assert constants, "no collection constants found"
    for where, value in constants.items():
        assert value in storage.INTERNAL_COLLECTIONS, (where, value)
    auth_names = [v for k, v in vars(auth_store).items() if k.isupper() and isinstance(v, str)]
    assert len(auth_names) == 13
    assert set(auth_names) <= set(storage.INTERNAL_COLLECTIONS)


def test_the_collections_the_engine_creates_are_all_in_the_table(engine, raw_db):
    engine.register_app({"slug": "shop"})
    db = engine.get_scoped_db("shop")
    for _ in range(5):
        db.orders.find_one({"status": "new"})
    engine.auto_indexes.flush()
    engine.events.publish("shop", {"hello": 1})
    for name in storage.INTERNAL_COLLECTIONS:
        engine.storage.system(name)
    created = set(raw_db.list_collection_names())
    internal = {n for n in created if not n.startswith("shop_")}
    assert {"apps_config", NEW, "mdb_events", "mdb_registry_locks"} <= internal
    assert internal <= set(storage.INTERNAL_COLLECTIONS)
    indexes = raw_db[auth_store.SESSIONS].index_information()
    assert indexes["ttl"]["expireAfterSeconds"] == 0 and "app_user" in indexes


def test_a_name_outside_the_table_is_refused(engine):
    with pytest.raises(KeyError, match="not an internal collection"):
        engine.storage.system("mdb_unlisted")


@pytest.mark.parametrize("name", [*storage.INTERNAL_COLLECTIONS, *storage.LEGACY_NAMES])
def test_no_app_can_reach_an_internal_collection(engine, raw_db, name):
    """Every way of splitting the name into ``<slug>_<collection>`` is refused by the
    sandbox, so no scoped database (registered or implicit) names it."""
    raw_db[name].insert_one({"secret": True})
    splits = [(name[:i], name[i + 1 :]) for i, ch in enumerate(name) if ch == "_"]
    assert splits, name
    for slug, coll in splits:
        assert physical_name(slug, coll) == name
        with pytest.raises((ScopeError, InvalidCollectionName)):
            engine.get_scoped_db(slug)[coll].find_one({})
    assert raw_db[name].count_documents({"secret": True}) == 1


# --- migration ------------------------------------------------------------------------------


def _shapes(n: int, start: int = 0, source: str = "old") -> list[dict]:
    return [
        {"_id": f"app:c:{i:06d}", "slug": "app", "count": i, "from": source}
        for i in range(start, start + n)
    ]


def test_the_old_collection_is_renamed_on_first_use_and_again_is_a_no_op(engine, raw_db):
    raw_db[OLD].insert_many(_shapes(50))
    assert SHAPES_COLLECTION == NEW
    engine.storage.system(NEW)
    assert OLD not in raw_db.list_collection_names()
    assert raw_db[NEW].count_documents({"from": "old"}) == 50
    assert {"slug_1", "expires_at_1"} <= set(raw_db[NEW].index_information())
    assert engine.storage.migrate() == {}  # twice: nothing left to move
    assert raw_db[NEW].count_documents({}) == 50


def test_a_later_engine_finishes_what_an_older_process_wrote_meanwhile(engine, mongo_uri, raw_db):
    """Both names exist (an old-version process wrote after the rename): the old documents
    are merged in, those already under the new name win, the old name is dropped."""
    raw_db[NEW].insert_many(_shapes(20, start=10, source="new"))
    raw_db[OLD].insert_many(_shapes(20))
    assert engine.storage.migrate(batch_size=7) == {OLD: NEW}
    assert OLD not in raw_db.list_collection_names()
    assert raw_db[NEW].count_documents({}) == 30
    assert raw_db[NEW].count_documents({"from": "new"}) == 20
    assert engine.storage.migrate() == {}


_MIGRATE = textwrap.dedent(
    """
    import sys, time
    from mdb_sync import MongoDBEngine
    uri, db_name, batch, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    engine = MongoDBEngine(uri, db_name).initialize()
    time.sleep(max(0.0, start_at - time.time()))
    print(engine.storage.migrate(batch_size=batch), flush=True)
    engine.shutdown()
    """
)


def _migrator(mongo_uri: str, db_name: str, batch: int, start_at: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _MIGRATE, mongo_uri, db_name, str(batch), str(start_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("new_exists", [False, True], ids=["rename", "merge"])
def test_two_processes_migrating_at_once_both_succeed(mongo_uri, db_name, raw_db, new_exists):
    if new_exists:
        raw_db[NEW].insert_many(_shapes(100, start=900, source="new"))
    raw_db[OLD].insert_many(_shapes(1000))
    start_at = time.time() + 3.0  # both processes are connected by then
    procs = [_migrator(mongo_uri, db_name, 50, start_at) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert OLD not in raw_db.list_collection_names()
    assert raw_db[NEW].count_documents({}) == 1000  # the new ones overlap the old ids
    assert {d["_id"] for d in raw_db[NEW].find({}, {"_id": 1})} == {d["_id"] for d in _shapes(1000)}
    if new_exists:
        assert raw_db[NEW].count_documents({"from": "new"}) == 100


def test_a_migration_killed_half_way_is_completed_by_the_next_run(mongo_uri, db_name, raw_db):
    """SIGKILL the migrating process while it copies (both names exist, small batches):
    nothing is lost, the old collection is still there, and the next run completes it."""
    raw_db[NEW].insert_one({"_id": "zzz", "from": "new"})
    raw_db[OLD].insert_many(_shapes(3000))
    proc = _migrator(mongo_uri, db_name, 5, 0.0)
    deadline = time.monotonic() + 60
    try:
        while raw_db[NEW].count_documents({}) < 50:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the migration never started copying"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    copied = raw_db[NEW].count_documents({})
    assert copied < 3001, "killed after the copy: not half-way"
    assert raw_db[OLD].count_documents({}) == 3000  # dropped only once everything is copied
    with MongoDBEngine(mongo_uri, db_name) as engine:
        assert engine.storage.migrate() == {OLD: NEW}
        assert engine.storage.migrate() == {}
    assert OLD not in raw_db.list_collection_names()
    assert raw_db[NEW].count_documents({}) == 3001
    assert {d["_id"] for d in raw_db[NEW].find({"from": "old"}, {"_id": 1})} == {
        d["_id"] for d in _shapes(3000)
    }
