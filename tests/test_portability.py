"""Export / import: mongodump's layout with well-formed BSON and metadata, a lossless round
trip (every BSON type, _ids, indexes), streaming in constant memory, and refusals that leave
the target untouched."""

from __future__ import annotations

import json
import struct
import tracemalloc
import uuid
from pathlib import Path

import bson
import pytest
from bson import SON, Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from mdb_sync import MongoDBEngine, bsonraw
from mdb_sync.exceptions import (
    AppConflictError,
    AppNotFoundError,
    InvalidCollectionName,
    PortabilityError,
)
from mdb_sync.portability import import_app


def _element(kind: int, name: str, payload: bytes) -> bytes:
    return bytes([kind]) + name.encode() + b"\x00" + payload


def _string(value: str) -> bytes:
    data = value.encode() + b"\x00"
    return struct.pack("<i", len(data)) + data


def _with_elements(document: bytes, *extra: bytes) -> bytes:
    body = document[4:-1] + b"".join(extra)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def every_type_document(n: int, app_id: str) -> bytes:
    """A document with every BSON type, including the deprecated ones pymongo cannot encode
    (symbol, undefined, DBPointer) and a pre-1970 date with milliseconds."""
    encoded = bson.encode(
        SON(
            [
                ("_id", ObjectId()),
                ("n", n),
                ("double", 1.5),
                ("nan", float("nan")),
                ("neg_zero", -0.0),
                ("string", "héllo ✓"),
                ("empty", ""),
                ("doc", SON([("b", 1), ("a", {"nested": [1, "x", None]})])),
                ("array", [1, 2.5, "three", [4], {"five": 5}]),
                ("bin0", Binary(b"\x00\x01raw", 0)),
                ("uuid4", Binary(uuid.UUID(int=n).bytes, 4)),
                ("bin_user", Binary(b"custom", 0x80)),
                ("oid", ObjectId()),
                ("true", True),
                ("date", DatetimeMS(1_700_000_000_123)),
                ("old_date", DatetimeMS(-2_208_988_800_001)),
                ("null", None),
                ("regex", Regex(r"^a.*z$", "imx")),
                ("code", Code("function () { return 1; }")),
                ("code_scope", Code("return x", {"x": 1})),
                ("int32", 2**31 - 1),
                ("timestamp", Timestamp(1_700_000_000, 7)),
                ("int64", Int64(2**62)),
                ("decimal", Decimal128("-1.000E+6144")),
                ("decimal_nan", Decimal128("NaN")),
                ("min", MinKey()),
                ("max", MaxKey()),
                ("dbref", DBRef("other", 1, "db2", extra="kept")),
                ("app_id", app_id),
            ]
        )
    )
    return _with_elements(
        encoded,
        _element(0x0E, "symbol", _string("sym")),
        _element(0x06, "undefined", b""),
        _element(0x0C, "dbpointer", _string("coll") + ObjectId().binary),
    )


def _stored(collection, query=None) -> list[bytes]:
    """The documents as the server stores them, as raw bytes, in _id order."""
    docs = []
    for batch in collection.find_raw_batches(query or {}, sort=[("_id", 1)]):
        pos = 0
        while pos < len(batch):
            size = struct.unpack_from("<i", batch, pos)[0]
            docs.append(batch[pos : pos + size])
            pos += size
    return docs


def _indexes(collection) -> list[dict]:
    return sorted(
        ({k: v for k, v in spec.items() if k != "ns"} for spec in collection.list_indexes()),
        key=lambda spec: spec["name"],
    )


