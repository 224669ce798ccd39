"""Documents over 16 MiB: refused with ResourceLimitExceeded, and nothing half-written.

pymongo checks sizes batch by batch, after earlier batches were sent, and the server refuses
a document inside an accepted batch only after storing the ones before it; the sandbox
checks a whole batch before sending any of it. Single-document writes that pymongo or the
server refuse as too large come back as ResourceLimitExceeded too.
"""

from __future__ import annotations

import datetime as dt

import pytest
from bson import ObjectId
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne

from mdb_sync.exceptions import ResourceLimitExceeded

MiB = 1024 * 1024
#: Just over the 16 MiB limit once app_id and _id are added.
OVER = "x" * (16 * MiB)
#: Far over it (pymongo itself refuses a command this large).
HUGE = "x" * (17 * MiB)
WRITES = ("insert", "update", "delete", "findAndModify")


@pytest.fixture
def items(engine):
    coll = engine.get_scoped_db("sizes").items
    coll.insert_one({"_id": 1, "v": "small"})
    return coll


def _writes(recorder):
    return recorder.commands(*WRITES)


def _unchanged(raw_db):
    return list(raw_db.sizes_items.find({}, {"_id": 1, "v": 1})) == [{"_id": 1, "v": "small"}]


@pytest.mark.parametrize("ordered", [True, False])
def test_insert_many_with_one_oversized_document_writes_nothing(items, raw_db, recorder, ordered):
    recorder.clear()
    with pytest.raises(ResourceLimitExceeded, match="nothing was written") as info:
        items.insert_many([{"v": "first"}, {"v": OVER}, {"v": "last"}], ordered=ordered)
    assert info.value.context["collection"] == "items"
    assert info.value.context["size"] > 16 * MiB
    assert _writes(recorder) == []
    assert _unchanged(raw_db)


def test_insert_many_still_returns_ids_and_stores_every_type(items, raw_db):
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    given = ObjectId()
    docs = [{"v": "a", "when": when, "nested": {"l": [1, 2.5, None]}}, {"_id": given, "v": "b"}]
    result = items.insert_many(docs)
    assert result.acknowledged and result.inserted_ids == [docs[0]["_id"], given]
    stored = raw_db.sizes_items.find_one({"_id": docs[0]["_id"]})
    assert stored["app_id"] == "sizes" and stored["nested"] == {"l": [1, 2.5, None]}
    assert stored["when"] == when.replace(tzinfo=None)


@pytest.mark.parametrize("value", [OVER, HUGE], ids=["just-over", "far-over"])
def test_single_document_writes_raise_resource_limit_exceeded(items, raw_db, value):
    calls = [
        lambda: items.insert_one({"v": value}),
        lambda: items.update_one({"_id": 1}, {"$set": {"v": value}}),
        lambda: items.update_many({}, {"$set": {"v": value}}),
        lambda: items.replace_one({"_id": 1}, {"v": value}),
        lambda: items.find_one_and_replace({"_id": 1}, {"v": value}),
        lambda: items.find_one_and_update({"_id": 1}, {"$set": {"v": value}}),
        lambda: items.update_one({"_id": 2}, {"$set": {"v": value}}, upsert=True),
    ]
    for call in calls:
        with pytest.raises(ResourceLimitExceeded, match=r"too large|exceeds"):
            call()
    assert _unchanged(raw_db)


def test_update_growing_a_document_past_the_limit(items, raw_db):
    half = "y" * (9 * MiB)
    items.update_one({"_id": 1}, {"$set": {"a": half}})
    with pytest.raises(ResourceLimitExceeded):
        items.update_one({"_id": 1}, {"$set": {"b": half}})
    assert "b" not in raw_db.sizes_items.find_one({"_id": 1}, {"b": 1})


@pytest.mark.parametrize(
    "oversized",
    [
        InsertOne({"v": OVER}),
        ReplaceOne({"_id": 1}, {"v": OVER}),
        UpdateOne({"_id": 1}, {"$set": {"v": HUGE}}),
    ],
    ids=["insert", "replace", "update"],
)
def test_bulk_write_with_an_oversized_document_writes_nothing(items, raw_db, recorder, oversized):
    recorder.clear()
    requests = [InsertOne({"v": "first"}), DeleteOne({"_id": 1}), oversized]
    with pytest.raises(ResourceLimitExceeded):
        items.bulk_write(requests)
    assert _writes(recorder) == []
    assert _unchanged(raw_db)


def test_bulk_write_still_works_and_tags_every_document(items, raw_db):
    result = items.bulk_write(
        [
            InsertOne({"_id": 10, "v": "ins"}),
            ReplaceOne({"_id": 1}, {"v": "replaced"}),
            UpdateOne({"_id": 10}, {"$set": {"w": 1}}),
        ]
    )
    assert (result.inserted_count, result.modified_count) == (1, 2)
    stored = {d["_id"]: d for d in raw_db.sizes_items.find()}
    assert stored[10] == {"_id": 10, "v": "ins", "w": 1, "app_id": "sizes"}
    assert stored[1] == {"_id": 1, "v": "replaced", "app_id": "sizes"}


def test_large_batches_are_checked_chunk_by_chunk(mongo_uri, db_name, raw_db, recorder):
    """A batch bigger than the limit as a whole (so each document is looked at) is fine when
    every document fits; one oversized document in a later chunk still stops all of it."""
    from mdb_sync import MongoDBEngine
    from mdb_sync.scoping import QueryLimits

    limits = QueryLimits(max_document_bytes=4096)
    with MongoDBEngine(mongo_uri, db_name, limits=limits, event_listeners=[recorder]) as engine:
        items = engine.get_scoped_db("chunks").items
        docs = [{"n": i, "pad": "p" * 100} for i in range(2_500)]
        assert len(items.insert_many(docs).inserted_ids) == 2_500
        recorder.clear()
        batch = [{"n": i} for i in range(2_500)]
        batch[2_100] = {"n": "big", "pad": "p" * 5_000}
        with pytest.raises(ResourceLimitExceeded, match="4096") as info:
            items.insert_many(batch)
        assert 5_000 < info.value.context["size"] < 5_100
        with pytest.raises(ResourceLimitExceeded):
            items.bulk_write([InsertOne(d) for d in batch])
        assert _writes(recorder) == []
    assert raw_db.chunks_items.count_documents({}) == 2_500
