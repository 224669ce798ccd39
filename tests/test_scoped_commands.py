"""``ScopedDatabase.command``: an allow-list of harmless and scoped commands, nothing
unscoped; and refusals that name what to use instead (pymongo and Flask-PyMongo habits)."""

from __future__ import annotations

import pytest

from mdb_sync import ScopeError
from mdb_sync.exceptions import QueryValidationError


@pytest.fixture
def apps(engine, raw_db):
    a = engine.get_scoped_db("app_a")
    b = engine.get_scoped_db("app_b")
    a.items.insert_many([{"_id": i, "n": i, "tag": "ab"[i % 2]} for i in range(6)])
    b.items.insert_many([{"_id": i, "n": i * 10, "tag": "x"} for i in range(4)])
    a.own.insert_many([{"_id": i} for i in range(3)])
    # A document of app_b inside app_a's physical collection (written by a raw tool).
    raw_db["app_a_items"].insert_one({"_id": "foreign", "n": 3, "tag": "a", "app_id": "app_b"})
    return a, b


def test_harmless_commands_pass_through_bare(apps, recorder):
    a, _ = apps
    assert a.command("ping")["ok"] == 1.0
    assert a.command({"ping": 1})["ok"] == 1.0
    assert "version" in a.command("buildInfo")
    assert "version" in a.command("buildinfo")
    hello = a.command("hello")
    assert hello["ok"] == 1.0 and "maxWireVersion" in hello
    recorder.clear()
    a.command({"hello": 1, "saslSupportedMechs": "admin.root"})
    (sent,) = recorder.commands("hello")
    assert "saslSupportedMechs" not in sent, "only the bare command is sent"


def test_count_and_distinct_answer_from_the_apps_documents(apps, recorder):
    a, b = apps
    recorder.clear()
    assert a.command("count", "items") == {"n": 6, "ok": 1.0}
    assert a.command({"count": "items", "query": {"tag": "a"}}) == {"n": 3, "ok": 1.0}
    assert a.command("count", "items", query={"n": {"$gte": 1}}, limit=-2, skip=1)["n"] == 2
    assert b.command("count", "items")["n"] == 4
    values = a.command({"distinct": "items", "key": "tag"})["values"]
    assert sorted(values) == ["a", "b"], "app_b's foreign document in the same collection is hidden"
    assert sorted(b.command("distinct", "items", key="tag")["values"]) == ["x"]
    # What reached the server was scoped: every count/aggregate/distinct filters by app_id.
    for body in recorder.commands("aggregate", "count", "distinct"):
        assert "app_id" in repr(body), body
    with pytest.raises(QueryValidationError, match=r"\$where"):
        a.command("count", "items", query={"$where": "true"})
    with pytest.raises(QueryValidationError, match="key"):
        a.command("distinct", "items")
    with pytest.raises(QueryValidationError, match="not available"):
        a.command("count", "items", fields={"x": 1})


def test_coll_stats_is_trimmed_and_refused_where_it_would_reveal_another_app(apps, db_name):
    a, _ = apps
    stats = a.command("collStats", "own")
    assert stats["ns"] == "app_a.own", "the logical namespace, not the raw one"
    assert stats["count"] == 3 and stats["ok"] == 1.0
    assert db_name not in repr(stats)
    assert "wiredTiger" not in stats and "indexDetails" not in stats
    with pytest.raises(ScopeError, match="other apps' documents"):
        a.command("collStats", "items")  # app_a_items also holds a document of app_b


@pytest.mark.parametrize(
    ("command", "alternative"),
    [
        ("dropDatabase", "drop_collection"),
        ("serverStatus", "get_health_status"),
        ({"find": "items", "filter": {}}, ".find(filter)"),
        ({"aggregate": "items", "pipeline": [], "cursor": {}}, ".aggregate(pipeline)"),
        ({"insert": "items", "documents": [{"x": 1}]}, "insert_one"),
        ("listCollections", "list_collection_names"),
        ("dbStats", "collStats"),
        ({"eval": "1"}, None),
        ({"renameCollection": "x.app_b_items", "to": "x.mine"}, "rename"),
    ],
)
def test_everything_else_is_refused_naming_the_alternative(apps, raw_db, command, alternative):
    a, _ = apps
    with pytest.raises(ScopeError, match="not available on a scoped database") as refused:
        a.command(command)
    if alternative:
        assert alternative in str(refused.value)
    assert raw_db["app_b_items"].count_documents({}) == 4
    assert raw_db["app_a_items"].count_documents({}) == 7


def test_a_command_on_another_apps_collection_name_stays_in_the_app(apps):
    a, _ = apps
    # "app_b_items" is a logical name of app_a here: app_a_app_b_items, empty.
    assert a.command("count", "app_b_items")["n"] == 0
    with pytest.raises(QueryValidationError):
        a.command("count", "system.users")
    with pytest.raises(QueryValidationError):
        a.command("count", {"$ne": None})


def test_errors_name_the_real_alternatives(apps):
    a, _ = apps
    with pytest.raises(AttributeError, match="find_pandas_all"):
        a.items.find_raw_batches  # noqa: B018
    with pytest.raises(AttributeError, match=r"aggregate\(\.\.\.\)"):
        a.items.aggregate_raw_batches  # noqa: B018
    with pytest.raises(AttributeError, match="count_documents"):
        a.items.count  # noqa: B018
    with pytest.raises(AttributeError, match="insert_one"):
        a.items.insert  # noqa: B018
    with pytest.raises(AttributeError, match="get_health_status"):
        a.client  # noqa: B018
    with pytest.raises(AttributeError, match=r"flask_mdb.find_one_or_404"):
        a.items.find_one_or_404  # noqa: B018


def test_malformed_commands_are_refused_clearly(apps):
    a, _ = apps
    with pytest.raises(TypeError, match="command"):
        a.command(42)
    with pytest.raises(TypeError, match="command"):
        a.command({})
    with pytest.raises(QueryValidationError, match="names a collection"):
        a.command({"count": {"$ne": None}})
    with pytest.raises(QueryValidationError, match="not available"):
        a.command("collStats", "own", indexDetails=True)
