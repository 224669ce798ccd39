"""The sandbox's pymongo surface: every allow-listed method works and stays in its app."""

from __future__ import annotations

import io

import pytest
from bson import ObjectId
from gridfs import NoFile
from pymongo import (
    DeleteMany,
    DeleteOne,
    IndexModel,
    InsertOne,
    MongoClient,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.command_cursor import CommandCursor
from pymongo.errors import OperationFailure

from mdb_sync import QueryValidationError, ResourceLimitExceeded, ScopeError
from mdb_sync.scoping import QueryLimits


@pytest.fixture
def apps(engine, raw_db):
    a = engine.get_scoped_db("app_a")
    b = engine.get_scoped_db("app_b")
    a.items.insert_many([{"_id": i, "n": i, "tag": "ab"[i % 2]} for i in range(6)])
    b.items.insert_many([{"_id": i, "n": i * 10, "tag": "x", "secret": "B"} for i in range(4)])
    a.other.insert_many([{"_id": i, "k": i % 3} for i in range(3)])
    b.other.insert_many([{"_id": i, "k": i % 3, "secret": "B"} for i in range(3)])
    # A document of app_b inside app_a's physical collection (e.g. written by a raw tool):
    # it must stay invisible and untouched through app_a's scoped objects.
    raw_db["app_a_items"].insert_one(
        {"_id": "foreign", "n": 3, "tag": "a", "app_id": "app_b", "secret": "B"}
    )
    return a, b


def _b_untouched(raw_db):
    assert raw_db["app_b_items"].count_documents({}) == 4
    assert raw_db["app_b_items"].count_documents({"tag": "x", "secret": "B"}) == 4
    assert raw_db["app_a_items"].find_one({"_id": "foreign"}) == {
        "_id": "foreign",
        "n": 3,
        "tag": "a",
        "app_id": "app_b",
        "secret": "B",
    }


# --- writes -------------------------------------------------------------------------------------


def test_find_one_and_modify(apps, raw_db):
    a, _ = apps
    doc = a.items.find_one_and_update(
        {"n": 3}, {"$set": {"seen": True}}, return_document=ReturnDocument.AFTER
    )
    assert doc["_id"] == 3 and doc["seen"] is True
    replaced = a.items.find_one_and_replace(
        {"n": 4}, {"n": 40}, return_document=ReturnDocument.AFTER
    )
    assert replaced == {"_id": 4, "n": 40, "app_id": "app_a"}
    assert a.items.find_one_and_delete({"n": 5})["_id"] == 5
    upserted = a.items.find_one_and_update(
        {"n": 99}, {"$set": {"new": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted["app_id"] == "app_a"
    assert a.items.find_one_and_delete({"_id": "foreign"}) is None
    _b_untouched(raw_db)


def test_bulk_write_every_request_type(apps, raw_db):
    a, _ = apps
    insert = InsertOne({"n": 100})
    result = a.items.bulk_write(
        [
            insert,
            UpdateOne({"n": 0}, {"$set": {"u": 1}}),
            UpdateMany({"tag": "a"}, {"$inc": {"n": 1000}}),
            ReplaceOne({"n": 1}, {"n": 11}),
            DeleteOne({"n": 1002}),
            DeleteMany({"n": {"$gt": 1003}}),
            UpdateOne({"n": 555}, {"$set": {"v": 1}}, upsert=True),
        ]
    )
    assert result.inserted_count == 1 and result.upserted_count == 1
    assert isinstance(insert._doc["_id"], ObjectId), "like pymongo, InsertOne gets its _id"
    assert raw_db["app_a_items"].count_documents({"app_id": "app_a"}) == a.items.count_documents({})
    assert sorted(raw_db["app_a_items"].distinct("app_id")) == ["app_a", "app_b"]
    _b_untouched(raw_db)


def test_bulk_write_checks_everything_before_sending(apps, raw_db):
    a, _ = apps
    before = a.items.count_documents({})
    with pytest.raises(ScopeError):
        a.items.bulk_write([InsertOne({"n": 1}), UpdateOne({}, {"$set": {"app_id": "app_b"}})])
    with pytest.raises(ScopeError):
        a.items.bulk_write([InsertOne({"n": 1}), InsertOne({"app_id": "app_b"})])
    assert a.items.count_documents({}) == before


def test_counts_do_not_reveal_shared_collections(apps):
    a, b = apps
    assert a.items.count_documents({}) == 6
    assert a.items.estimated_document_count() == 6, "the foreign document is not counted"
    assert b.items.estimated_document_count() == 4


def test_distinct(apps):
    a, _ = apps
    assert sorted(a.items.distinct("tag")) == ["a", "b"]
    assert a.items.distinct("secret") == []
    assert a.items.distinct("app_id") == ["app_a"]
    assert sorted(a.items.find({"n": {"$lt": 2}}).distinct("n")) == [0, 1]


# --- aggregation --------------------------------------------------------------------------------


def _agg(coll, pipeline):
    return coll.aggregate(pipeline).to_list()


def test_aggregate_returns_a_pymongo_command_cursor(apps):
    a, _ = apps
    cursor = a.items.aggregate(
        [{"$group": {"_id": "$tag", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    )
    assert isinstance(cursor, CommandCursor)
    assert cursor.to_list() == [{"_id": "a", "n": 3}, {"_id": "b", "n": 3}]


def test_lookup_resolves_to_own_collections(apps):
    a, _ = apps
    concise = _agg(
        a.items,
        [
            {"$match": {"n": 1}},
            {"$lookup": {"from": "other", "localField": "n", "foreignField": "k", "as": "j"}},
        ],
    )
    assert [d["_id"] for d in concise[0]["j"]] == [1]
    assert all(j["app_id"] == "app_a" for j in concise[0]["j"])
    piped = _agg(
        a.items,
        [
            {"$match": {"n": 2}},
            {
                "$lookup": {
                    "from": "other",
                    "let": {"n": "$n"},
                    "pipeline": [{"$match": {"$expr": {"$eq": ["$k", "$$n"]}}}],
                    "as": "j",
                }
            },
        ],
    )
    assert [d["_id"] for d in piped[0]["j"]] == [2]
    # Naming another app's physical collection names a (missing) collection of this app.
    sneaky = _agg(a.items, [{"$lookup": {"from": "app_b_other", "pipeline": [], "as": "j"}}])
    assert all(d["j"] == [] for d in sneaky)


def test_union_with_graph_lookup_and_facet_are_scoped(apps):
    a, _ = apps
    union = _agg(a.items, [{"$unionWith": "other"}, {"$count": "n"}])
    assert union == [{"n": 9}]
    graph = _agg(
        a.items,
        [
            {"$match": {"n": 0}},
            {
                "$graphLookup": {
                    "from": "items",
                    "startWith": "$n",
                    "connectFromField": "n",
                    "connectToField": "n",
                    "as": "g",
                }
            },
        ],
    )
    assert [d["_id"] for d in graph[0]["g"]] == [0]
    nested = _agg(
        a.items,
        [
            {
                "$facet": {
                    "deep": [
                        {
                            "$unionWith": {
                                "coll": "other",
                                "pipeline": [
                                    # $count is missing from sub-pipelines on the embedded server
                                    {
                                        "$lookup": {
                                            "from": "items",
                                            "pipeline": [
                                                {"$group": {"_id": None, "n": {"$sum": 1}}}
                                            ],
                                            "as": "inner",
                                        }
                                    },
                                ],
                            }
                        },
                        {"$match": {"inner": {"$exists": True}}},
                        {"$project": {"inner": 1}},
                    ]
                }
            },
        ],
    )
    assert all(d["inner"] == [{"_id": None, "n": 6}] for d in nested[0]["deep"])
    assert "B" not in repr(nested)


def test_out_and_merge_write_only_own_collections(apps, raw_db):
    a, _ = apps
    _agg(a.items, [{"$match": {"tag": "a"}}, {"$project": {"n": 1}}, {"$out": "evens"}])
    assert raw_db["app_a_evens"].count_documents({"app_id": "app_a"}) == 3
    assert a.evens.count_documents({}) == 3
    raw_db["app_a_merged"].insert_one({"_id": 1, "n": -1, "app_id": "app_b", "secret": "B"})
    _agg(
        a.items, [{"$project": {"n": 1}}, {"$merge": {"into": "merged", "whenMatched": "replace"}}]
    )
    assert raw_db["app_a_merged"].find_one({"_id": 1})["app_id"] == "app_b", "foreign doc untouched"
    assert raw_db["app_a_merged"].count_documents({"app_id": "app_a"}) == 5
    _agg(
        a.items,
        [
            {"$project": {"n": 1}},
            {"$merge": {"into": "merged", "whenMatched": [{"$set": {"seen": True}}]}},
        ],
    )
    assert raw_db["app_a_merged"].count_documents({"seen": True}) == 5
    assert "seen" not in raw_db["app_a_merged"].find_one({"_id": 1})
    with pytest.raises(ScopeError, match="other apps"):
        a.items.aggregate([{"$out": "merged"}])  # app_a_merged holds app_b's document
    assert raw_db["app_a_merged"].find_one({"_id": 1})["app_id"] == "app_b"
    with pytest.raises(ScopeError):
        a.items.aggregate([{"$out": {"db": "admin", "coll": "x"}}])
    with pytest.raises(ScopeError):
        a.items.aggregate([{"$merge": {"into": {"db": "other", "coll": "x"}}}])


@pytest.mark.parametrize(
    "stage",
    [
        {"$documents": [{"x": 1}]},
        {"$currentOp": {}},
        {"$listSessions": {}},
        {"$listLocalSessions": {}},
        {"$planCacheStats": {}},
        {"$changeStream": {}},
        {"$someFutureStage": {}},
    ],
)
def test_stages_that_cannot_be_scoped_are_refused(apps, stage):
    a, _ = apps
    with pytest.raises(QueryValidationError):
        a.items.aggregate([stage])
    with pytest.raises(QueryValidationError):
        a.items.aggregate([{"$lookup": {"from": "other", "pipeline": [stage], "as": "x"}}])


def test_lookup_without_a_collection_is_refused(apps):
    a, _ = apps
    with pytest.raises(QueryValidationError):
        a.items.aggregate([{"$lookup": {"pipeline": [{"$documents": [{}]}], "as": "x"}}])
    with pytest.raises(QueryValidationError):
        a.items.aggregate(
            [{"$lookup": {"from": {"db": "x", "coll": "y"}, "pipeline": [], "as": "x"}}]
        )


def test_geo_near_is_scoped_in_its_query(engine, raw_db):
    a = engine.get_scoped_db("geo_a")
    b = engine.get_scoped_db("geo_b")
    a.places.create_index([("loc", "2dsphere")])
    point = {"type": "Point", "coordinates": [0, 0]}
    a.places.insert_one({"loc": point, "who": "a"})
    raw_db["geo_a_places"].insert_one({"loc": point, "who": "b", "app_id": "geo_b"})
    b.places.insert_one({"loc": point, "who": "b"})
    near = _agg(a.places, [{"$geoNear": {"near": point, "distanceField": "d"}}])
    assert [d["who"] for d in near] == ["a"]


# --- change streams -----------------------------------------------------------------------------


def _drain(stream, expected, timeout=10.0):
    import time

    events, deadline = [], time.monotonic() + timeout
    while len(events) < expected and time.monotonic() < deadline:
        event = stream.try_next()
        if event is not None:
            events.append(event)
    return events


def test_watch_delivers_only_own_changes(apps, raw_db):
    a, b = apps
    with a.items.watch(max_await_time_ms=200) as stream:
        b.items.insert_one({"n": 1, "secret": "B"})
        raw_db["app_a_items"].insert_one({"n": 1, "app_id": "app_b", "secret": "B"})
        a.items.insert_one({"n": 77})
        a.items.update_one({"n": 77}, {"$set": {"m": 1}})
        events = _drain(stream, 2)
    assert [e["operationType"] for e in events] == ["insert", "update"]
    assert events[0]["ns"] == {"db": "app_a", "coll": "items"}
    assert "B" not in repr(events)


def test_database_watch_covers_only_own_collections(apps):
    a, b = apps
    with a.watch(max_await_time_ms=200) as stream:
        b.items.insert_one({"n": 2})
        a.other.insert_one({"k": 9})
        events = _drain(stream, 1)
    assert len(events) == 1 and events[0]["ns"] == {"db": "app_a", "coll": "other"}


def test_watch_pipelines_are_checked(apps):
    a, _ = apps
    with pytest.raises(QueryValidationError):
        a.items.watch([{"$lookup": {"from": "other", "as": "x"}}])
    with pytest.raises(QueryValidationError):
        a.watch([{"$match": {"$where": "1"}}])


# --- database-level operations ------------------------------------------------------------------


def test_list_create_drop_collections(apps, raw_db):
    a, b = apps
    assert a.list_collection_names() == ["items", "other"]
    assert a.list_collection_names(filter={"name": "other"}) == ["other"]
    capped = a.create_collection("log", capped=True, size=4096)
    assert capped.options()["capped"] is True
    validated = a.create_collection("people", validator={"$jsonSchema": {"required": ["name"]}})
    with pytest.raises(OperationFailure):
        validated.insert_one({"nope": 1})
    with pytest.raises(QueryValidationError, match="views"):
        a.create_collection("view", viewOn="app_b_items", pipeline=[])
    a.drop_collection("log")
    assert "log" not in a.list_collection_names()
    with pytest.raises(ScopeError, match="other apps"):
        a.drop_collection("items")  # it holds app_b's foreign document
    with pytest.raises(ScopeError):
        a.drop_collection(b.items)
    assert "app_b_items" in raw_db.list_collection_names()


def test_rename_stays_in_the_app(engine, raw_db):
    a = engine.get_scoped_db("ren")
    a.old.insert_one({"x": 1})
    renamed = a.old.rename("new")
    assert renamed.find_one({})["x"] == 1
    assert "ren_new" in raw_db.list_collection_names()
    assert "ren_old" not in raw_db.list_collection_names()


def test_indexes_are_app_owned_and_lead_with_app_id(engine):
    db = engine.get_scoped_db("idx")
    assert db.users.create_index("email", unique=True) == "email_1"
    info = db.users.index_information()
    assert info["email_1"]["key"] == [("app_id", 1), ("email", 1)]
    names = db.users.create_indexes(
        [IndexModel([("a", 1), ("b", -1)]), IndexModel("ttl", expireAfterSeconds=60)]
    )
    assert names == ["a_1_b_-1", "ttl_1"]
    assert db.users.index_information()["ttl_1"]["key"] == [("ttl", 1)], "TTL stays single-field"
    db.users.drop_index("a_1_b_-1")
    db.users.drop_index([("email", 1)])
    assert set(db.users.index_information()) == {"_id_", "app_id_1", "ttl_1"}
    db.users.drop_indexes()
    assert set(db.users.index_information()) == {"_id_", "app_id_1"}, "app_id index kept"
    assert [i["name"] for i in db.users.list_indexes()] == ["_id_", "app_id_1"]


def test_app_id_index_is_created_on_first_write(engine, raw_db):
    db = engine.get_scoped_db("first")
    assert db.fresh.find_one({}) is None
    assert "first_fresh" not in raw_db.list_collection_names(), "reads create nothing"
    db.fresh.insert_one({"x": 1})
    assert "app_id_1" in raw_db["first_fresh"].index_information()


def test_transactions_through_the_wrapper(engine):
    db = engine.get_scoped_db("txn")
    db.accounts.insert_many([{"_id": 1, "bal": 10}, {"_id": 2, "bal": 0}])
    with db.client_session() as session, session.start_transaction():
        db.accounts.update_one({"_id": 1}, {"$inc": {"bal": -5}}, session=session)
        db.accounts.update_one({"_id": 2}, {"$inc": {"bal": 5}}, session=session)
    assert [d["bal"] for d in db.accounts.find().sort("_id")] == [5, 5]
    with db.client_session() as session:
        try:
            with session.start_transaction():
                db.accounts.update_one({"_id": 1}, {"$inc": {"bal": -5}}, session=session)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    assert db.accounts.find_one({"_id": 1})["bal"] == 5, "aborted"

    def transfer(session):
        assert session.in_transaction
        db.accounts.update_one({"_id": 2}, {"$inc": {"bal": 1}}, session=session)
        return "done"

    with db.client_session() as session:
        assert session.with_transaction(transfer) == "done"
        assert not hasattr(session, "client")
        cursor = db.accounts.find({}, session=session)
        assert cursor.session is session
        assert db.accounts.aggregate([], session=session).session is session
    assert db.accounts.find_one({"_id": 2})["bal"] == 6


def test_sessions_of_another_app_are_refused(engine):
    a = engine.get_scoped_db("sess_a")
    b = engine.get_scoped_db("sess_b")
    with b.client_session() as session, pytest.raises(ScopeError):
        a.items.find_one({}, session=session)
    # Every path that forwards session= checks it the same way: the database's own
    # operations, commands, GridFS and change streams too (a raw pymongo session is no
    # session of the app's database either).
    calls = [
        lambda s: a.list_collection_names(session=s),
        lambda s: a.create_collection("made", session=s),
        lambda s: a.command("ping", session=s),
        lambda s: a.command("count", "items", session=s),
        lambda s: a.gridfs().upload_from_stream("f.txt", b"x", session=s),
        lambda s: a.watch(session=s),
        lambda s: a.items.aggregate([], session=s),
        lambda s: a.items.insert_one({"n": 1}, session=s),
    ]
    with b.client_session() as other, engine.storage.start_session() as raw:
        for call in calls:
            with pytest.raises(ScopeError, match="another app"):
                call(other)
            with pytest.raises(TypeError, match="client_session"):
                call(raw)
    assert a.list_collection_names() == [] and a.items.count_documents({}) == 0


def test_a_scoped_session_holds_no_pymongo_session(engine):
    from pymongo.client_session import ClientSession
    from pymongo.collection import Collection
    from pymongo.database import Database

    db = engine.get_scoped_db("sess_held")
    with db.client_session() as session:
        held = [getattr(session, name, None) for name in dir(session)]
        raw = (ClientSession, MongoClient, Database, Collection)
        assert not any(isinstance(value, raw) for value in held)
        assert session.app_slug == "sess_held" and not hasattr(session, "_raw")
        db.items.insert_one({"n": 1}, session=session)  # and it still works as a session
        assert db.items.find_one({}, session=session)["n"] == 1


def test_gridfs_is_scoped(engine, raw_db):
    a = engine.get_scoped_db("files_a").gridfs()
    b = engine.get_scoped_db("files_b").gridfs()
    fid = a.upload_from_stream("hello.txt", b"hello world", metadata={"k": 1})
    assert raw_db["files_a_fs.files"].find_one({"_id": fid})["app_id"] == "files_a"
    assert a.open_download_stream(fid).read() == b"hello world"
    assert a.open_download_stream_by_name("hello.txt").read() == b"hello world"
    with pytest.raises(NoFile):
        b.open_download_stream(fid)
    with pytest.raises(NoFile):
        b.delete(fid)
    assert [f.filename for f in a.find({"metadata.k": 1})] == ["hello.txt"]
    assert b.find().to_list() == []
    with pytest.raises(AttributeError):
        a.find().collection  # noqa: B018
    a.rename(fid, "renamed.txt")
    out = io.BytesIO()
    a.download_to_stream_by_name("renamed.txt", out)
    assert out.getvalue() == b"hello world"
    a.delete(fid)
    assert raw_db["files_a_fs.chunks"].count_documents({}) == 0


# --- scopes -------------------------------------------------------------------------------------


def _register(engine, slug, **data_access):
    manifest = {"slug": slug, "name": slug}
    if data_access:
        manifest["data_access"] = data_access
    engine.register_app(manifest)


def test_cross_app_reads_need_a_grant_and_an_open_owner(engine):
    _register(engine, "owner")
    _register(engine, "closed", cross_app_policy="deny_all")
    _register(engine, "reader", read_scopes=["owner", "closed"])
    _register(engine, "stranger")
    with pytest.raises(ScopeError, match="does not grant"):
        engine.get_scoped_db("stranger", read_scopes=["stranger", "owner"])
    with pytest.raises(ScopeError, match="deny_all"):
        engine.get_scoped_db("reader", read_scopes=["reader", "closed"])
    with pytest.raises(ScopeError, match="'\\*'"):
        engine.get_scoped_db("reader", read_scopes=["*"])
    with pytest.raises(ScopeError, match="never cross"):
        engine.get_scoped_db("reader", read_scopes=["reader", "owner"], write_scope="owner")
    with pytest.raises(ScopeError):
        engine.get_scoped_db("reader", read_scopes=["owner"])  # own scope missing
    with pytest.raises(ScopeError):
        engine.get_scoped_db("reader", read_scopes=[])
    db = engine.get_scoped_db("reader", read_scopes=["reader", "owner"])
    assert db.read_scopes == ("reader", "owner")
    assert engine.metrics.snapshot()["apps"]["stranger"]["counters"]["security.refused"] >= 1


def test_reads_over_several_scopes_behave_like_one_collection(engine, raw_db):
    _register(engine, "shop")
    _register(engine, "hq", read_scopes=["shop"])
    shop = engine.get_scoped_db("shop")
    hq = engine.get_scoped_db("hq", read_scopes=["hq", "shop"])
    shop.orders.insert_many([{"_id": 1, "v": 10}, {"_id": 2, "v": 20}])
    hq.orders.insert_many([{"_id": 3, "v": 30}])
    shop.customers.insert_one({"_id": "c", "order": 3})
    raw_db["shop_orders"].insert_one({"_id": 9, "v": 999, "app_id": "intruder"})
    assert [d["v"] for d in hq.orders.find({}, {"_id": 0, "v": 1}).sort("v", -1).limit(2)] == [
        30,
        20,
    ]
    assert hq.orders.count_documents({"v": {"$gte": 20}}) == 2
    assert sorted(hq.orders.distinct("app_id")) == ["hq", "shop"]
    assert hq.orders.find_one({"_id": 1})["app_id"] == "shop"
    total = hq.orders.aggregate([{"$group": {"_id": None, "t": {"$sum": "$v"}}}]).to_list()
    assert total[0]["t"] == 60
    joined = hq.orders.aggregate(
        [
            {"$match": {"_id": 3}},
            {
                "$lookup": {
                    "from": "customers",
                    "localField": "_id",
                    "foreignField": "order",
                    "as": "c",
                }
            },
        ]
    ).to_list()
    assert [c["_id"] for c in joined[0]["c"]] == ["c"]
    # Writes stay home.
    hq.orders.update_many({}, {"$set": {"touched": True}})
    assert raw_db["shop_orders"].count_documents({"touched": True}) == 0
    hq.orders.delete_many({})
    assert shop.orders.count_documents({}) == 2
    # The manifest's grant is the default read scope set.
    assert engine.get_scoped_db("hq").read_scopes == ("hq", "shop")


# --- guards and limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"$where": "true"},
        {"a": {"$elemMatch": {"$where": "1"}}},
        {"$expr": {"$function": {"body": "f", "args": [], "lang": "js"}}},
        {"$and": [{"$or": [{"$nor": [{"$eval": "x"}]}]}]},
    ],
)
def test_javascript_is_refused_everywhere(apps, query):
    a, _ = apps
    for call in (
        lambda: a.items.find(query),
        lambda: a.items.count_documents(query),
        lambda: a.items.update_many(query, {"$set": {"x": 1}}),
        lambda: a.items.delete_many(query),
        lambda: a.items.aggregate([{"$match": query}]),
        lambda: a.items.aggregate(
            [{"$lookup": {"from": "other", "pipeline": [{"$match": query}], "as": "x"}}]
        ),
        lambda: a.items.distinct("n", query),
    ):
        with pytest.raises(QueryValidationError):
            call()


def test_accumulator_in_a_group_is_refused(apps):
    a, _ = apps
    with pytest.raises(QueryValidationError):
        a.items.aggregate([{"$group": {"_id": None, "x": {"$accumulator": {"init": "f"}}}}])


def test_depth_regex_and_stage_limits(apps):
    a, _ = apps
    deep = {"n": 1}
    for _ in range(12):
        deep = {"$and": [deep]}
    with pytest.raises(QueryValidationError, match="deeper"):
        a.items.find(deep)
    with pytest.raises(QueryValidationError, match="longer"):
        a.items.find({"tag": {"$regex": "a" * 1001}})
    with pytest.raises(QueryValidationError, match="nests unbounded"):
        a.items.find({"tag": {"$regex": "(a+)+$"}})
    assert a.items.count_documents({"tag": {"$regex": "^[ab]$"}}) == 6
    with pytest.raises(QueryValidationError, match="50 stages"):
        a.items.aggregate([{"$match": {}}] * 51)
    with pytest.raises(QueryValidationError, match="50 stages"):
        a.items.aggregate([{"$facet": {"x": [{"$match": {}}] * 50}}])


def test_result_batch_and_time_limits(mongo_uri, db_name, recorder):
    from mdb_sync import MongoDBEngine

    limits = QueryLimits(
        max_result_docs=25, max_batch_size=10, default_max_time_ms=1234, max_time_ms=5000
    )
    with MongoDBEngine(mongo_uri, db_name, limits=limits, event_listeners=[recorder]) as engine:
        db = engine.get_scoped_db("limited")
        db.items.insert_many([{"i": i} for i in range(30)])
        assert len(db.items.find().limit(25).to_list()) == 25
        with pytest.raises(ResourceLimitExceeded, match="more than 25"):
            db.items.find().to_list()
        with pytest.raises(ResourceLimitExceeded):
            list(db.items.aggregate([{"$match": {}}]))
        recorder.clear()
        db.items.find().batch_size(500).max_time_ms(10**9).limit(5).to_list()
        find = recorder.commands("find")[-1]
        assert find["batchSize"] <= 10 and find["maxTimeMS"] == 5000
        db.items.count_documents({})
        assert recorder.commands("aggregate")[-1]["maxTimeMS"] == 1234


def test_documents_over_the_size_limit_are_refused_before_sending(mongo_uri, db_name, recorder):
    from mdb_sync import MongoDBEngine

    with MongoDBEngine(
        mongo_uri, db_name, limits=QueryLimits(max_document_bytes=1024), event_listeners=[recorder]
    ) as engine:
        db = engine.get_scoped_db("sized")
        db.docs.insert_one({"small": "x"})
        recorder.clear()
        with pytest.raises(ResourceLimitExceeded, match="1024"):
            db.docs.insert_one({"big": "x" * 2000})
        with pytest.raises(ResourceLimitExceeded):
            db.docs.insert_many([{"ok": 1}, {"big": "x" * 2000}])
        assert recorder.commands("insert") == []
    with MongoDBEngine(mongo_uri, db_name) as engine, pytest.raises(ResourceLimitExceeded):
        engine.get_scoped_db("sized").docs.insert_one({"huge": b"x" * (17 * 1024 * 1024)})


def test_unknown_methods_are_attribute_errors(apps):
    a, _ = apps
    for name in (
        "find_raw_batches",
        "aggregate_raw_batches",
        "database_name",
        "create_search_index",
    ):
        with pytest.raises(AttributeError, match="allow-list"):
            getattr(a.items, name)
    for name in ("client", "cursor_command", "dereference", "_private"):
        with pytest.raises(AttributeError):
            getattr(a, name)


def test_no_raw_handle_one_attribute_away(apps):
    a, _ = apps
    cursor = a.items.find()
    assert cursor.collection is a.items
    assert cursor.clone().collection is a.items
    assert a.items.database is a
    command_cursor = a.items.aggregate([])
    assert not hasattr(command_cursor, "collection")
    assert a.items.with_options().database is a
    assert a.with_options().app_slug == "app_a"


def test_session_comment_and_hint_are_forwarded(engine, recorder):
    db = engine.get_scoped_db("fwd")
    db.items.insert_one({"n": 1})
    db.items.create_index("n")
    recorder.clear()
    with db.client_session() as session:
        db.items.find({"n": 1}, comment="find-c", session=session).hint("n_1").to_list()
        db.items.update_one({"n": 1}, {"$set": {"m": 1}}, comment="upd-c", session=session)
        db.items.aggregate([{"$match": {}}], comment="agg-c", session=session).to_list()
        db.items.count_documents({}, comment="cnt-c", session=session)
        lsid = session.session_id
    find = recorder.commands("find")[-1]
    assert find["comment"] == "find-c" and find["hint"] == "n_1" and find["lsid"] == lsid
    assert recorder.commands("update")[-1]["comment"] == "upd-c"
    comments = [c.get("comment") for c in recorder.commands("aggregate")]
    assert "agg-c" in comments and "cnt-c" in comments
    assert all(c["lsid"] == lsid for c in recorder.commands("find", "update", "aggregate"))


def test_expressions_in_options_get_the_same_guards(apps):
    a, _ = apps
    js = {"$function": {"body": "function() { return 1 }", "args": [], "lang": "js"}}
    with pytest.raises(QueryValidationError):
        a.items.find({}, {"x": js})
    with pytest.raises(QueryValidationError):
        a.items.find({}, projection={"x": js})
    with pytest.raises(QueryValidationError):
        a.items.find_one_and_update({}, {"$set": {"y": 1}}, projection={"x": js})
    with pytest.raises(QueryValidationError):
        a.items.update_many({}, {"$set": {"arr.$[e]": 1}}, array_filters=[{"e": {"$where": "1"}}])
    with pytest.raises(QueryValidationError):
        a.items.bulk_write(
            [UpdateOne({}, {"$set": {"arr.$[e]": 1}}, array_filters=[{"e": {"$where": "1"}}])]
        )
    assert (
        a.items.find({}, {"double": {"$multiply": ["$n", 2]}}).sort("_id").to_list()[1]["double"]
        == 2
    )


def test_scan_reads_every_document_in_scope_past_max_result_docs(mongo_uri, db_name, recorder):
    from mdb_sync import MongoDBEngine

    limits = QueryLimits(
        max_result_docs=5, max_batch_size=4, default_max_time_ms=2000, max_time_ms=2000
    )
    with MongoDBEngine(mongo_uri, db_name, limits=limits, event_listeners=[recorder]) as engine:
        engine.register_app({"slug": "scan_a"})
        engine.register_app({"slug": "scan_hq", "data_access": {"read_scopes": ["scan_a"]}})
        a = engine.get_scoped_db("scan_a")
        a.items.insert_many([{"n": n, "secret": "a"} for n in range(12)])
        engine.get_scoped_db("scan_b").items.insert_many([{"n": n} for n in range(3)])
        with pytest.raises(ResourceLimitExceeded):
            a.items.find({}).to_list()
        recorder.clear()
        with a.items.scan({"n": {"$gte": 2}}, {"_id": 0, "n": 1}, sort=[("n", 1)]) as cursor:
            assert [d["n"] for d in cursor] == list(range(2, 12))  # 10 > max_result_docs
        finds = recorder.commands("find")
        assert finds[0]["filter"] == {"n": {"$gte": 2}, "app_id": "scan_a"}
        assert finds[0]["batchSize"] <= 4 and finds[0]["maxTimeMS"] <= 2000
        # The guards of find: on the filter, the projection and the options.
        js = {"$function": {"body": "function() { return 1 }", "args": [], "lang": "js"}}
        for bad in (
            lambda: a.items.scan({"$where": "true"}),
            lambda: a.items.scan({}, {"x": js}),
            lambda: a.items.scan({}, cursor_type=2),
        ):
            with pytest.raises(QueryValidationError):
                bad()
        # Over several read scopes: one scoped aggregation, uncapped as well.
        hq = engine.get_scoped_db("scan_hq", read_scopes=["scan_hq", "scan_a"])
        hq.items.insert_one({"n": 100})
        with pytest.raises(ResourceLimitExceeded):
            hq.items.find({}).to_list()
        seen = hq.items.scan({}, {"_id": 0, "n": 1}, batch_size=3, max_time_ms=1000).to_list()
        assert sorted(d["n"] for d in seen) == [*range(12), 100]  # never scan_b's documents
        with pytest.raises(QueryValidationError):
            hq.items.scan({}, {"x": js}).to_list()


def test_a_refused_bulk_write_sends_and_creates_nothing(engine, recorder):
    """Every request of a bulk write is checked inside pymongo's call, before pymongo sends
    anything: a refused one leaves no document, no collection, no index, no failed-operation
    count — and a good batch is one counted bulkWrite."""
    db = engine.get_scoped_db("bulk_refused")
    engine.metrics.reset()
    recorder.clear()
    batches = [
        [InsertOne({"n": 1}), UpdateOne({"$where": "true"}, {"$set": {"a": 1}})],
        [InsertOne({"n": 1}), UpdateOne({"n": 1}, {"$set": {"app_id": "other"}})],
        [InsertOne({"n": 1}), InsertOne({"n": 2, "app_id": "other"})],
        [InsertOne({"n": 1}, namespace="db.elsewhere")],
        [InsertOne({"n": 1}), DeleteOne({"n": {"$function": {"body": "x"}}})],
    ]
    for requests in batches:
        with pytest.raises((QueryValidationError, ScopeError)):
            db.fresh.bulk_write(requests)
    operations = engine.get_metrics()["apps"].get("bulk_refused", {}).get("operations", {})
    assert "bulkWrite" not in operations  # refusals are not failed operations
    assert engine.get_metrics()["apps"]["bulk_refused"]["counters"]["security.refused"] == 5
    with pytest.raises(TypeError, match="not a valid bulk write request"):
        db.fresh.bulk_write([InsertOne({"n": 1}), {"insertOne": {"n": 2}}])
    with pytest.raises(ValueError, match="empty"):
        db.fresh.bulk_write(iter([]))
    assert recorder.commands("insert", "update", "delete", "createIndexes", "create") == []
    assert db.list_collection_names() == []
    engine.metrics.reset()
    result = db.fresh.bulk_write([InsertOne({"n": 1}), UpdateOne({"n": 1}, {"$set": {"a": 1}})])
    assert (result.inserted_count, result.modified_count) == (1, 1)
    bulk = engine.get_metrics()["apps"]["bulk_refused"]["operations"]["bulkWrite"]
    assert (bulk["count"], bulk["errors"]) == (1, 0)
    assert db.fresh.find_one({}, {"_id": 0}) == {"n": 1, "app_id": "bulk_refused", "a": 1}
