"""Conformance: the scoped API behaves exactly like pymongo, apart from ``app_id``.

The same random operations (filters, updates, upserts, replacements, bulk writes,
find-and-modify, pipelines with lookups, unions, facets, ``$out`` and ``$merge``) run through
raw pymongo on a private database and through an app's scoped collection holding the same
documents. Results and final states must be equal once ``app_id`` is set aside.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from strategies import operations

from mdb_sync import MongoDBEngine

EXAMPLES = int(os.environ.get("MDB_CONFORMANCE_EXAMPLES", "1000"))
SLUG = "conf"
COLLECTIONS = ("items", "other", "results")
SEED = {
    "items": [
        {"_id": i, "n": i, "tag": "ab"[i % 2], "arr": list(range(i % 4)), "sub": {"x": i % 3}}
        for i in range(8)
    ],
    "other": [{"_id": i, "n": i % 4, "tag": "x", "k": i} for i in range(5)],
    "results": [],
}


@pytest.fixture(scope="module")
def pair(mongo_uri, raw_client):
    names = [f"mdbconf_{uuid.uuid4().hex[:10]}", f"mdbconf_{uuid.uuid4().hex[:10]}"]
    engine = MongoDBEngine(mongo_uri, names[0])
    engine.initialize()
    # No query-driven indexes: an index changes the order of unsorted results.
    scoped = engine.get_scoped_db(SLUG, auto_index=False)
    yield {
        "scoped": scoped,
        "scoped_raw": raw_client[names[0]],
        "plain": raw_client[names[1]],
    }
    engine.shutdown()
    for name in names:
        raw_client.drop_database(name)


def _strip(value: Any) -> Any:
    """Set aside what may differ: app_id, generated ObjectIds, server dates."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "app_id"}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    if isinstance(value, ObjectId):
        return "<oid>"
    if hasattr(value, "isoformat"):
        return "<date>"
    return value


def _run(collection: Any, method: str, args: tuple, kwargs: dict) -> Any:
    try:
        result = getattr(collection, method)(*args, **kwargs)
        if hasattr(result, "to_list"):
            result = result.to_list()
        if isinstance(result, BulkWriteResult):
            result = (
                result.inserted_count,
                result.matched_count,
                result.modified_count,
                result.deleted_count,
                result.upserted_count,
            )
        elif isinstance(result, UpdateResult):
            result = (result.matched_count, result.modified_count, result.upserted_id is not None)
        elif isinstance(result, DeleteResult):
            result = result.deleted_count
        elif isinstance(result, InsertOneResult):
            result = result.inserted_id
        elif isinstance(result, InsertManyResult):
            result = result.inserted_ids
        return ("ok", _strip(result))
    except Exception as exc:
        return ("error", type(exc).__name__)


def _state(database: Any, prefix: str) -> list[list[str]]:
    return [sorted(repr(_strip(d)) for d in database[prefix + name].find()) for name in COLLECTIONS]


def _reset(database: Any, prefix: str, app_id: str | None) -> None:
    for name in COLLECTIONS:
        coll = database[prefix + name]
        coll.delete_many({})
        docs = [dict(d, **({"app_id": app_id} if app_id else {})) for d in SEED[name]]
        if docs:
            coll.insert_many(docs)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(op=operations(hostile=False))
def test_scoped_collection_behaves_like_pymongo(pair, op):
    method, args, kwargs = op
    _reset(pair["plain"], "", None)
    _reset(pair["scoped_raw"], f"{SLUG}_", SLUG)
    plain = _run(pair["plain"]["items"], method, args, kwargs)
    scoped = _run(pair["scoped"]["items"], method, args, kwargs)
    assert scoped == plain, (method, args, kwargs)
    assert _state(pair["scoped_raw"], f"{SLUG}_") == _state(pair["plain"], "")
