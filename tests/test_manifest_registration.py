"""Registration: atomic, persisted, signalled; collection settings applied; seeds inserted once."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from bson import ObjectId
from pymongo.errors import WriteError

from mdb_sync import ManifestValidationError
from mdb_sync.signals import app_registered, index_created, index_failed


def _names(raw_db):
    return sorted(n for n in raw_db.list_collection_names() if not n.startswith("mdb."))


def test_register_persists_and_reads_back(engine, raw_db):
    result = engine.register_app(
        {"slug": "shop", "name": "Shop", "managed_indexes": {"orders": [{"keys": {"n": 1}}]}}
    )
    assert result["slug"] == "shop" and result["created"] is True
    assert [o["status"] for o in result["indexes"]] == ["created"]
    stored = raw_db.apps_config.find_one({"_id": "shop"})
    assert stored["manifest"]["name"] == "Shop"
    assert stored["status"] == "active"
    assert stored["index_outcomes"] == result["indexes"]
    assert engine.get_app("shop")["managed_indexes"]["orders"][0]["name"] == "app_id_1_n_1"
    assert [m["slug"] for m in engine.list_apps()] == ["shop"]
    assert engine.registry.get_record("shop")["index_outcomes"][0]["status"] == "created"
    again = engine.register_app({"slug": "shop", "name": "Shop"}, create_indexes=False)
    assert again["created"] is False


def test_invalid_manifest_changes_nothing(engine, raw_db, recorder):
    engine.register_app({"slug": "keep", "name": "Before"})
    before = raw_db.apps_config.find_one({"_id": "keep"})
    collections = _names(raw_db)
    recorder.clear()
    bad = {
        "slug": "keep",
        "name": "After",
        "collection_settings": {"things": {"capped": True, "size": 4096}},
        "managed_indexes": {"things": [{"keys": {"a": 1}}, {"keys": {"b": "sideways"}}]},
        "initial_data": {"things": [{"x": 1}]},
    }
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(bad)
    assert info.value.paths == ["managed_indexes.things[1].keys"]
    assert raw_db.apps_config.find_one({"_id": "keep"}) == before
    assert _names(raw_db) == collections
    writes = {"insert", "update", "delete", "create", "createIndexes", "collMod", "drop"}
    assert not [c for c in recorder.commands() if writes & set(c)]


def test_server_refusal_of_collection_settings_is_rolled_back(engine, raw_db):
    manifest = {
        "slug": "roll",
        "collection_settings": {
            "first": {"capped": True, "size": 8192},
            "second": {"validation": {"$jsonSchema": {"bsonType": "not-a-type"}}},
        },
    }
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(manifest)
    assert info.value.paths == ["collection_settings.second"]
    assert "refused" in str(info.value)
    assert "roll_first" not in raw_db.list_collection_names()
    assert raw_db.apps_config.find_one({"_id": "roll"}) is None


def test_slug_collision_changes_nothing(engine, raw_db):
    engine.register_app({"slug": "my"})
    with pytest.raises(Exception, match="collide"):
        engine.register_app(
            {"slug": "my_app", "collection_settings": {"x": {"capped": True, "size": 4096}}}
        )
    assert raw_db.apps_config.find_one({"_id": "my_app"}) is None
    assert "my_app_x" not in raw_db.list_collection_names()


def test_reload_and_unregister(engine, mongo_uri, db_name):
    from mdb_sync import MongoDBEngine

    engine.register_app({"slug": "one"})
    engine.register_app({"slug": "two", "status": "inactive"})
    with MongoDBEngine(mongo_uri, db_name) as other:
        other.register_app({"slug": "three"})
    assert engine.reload_apps() == 2  # active apps: one, three
    assert engine.get_app("three") is not None
    assert engine.unregister_app("one") is True
    assert engine.get_app("one") is None
    assert engine.unregister_app("one") is False


def test_signals_are_sent(engine):
    seen = []

    def on_registered(sender, slug, manifest, result):
        seen.append(("registered", slug, len(result["indexes"])))

    def on_created(sender, slug, collection, name, keys, auto):
        seen.append(("created", name, auto))

    def on_failed(sender, slug, collection, name, error, **kwargs):
        seen.append(("failed", name, kwargs.get("status")))

    with (
        app_registered.connected_to(on_registered, sender=engine),
        index_created.connected_to(on_created, sender=engine),
        index_failed.connected_to(on_failed, sender=engine),
    ):
        engine.register_app(
            {
                "slug": "sig",
                "managed_indexes": {
                    "t": [
                        {"name": "ok", "keys": {"a": 1}},
                        {
                            "type": "search",
                            "name": "s",
                            "definition": {"mappings": {"dynamic": True}},
                        },
                    ]
                },
            }
        )
    assert ("created", "ok", False) in seen
    assert ("registered", "sig", 2) in seen
    failed = [s for s in seen if s[0] == "failed"]
    assert failed and failed[0][1] == "s"


# --- collection settings ---------------------------------------------------------------------


def test_json_schema_validator_is_applied_and_allows_app_id(engine, raw_db):
    engine.register_app(
        {
            "slug": "val",
            "collection_settings": {
                "people": {
                    "validation": {
                        "$jsonSchema": {
                            "bsonType": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {"_id": {}, "name": {"bsonType": "string"}},
                        }
                    }
                }
            },
        }
    )
    people = engine.get_scoped_db("val").people
    people.insert_one({"name": "Ada"})  # app_id is added by the sandbox and allowed
    with pytest.raises(WriteError):
        people.insert_one({"nickname": "no name"})
    with pytest.raises(WriteError):
        people.insert_one({"name": "Bob", "extra": 1})
    options = raw_db["val_people"].options()
    assert options["validator"]["$jsonSchema"]["properties"]["app_id"] == {"bsonType": "string"}


def test_validator_changes_are_applied_with_collmod(engine, raw_db, recorder):
    def manifest(required):
        return {
            "slug": "evolve",
            "collection_settings": {
                "items": {
                    "validation": {"$jsonSchema": {"bsonType": "object", "required": required}}
                }
            },
        }

    first = engine.register_app(manifest(["a"]))
    assert first["collections"] == [{"collection": "items", "status": "created"}]
    recorder.clear()
    second = engine.register_app(manifest(["a", "b"]))
    assert second["collections"] == [{"collection": "items", "status": "updated"}]
    assert recorder.commands("collMod")
    assert raw_db["evolve_items"].options()["validator"]["$jsonSchema"]["required"] == ["a", "b"]
    recorder.clear()
    third = engine.register_app(manifest(["a", "b"]))
    assert third["collections"] == [{"collection": "items", "status": "exists"}]
    assert not recorder.commands("collMod", "create")


def test_capped_collation_and_timeseries_collections(engine, raw_db):
    result = engine.register_app(
        {
            "slug": "kinds",
            "collection_settings": {
                "log": {"capped": True, "size": 65536, "max": 3},
                "names": {"collation": {"locale": "en", "strength": 2}},
                "metrics": {"timeseries": {"timeField": "ts", "metaField": "host"}},
            },
        }
    )
    assert {c["status"] for c in result["collections"]} == {"created"}
    assert raw_db["kinds_log"].options()["capped"] is True
    assert raw_db["kinds_names"].options()["collation"]["locale"] == "en"
    assert raw_db["kinds_metrics"].options()["timeseries"]["timeField"] == "ts"
    db = engine.get_scoped_db("kinds")
    for i in range(5):
        db.log.insert_one({"i": i})
    assert [d["i"] for d in db.log.find({}).sort("$natural", 1)] == [2, 3, 4]
    db.metrics.insert_one({"ts": dt.datetime.now(dt.timezone.utc), "host": "a", "v": 1})
    assert db.metrics.count_documents({}) == 1


def test_fixed_settings_of_an_existing_collection_are_a_conflict(engine, raw_db):
    raw_db.create_collection("fixed_log")
    result = engine.register_app(
        {"slug": "fixed", "collection_settings": {"log": {"capped": True, "size": 4096}}}
    )
    assert result["collections"][0]["status"] == "conflict"
    assert "capped" in result["collections"][0]["error"]
    assert not raw_db["fixed_log"].options().get("capped")


# --- initial data ----------------------------------------------------------------------------


def test_initial_data_is_seeded_once(engine, raw_db):
    manifest = {
        "slug": "seeded",
        "initial_data": {
            "tasks": [
                {"title": "first", "due": {"$date": "2030-01-01T00:00:00Z"}},
                {"_id": {"$oid": "65a1b2c3d4e5f6a7b8c9d0e1"}, "title": "second"},
            ]
        },
    }
    first = engine.register_app(manifest)
    assert first["seeded"] == {"tasks": 2}
    tasks = engine.get_scoped_db("seeded").tasks
    second = tasks.find_one({"title": "second"})
    assert second["_id"] == ObjectId("65a1b2c3d4e5f6a7b8c9d0e1")
    assert second["app_id"] == "seeded"
    assert isinstance(tasks.find_one({"title": "first"})["due"], dt.datetime)
    tasks.delete_many({})
    again = engine.register_app(manifest)
    assert again["seeded"] == {}
    assert tasks.count_documents({}) == 0  # deleted data is not resurrected


def test_initial_data_is_not_seeded_into_a_collection_with_data(engine):
    engine.get_scoped_db("busy").tasks.insert_one({"title": "mine"})
    result = engine.register_app({"slug": "busy", "initial_data": {"tasks": [{"title": "seed"}]}})
    assert result["seeded"] == {"tasks": 0}
    assert engine.get_scoped_db("busy").tasks.count_documents({}) == 1


def test_concurrent_registrations_seed_once(engine, mongo_uri, db_name):
    from mdb_sync import MongoDBEngine

    manifest = {"slug": "race", "initial_data": {"items": [{"n": i} for i in range(5)]}}
    engine.register_app({"slug": "race"})
    engines = [MongoDBEngine(mongo_uri, db_name).initialize() for _ in range(4)]
    errors = []

    def register(e):
        try:
            e.register_app(manifest)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.shutdown()
    assert not errors
    assert engine.get_scoped_db("race").items.count_documents({}) == 5