@pytest.fixture
def shop(engine, raw_db):
    """App ``shop`` with two collections, indexes, a validator and every BSON type."""
    engine.register_app(
        {
            "slug": "shop",
            "name": "Shop",
            "managed_indexes": {"orders": [{"keys": {"status": 1}, "name": "by_status"}]},
        }
    )
    raw_db.create_collection(
        "shop_customers",
        validator={"$jsonSchema": {"bsonType": "object", "required": ["email"]}},
    )
    db = engine.get_scoped_db("shop")
    db.customers.insert_many([{"email": f"c{i}@example.com", "i": i} for i in range(30)])
    raw_db["shop_customers"].create_index(
        [("app_id", 1), ("email", 1)], unique=True, name="email_unique"
    )
    raw_db["shop_customers"].create_index(
        [("app_id", 1), ("i", -1)], partialFilterExpression={"i": {"$gt": 5}}
    )
    raw_db["shop_orders"].insert_many(
        [RawBSONDocument(every_type_document(n, "shop")) for n in range(40)]
    )
    # Another app's document in the same physical collection is never exported.
    raw_db["shop_orders"].insert_one({"app_id": "intruder", "n": -1})
    return db


def test_export_writes_mongodump_layout(engine, shop, raw_db, tmp_path):
    result = engine.export_app("shop", tmp_path)
    app_dir = tmp_path / "shop"
    assert result["directory"] == str(app_dir)
    assert sorted(p.name for p in app_dir.iterdir()) == [
        "customers.bson",
        "customers.metadata.json",
        "mdb-export.json",
        "orders.bson",
        "orders.metadata.json",
    ]
    assert {c["collection"]: c["documents"] for c in result["collections"]} == {
        "customers": 30,
        "orders": 40,
    }
    assert result["documents"] == 70
    # .bson: concatenated, well-formed documents, byte-identical to what the server stores.
    with open(app_dir / "orders.bson", "rb") as fh:
        docs = list(bson.decode_file_iter(fh, bson.CodecOptions(document_class=RawBSONDocument)))
    assert len(docs) == 40
    assert [d.raw for d in docs] == _stored(raw_db["shop_orders"], {"app_id": "shop"})
    assert all(d["app_id"] == "shop" for d in docs)
    # .metadata.json: canonical Extended JSON with mongodump's fields.
    text = (app_dir / "customers.metadata.json").read_text()
    assert '"v": {"$numberInt": "2"}' in text
    metadata = json.loads(text)
    assert list(metadata) == ["options", "indexes", "uuid", "collectionName", "type"]
    assert metadata["collectionName"] == "customers"
    assert metadata["type"] == "collection"
    assert len(metadata["uuid"]) == 32 and int(metadata["uuid"], 16) >= 0
    assert metadata["options"]["validator"]["$jsonSchema"]["required"] == ["email"]
    specs = {spec["name"]: spec for spec in bson.json_util.loads(text)["indexes"]}
    assert {"_id_", "email_unique", "app_id_1_i_-1"} <= set(specs)  # (+ any the engine adds)
    assert all({"v", "key", "name"} <= set(spec) for spec in specs.values())
    assert list(specs["email_unique"]["key"].items()) == [("app_id", 1), ("email", 1)]
    assert specs["email_unique"]["unique"] is True
    assert "ns" not in specs["_id_"]
    summary = json.loads((app_dir / "mdb-export.json").read_text())
    assert summary["format"] == "mdb-sync-export"
    assert summary["manifest"]["slug"] == "shop"
    assert summary["collections"] == {"customers": 30, "orders": 40}


def test_round_trip_into_a_fresh_database_is_lossless(
    engine, shop, raw_db, raw_client, mongo_uri, tmp_path
):
    engine.export_app("shop", tmp_path)
    target_name = f"mdbtest_{uuid.uuid4().hex[:12]}"
    try:
        with MongoDBEngine(mongo_uri, target_name) as other:
            result = other.import_app("shop", tmp_path)
            assert result["registered"] is True
            assert other.get_app("shop")["name"] == "Shop"
            target = raw_client[target_name]
            for name in ("shop_orders", "shop_customers"):
                assert _stored(target[name]) == _stored(raw_db[name], {"app_id": "shop"})
                assert _indexes(target[name]) == _indexes(raw_db[name])
            options = target.command("listCollections", filter={"name": "shop_customers"})
            assert options["cursor"]["firstBatch"][0]["options"]["validator"]
            # The app works through the sandbox in its new home.
            db = other.get_scoped_db("shop")
            assert db.customers.count_documents({}) == 30
            assert db.orders.find_one({"n": 3})["int64"] == 2**62
    finally:
        raw_client.drop_database(target_name)


