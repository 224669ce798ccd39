"""Nothing an outsider can name grows without bound: every per-process cache and the stored
query-shape table stay at their documented limits (see ``engine.cache_info()``).

The attacks: a header-based ``MDB_APP_RESOLVER`` fed ever new slugs over real HTTP from
several client addresses; code that names collections after user input; user-controlled
field names in filters (query shapes); and, for the stored shapes, time (they expire).
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import current_app
from flask_apps import AppFactory

from flask_mdb import db
from flask_mdb.testing import LiveServer
from mdb_sync import MongoDBEngine
from mdb_sync.engine import APP_ID_INDEX_CACHE_SIZE, SCOPED_CACHE_SIZE
from mdb_sync.indexes.auto import SHAPES_COLLECTION
from mdb_sync.registry import MISSING_CACHE_SIZE
from mdb_sync.scoping.database import COLLECTION_CACHE_SIZE


def _within_bounds(info: dict[str, dict[str, int]]) -> None:
    for name, entry in info.items():
        if entry["limit"]:
            assert entry["size"] <= entry["limit"], (name, entry)


def test_unknown_slugs_leave_the_negative_cache_at_its_bound(engine):
    for i in range(20_000):
        assert engine.registry.get_record(f"nobody{i}") is None
    info = engine.cache_info()
    assert info["unknown_slugs"] == {"size": MISSING_CACHE_SIZE, "limit": MISSING_CACHE_SIZE}
    assert info["registered_apps"]["size"] == 0
    # Still a cache: a recent miss is answered without a query.
    assert engine.registry.get_record("nobody19999") is None


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


def test_unknown_slugs_through_a_live_header_resolver_stay_bounded(factory):
    app = factory(MDB_APP_RESOLVER=lambda req: req.headers.get("X-App"))

    @app.get("/items")
    def items():
        return {"n": db.items.count_documents({})}

    @app.get("/caches")
    def caches():
        return current_app.extensions["mdb"].engine.cache_info()

    total = MISSING_CACHE_SIZE + 600
    addresses = [f"127.0.0.{n}" for n in range(2, 6)]

    def attack(index: int) -> list[int]:
        statuses = []
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30, source_address=(addresses[index], 0)
        )
        for i in range(index, total, len(addresses)):
            conn.request("GET", "/items", headers={"X-App": f"probe{i}"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        conn.close()
        return statuses

    with LiveServer(app) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with ThreadPoolExecutor(len(addresses)) as pool:
            statuses = [s for batch in pool.map(attack, range(len(addresses))) for s in batch]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/caches")
        info = json.loads(conn.getresponse().read())
        conn.close()
    assert statuses == [404] * total
    assert info["unknown_slugs"]["size"] == MISSING_CACHE_SIZE
    assert info["registered_apps"]["size"] == 0
    _within_bounds(info)


def test_ten_thousand_collection_names_keep_collection_and_shape_caches_bounded(engine, raw_db):
    scoped = engine.get_scoped_db("names")
    for i in range(10_000):
        assert scoped[f"c{i}"].find_one({"field": i}) is None
    info = engine.cache_info()
    assert info["collections_per_database"] == {
        "size": COLLECTION_CACHE_SIZE,
        "limit": COLLECTION_CACHE_SIZE,
    }
    assert info["query_shapes_per_app"]["size"] <= engine.auto_indexes.max_shapes_per_app
    assert len(engine.auto_indexes.shapes("names")) <= engine.auto_indexes.max_shapes_per_app
    _within_bounds(info)
    # The most recent collections are still counted (eviction drops the least seen).
    assert any(s["collection"] == "c9999" for s in engine.auto_indexes.shapes("names"))
    engine.auto_indexes.flush()
    stored = raw_db[SHAPES_COLLECTION].count_documents({"slug": "names"})
    assert 0 < stored <= engine.auto_indexes.max_shapes_per_app
    # Writes to more collections than the app_id-index cache holds keep it at its bound.
    for i in range(APP_ID_INDEX_CACHE_SIZE + 100):
        scoped[f"w{i}"].insert_one({"n": i})
    assert engine.cache_info()["app_id_indexes"]["size"] <= APP_ID_INDEX_CACHE_SIZE
    # ...and a collection dropped from it gets its index again on the next write.
    scoped["w0"].insert_one({"n": -1})
    assert "app_id_1" in raw_db["names_w0"].index_information()


def test_user_controlled_field_names_cannot_grow_query_shapes_past_the_cap(engine, raw_db):
    scoped = engine.get_scoped_db("fields")
    hot = {"status": "open"}
    for _ in range(50):
        scoped.items.find_one(hot)
    for i in range(5_000):
        scoped.items.find_one({f"user_field_{i}": 1})
    shapes = engine.auto_indexes.shapes("fields")
    assert len(shapes) <= engine.auto_indexes.max_shapes_per_collection
    # The shape real traffic uses survives the flood (the least seen are evicted first).
    assert [["app_id", 1], ["status", 1]] in [s["keys"] for s in shapes]
    engine.auto_indexes.flush()
    stored = raw_db[SHAPES_COLLECTION].count_documents({"slug": "fields"})
    assert stored <= engine.auto_indexes.max_shapes_per_collection
    _within_bounds(engine.cache_info())


def test_stored_shapes_are_capped_per_app_across_flushes(engine, raw_db):
    engine.auto_indexes.configure(max_shapes_per_app=50, max_shapes_per_collection=20)
    scoped = engine.get_scoped_db("capped")
    for round_ in range(5):  # new shapes in every flush: the stored table stays at the cap
        for i in range(40):
            scoped[f"c{round_}"].find_one({f"f{round_}_{i}": 1})
        engine.auto_indexes.flush()
        assert raw_db[SHAPES_COLLECTION].count_documents({"slug": "capped"}) <= 50
    assert raw_db[SHAPES_COLLECTION].count_documents({"slug": "capped"}) == 50
    assert len(engine.auto_indexes.shapes("capped")) <= 50


def test_shapes_expire_in_memory_and_in_storage(engine, raw_db):
    ttl, step = 2.5, 1.5  # a shape used at every step never goes 2.5 s unseen
    engine.auto_indexes.configure(shape_ttl=ttl)
    scoped = engine.get_scoped_db("ttl")
    scoped.items.find_one({"a": 1})
    scoped.items.find_one({"b": 1})
    engine.auto_indexes.flush()
    assert raw_db[SHAPES_COLLECTION].count_documents({"slug": "ttl"}) == 2
    ttl_index = raw_db[SHAPES_COLLECTION].index_information()["expires_at_1"]
    assert ttl_index["expireAfterSeconds"] == 0  # the server expires them too
    for _ in range(2):  # "b" stays in use, "a" does not
        time.sleep(step)
        scoped.items.find_one({"b": 1})
        engine.auto_indexes.flush()
    b_only = [[["app_id", 1], ["b", 1]]]
    assert [s["keys"] for s in engine.auto_indexes.shapes("ttl")] == b_only
    assert [d["keys"] for d in raw_db[SHAPES_COLLECTION].find({"slug": "ttl"})] == b_only
    time.sleep(ttl + 0.2)  # now "b" goes unused too
    engine.auto_indexes.flush()
    engine.auto_indexes.flush()
    assert engine.auto_indexes.shapes("ttl") == []
    assert raw_db[SHAPES_COLLECTION].count_documents({"slug": "ttl"}) == 0


def test_scoped_database_cache_is_bounded(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name) as engine:
        for i in range(SCOPED_CACHE_SIZE + 50):
            engine.get_scoped_db(f"tenant{i}")
        info = engine.cache_info()
        assert info["scoped_databases"] == {"size": SCOPED_CACHE_SIZE, "limit": SCOPED_CACHE_SIZE}
        # An evicted database is rebuilt on demand and works as before.
        engine.get_scoped_db("tenant0").items.insert_one({"n": 1})
        assert engine.get_scoped_db("tenant0").items.count_documents({}) == 1


def test_configure_refuses_bad_bounds(engine):
    for option in ("max_shapes", "max_shapes_per_app", "max_shapes_per_collection", "shape_ttl"):
        with pytest.raises(ValueError, match=option):
            engine.auto_indexes.configure(**{option: 0})


def test_search_index_states_stay_at_their_bound(engine):
    # Searches naming ever new collections and indexes (user input in a collection name):
    # the states remembered for them are dropped oldest first at INDEX_STATE_CACHE_SIZE.
    from mdb_sync.ai.vector_search import INDEX_STATE_CACHE_SIZE, search_index_ready

    db = engine.get_scoped_db("vstates")
    for i in range(INDEX_STATE_CACHE_SIZE + 50):
        assert search_index_ready(engine, db[f"c{i % 7}"], f"index{i}") is False
    info = engine.cache_info()["vector_index_states"]
    assert info == {"size": INDEX_STATE_CACHE_SIZE, "limit": INDEX_STATE_CACHE_SIZE}
    _within_bounds(engine.cache_info())
