"""Query-driven indexing: shapes, the ESR index, the threshold, explain() before and after,
never twice, never a served prefix, limits, opt-outs, suggestions, and the CLI."""

from __future__ import annotations

import json
import re
import threading

import pytest
from click.testing import CliRunner
from pymongo import monitoring

from mdb_sync.cli import ENGINE_KEY, cli
from mdb_sync.indexes import query_shape, shape_keys
from mdb_sync.indexes.auto import auto_index_name, serves
from mdb_sync.indexes.tools import apply_suggestions, suggest_indexes

# --- shapes (pure) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "sort", "keys"),
    [
        ({"status": "todo"}, None, [("app_id", 1), ("status", 1)]),
        (
            {"status": "todo"},
            {"created_at": -1},
            [("app_id", 1), ("status", 1), ("created_at", -1)],
        ),
        (
            {"price": {"$gte": 10}, "category": "books"},
            {"rating": -1},
            [("app_id", 1), ("category", 1), ("rating", -1), ("price", 1)],
        ),
        ({"b": 1, "a": {"$in": [1, 2]}}, None, [("app_id", 1), ("a", 1), ("b", 1)]),
        ({"status": "x"}, {"status": 1}, [("app_id", 1), ("status", 1)]),
        ({"n": {"$lt": 5}}, {"n": 1}, [("app_id", 1), ("n", 1)]),
        ({"name": {"$regex": "^Ad"}}, None, [("app_id", 1), ("name", 1)]),
        ({"name": re.compile("^Ad")}, None, [("app_id", 1), ("name", 1)]),
        ({"address": {"city": "Paris"}}, None, [("app_id", 1), ("address", 1)]),
        ({"app_id": "x", "k": 1}, None, [("app_id", 1), ("k", 1)]),
        (None, {"created_at": -1}, [("app_id", 1), ("created_at", -1)]),
    ],
)
def test_esr_keys(flt, sort, keys):
    assert shape_keys(query_shape(flt, sort)) == keys


@pytest.mark.parametrize(
    ("flt", "sort"),
    [
        (None, None),
        ({}, None),
        ({"_id": "abc"}, None),
        ({"_id": {"$in": [1, 2]}, "x": 1}, None),
        ({"$or": [{"a": 1}, {"b": 2}]}, None),
        ({"a": {"$ne": 1}}, None),
        ({"a": {"$exists": True}}, None),
        ({"name": {"$regex": "dam"}}, None),
        ({"loc": {"$near": [0, 0]}}, None),
        (None, {"score": {"$meta": "textScore"}}),
    ],
)
def test_shapes_no_index_helps(flt, sort):
    assert query_shape(flt, sort) is None


def test_shape_key_order_is_deterministic():
    a = query_shape({"z": 1, "a": 1, "m": {"$gt": 1}, "b": {"$lt": 1}}, None)
    b = query_shape({"b": {"$lt": 1}, "m": {"$gt": 1}, "a": 1, "z": 1}, None)
    assert a == b == (("a", "z"), (), ("b", "m"))


def test_serves_prefix_rules():
    shape = query_shape({"s": 1, "t": 2}, {"c": -1})
    wanted = shape_keys(shape)
    assert serves([("app_id", 1), ("t", 1), ("s", 1), ("c", -1), ("x", 1)], wanted, shape)
    assert serves([("app_id", 1), ("s", 1), ("t", -1), ("c", 1)], wanted, shape)  # reversed sort
    assert not serves([("app_id", 1), ("s", 1), ("c", -1), ("t", 1)], wanted, shape)
    assert not serves([("s", 1), ("t", 1), ("c", -1)], wanted, shape)
    assert not serves([("app_id", 1), ("s", 1), ("t", 1)], wanted, shape)
    assert not serves([("app_id", 1), ("s", 1), ("t", "hashed"), ("c", -1)], wanted, shape)
    two = query_shape(None, {"a": 1, "b": -1})
    assert not serves([("app_id", 1), ("a", 1), ("b", 1)], shape_keys(two), two)


# --- the manager on a real server -----------------------------------------------------------


def _plan(explain):
    """Stages and index names of the winning plan."""
    stages, names = [], []
    node = explain["queryPlanner"]["winningPlan"]
    while node:
        stages.append(node.get("stage"))
        if node.get("indexName"):
            names.append(node["indexName"])
        node = node.get("inputStage")
    return stages, names


def _seed(engine, slug, n=60):
    engine.get_scoped_db(slug).tasks.insert_many(
        [{"status": ["todo", "done", "doing"][i % 3], "created_at": i, "n": i} for i in range(n)]
    )