def test_import_under_a_new_slug_rewrites_names_and_app_id(engine, shop, raw_db, tmp_path):
    engine.export_app("shop", tmp_path)
    result = engine.import_app("shop", tmp_path, target_slug="shopcopy")
    assert {c["target"] for c in result["collections"]} == {
        "shopcopy_customers",
        "shopcopy_orders",
    }
    copy = engine.get_scoped_db("shopcopy")
    assert copy.orders.count_documents({}) == 40
    assert {d["app_id"] for d in raw_db["shopcopy_orders"].find()} == {"shopcopy"}
    source = _stored(raw_db["shop_orders"], {"app_id": "shop"})
    copied = _stored(raw_db["shopcopy_orders"])
    assert copied == [bsonraw.set_field(doc, "app_id", "shopcopy") for doc in source]
    assert engine.get_scoped_db("shop").orders.count_documents({}) == 40  # source untouched
    assert [spec["key"] for spec in _indexes(raw_db["shopcopy_customers"])] == [
        spec["key"] for spec in _indexes(raw_db["shop_customers"])
    ]


def test_standalone_import_drops_app_id(engine, shop, raw_db, raw_client, mongo_uri, tmp_path):
    engine.export_app("shop", tmp_path)
    target_name = f"mdbtest_{uuid.uuid4().hex[:12]}"
    try:
        with MongoDBEngine(mongo_uri, target_name) as alone:
            result = alone.import_app("shop", tmp_path, drop_app_id=True)
            assert result["standalone"] is True and result["registered"] is False
            assert alone.list_apps() == []
            target = raw_client[target_name]
            assert sorted(target.list_collection_names()) == ["customers", "orders"]
            assert target.orders.count_documents({"app_id": {"$exists": True}}) == 0
            source = _stored(raw_db["shop_orders"], {"app_id": "shop"})
            assert _stored(target.orders) == [
                bsonraw.set_field(doc, "app_id", None) for doc in source
            ]
            keys = {spec["name"]: list(spec["key"].items()) for spec in _indexes(target.customers)}
            assert keys == {
                "_id_": [("_id", 1)],
                "email_unique": [("email", 1)],
                "i_-1": [("i", -1)],
            }
            partial = next(s for s in _indexes(target.customers) if s["name"] == "i_-1")
            assert partial["partialFilterExpression"] == {"i": {"$gt": 5}}
    finally:
        raw_client.drop_database(target_name)


def test_export_and_import_stream_in_constant_memory(mongo_uri, db_name, tmp_path, monkeypatch):
    # An engine of its own: the test fixture's command recorder keeps every insert's body.
    with MongoDBEngine(mongo_uri, db_name) as engine:
        payload = "x" * 4000
        db = engine.get_scoped_db("bulk")
        for start in range(0, 4000, 500):
            db.items.insert_many([{"i": i, "payload": payload} for i in range(start, start + 500)])
        total = sum(len(doc) for doc in _stored(engine._raw_collection("bulk_items")))
        assert total > 16_000_000
        monkeypatch.setattr("mdb_sync.portability.importer.BATCH_DOCUMENTS", 100)
        tracemalloc.start()
        try:
            engine.export_app("bulk", tmp_path, batch_size=100)
            _, export_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            engine.import_app("bulk", tmp_path, target_slug="bulkcopy")
            _, import_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (tmp_path / "bulk" / "items.bson").stat().st_size == total
        # A few batches (100 documents of 4 kB) in memory at a time, never the data set.
        assert export_peak < total / 4, f"export peak {export_peak} for {total} bytes"
        assert import_peak < total / 4, f"import peak {import_peak} for {total} bytes"
        assert engine.get_scoped_db("bulkcopy").items.count_documents({}) == 4000


