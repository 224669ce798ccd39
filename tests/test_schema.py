"""Schema inference, the dry run and applying a schema (``mdb_sync.schema``), on the session's
real server: every sampled document validates against the inferred schema with the
server's own ``$jsonSchema``; ``required`` is exactly the fields every document has; enums
describe small value sets only; sampling and the validator stay inside the sandbox, and a
validator never breaks the ``app_id`` tagging — also after an import under another slug or a
graduation without ``app_id``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import WriteError

from mdb_sync import MongoDBEngine, QueryLimits
from mdb_sync.exceptions import (
    AppNotFoundError,
    InvalidCollectionName,
    SchemaError,
)
from mdb_sync.schema import (
    SchemaBuilder,
    apply_schema,
    as_validator,
    current_validator,
    explain,
    infer,
    infer_schema,
    remove_schema,
    validate_documents,
)

SHOP = "shop"

# --- documents for the property ------------------------------------------------------------

LABELS = st.sampled_from(["new", "paid", "sent"])
SCALARS = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(2**31, 2**62),
    st.floats(width=64),
    LABELS,
    st.text(max_size=12),
    st.text(min_size=101, max_size=120),
    st.booleans(),
    st.none(),
    st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    st.builds(ObjectId),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3).map(Decimal128),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=8,
)
DOCUMENTS = st.lists(
    st.dictionaries(
        st.sampled_from(["name", "status", "n", "price", "tags", "dims", "note", "flag"]),
        st.one_of(LABELS, VALUES),
        max_size=6,
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def shop(engine):
    engine.register_app({"slug": SHOP, "name": "Shop"})
    engine.register_app({"slug": "other", "name": "Other"})
    return engine.get_scoped_db(SHOP)


def _values(documents: list[Any], path: list[str]) -> list[Any]:
    """The values at ``path`` (keys, ``[]`` for array elements) across ``documents``."""
    found = list(documents)
    for step in path:
        nxt: list[Any] = []
        for value in found:
            if step == "[]" and isinstance(value, list):
                nxt.extend(value)
            elif step != "[]" and isinstance(value, dict) and step in value:
                nxt.append(value[step])
        found = nxt
    return found


def _check_enums(schema: dict[str, Any], documents: list[Any], path: list[str], limit: int):
    enum = schema.get("enum")
    if enum is not None:
        values = _values(documents, path)
        strings = [v for v in values if isinstance(v, str)]
        members = [e for e in enum if e is not None]
        assert 0 < len(members) <= limit, (path, enum)
        assert all(isinstance(m, str) and len(m) <= 100 for m in members), (path, enum)
        assert set(members) == set(strings), (path, enum)
        assert len(strings) >= 2 * len(members), "an enum needs its values repeated"
        assert all(v is None or isinstance(v, str) for v in values), (path, values)
    for key, child in (schema.get("properties") or {}).items():
        _check_enums(child, documents, [*path, key], limit)
    if "items" in schema:
        _check_enums(schema["items"], documents, [*path, "[]"], limit)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(documents=DOCUMENTS, enum_max=st.integers(0, 4), closed=st.booleans())
def test_every_sampled_document_validates_on_the_server(shop, documents, enum_max, closed):
    shop.items.delete_many({})
    stored = [dict(d) for d in documents]
    shop.items.insert_many(stored)
    inference = infer(shop.items, len(stored), enum_max_values=enum_max, closed=closed)
    schema = inference.schema
    assert inference.sampled == len(stored)

    report = validate_documents(shop.items, schema)  # the server's $jsonSchema decides
    assert (report.checked, report.failed) == (len(stored), 0), report.documents

    everywhere = set.intersection(*(set(d) for d in stored))
    assert set(schema.get("required", [])) == everywhere  # _id included: every doc has one
    assert "app_id" not in schema["properties"], "the sandbox's tag is not the app's data"
    _check_enums(schema, stored, [], enum_max)


def test_required_types_and_enums_of_a_realistic_collection(shop):
    orders = [
        {
            "customer": f"customer {i}",  # unique: a string, never an enum
            "status": ["new", "paid", "sent"][i % 3],
            "total": i * 2.5 if i % 2 else i,  # doubles and integers
            "items": [{"sku": "A", "qty": 1}] + ([{"sku": "B", "qty": Int64(2)}] if i % 2 else []),
            "coupon": None if i % 4 == 0 else "SAVE10",
            "notes": "x" * 150 if i < 6 else "short",  # long text is never an enum member
            "created_at": dt.datetime(2024, 1, 1 + i, tzinfo=dt.timezone.utc),
            **({"gift": True} if i % 5 == 0 else {}),
        }
        for i in range(30)
    ]
    shop.orders.insert_many(orders)
    schema = infer_schema(shop.orders)
    props = schema["properties"]
    assert set(schema["required"]) == {
        "_id", "customer", "status", "total", "items", "coupon", "notes", "created_at",
    }  # fmt: skip
    assert props["customer"] == {"bsonType": "string"}
    assert props["status"] == {"bsonType": "string", "enum": ["new", "paid", "sent"]}
    assert props["total"] == {"bsonType": ["int", "long", "double"]}
    assert props["coupon"] == {"bsonType": ["string", "null"], "enum": ["SAVE10", None]}
    assert props["notes"] == {"bsonType": "string"}
    assert props["created_at"] == {"bsonType": "date"}
    assert props["gift"] == {"bsonType": "bool"}
    assert props["items"]["items"]["required"] == ["sku", "qty"]
    assert props["items"]["items"]["properties"]["qty"] == {"bsonType": ["int", "long"]}
    assert props["items"]["items"]["properties"]["sku"]["enum"] == ["A", "B"]
    assert schema["description"] == "inferred from 30 sampled documents of shop.orders"

    # Eleven values seen three times each: more than the default ten, no enum.
    shop.sizes.insert_many([{"size": f"s{i % 11}"} for i in range(33)])
    assert infer_schema(shop.sizes)["properties"]["size"] == {"bsonType": "string"}
    assert "enum" in infer_schema(shop.sizes, enum_max_values=11)["properties"]["size"]
    assert "enum" not in infer_schema(shop.orders, enum_max_values=0)["properties"]["status"]


def test_field_table_counts_presence(shop):
    shop.people.insert_many([{"name": "a", "age": 3}, {"name": "b"}, {"name": "c", "age": None}])
    rows = {r["path"]: r for r in infer(shop.people).fields}
    assert rows["age"] == {
        "path": "age", "types": ["int", "long", "null"], "present": 2, "of": 3,
        "required": False, "enum": None,
    }  # fmt: skip
    assert rows["name"]["required"] and rows["name"]["present"] == 3


def test_a_double_field_accepts_integers_and_refuses_strings(engine, shop):
    shop.prices.insert_many([{"price": 9.99}, {"price": 10.5}])
    apply_schema(engine, SHOP, "prices", infer_schema(shop.prices))
    shop.prices.insert_one({"price": 10})  # what the app means by 10.0
    shop.prices.insert_one({"price": 2**40})
    with pytest.raises(WriteError) as refused:
        shop.prices.insert_one({"price": "ten"})
    assert refused.value.code == 121
    assert shop.prices.count_documents({}) == 4


def test_nesting_is_described_down_to_what_a_dry_run_can_check(mongo_uri, db_name):
    deep = {"a": {"b": {"c": {"d": {"e": 1}}}}, "list": [[{"x": 1}]]}
    # Two levels per object (properties -> field) within max_query_depth - 2.
    for depth, described in ((10, 3), (6, 1)):
        with MongoDBEngine(mongo_uri, db_name, limits=QueryLimits(max_query_depth=depth)) as eng:
            db = eng.get_scoped_db(f"deep{depth}")
            db.things.insert_one(dict(deep))
            schema = infer_schema(db.things)
            level = schema
            for key in "abcd"[:described]:
                level = level["properties"][key]
            assert level == {"bsonType": "object"}, schema
            report = validate_documents(db.things, schema)  # within the query guard
            assert report.failed == 0


def test_an_object_used_as_a_map_is_described_by_its_type(shop):
    documents = [{"counts": {f"k{i}-{j}": j for j in range(10)}} for i in range(30)]
    shop.maps.insert_many([dict(d) for d in documents])
    schema = infer_schema(shop.maps)
    assert schema["properties"]["counts"] == {"bsonType": "object"}
    builder = SchemaBuilder(max_properties=500)
    for document in documents:
        builder.add(document)
    assert len(builder.schema()["properties"]["counts"]["properties"]) == 300


def test_sampling_and_the_dry_run_see_the_apps_documents_only(engine, shop, raw_db, recorder):
    shop.items.insert_many([{"name": "mine", "n": i} for i in range(5)])
    # A document of another app in the same physical collection (say, left by a bug
    # elsewhere): neither the sample nor the dry run may see it.
    raw_db["shop_items"].insert_one({"app_id": "other", "secret": "theirs", "n": "x"})
    engine.get_scoped_db("other").items.insert_one({"secret": "theirs"})
    recorder.clear()
    schema = infer_schema(shop.items)
    assert set(schema["properties"]) == {"_id", "name", "n"}
    [sample] = recorder.commands("aggregate")
    assert sample["aggregate"] == "shop_items"
    assert sample["pipeline"][0] == {"$match": {"app_id": "shop"}}
    assert sample["pipeline"][1] == {"$sample": {"size": 1000}}

    closed = {**schema, "additionalProperties": False}
    report = validate_documents(shop.items, closed)
    assert (report.checked, report.failed) == (5, 0)
    for command in recorder.commands("aggregate", "count", "find"):
        assert command.get("aggregate", command.get("count", command.get("find"))) == ("shop_items")


def test_a_collection_reading_other_apps_is_refused(engine):
    engine.register_app({"slug": "source", "name": "Source"})
    engine.register_app(
        {"slug": "reader", "name": "Reader", "data_access": {"read_scopes": ["source"]}}
    )
    engine.get_scoped_db("source").things.insert_one({"x": 1})
    with pytest.raises(SchemaError, match="also reads source"):
        infer_schema(engine.get_scoped_db("reader").things)
    own = engine.get_scoped_db("reader", read_scopes=["reader"]).things
    own.insert_one({"y": 1})
    assert set(infer_schema(own)["properties"]) == {"_id", "y"}


def test_dry_run_lists_failing_documents_with_reasons(shop):
    schema = {
        "bsonType": "object",
        "required": ["name"],
        "properties": {
            "name": {"bsonType": "string", "maxLength": 5},
            "_id": {},
            "qty": {"bsonType": "int", "minimum": 0},
            "tags": {"bsonType": "array", "items": {"enum": ["a", "b"]}},
        },
        "additionalProperties": False,
    }
    good = {"_id": 1, "name": "ok", "qty": 1, "tags": ["a"]}
    shop.items.insert_many(
        [
            good,
            {"_id": 2, "qty": -1},
            {"_id": 3, "name": "far too long", "tags": ["a", "z"], "extra": True},
            {"_id": 4, "name": 5},
        ]
    )
    report = validate_documents(shop.items, schema, limit=2)
    assert (report.checked, report.failed) == (4, 3)
    assert [d["_id"] for d in report.documents] == [2, 3]
    assert report.documents[0]["problems"] == [
        "name: missing (required)",
        "qty: -1 is below the minimum 0",
    ]
    assert report.documents[1]["problems"] == [
        "name: longer than 5 characters",
        "tags[1]: 'z' is not one of 'a', 'b'",
        "extra: not allowed (additionalProperties is false)",
    ]
    assert report.documents[0]["document"]["app_id"] == SHOP
    assert validate_documents(shop.items, {"name": {"$type": "string"}}).failed == 2  # any query
    assert explain(good, schema) == []
    assert explain({"name": True}, {"properties": {"name": {"enum": [1]}}}) == [
        "name: True is not one of 1"
    ]


def test_apply_goes_through_the_manifest_and_keeps_app_id_tagging(engine, shop, raw_db, recorder):
    shop.items.insert_many([{"name": f"n{i}", "kind": "a" if i % 2 else "b"} for i in range(6)])
    engine.get_scoped_db("other").items.insert_one({"anything": 1})
    schema = infer_schema(shop.items, closed=True)
    recorder.clear()
    result = apply_schema(engine, SHOP, "items", schema)
    assert result["status"] == "updated" and result["report"]["failed"] == 0
    assert [c["collMod"] for c in recorder.commands("collMod")] == ["shop_items"]

    manifest = engine.get_app(SHOP)
    assert manifest["collection_settings"]["items"]["validation"] == {
        "validator": {"$jsonSchema": schema},
        "validationLevel": "strict",
        "validationAction": "error",
    }
    enforced = current_validator(shop.items)["$jsonSchema"]
    assert enforced["properties"]["app_id"] == {"bsonType": "string"}  # opened for the tag
    assert "app_id" not in enforced["required"]
    assert "validator" not in raw_db["other_items"].options()

    shop.items.insert_one({"name": "new", "kind": "a"})
    shop.items.update_one({"name": "upserted"}, {"$set": {"kind": "b"}}, upsert=True)
    assert {d["app_id"] for d in raw_db["shop_items"].find()} == {SHOP}
    for bad in ({"name": "x", "kind": "c"}, {"kind": "a"}, {"name": "x", "kind": "a", "zz": 1}):
        with pytest.raises(WriteError):
            shop.items.insert_one(bad)
    assert shop.items.count_documents({}) == 8
    engine.get_scoped_db("other").items.insert_one({"kind": "whatever"})  # not its validator

    assert apply_schema(engine, SHOP, "items", schema)["status"] == "exists"
    assert remove_schema(engine, SHOP, "items")["status"] == "updated"
    assert current_validator(shop.items) is None
    shop.items.insert_one({"zz": 1})

    created = apply_schema(engine, SHOP, "fresh", {"required": ["x"]}, level="moderate")
    assert created["status"] == "created"
    assert raw_db["shop_fresh"].options()["validationLevel"] == "moderate"


def test_apply_refuses_when_stored_documents_would_fail(engine, shop, raw_db):
    shop.items.insert_many([{"name": "a"}, {"name": 1}])
    before = engine.get_app(SHOP)
    schema = {"required": ["name"], "properties": {"name": {"bsonType": "string"}}}
    with pytest.raises(SchemaError, match=r"1 of 2 document\(s\) of shop.items would fail") as e:
        apply_schema(engine, SHOP, "items", schema)
    assert e.value.context["failed"] == 1
    assert engine.get_app(SHOP) == before and current_validator(shop.items) is None

    apply_schema(engine, SHOP, "items", schema, allow_invalid=True)
    with pytest.raises(WriteError):  # strict: the invalid document fails its next update
        shop.items.update_one({"name": 1}, {"$set": {"touched": True}})
    shop.items.update_one({"name": "a"}, {"$set": {"touched": True}})


def test_bad_input_gets_clear_errors(engine, shop):
    with pytest.raises(SchemaError, match="'empty' of app 'shop' has no documents"):
        infer_schema(shop.empty)
    shop.items.insert_one({"x": 1})
    for size in (0, 10_001, "10", True):
        with pytest.raises(ValueError, match="sample_size"):
            infer_schema(shop.items, size)
    with pytest.raises(ValueError, match="enum_max_values"):
        infer_schema(shop.items, enum_max_values=-1)
    with pytest.raises(AppNotFoundError, match="'nope' is not registered"):
        apply_schema(engine, "nope", "items", {"required": ["x"]})
    assert engine.get_app("nope") is None
    with pytest.raises(InvalidCollectionName):
        apply_schema(engine, SHOP, "system.views", {"required": ["x"]})
    with pytest.raises(ValueError, match="level must be one of strict, moderate"):
        apply_schema(engine, SHOP, "items", {"required": ["x"]}, level="off")
    for bad in ([], {}, {"$jsonSchema": "x"}):
        with pytest.raises(SchemaError):
            as_validator(bad)
    assert as_validator({"schema": {"required": ["x"]}}) == {"$jsonSchema": {"required": ["x"]}}
    with pytest.raises(TypeError, match="scoped collection"):
        infer_schema(engine.client["x"]["y"])


def test_the_validator_survives_an_import_under_another_slug_and_graduation(
    engine, shop, mongo_uri, tmp_path
):
    """Why the schema neither requires nor pins ``app_id``: its value changes when the app is
    imported under another slug, and disappears when it graduates."""
    shop.items.insert_many([{"name": "a"}, {"name": "b"}])
    apply_schema(engine, SHOP, "items", infer_schema(shop.items, closed=True))
    engine.export_app(SHOP, tmp_path / "dump")

    engine.import_app(SHOP, tmp_path / "dump", target_slug="shop2")
    copy = engine.get_scoped_db("shop2").items
    copy.insert_one({"name": "written after the import"})
    with pytest.raises(WriteError):
        copy.insert_one({"name": 1})
    assert {d["app_id"] for d in copy.find()} == {"shop2"}

    with MongoDBEngine(mongo_uri, engine.db_name + "_grad") as standalone:
        try:
            standalone.import_app(SHOP, tmp_path / "dump", drop_app_id=True)
            raw = standalone.client[standalone.db_name]["items"]
            raw.insert_one({"name": "no app_id here"})  # the graduated app's own writes
            assert raw.count_documents({}) == 3
        finally:
            standalone.client.drop_database(standalone.db_name)