def test_index_appears_after_the_threshold_and_explain_switches_to_ixscan(engine, raw_db):
    _seed(engine, "auto")
    db = engine.get_scoped_db("auto")
    raw = raw_db["auto_tasks"]
    # The scoped filter is {"$and": [user filter, {"app_id": ...}]}; the embedded server's
    # planner only considers flat filters, so explain the same predicate in flat form.
    flat = {"app_id": "auto", "status": "todo"}
    name = auto_index_name([("app_id", 1), ("status", 1), ("created_at", -1)])
    stages, names = _plan(raw.find(flat).sort("created_at", -1).explain())
    assert name not in names
    if len(raw.index_information()) == 1:  # only _id
        assert "COLLSCAN" in stages
    for _ in range(2):
        db.tasks.find({"status": "todo"}).sort("created_at", -1).to_list()
    assert engine.auto_indexes.wait_idle(10)
    assert name not in raw.index_information()  # below the threshold
    db.tasks.find({"status": "todo"}).sort("created_at", -1).to_list()  # third time
    assert engine.auto_indexes.wait_idle(10)
    info = raw.index_information()
    assert list(info[name]["key"]) == [("app_id", 1), ("status", 1), ("created_at", -1)]
    stages, names = _plan(raw.find(flat).sort("created_at", -1).explain())
    assert "IXSCAN" in stages and name in names
    assert "COLLSCAN" not in stages
    assert engine.get_metrics()["apps"]["auto"]["counters"]["index.auto_created"] == 1


def test_index_is_built_on_a_background_thread_and_never_twice(engine, mongo_uri):
    builders = []

    class Listener(monitoring.CommandListener):
        def started(self, event):
            if event.command_name == "createIndexes":
                builders.append(
                    (threading.current_thread().name, event.command["indexes"][0]["name"])
                )

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    from mdb_sync import MongoDBEngine

    with MongoDBEngine(mongo_uri, engine.db_name, event_listeners=[Listener()]) as eng:
        _seed(eng, "twice")
        errors = []

        def work():
            try:
                db = eng.get_scoped_db("twice")
                for _ in range(25):
                    db.tasks.find_one({"status": "done", "n": {"$gt": 3}})
            except Exception as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert eng.auto_indexes.wait_idle(10)
        assert not errors
    auto = [b for b in builders if b[1].startswith("mdb_auto_")]
    assert auto == [("mdb-auto-index", "mdb_auto_app_id_1_status_1_n_1")]


def test_no_index_when_an_existing_index_serves_the_query(engine, raw_db, recorder):
    engine.register_app(
        {
            "slug": "served",
            "managed_indexes": {"tasks": [{"keys": {"status": 1, "created_at": -1, "n": 1}}]},
        }
    )
    _seed(engine, "served")
    db = engine.get_scoped_db("served")
    recorder.clear()
    for _ in range(5):
        db.tasks.find({"status": "todo"}).to_list()
        db.tasks.find({"status": "todo"}).sort("created_at", 1).to_list()  # reversed: served too
    assert engine.auto_indexes.wait_idle(10)
    assert not recorder.commands("createIndexes")
    assert {s["state"] for s in engine.auto_indexes.shapes("served")} == {"served"}


def test_at_most_n_auto_indexes_per_collection(engine, raw_db):
    engine.register_app(
        {"slug": "capped", "auto_index": {"threshold": 1, "max_indexes_per_collection": 2}}
    )
    _seed(engine, "capped", 9)
    db = engine.get_scoped_db("capped")
    for field in ("a", "b", "c", "d"):
        db.tasks.find_one({field: 1})
        assert engine.auto_indexes.wait_idle(10)
    autos = [n for n in raw_db["capped_tasks"].index_information() if n.startswith("mdb_auto_")]
    assert len(autos) == 2
    assert sorted(s["state"] for s in engine.auto_indexes.shapes("capped")) == [
        "created",
        "created",
        "limit",
        "limit",
    ]


def test_auto_index_off_per_app(engine, raw_db, recorder):
    engine.register_app({"slug": "manual", "auto_index": False})
    _seed(engine, "manual")
    db = engine.get_scoped_db("manual")
    for _ in range(10):
        db.tasks.find_one({"status": "todo"})
    assert engine.auto_indexes.wait_idle(10)
    assert engine.auto_indexes.shapes("manual") == []
    # only the app_id index every written collection gets, no auto index
    assert sorted(raw_db["manual_tasks"].index_information()) == ["_id_", "app_id_1"]


def test_auto_index_off_per_scoped_database(engine, raw_db):
    _seed(engine, "perdb")
    db = engine.get_scoped_db("perdb", auto_index=False)
    for _ in range(10):
        db.tasks.find_one({"status": "todo"})
    assert engine.auto_indexes.wait_idle(10)
    assert engine.auto_indexes.shapes("perdb") == []
    assert sorted(raw_db["perdb_tasks"].index_information()) == ["_id_", "app_id_1"]


def test_counts_are_shared_by_every_scoped_database_of_the_app(engine, raw_db):
    _seed(engine, "shared")
    engine.get_scoped_db("shared").tasks.find_one({"n": 5})
    engine.get_scoped_db("shared", read_scopes=["shared"]).tasks.find({"n": 6}).to_list()
    engine.get_scoped_db("shared", write_scope="shared").tasks.count_documents({"n": 7})
    assert engine.auto_indexes.wait_idle(10)
    assert "mdb_auto_app_id_1_n_1" in raw_db["shared_tasks"].index_information()


