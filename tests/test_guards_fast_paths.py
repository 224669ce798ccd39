"""The hot path's shortcuts keep every check (issue 18, item 2).

The guards skip plain values by their exact type and take dicts by exact type before asking
``isinstance``; these tests hand them what the shortcuts do not cover — mapping and string
subclasses, tuples, compiled patterns, SON — through the scoped API against a real server,
and check each is still refused (and nothing reaches the server)."""

from __future__ import annotations

import re
from collections import UserDict

import pytest
from bson import SON
from bson.regex import Regex
from pymongo import InsertOne, UpdateOne

from mdb_sync.exceptions import QueryValidationError, ScopeError


class Text(str):
    """A str subclass: not a "plain" type for the guards' shortcut."""


CATASTROPHIC = "(a+)+$"


def _nested_lists(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def items(engine):
    coll = engine.get_scoped_db("fast").items
    coll.insert_one({"n": 1})
    return coll


@pytest.mark.parametrize(
    "bad_filter",
    [
        SON([("$where", "true")]),
        UserDict({"$where": "true"}),
        {"$or": (SON([("n", 1)]), {"$where": "true"})},
        {"$and": [{"n": {"$in": [1, {"$where": "x"}]}}]},
        {"name": {"$regex": Text(CATASTROPHIC)}},
        {"name": re.compile(CATASTROPHIC)},
        {"name": {"$in": (Regex(CATASTROPHIC),)}},
        {"name": {"$regex": "x" * 2000}},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}},
        {"a": _nested_lists(45)},
    ],
)
def test_reads_refuse_what_the_shortcuts_do_not_cover(items, recorder, bad_filter):
    recorder.clear()
    with pytest.raises(QueryValidationError):
        items.find_one(bad_filter)
    assert recorder.commands("find") == []


@pytest.mark.parametrize(
    "bad_update",
    [
        {"$set": {Text("app_id"): "other"}},
        {"$set": {Text("app_id.x"): 1}},
        SON([("$set", SON([("app_id", "other")]))]),
        {"$rename": {"n": Text("app_id")}},
        {"$set": {"n": {"$function": {"body": "x"}}}},
    ],
)
def test_updates_refuse_what_the_shortcuts_do_not_cover(items, recorder, bad_update):
    recorder.clear()
    with pytest.raises((ScopeError, QueryValidationError)):
        items.update_one({"n": 1}, bad_update)
    with pytest.raises((ScopeError, QueryValidationError)):
        items.bulk_write([InsertOne({"n": 2}), UpdateOne({"n": 1}, bad_update)])
    assert recorder.commands("update", "insert") == []
    assert items.count_documents({}) == 1


def test_inserts_of_mapping_subclasses_are_tagged_and_checked(items, raw_db):
    items.insert_one(SON([("n", 3)]))
    items.bulk_write([InsertOne(UserDict({"n": 4}))])
    stored = list(raw_db["fast_items"].find({"n": {"$in": [3, 4]}}, {"_id": 0}))
    assert sorted(d["n"] for d in stored) == [3, 4]
    assert {d["app_id"] for d in stored} == {"fast"}
    with pytest.raises(ScopeError):
        items.insert_one(SON([("n", 5), ("app_id", "other")]))
    with pytest.raises(ScopeError):
        items.bulk_write([InsertOne(UserDict({"n": 6, "app_id": "other"}))])
    assert raw_db["fast_items"].count_documents({"n": {"$in": [5, 6]}}) == 0


def test_pipelines_in_tuples_and_son_are_scoped_and_checked(items):
    assert items.aggregate((SON([("$match", {"n": 1})]),)).to_list()[0]["n"] == 1
    with pytest.raises(QueryValidationError):
        items.aggregate((SON([("$match", {"$where": "true"})]),))
