"""Columnar reads (pymongoarrow): Arrow tables, pandas and polars frames, numpy arrays from a
scoped collection — scoped and capped exactly like ``find``, and no raw collection reachable
through the seam pymongoarrow reads from."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongoarrow.api import Schema

from mdb_sync import QueryValidationError, ResourceLimitExceeded
from mdb_sync.engine import MongoDBEngine
from mdb_sync.scoping import QueryLimits


@pytest.fixture
def apps(engine, raw_db):
    a = engine.get_scoped_db("app_a")
    b = engine.get_scoped_db("app_b")
    a.rows.insert_many([{"_id": i, "k": i % 3, "v": float(i)} for i in range(12)])
    b.rows.insert_many([{"_id": i, "k": 9, "v": -1.0, "secret": "B"} for i in range(5)])
    # A document of app_b inside app_a's physical collection: it must never show.
    raw_db["app_a_rows"].insert_one({"_id": 99, "k": 1, "v": -1.0, "app_id": "app_b"})
    return a, b


def _scoped(recorder, name):
    """Every find/aggregate the server saw on ``name`` filtered by app_id."""
    bodies = [c for c in recorder.commands("find", "aggregate") if name in repr(c)]
    assert bodies
    for body in bodies:
        assert "app_id" in repr(body.get("filter", body.get("pipeline"))), body
    return bodies


def test_arrow_table(apps, recorder):
    a, _ = apps
    recorder.clear()
    table = a.rows.find_arrow_all({"k": 1}, projection={"_id": 1, "v": 1})
    assert isinstance(table, pa.Table)
    assert sorted(table.column("_id").to_pylist()) == [1, 4, 7, 10]
    assert -1.0 not in table.column("v").to_pylist()
    _scoped(recorder, "app_a_rows")


def test_pandas_frame(apps, recorder):
    a, _ = apps
    recorder.clear()
    frame = a.rows.find_pandas_all({}, projection={"_id": 0, "k": 1, "v": 1}, sort=[("v", -1)])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["k", "v"]
    assert frame["v"].tolist() == [float(i) for i in range(11, -1, -1)]
    _scoped(recorder, "app_a_rows")
    grouped = a.rows.aggregate_pandas_all([{"$group": {"_id": "$k", "n": {"$sum": 1}}}])
    assert dict(zip(grouped["_id"], grouped["n"], strict=True)) == {0: 4, 1: 4, 2: 4}


def test_polars_frame(apps, recorder):
    a, b = apps
    recorder.clear()
    frame = a.rows.find_polars_all({"v": {"$gte": 6}}, schema=Schema({"v": pa.float64()}))
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == ["v"] and sorted(frame["v"].to_list()) == [
        6.0,
        7.0,
        8.0,
        9.0,
        10.0,
        11.0,
    ]
    _scoped(recorder, "app_a_rows")
    other = b.rows.aggregate_polars_all([{"$match": {}}, {"$project": {"_id": 0, "secret": 1}}])
    assert other["secret"].to_list() == ["B"] * 5


def test_numpy_arrays(apps):
    a, _ = apps
    arrays = a.rows.find_numpy_all({}, projection={"_id": 0, "v": 1}, sort=[("v", 1)])
    assert isinstance(arrays["v"], np.ndarray)
    assert arrays["v"].tolist() == [float(i) for i in range(12)]
    assert a.rows.aggregate_numpy_all([{"$count": "n"}])["n"].tolist() == [12]


def test_reads_are_capped_like_find(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name, limits=QueryLimits(max_result_docs=10)) as engine:
        db = engine.get_scoped_db("capped")
        db.rows.insert_many([{"i": i} for i in range(11)])
        with pytest.raises(ResourceLimitExceeded, match="more than 10"):
            db.rows.find({}).to_list()
        for read in (db.rows.find_arrow_all, db.rows.find_pandas_all, db.rows.find_polars_all):
            with pytest.raises(ResourceLimitExceeded, match="more than 10"):
                read({})
        with pytest.raises(ResourceLimitExceeded):
            db.rows.aggregate_pandas_all([{"$match": {}}])
        assert len(db.rows.find_pandas_all({}, limit=10)) == 10
        assert len(db.rows.find_polars_all({"i": {"$lt": 5}})) == 5


def test_guards_and_writes_are_refused(apps, raw_db):
    a, _ = apps
    with pytest.raises(QueryValidationError, match=r"\$where"):
        a.rows.find_pandas_all({"$where": "true"})
    with pytest.raises(QueryValidationError, match=r"\$out and \$merge"):
        a.rows.aggregate_arrow_all([{"$match": {}}, {"$out": "z"}])
    with pytest.raises(QueryValidationError, match=r"\$function"):
        a.rows.find_arrow_all({}, projection={"x": {"$function": {"body": "", "args": []}}})
    with pytest.raises(QueryValidationError, match=r"\$out and \$merge"):
        a.rows.aggregate_pandas_all([{"$merge": {"into": "rows_copy"}}])
    assert "app_a_rows_copy" not in raw_db.list_collection_names()
    pipeline = [{"$match": {"k": 0}}]
    a.rows.aggregate_polars_all(pipeline, schema=Schema({"v": pa.float64()}))
    assert pipeline == [{"$match": {"k": 0}}], "the caller's pipeline is not changed"


def test_several_read_scopes(engine):
    engine.register_app({"slug": "shop"})
    engine.register_app({"slug": "hq", "data_access": {"read_scopes": ["shop"]}})
    engine.get_scoped_db("shop").orders.insert_many([{"v": 1}, {"v": 2}])
    hq = engine.get_scoped_db("hq", read_scopes=["hq", "shop"])
    hq.orders.insert_one({"v": 3})
    frame = hq.orders.find_pandas_all({"v": {"$gte": 2}}, projection={"_id": 0, "v": 1})
    assert sorted(frame["v"].tolist()) == [2, 3]


def test_the_seam_exposes_no_raw_collection(apps):
    a, _ = apps
    source = a.rows._batch_source()
    public = [n for n in dir(source) if not n.startswith("_")]
    assert set(public) <= {"database", "codec_options", "find_raw_batches", "aggregate_raw_batches"}
    # What it holds: a label, codec options and the scoped collection's own batch readers.
    held = [getattr(source, n) for n in dir(source) if n.startswith("_ScopedBatchSource__")]
    assert len(held) == 4
    assert not any(isinstance(v, (Collection, Database, MongoClient)) for v in held)
    assert {getattr(v, "__self__", None) for v in held if callable(v)} == {a.rows}
    assert source.database.client.append_metadata is None
    assert not hasattr(source.database, "name")
    batches = b"".join(source.find_raw_batches({}))
    assert b"secret" not in batches and b"app_b" not in batches