def test_engine_wide_configuration(engine):
    engine.auto_indexes.configure(threshold=1)
    _seed(engine, "eager", 6)
    engine.get_scoped_db("eager").tasks.find_one({"n": 1})
    assert engine.auto_indexes.wait_idle(10)
    assert engine.auto_indexes.shapes("eager")[0]["state"] == "created"
    with pytest.raises(ValueError):
        engine.auto_indexes.configure(threshold=0)


# --- suggestions and the CLI ------------------------------------------------------------------


def test_suggestions_from_saved_shapes(engine, mongo_uri, db_name):
    from mdb_sync import MongoDBEngine

    with MongoDBEngine(mongo_uri, db_name) as first:
        first.register_app({"slug": "sugg", "auto_index": {"threshold": 1000}})
        _seed(first, "sugg", 6)
        db = first.get_scoped_db("sugg")
        for _ in range(4):
            db.tasks.find({"status": "todo"}).sort("created_at", -1).to_list()
        db.tasks.find_one({"n": {"$gt": 2}})
    # another process (here: engine) sees what the first one saved at shutdown
    rows = suggest_indexes(engine, "sugg")
    assert rows[0]["keys"] == [["app_id", 1], ["status", 1], ["created_at", -1]]
    assert rows[0]["count"] == 4 and rows[0]["status"] == "suggested"
    assert rows[1]["keys"] == [["app_id", 1], ["n", 1]]
    built = apply_suggestions(engine, rows)
    assert [b["status"] for b in built] == ["created", "created"]
    assert {r["status"] for r in suggest_indexes(engine, "sugg")} == {"served"}


def test_cli_indexes_list_sync_suggest(engine):
    runner = CliRunner()
    obj = {ENGINE_KEY: engine}
    engine.register_app(
        {
            "slug": "clia",
            "auto_index": {"threshold": 1000},
            "managed_indexes": {
                "tasks": [
                    {"name": "by_status", "keys": {"status": 1}},
                    {
                        "type": "search",
                        "name": "fts",
                        "definition": {"mappings": {"dynamic": True}},
                    },
                ]
            },
        }
    )
    engine.get_scoped_db("clia").tasks.find_one({"owner": "x"})

    result = runner.invoke(cli, ["indexes", "list", "clia", "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["by_status"]["origin"] == "declared" and rows["by_status"]["status"] == "created"
    assert rows["_id_"]["origin"] == "builtin"
    assert rows["fts"]["origin"] == "declared"
    result = runner.invoke(cli, ["indexes", "list"], obj=obj)
    assert "clia.tasks  by_status  [app_id: 1, status: 1]  declared, created" in result.output

    result = runner.invoke(cli, ["indexes", "sync", "clia", "--wait", "0"], obj=obj)
    assert result.exit_code == 0, result.output  # not_supported is not a failure
    assert "clia.tasks  by_status  exists" in result.output

    result = runner.invoke(cli, ["indexes", "suggest", "clia", "--apply", "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["suggestions"][0]["keys"] == [["app_id", 1], ["owner", 1]]
    assert data["applied"][0]["status"] == "created"

    result = runner.invoke(cli, ["indexes", "list", "nope"], obj=obj)
    assert result.exit_code == 1 and "not registered" in result.output


def test_cli_sync_exits_1_on_conflict(engine, raw_db):
    raw_db["clib_t"].create_index([("app_id", 1), ("other", 1)], name="k")
    engine.register_app(
        {"slug": "clib", "managed_indexes": {"t": [{"name": "k", "keys": {"k": 1}}]}}
    )
    result = CliRunner().invoke(cli, ["indexes", "sync", "clib"], obj={ENGINE_KEY: engine})
    assert result.exit_code == 1
    assert "conflict" in result.output


def test_forked_child_gets_a_fresh_manager_that_still_builds(engine, raw_db):
    import os

    _seed(engine, "forkauto", 9)
    db = engine.get_scoped_db("forkauto")
    for _ in range(3):
        db.tasks.find_one({"n": 1})
    assert engine.auto_indexes.wait_idle(10)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            fresh = engine.auto_indexes.shapes() == []
            for _ in range(3):
                db.tasks.find_one({"status": "todo"})
            built = engine.auto_indexes.wait_idle(10)
            state = engine.auto_indexes.shapes("forkauto")[0]["state"]
            os.write(write_fd, f"{fresh} {built} {state}".encode())
            engine.auto_indexes.stop()
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 100).decode()
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert message == "True True created"
    indexes = raw_db["forkauto_tasks"].index_information()
    assert {"mdb_auto_app_id_1_n_1", "mdb_auto_app_id_1_status_1"} <= set(indexes)
    assert engine.auto_indexes.shapes("forkauto")[0]["state"] == "created"  # parent unchanged
