"""The app catalog's typed, versioned records; the per-app services cache; versioned
compare-and-set updates of a manifest (``apply_schema`` from several engines at once)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from mdb_sync import AppVersionConflictError, MongoDBEngine
from mdb_sync.app_services import APP_SERVICES_CACHE_SIZE, AppServices
from mdb_sync.catalog import AppRecord
from mdb_sync.schema import apply_schema


def test_a_record_is_frozen_and_its_manifest_read_only(engine):
    engine.register_app({"slug": "frozen", "name": "Frozen"})
    record = engine.catalog.get("frozen")
    assert isinstance(record, AppRecord)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.version = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.manifest["name"] = "changed"  # type: ignore[index]
    # A copy can be changed and registered; the record read before is unchanged.
    changed = {**record.manifest, "name": "Changed"}
    engine.register_app(changed)
    assert record.manifest["name"] == "Frozen"
    assert engine.catalog.get("frozen").manifest["name"] == "Changed"


def test_every_write_bumps_the_stored_version(engine, raw_db):
    engine.register_app({"slug": "counted", "name": "One"})
    # Two writes: the pending claim of the new slug (version 1), then the record.
    assert raw_db.apps_config.find_one({"_id": "counted"})["version"] == 2
    assert engine.catalog.get("counted").version == 2
    engine.register_app({"slug": "counted", "name": "Two"})
    assert raw_db.apps_config.find_one({"_id": "counted"})["version"] == 3
    engine.register_app({"slug": "counted", "name": "Two"})  # unchanged: no write
    assert raw_db.apps_config.find_one({"_id": "counted"})["version"] == 3
    engine.register_app(
        {
            "slug": "counted",
            "name": "Two",
            "initial_data": {"things": [{"n": 1}]},  # the seed claim is a write too
        }
    )
    stored = raw_db.apps_config.find_one({"_id": "counted"})
    assert stored["version"] == 5  # the manifest, then the seed claim
    assert engine.catalog.get("counted").version == stored["version"]


def test_an_app_registered_again_is_a_new_incarnation(engine):
    engine.register_app({"slug": "again", "name": "Again"})
    first = engine.catalog.get("again")
    engine.unregister_app("again")
    engine.register_app({"slug": "again", "name": "Again"})
    second = engine.catalog.get("again")
    assert second.version == first.version
    assert second.key != first.key  # what was built for the old app is not reused


def test_a_document_changed_without_a_version_bump_still_makes_a_new_key(engine, raw_db):
    engine.register_app({"slug": "by_hand", "name": "By hand"})
    before = engine.catalog.get("by_hand")
    raw_db.apps_config.update_one({"_id": "by_hand"}, {"$set": {"manifest.name": "Edited"}})
    engine.reload_apps()
    after = engine.catalog.get("by_hand")
    assert after.version == before.version and after.key != before.key
    engine.reload_apps()
    assert engine.catalog.get("by_hand") is after  # unchanged: the same object is kept


def test_the_services_cache_is_keyed_by_the_record_and_bounded(engine):
    engine.register_app({"slug": "cached", "name": "One"})
    services = AppServices(engine.catalog, limit=3)
    record = engine.catalog.get("cached")
    first = services.get(record, "thing", object)
    assert services.get(record, "thing", object) is first
    engine.register_app({"slug": "cached", "name": "Two"})
    newer = engine.catalog.get("cached")
    rebuilt = services.get(newer, "thing", object)
    assert rebuilt is not first
    assert services.cache_info()["app_services"] == {"size": 1, "limit": 3}  # replaced
    for kind in ("a", "b", "c", "d", "e"):
        services.get(newer, kind, object)
    assert services.cache_info()["app_services"] == {"size": 3, "limit": 3}
    with pytest.raises(ValueError):
        AppServices(engine.catalog, limit=0)
    info = engine.cache_info()["app_services"]
    assert info["limit"] == APP_SERVICES_CACHE_SIZE and info["size"] <= info["limit"]


def test_a_full_services_cache_evicts_the_least_recently_used_entry(engine):
    """Hits take no lock below half the limit, but once an eviction may come the entry
    used last stays and the one used longest ago goes."""
    engine.register_app({"slug": "lru", "name": "LRU"})
    services = AppServices(engine.catalog, limit=4)
    record = engine.catalog.get("lru")
    built = {kind: services.get(record, kind, object) for kind in ("a", "b", "c", "d")}
    assert services.get(record, "a", object) is built["a"]  # "a" used last, "b" oldest
    services.get(record, "e", object)
    assert services.get(record, "a", object) is built["a"]
    assert services.get(record, "b", object) is not built["b"]  # evicted, built again


def test_a_script_and_the_engine_share_one_auth_service(engine):
    from mdb_sync.auth.service import get_auth_service

    engine.register_app({"slug": "authed", "name": "A", "auth": {"users": {"enabled": True}}})
    first = get_auth_service(engine, "authed")
    assert get_auth_service(engine, "authed") is first
    users = {"enabled": True, "session_ttl_seconds": 600}
    engine.register_app({"slug": "authed", "name": "A", "auth": {"users": users}})
    assert get_auth_service(engine, "authed") is not first  # the manifest changed


def test_a_stale_version_is_refused_and_changes_nothing(engine, raw_db):
    engine.register_app({"slug": "cas", "name": "One"})
    stale = engine.catalog.get("cas").version
    engine.register_app({"slug": "cas", "name": "Two"})
    with pytest.raises(AppVersionConflictError, match="changed meanwhile"):
        engine.registration.register({"slug": "cas", "name": "Three"}, expected_version=stale)
    assert raw_db.apps_config.find_one({"_id": "cas"})["manifest"]["name"] == "Two"


def test_concurrent_apply_schema_from_several_engines_loses_no_change(mongo_uri, db_name):
    """The lost update: each apply_schema reads the manifest, adds its collection's
    validator and registers the result; concurrently, a plain read-modify-write lets the
    last writer drop the others' validators. As a versioned compare-and-set, every one of
    them is in the manifest (and on its collection) at the end."""
    setup = MongoDBEngine(mongo_uri, db_name).initialize()
    setup.register_app({"slug": "shop", "name": "Shop"})
    collections = [f"c{i}" for i in range(6)]
    engines = [MongoDBEngine(mongo_uri, db_name).initialize() for _ in collections]
    barrier = threading.Barrier(len(collections))
    errors: list[BaseException] = []

    def apply(engine: MongoDBEngine, collection: str) -> None:
        try:
            barrier.wait(timeout=30)
            schema = {"bsonType": "object", "required": [f"{collection}_field"]}
            apply_schema(engine, "shop", collection, {"$jsonSchema": schema})
        except BaseException as exc:  # reported below
            errors.append(exc)

    pairs = zip(engines, collections, strict=True)
    threads = [threading.Thread(target=apply, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors, errors
        setup.reload_apps()
        settings = setup.get_app("shop")["collection_settings"]
        assert sorted(settings) == collections
        for collection in collections:
            required = settings[collection]["validation"]["validator"]["$jsonSchema"]["required"]
            assert required == [f"{collection}_field"]
        assert setup.catalog.get("shop").version >= 2 + len(collections)
    finally:
        for engine in [setup, *engines]:
            engine.shutdown()
