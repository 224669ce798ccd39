"""Property-based isolation: whatever app A sends, B and C are neither read nor changed.

Two databases hold the same documents of app ``app_a``; the first also holds apps ``app_b``
and ``app_c`` (in their own collections, and some of their documents inside A's physical
collections, as a raw tool could leave them). Every generated operation — filters, operator and
pipeline updates, upserts, replacements, bulk writes, find-and-modify, aggregation pipelines
with nested ``$lookup``/``$unionWith``/``$graphLookup``/``$facet`` and ``$out``/``$merge`` —
runs through A's scoped collection in both databases. A must get the same answer (or the same
error) and end in the same state in both: B and C are invisible. B's and C's documents must be
byte-for-byte unchanged. And every command the first engine sends must name only A's
collections and carry A's scope.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from typing import Any

import pytest
from bson import ObjectId, encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import monitoring
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)
from strategies import operations

from mdb_sync import MongoDBEngine

EXAMPLES = int(os.environ.get("MDB_SANDBOX_EXAMPLES", "2000"))
A, B, C = "app_a", "app_b", "app_c"
A_COLLECTIONS = ("items", "other", "results")

A_SEED = {
    "items": [
        {"_id": i, "n": i, "tag": "ab"[i % 2], "arr": list(range(i % 4)), "sub": {"x": i % 3}}
        for i in range(8)
    ],
    "other": [{"_id": i, "n": i % 4, "tag": "x", "k": i} for i in range(5)],
    "results": [],
}
# Other apps' documents inside A's physical collections (never visible to A).
FOREIGN = {
    "items": [
        {"_id": "fb1", "n": 1, "tag": "a", "app_id": B, "secret": "B-1"},
        {"_id": "fc1", "n": 2, "tag": "b", "arr": [1], "app_id": C, "secret": "C-1"},
    ],
    "other": [{"_id": "fb2", "n": 1, "tag": "x", "app_id": B, "secret": "B-2"}],
}
OTHER_APPS = {
    B: {
        "items": [{"_id": i, "n": i, "tag": "a", "secret": f"B-{i}"} for i in range(5)],
        "other": [{"_id": 1, "n": 1, "secret": "B-o"}],
    },
    C: {"items": [{"_id": i, "n": i, "tag": "b", "secret": f"C-{i}"} for i in range(5)]},
}


class Recorder(monitoring.CommandListener):
    """Every command the engine sends (name and body)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: Any) -> None:
        self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


@pytest.fixture(scope="module")
def worlds(mongo_uri, raw_client):
    recorder = Recorder()
    names = [f"mdbprop_{uuid.uuid4().hex[:10]}", f"mdbprop_{uuid.uuid4().hex[:10]}"]
    full = MongoDBEngine(mongo_uri, names[0], event_listeners=[recorder])
    alone = MongoDBEngine(mongo_uri, names[1])
    full.initialize()
    alone.initialize()
    for slug, colls in OTHER_APPS.items():
        db = full.get_scoped_db(slug)
        for name, docs in colls.items():
            db[name].insert_many([dict(d) for d in docs])
    # No query-driven indexes here: one built in one world and not yet in the other would
    # change the order of unsorted results, which is not what this test is about.
    dbs = (full.get_scoped_db(A, auto_index=False), alone.get_scoped_db(A, auto_index=False))
    raw = (raw_client[names[0]], raw_client[names[1]])
    _reset(raw[0], with_foreign=True)
    frozen = _snapshot_others(raw[0])
    yield {"dbs": dbs, "raw": raw, "recorder": recorder, "frozen": frozen}
    full.shutdown()
    alone.shutdown()
    for name in names:
        raw_client.drop_database(name)


def _snapshot_others(raw_db: Any) -> str:
    """A digest of every byte of B's and C's documents, wherever they are."""
    parts = []
    for name in sorted(raw_db.list_collection_names()):
        if name.startswith((B + "_", C + "_")):
            query: dict[str, Any] = {}
        elif name.startswith(A + "_"):
            query = {"app_id": {"$ne": A}}
        elif name == "apps_config":
            query = {"_id": {"$in": [B, C]}}
        else:
            continue  # engine bookkeeping (e.g. saved query shapes)
        for doc in raw_db[name].find(query).sort("_id", 1):
            parts.append(name.encode() + encode(doc))
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _reset(raw_db: Any, with_foreign: bool) -> None:
    for name in A_COLLECTIONS:
        coll = raw_db[f"{A}_{name}"]
        coll.delete_many({"app_id": A})
        if with_foreign:
            coll.delete_many({"app_id": {"$ne": A}})
        docs = [{**d, "app_id": A} for d in A_SEED[name]]
        if with_foreign:
            docs += [dict(d) for d in FOREIGN.get(name, [])]
        if docs:
            coll.insert_many(docs)


