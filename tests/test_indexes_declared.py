"""Declared indexes: every type built or reported unsupported, app_id rules, conflicts,
replacement, idempotent re-registration (asserted on the commands sent), health."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError

from mdb_sync.indexes import PROBLEM_STATUSES, plan_indexes
from mdb_sync.indexes.tools import index_health
from mdb_sync.manifest import validate_manifest

VECTOR = {
    "fields": [{"type": "vector", "path": "embedding", "numDimensions": 4, "similarity": "cosine"}]
}
EVERY_TYPE = [
    {"type": "regular", "name": "compound", "keys": {"status": 1, "created_at": -1}},
    {"type": "regular", "name": "uniq", "keys": {"email": 1}, "options": {"unique": True}},
    {"type": "regular", "name": "sparse", "keys": {"nick": 1}, "options": {"sparse": True}},
    {
        "type": "partial",
        "name": "partial",
        "keys": {"score": -1},
        "options": {"partialFilterExpression": {"score": {"$gt": 10}}},
    },
    {
        "type": "regular",
        "name": "collated",
        "keys": {"title": 1},
        "options": {"collation": {"locale": "en", "strength": 2}},
    },
    {"type": "regular", "name": "hidden", "keys": {"archived": 1}, "options": {"hidden": True}},
    {
        "type": "ttl",
        "name": "ttl",
        "keys": {"expires_at": 1},
        "options": {"expireAfterSeconds": 60},
    },
    {"type": "text", "name": "text", "keys": {"title": "text", "body": "text"}},
    {"type": "geospatial", "name": "sphere", "keys": {"location": "2dsphere"}},
    {"type": "geospatial", "name": "flat", "keys": {"xy": "2d"}},
    {"type": "hashed", "name": "hashed", "keys": {"shard": "hashed"}},
    {"type": "wildcard", "name": "wild", "keys": {"attributes.$**": 1}},
    {"type": "vectorSearch", "name": "vec", "definition": VECTOR},
    {"type": "search", "name": "fts", "definition": {"mappings": {"dynamic": True}}},
    {
        "type": "hybrid",
        "name": "hyb",
        "hybrid": {
            "vector_index": {"definition": VECTOR},
            "text_index": {
                "definition": {"mappings": {"dynamic": False, "fields": {"t": {"type": "string"}}}}
            },
        },
    },
]


def _indexes(raw_db, physical):
    return {ix["name"]: ix for ix in raw_db[physical].list_indexes()}


def test_every_index_type_exists_or_is_reported_not_supported(engine, raw_db):
    result = engine.register_app({"slug": "all", "managed_indexes": {"docs": EVERY_TYPE}})
    outcomes = {o["name"]: o for o in result["indexes"]}
    expected = {"hyb_vector", "hyb_text"} | {d["name"] for d in EVERY_TYPE if d["type"] != "hybrid"}
    assert set(outcomes) == expected
    on_server = _indexes(raw_db, "all_docs")
    for name, outcome in outcomes.items():
        if outcome["status"] == "created":
            assert name in on_server, name
        elif outcome["status"] == "exact_fallback":  # no Atlas Search: served without it
            assert name in ("vec", "hyb_vector", "hyb_text"), outcome
            assert outcome["served_by"] == ("keyword" if name == "hyb_text" else "exact")
        else:
            assert outcome["status"] == "not_supported", outcome
            assert outcome["error"]
            assert name not in on_server
    # The regular kinds every server has:
    for name in (
        "compound",
        "uniq",
        "sparse",
        "partial",
        "collated",
        "hidden",
        "ttl",
        "sphere",
        "flat",
    ):
        assert outcomes[name]["status"] == "created", outcomes[name]
    assert on_server["uniq"]["unique"] is True
    assert on_server["sparse"]["sparse"] is True
    assert on_server["partial"]["partialFilterExpression"] == {"score": {"$gt": 10}}
    assert on_server["collated"]["collation"]["strength"] == 2
    assert on_server["hidden"]["hidden"] is True
    assert on_server["ttl"]["expireAfterSeconds"] == 60
    # The embedded server has no Atlas Search: reported, not crashed.
    for name in ("vec", "fts", "hyb_vector", "hyb_text"):
        if engine.uses_embedded_server or outcomes[name]["status"] != "created":
            assert outcomes[name]["status"] in (
                "not_supported",
                "exact_fallback",
                "created",
                "pending",
            )


def test_app_id_placement(engine, raw_db):
    engine.register_app(
        {
            "slug": "keys",
            "managed_indexes": {
                "t": [
                    {"name": "a", "keys": {"status": 1}},
                    {"name": "b", "keys": {"app_id": 1, "owner": 1}},
                    {"name": "c", "keys": {"xy": "2d", "kind": 1}},
                    {"name": "d", "type": "ttl", "keys": {"at": 1}, "expireAfterSeconds": 5},
                    {"name": "e", "keys": {"legacy": 1}, "include_app_id": False},
                ]
            },
        }
    )
    keys = {n: list(ix["key"].items()) for n, ix in _indexes(raw_db, "keys_t").items()}
    assert keys["a"] == [("app_id", 1), ("status", 1)]
    assert keys["b"] == [("app_id", 1), ("owner", 1)]
    assert keys["c"] == [("xy", "2d"), ("app_id", 1), ("kind", 1)]
    assert keys["d"] == [("at", 1)]
    assert keys["e"] == [("legacy", 1)]


def test_vector_and_search_definitions_get_an_app_id_filter():
    manifest = validate_manifest(
        {"slug": "v", "managed_indexes": {"t": [EVERY_TYPE[-3], EVERY_TYPE[-2], EVERY_TYPE[-1]]}}
    )
    specs = [s for d in manifest["managed_indexes"]["t"] for s in plan_indexes("t", d)]
    vector, search, hybrid_vector, hybrid_text = specs
    assert {"type": "filter", "path": "app_id"} in vector.definition["fields"]
    assert search.definition["mappings"]["fields"]["app_id"] == {"type": "token"}
    assert {"type": "filter", "path": "app_id"} in hybrid_vector.definition["fields"]
    assert hybrid_text.definition["mappings"]["fields"]["app_id"] == {"type": "token"}
    assert hybrid_text.definition["mappings"]["fields"]["t"] == {"type": "string"}


def test_unique_index_is_unique_per_app(engine):
    engine.register_app(
        {"slug": "uq", "managed_indexes": {"users": [{"keys": {"email": 1}, "unique": True}]}}
    )
    users = engine.get_scoped_db("uq").users
    users.insert_one({"email": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        users.insert_one({"email": "a@example.com"})


def test_repeated_registration_sends_no_index_creation(engine, recorder):
    manifest = {"slug": "again", "managed_indexes": {"t": EVERY_TYPE, "u": [{"keys": {"x": 1}}]}}
    engine.register_app(manifest)
    recorder.clear()
    result = engine.register_app(manifest)
    assert {o["status"] for o in result["indexes"]} <= {
        "exists",
        "not_supported",
        "exact_fallback",
        "pending",
    }
    names = [next(iter(c)) for c in recorder.commands()]
    assert "createIndexes" not in names
    assert "createSearchIndexes" not in names
    assert not {"dropIndexes", "collMod", "insert", "delete"} & set(names)
    # The outcomes went from "created" to "exists": stored once, then nothing is written.
    recorder.clear()
    engine.register_app(manifest)
    names = [next(iter(c)) for c in recorder.commands()]
    assert not {"createIndexes", "createSearchIndexes", "update", "insert", "delete"} & set(names)


def test_same_name_other_keys_is_a_conflict_not_a_crash(engine, raw_db, recorder):
    engine.register_app(
        {"slug": "cf", "managed_indexes": {"t": [{"name": "by_x", "keys": {"x": 1}}]}}
    )
    result = engine.register_app(
        {
            "slug": "cf",
            "managed_indexes": {"t": [{"name": "by_x", "keys": {"y": 1}}, {"keys": {"z": 1}}]},
        }
    )
    by_name = {o["name"]: o for o in result["indexes"]}
    assert by_name["by_x"]["status"] == "conflict"
    assert "keys" in by_name["by_x"]["error"]
    assert by_name["app_id_1_z_1"]["status"] == "created"  # the rest goes on
    assert list(_indexes(raw_db, "cf_t")["by_x"]["key"]) == ["app_id", "x"]
    assert engine.registry.get_record("cf")["index_outcomes"] == result["indexes"]
    health = index_health(engine)
    assert health["status"] == "degraded" and "cf" in health["degraded_apps"]

    replaced = engine.register_app(
        {
            "slug": "cf",
            "managed_indexes": {"t": [{"name": "by_x", "keys": {"y": 1}}, {"keys": {"z": 1}}]},
        },
        replace_conflicting_indexes=True,
    )
    assert {o["name"]: o["status"] for o in replaced["indexes"]} == {
        "by_x": "replaced",
        "app_id_1_z_1": "exists",
    }
    assert list(_indexes(raw_db, "cf_t")["by_x"]["key"]) == ["app_id", "y"]
    assert "cf" not in index_health(engine)["degraded_apps"]


def test_option_change_is_a_conflict_and_ttl_is_changed_in_place(engine, raw_db, recorder):
    manifest = {
        "slug": "opt",
        "managed_indexes": {
            "t": [{"name": "n", "type": "ttl", "keys": {"at": 1}, "expireAfterSeconds": 60}]
        },
    }
    engine.register_app(manifest)
    manifest["managed_indexes"]["t"][0]["expireAfterSeconds"] = 3600
    conflict = engine.register_app(manifest)
    assert conflict["indexes"][0]["status"] == "conflict"
    assert "expireAfterSeconds" in conflict["indexes"][0]["error"]
    assert _indexes(raw_db, "opt_t")["n"]["expireAfterSeconds"] == 60
    recorder.clear()
    replaced = engine.register_app(manifest, replace_conflicting_indexes=True)
    assert replaced["indexes"][0]["status"] == "replaced"
    assert replaced["indexes"][0]["how"] == "collMod"
    assert recorder.commands("collMod") and not recorder.commands("dropIndexes")
    assert _indexes(raw_db, "opt_t")["n"]["expireAfterSeconds"] == 3600


def test_hidden_change_is_a_conflict(engine):
    manifest = {"slug": "hid", "managed_indexes": {"t": [{"name": "n", "keys": {"n": 1}}]}}
    engine.register_app(manifest)
    manifest["managed_indexes"]["t"][0]["hidden"] = True
    result = engine.register_app(manifest)
    assert result["indexes"][0]["status"] == "conflict"
    assert "hidden" in result["indexes"][0]["error"]


def test_unique_flag_change_is_a_conflict(engine):
    engine.register_app({"slug": "u2", "managed_indexes": {"t": [{"name": "e", "keys": {"e": 1}}]}})
    result = engine.register_app(
        {"slug": "u2", "managed_indexes": {"t": [{"name": "e", "keys": {"e": 1}, "unique": True}]}}
    )
    assert result["indexes"][0]["status"] == "conflict"
    assert "unique" in result["indexes"][0]["error"]


def test_existing_index_under_another_name_is_reused(engine, raw_db, recorder):
    raw_db["reuse_t"].create_index([("app_id", 1), ("k", 1)], name="handmade")
    manifest = {"slug": "reuse", "managed_indexes": {"t": [{"name": "declared", "keys": {"k": 1}}]}}
    first = engine.register_app(manifest)
    assert first["indexes"][0]["status"] == "exists"
    assert first["indexes"][0]["existing_name"] == "handmade"
    recorder.clear()
    engine.register_app(manifest)
    assert not recorder.commands("createIndexes")


def test_unsupported_indexes_are_not_resent_but_sync_retries(engine, recorder):
    from mdb_sync.indexes.tools import sync_indexes

    manifest = {"slug": "uns", "managed_indexes": {"t": [{"type": "text", "keys": {"t": "text"}}]}}
    first = engine.register_app(manifest)
    status = first["indexes"][0]["status"]
    assert status in ("created", "not_supported")
    recorder.clear()
    engine.register_app(manifest)
    assert not recorder.commands("createIndexes")
    if status == "not_supported":
        results = sync_indexes(engine, "uns")
        assert results["uns"][0]["status"] == "not_supported"
        assert recorder.commands("createIndexes")


def test_health_reports_problem_outcomes(engine):
    engine.register_app({"slug": "fine", "managed_indexes": {"t": [{"keys": {"a": 1}}]}})
    assert index_health(engine)["status"] == "healthy"
    engine.register_app(
        {
            "slug": "geo",
            "managed_indexes": {
                "t": [
                    {"type": "search", "name": "s", "definition": {"mappings": {"dynamic": True}}}
                ]
            },
        }
    )
    health = index_health(engine)
    if engine.registry.get_record("geo")["index_outcomes"][0]["status"] in PROBLEM_STATUSES:
        assert health["status"] == "degraded"
        assert health["problems"]["geo"][0]["name"] == "s"
        assert "fine" not in health["degraded_apps"]


def test_index_failure_is_reported_and_the_rest_created(engine, raw_db):
    # Duplicate values make a unique index impossible to build: failed, not raised.
    engine.get_scoped_db("dup").t.insert_many([{"e": 1}, {"e": 1}])
    result = engine.register_app(
        {
            "slug": "dup",
            "managed_indexes": {
                "t": [
                    {"name": "ok", "keys": {"a": 1}},
                    {"name": "uq", "keys": {"e": 1}, "unique": True},
                ]
            },
        }
    )
    by_name = {o["name"]: o for o in result["indexes"]}
    assert by_name["ok"]["status"] == "created"
    assert by_name["uq"]["status"] == "failed"
    assert "dup" in by_name["uq"]["error"].lower() or "E11000" in by_name["uq"]["error"]
    assert "ok" in _indexes(raw_db, "dup_t")
