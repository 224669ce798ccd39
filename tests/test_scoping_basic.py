"""The two scoping layers on basic CRUD: physical prefix and logical ``app_id``."""

from __future__ import annotations

import pytest

from mdb_sync import QueryValidationError, ScopeError
from mdb_sync.exceptions import InvalidCollectionName


@pytest.fixture
def two_apps(engine):
    a = engine.get_scoped_db("app_a")
    b = engine.get_scoped_db("app_b")
    a.tasks.insert_many([{"title": "a1", "n": 1}, {"title": "a2", "n": 2}])
    b.tasks.insert_many([{"title": "b1", "n": 1}, {"title": "b2", "n": 2}])
    return a, b


def test_prefix_and_app_id_are_applied(engine, raw_db):
    db = engine.get_scoped_db("my_app")
    doc = {"title": "x"}
    result = db.tasks.insert_one(doc)
    assert doc["_id"] == result.inserted_id, "like pymongo, the document gets its _id"
    assert "app_id" not in doc, "the caller's document is not changed otherwise"
    stored = raw_db["my_app_tasks"].find_one({"_id": result.inserted_id})
    assert stored == {"_id": result.inserted_id, "title": "x", "app_id": "my_app"}
    assert "tasks" not in raw_db.list_collection_names()


def test_apps_do_not_see_each_other(two_apps):
    a, b = two_apps
    assert sorted(d["title"] for d in a.tasks.find()) == ["a1", "a2"]
    assert sorted(d["title"] for d in b.tasks.find({})) == ["b1", "b2"]
    assert a.tasks.find_one({"title": "b1"}) is None
    assert a.tasks.count_documents({}) == 2
    assert a.tasks.count_documents({"app_id": "app_b"}) == 0


def test_writes_stay_in_their_app(two_apps, raw_db):
    a, b = two_apps
    assert a.tasks.update_many({}, {"$set": {"done": True}}).modified_count == 2
    assert b.tasks.count_documents({"done": True}) == 0
    assert a.tasks.delete_many({"n": 1}).deleted_count == 1
    assert b.tasks.count_documents({"n": 1}) == 1
    a.tasks.replace_one({"title": "a2"}, {"title": "a2-replaced"})
    stored = raw_db["app_a_tasks"].find_one({"title": "a2-replaced"})
    assert stored["app_id"] == "app_a"


def test_upsert_creates_documents_in_the_write_scope(engine, raw_db):
    db = engine.get_scoped_db("ups")
    db.items.update_one({"sku": "x"}, {"$set": {"qty": 1}}, upsert=True)
    db.items.replace_one({"sku": "y"}, {"sku": "y", "qty": 2}, upsert=True)
    db.items.update_one({"sku": "z"}, [{"$set": {"qty": 3}}], upsert=True)
    assert sorted(d["app_id"] for d in raw_db["ups_items"].find()) == ["ups"] * 3


def test_documents_of_another_app_are_refused(engine):
    db = engine.get_scoped_db("owner")
    with pytest.raises(ScopeError, match="app_id"):
        db.items.insert_one({"app_id": "intruder"})
    with pytest.raises(ScopeError):
        db.items.insert_many([{"ok": 1}, {"app_id": "intruder"}])
    assert db.items.count_documents({}) == 0, "nothing half-written"
    with pytest.raises(ScopeError):
        db.items.replace_one({}, {"app_id": "intruder"})
    db.items.insert_one({"app_id": "owner", "same": True})
    assert db.items.count_documents({"same": True}) == 1


@pytest.mark.parametrize(
    "update",
    [
        {"$set": {"app_id": "other"}},
        {"$set": {"app_id.x": 1}},
        {"$unset": {"app_id": ""}},
        {"$rename": {"app_id": "old"}},
        {"$rename": {"x": "app_id"}},
        {"$setOnInsert": {"app_id": "other"}},
        {"$currentDate": {"app_id": True}},
    ],
)
def test_updates_cannot_touch_app_id(two_apps, update):
    a, _b = two_apps
    with pytest.raises(ScopeError):
        a.tasks.update_many({}, update)
    assert a.tasks.count_documents({}) == 2


def test_pipeline_updates_are_made_harmless(two_apps, raw_db):
    a, _ = two_apps
    a.tasks.update_many({}, [{"$set": {"app_id": "app_b"}}, {"$unset": "n"}])
    assert raw_db["app_a_tasks"].count_documents({"app_id": "app_a"}) == 2
    assert a.tasks.count_documents({"n": {"$exists": False}}) == 2


def test_where_and_javascript_are_refused(two_apps):
    a, _ = two_apps
    with pytest.raises(QueryValidationError):
        a.tasks.find({"$where": "true"})
    with pytest.raises(QueryValidationError):
        a.tasks.find({"$expr": {"$function": {"body": "x", "args": [], "lang": "js"}}})
    with pytest.raises(QueryValidationError):
        a.tasks.find().where("true")
    with pytest.raises(QueryValidationError):
        a.tasks.count_documents({"$or": [{"n": 1}, {"$where": "1"}]})


def test_cursor_is_pymongo_and_chains(two_apps):
    from pymongo.cursor import Cursor

    a, _ = two_apps
    cursor = a.tasks.find({}, {"_id": 0, "title": 1}).sort("n", -1).skip(0).limit(1)
    assert isinstance(cursor, Cursor)
    assert cursor.to_list() == [{"title": "a2"}]
    assert cursor.collection is a.tasks, "no raw collection from a cursor"
    assert a.tasks.find_one(sort=[("n", 1)])["title"] == "a1"


def test_find_one_by_id(two_apps):
    a, b = two_apps
    doc = a.tasks.find_one({"title": "a1"})
    assert a.tasks.find_one(doc["_id"])["title"] == "a1"
    assert b.tasks.find_one(doc["_id"]) is None


@pytest.mark.parametrize(
    "name",
    ["", "system.users", "a$b", "a\x00b", "../other", "1tasks", "apps_config", "a..b", "x" * 200],
)
def test_bad_collection_names_are_refused(engine, name):
    db = engine.get_scoped_db("names")
    with pytest.raises(InvalidCollectionName):
        db[name]


def test_no_raw_handles(engine):
    db = engine.get_scoped_db("closed")
    coll = db.tasks
    for attr in (
        "client",
        "_ScopedDatabase__engine_client",
        "find_raw_batches",
        "aggregate_raw_batches",
    ):
        with pytest.raises(AttributeError):
            getattr(coll, attr)
    assert coll.database is db
    assert not hasattr(db, "client")