def test_progress_reports_documents_and_bytes(engine, shop, tmp_path):
    seen = []
    engine.export_app("shop", tmp_path, progress=lambda docs, size: seen.append((docs, size)))
    assert sum(d for d, _ in seen) == 70
    assert sum(s for _, s in seen) == sum(
        p.stat().st_size for p in (tmp_path / "shop").glob("*.bson")
    )
    seen.clear()
    engine.import_app("shop", tmp_path, target_slug="shopb", progress=lambda d, s: seen.append(d))
    assert sum(seen) == 70


def test_existing_export_directory_needs_overwrite(engine, shop, tmp_path):
    engine.export_app("shop", tmp_path)
    with pytest.raises(PortabilityError, match="already exists"):
        engine.export_app("shop", tmp_path)
    shop.customers.insert_one({"email": "new@example.com"})
    result = engine.export_app("shop", tmp_path, overwrite=True)
    assert result["collections"][0]["documents"] == 31
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"]  # no staging left behind


def test_unknown_app_cannot_be_exported(engine, tmp_path):
    with pytest.raises(AppNotFoundError, match="ghost"):
        engine.export_app("ghost", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_views_are_skipped_and_reported(engine, shop, raw_db, tmp_path):
    raw_db.command("create", "shop_recent", viewOn="shop_orders", pipeline=[])
    result = engine.export_app("shop", tmp_path)
    assert result["skipped"] == [{"collection": "recent", "type": "view"}]
    assert not (tmp_path / "shop" / "recent.bson").exists()


def test_import_refuses_a_target_that_holds_the_apps_data(engine, shop, raw_db, tmp_path):
    engine.export_app("shop", tmp_path)
    before = _stored(raw_db["shop_orders"])
    with pytest.raises(PortabilityError, match="already holds documents"):
        engine.import_app("shop", tmp_path)
    assert _stored(raw_db["shop_orders"]) == before
    result = engine.import_app("shop", tmp_path, drop=True)
    assert result["documents"] == 70
    assert shop.orders.count_documents({}) == 40


def test_import_into_an_overlapping_slug_is_refused(engine, shop, raw_db, tmp_path):
    engine.export_app("shop", tmp_path)
    engine.register_app({"slug": "my_shop"})
    with pytest.raises(AppConflictError, match="my_shop"):
        engine.import_app("shop", tmp_path, target_slug="my")
    assert "my_orders" not in raw_db.list_collection_names()
    assert engine.get_app("my") is None


def test_standalone_import_into_a_shared_database_is_refused(engine, shop, tmp_path):
    engine.export_app("shop", tmp_path)
    with pytest.raises(PortabilityError, match="database of its own"):
        engine.import_app("shop", tmp_path, drop_app_id=True)


def _crafted_dump(tmp_path: Path, documents: list[bytes], metadata: dict | None = None) -> Path:
    app_dir = tmp_path / "evil"
    app_dir.mkdir()
    (app_dir / "notes.bson").write_bytes(b"".join(documents))
    if metadata is not None:
        (app_dir / "notes.metadata.json").write_text(json.dumps(metadata))
    return app_dir


def test_imported_documents_always_belong_to_the_target_app(engine, raw_db, tmp_path):
    _crafted_dump(
        tmp_path,
        [
            bson.encode({"_id": 1, "app_id": "victim", "text": "planted"}),
            bson.encode({"_id": 2, "text": "no owner"}),
            bson.encode({"_id": 3, "app_id": {"$ne": None}}),
        ],
    )
    engine.import_app("evil", tmp_path)
    assert sorted((d["_id"], d["app_id"]) for d in raw_db["evil_notes"].find()) == [
        (1, "evil"),
        (2, "evil"),
        (3, "evil"),
    ]
    assert engine.get_scoped_db("victim").notes.count_documents({}) == 0


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([bson.encode({"_id": 1}), b"\x10\x00\x00\x00\x02"], "truncated"),
        ([b"\xff\xff\xff\x7f"], "out of range"),
        ([bson.encode({"_id": 1})[:-1] + b"\x01"], "terminator"),
        ([struct.pack("<i", 12) + b"\x99a\x00\x00\x00\x00\x00\x00"], "unknown element type"),
    ],
)
def test_malformed_bson_is_refused_and_nothing_is_left(
    engine, raw_db, tmp_path, documents, message
):
    _crafted_dump(tmp_path, documents)
    engine.get_scoped_db("bystander").items.insert_one({"n": 1})
    before = set(raw_db.list_collection_names())
    with pytest.raises(bsonraw.MalformedBSON, match=message):
        engine.import_app("evil", tmp_path)
    assert set(raw_db.list_collection_names()) == before
    assert engine.get_app("evil") is None  # the registration made by the import is undone