def _normalize(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return "<oid>"
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if hasattr(value, "isoformat"):
        return "<date>"
    return value


def _outcome(db: Any, method: str, args: tuple, kwargs: dict) -> Any:
    try:
        result = getattr(db.items, method)(*args, **kwargs)
        if hasattr(result, "to_list"):
            result = result.to_list()
        if isinstance(result, (UpdateResult, DeleteResult, BulkWriteResult)):
            result = (
                result.raw_result
                if not isinstance(result, BulkWriteResult)
                else result.bulk_api_result
            )
            result = {
                k: v
                for k, v in result.items()
                if k not in ("upserted", "electionId", "opTime", "$clusterTime", "operationTime")
            }
        elif isinstance(result, InsertOneResult):
            result = result.inserted_id
        elif isinstance(result, InsertManyResult):
            result = result.inserted_ids
        return ("ok", _normalize(result))
    except Exception as exc:  # the same refusal or server error must happen in both worlds
        return ("error", type(exc).__name__)


def _a_state(raw_db: Any) -> list[Any]:
    state = []
    for name in A_COLLECTIONS:
        docs = raw_db[f"{A}_{name}"].find({"app_id": A}).sort("_id", 1)
        state.append(sorted(repr(_normalize(d)) for d in docs))
    return state


def _scoped(query: Any) -> bool:
    return isinstance(query, dict) and (
        query.get("app_id") == A or {"app_id": A} in (query.get("$and") or [])
    )


def _check_pipeline(pipeline: list[dict[str, Any]], first: bool = True) -> None:
    if first:
        assert pipeline and _scoped(pipeline[0].get("$match")), pipeline[:1]
    for stage in pipeline:
        ((op, body),) = stage.items()
        if op == "$lookup":
            assert body["from"].startswith(A + "_")
            _check_pipeline(body["pipeline"])
        elif op == "$unionWith":
            assert body["coll"].startswith(A + "_")
            _check_pipeline(body["pipeline"])
        elif op == "$graphLookup":
            assert body["from"].startswith(A + "_")
            assert _scoped(body["restrictSearchWithMatch"])
        elif op == "$facet":
            for branch in body.values():
                _check_pipeline(branch, first=False)
        elif op == "$out":
            assert body.startswith(A + "_")
        elif op == "$merge":
            assert body["into"].startswith(A + "_")
    for before, stage in itertools.pairwise(pipeline):
        if next(iter(stage)) in ("$out", "$merge"):
            assert before == {"$set": {"app_id": A}}


def _check_commands(commands: list[tuple[str, dict[str, Any]]]) -> None:
    for name, cmd in commands:
        target = cmd.get(name)
        if name in (
            "find",
            "aggregate",
            "count",
            "distinct",
            "update",
            "delete",
            "findAndModify",
            "insert",
            "createIndexes",
            "listIndexes",
        ):
            assert isinstance(target, str) and target.startswith(A + "_"), (name, target)
        if name == "find":
            # The one unscoped read: the engine's own check that a collection about to be
            # replaced or dropped holds no other app's documents (it returns nothing to A).
            probe = cmd.get("filter") == {"app_id": {"$ne": A}} and cmd.get("limit") == 1
            assert _scoped(cmd.get("filter")) or probe, cmd
        elif name in ("count", "distinct", "findAndModify"):
            assert _scoped(cmd.get("query")), cmd
        elif name == "update":
            assert all(_scoped(u["q"]) for u in cmd["updates"]), cmd
        elif name == "delete":
            assert all(_scoped(d["q"]) for d in cmd["deletes"]), cmd
        elif name == "insert":
            assert all(d.get("app_id") == A for d in cmd["documents"]), cmd
        elif name == "aggregate":
            _check_pipeline(cmd["pipeline"])  # count_documents runs as an aggregate too


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(op=operations(hostile=True), data=st.data())
def test_app_a_cannot_reach_other_apps(worlds, op, data):
    method, args, kwargs = op
    full_db, alone_db = worlds["dbs"]
    full_raw, alone_raw = worlds["raw"]
    _reset(full_raw, with_foreign=True)
    _reset(alone_raw, with_foreign=False)
    worlds["recorder"].commands.clear()
    with_others = _outcome(full_db, method, args, kwargs)
    commands = list(worlds["recorder"].commands)
    without_others = _outcome(alone_db, method, args, kwargs)
    assert with_others == without_others, (method, args, kwargs)
    assert _a_state(full_raw) == _a_state(alone_raw)
    assert _snapshot_others(full_raw) == worlds["frozen"], "B's or C's documents changed"
    assert "B-" not in repr(with_others) and "C-" not in repr(with_others)
    _check_commands(commands)