def test_refused_collection_options_and_names(engine, raw_db, tmp_path):
    _crafted_dump(
        tmp_path,
        [bson.encode({"_id": 1})],
        {"options": {"viewOn": "victim_secrets", "pipeline": []}, "indexes": []},
    )
    with pytest.raises(PortabilityError, match="viewOn"):
        engine.import_app("evil", tmp_path)
    (tmp_path / "evil" / "notes.metadata.json").unlink()
    (tmp_path / "evil" / "system.users.bson").write_bytes(bson.encode({"_id": 1}))
    with pytest.raises(InvalidCollectionName):
        engine.import_app("evil", tmp_path)
    assert engine.get_app("evil") is None
    assert not [n for n in raw_db.list_collection_names() if n.startswith("evil")]


def test_a_failing_index_rolls_the_whole_import_back(engine, raw_db, tmp_path):
    _crafted_dump(
        tmp_path,
        [bson.encode({"_id": 1, "k": 1}), bson.encode({"_id": 2, "k": 1})],
        {"options": {}, "indexes": [{"v": 2, "key": {"k": 1}, "name": "k_1", "unique": True}]},
    )
    with pytest.raises(PortabilityError, match="indexes of 'notes'"):
        engine.import_app("evil", tmp_path)
    assert not [n for n in raw_db.list_collection_names() if "evil" in n or "import" in n]
    assert engine.get_app("evil") is None


def test_a_plain_mongodump_database_directory_can_be_imported(engine, raw_db, tmp_path):
    plain = tmp_path / "legacy_db"
    plain.mkdir()
    (plain / "people.bson").write_bytes(
        b"".join(bson.encode({"_id": i, "name": f"p{i}"}) for i in range(3))
    )
    (plain / "people.metadata.json").write_text(
        json.dumps(
            {
                "indexes": [
                    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                    {"v": 2, "key": {"name": 1}, "name": "name_1"},
                ]
            }
        )
    )
    engine.import_app("legacy", plain)
    db = engine.get_scoped_db("legacy")
    assert db.people.count_documents({}) == 3
    names = {
        spec["name"]: list(spec["key"].items()) for spec in raw_db.legacy_people.list_indexes()
    }
    assert names["app_id_1_name_1"] == [("app_id", 1), ("name", 1)]  # scoped like ours


def test_missing_export_is_a_clear_error(engine, tmp_path):
    with pytest.raises(PortabilityError, match="no export of app 'nothing'"):
        import_app(engine, "nothing", tmp_path)


def test_a_failed_replacing_import_puts_the_old_data_back(engine, raw_db, tmp_path):
    engine.get_scoped_db("evil").notes.insert_many([{"keep": i} for i in range(3)])
    _crafted_dump(
        tmp_path,
        [bson.encode({"_id": 1, "k": 1}), bson.encode({"_id": 2, "k": 1})],
        {"options": {}, "indexes": [{"v": 2, "key": {"k": 1}, "name": "k_1", "unique": True}]},
    )
    with pytest.raises(PortabilityError, match="indexes of 'notes'"):
        engine.import_app("evil", tmp_path, drop=True)
    assert sorted(d["keep"] for d in engine.get_scoped_db("evil").notes.find()) == [0, 1, 2]
    assert not [n for n in raw_db.list_collection_names() if n.startswith("mdb_import_")]
