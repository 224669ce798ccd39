"""The `mdb` commands of operations, through click's runner against the session's server:
apps list|register|show, health, export, import. Exit status 0 ok, 1 problem, 2 usage."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from mdb_sync.cli import ENGINE_KEY, cli


@pytest.fixture
def run(mongo_uri, db_name):
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None, obj=None):
        return runner.invoke(
            cli,
            list(args),
            env={"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, **(env or {})},
            obj=obj,
        )

    return invoke


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "slug": "cli_app",
                "name": "CLI App",
                "managed_indexes": {"tasks": [{"keys": {"status": 1}, "name": "by_status"}]},
            }
        )
    )
    return path


def test_apps_register_list_show(run, manifest):
    result = run("apps", "register", str(manifest))
    assert result.exit_code == 0, result.output
    assert "registered cli_app" in result.stdout and "1 index(es)" in result.stdout

    result = run("apps", "list")
    assert result.exit_code == 0
    assert "cli_app" in result.stdout and "active" in result.stdout and "CLI App" in result.stdout
    rows = json.loads(run("apps", "list", "--json").stdout)
    assert rows == [
        {
            "slug": "cli_app",
            "name": "CLI App",
            "status": "active",
            "implicit": False,
            "indexes": 1,
            "index_problems": 0,
        }
    ]

    result = run("apps", "show", "cli_app")
    assert result.exit_code == 0
    assert "cli_app: active" in result.stdout
    assert "index tasks.by_status: created" in result.stdout
    shown = json.loads(run("apps", "show", "cli_app", "--json").stdout)
    assert shown["manifest"]["name"] == "CLI App"
    assert shown["index_outcomes"][0]["status"] == "created"

    again = run("apps", "register", "--json", str(manifest))
    assert json.loads(again.stdout)[0]["created"] is False


def test_apps_errors_exit_1(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"slug": "Not A Slug"}))
    result = run("apps", "register", str(bad))
    assert result.exit_code == 1
    assert "slug" in result.stderr
    missing = run("apps", "register", str(tmp_path / "missing.json"))
    assert missing.exit_code == 1
    unknown = run("apps", "show", "nobody")
    assert unknown.exit_code == 1
    assert "'nobody' is not registered" in unknown.stderr
    empty = run("apps", "list").stdout
    assert empty.startswith("no apps registered in database 'mdbtest_") and "--db" in empty


def test_usage_errors_exit_2(run):
    assert run("apps", "show").exit_code == 2
    assert run("export", "only_app").exit_code == 2
    assert run("health", "--timeout", "-1").exit_code == 2
    assert run("apps", "list", "--status", "sleeping").exit_code == 2


def test_health_human_and_json(run):
    run("apps", "list")  # the registry exists
    result = run("health")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("status: healthy")
    assert "mongodb  healthy   ping" in result.stdout
    assert "pool" in result.stdout
    report = json.loads(run("health", "--json").stdout)
    assert report["status"] == "healthy"
    assert report["mongodb"]["latency_ms"] > 0


def test_health_degraded_exits_1_only_when_strict(run, engine):
    engine.register_app({"slug": "limping"})
    engine.registry.collection.update_one(
        {"_id": "limping"},
        {
            "$set": {
                "index_outcomes": [
                    {"collection": "t", "name": "txt", "type": "text", "status": "not_supported"}
                ]
            }
        },
    )
    result = run("health")
    assert result.exit_code == 0
    assert "status: degraded" in result.stdout
    assert "limping: index t.txt not_supported" in result.stdout
    assert run("health", "--strict").exit_code == 1


def test_health_of_an_unreachable_server_exits_1():
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["health"],
        env={"MDB_MONGO_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"},
    )
    assert result.exit_code == 1
    assert "cannot reach MongoDB" in result.stderr


def test_export_import_round_trip(run, engine, mongo_uri, raw_client, tmp_path):
    db = engine.get_scoped_db("movable")
    db.items.insert_many([{"n": i} for i in range(25)])
    result = run("export", "movable", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "exported movable: 25 document(s)" in result.stdout
    assert "items: 25 document(s)" in result.stdout
    assert (tmp_path / "movable" / "items.bson").is_file()
    again = run("export", "movable", str(tmp_path))
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert run("export", "movable", str(tmp_path), "--force", "--json").exit_code == 0

    other = f"mdbtest_{uuid.uuid4().hex[:12]}"
    try:
        result = run("import", "movable", str(tmp_path), "--into", mongo_uri, "--db", other)
        assert result.exit_code == 0, result.output
        assert f"imported 25 document(s) of movable into database {other}" in result.stdout
        assert raw_client[other].movable_items.count_documents({"app_id": "movable"}) == 25

        result = run("import", "movable", str(tmp_path), "--db", other, "--as", "moved", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["app"] == "moved"
        assert raw_client[other].moved_items.count_documents({"app_id": "moved"}) == 25

        refused = run("import", "movable", str(tmp_path), "--db", other)
        assert refused.exit_code == 1 and "--drop" in refused.stderr
        assert run("import", "movable", str(tmp_path), "--db", other, "--drop").exit_code == 0
    finally:
        raw_client.drop_database(other)

    alone = f"mdbtest_{uuid.uuid4().hex[:12]}"
    try:
        result = run("import", "movable", str(tmp_path), "--db", alone, "--drop-app-id")
        assert result.exit_code == 0, result.output
        assert "as standalone collections" in result.stdout
        assert raw_client[alone].items.count_documents({}) == 25
        assert raw_client[alone].items.count_documents({"app_id": {"$exists": True}}) == 0
    finally:
        raw_client.drop_database(alone)


def test_import_errors_exit_1(run, tmp_path):
    result = run("import", "ghost", str(tmp_path))
    assert result.exit_code == 1
    assert "no export of app 'ghost'" in result.stderr
    assert run("import", "ghost", str(tmp_path / "nope")).exit_code == 2
    assert run("export", "ghost", str(tmp_path)).exit_code == 1


def test_commands_use_a_hosting_engine(run, engine, tmp_path):
    # `flask mdb` passes its engine in ctx.obj: the options are then not needed.
    engine.get_scoped_db("hosted").items.insert_one({"a": 1})
    result = run("apps", "list", "--json", obj={ENGINE_KEY: engine}, env={"MDB_DB_NAME": "x"})
    assert [row["slug"] for row in json.loads(result.stdout)] == ["hosted"]
    assert run("export", "hosted", str(tmp_path), obj={ENGINE_KEY: engine}).exit_code == 0
    result = run(
        "import",
        "hosted",
        str(tmp_path),
        "--as",
        "hosted2",
        obj={ENGINE_KEY: engine},
        env={"MDB_MONGO_URI": "", "MDB_DB_NAME": ""},
    )
    assert result.exit_code == 0, result.output
    assert engine.get_scoped_db("hosted2").items.count_documents({}) == 1
    assert engine.is_initialized  # the host's engine is not shut down by the command
    # Options that would point elsewhere are refused, not silently ignored.
    refused = run("apps", "list", "--db", "elsewhere", obj={ENGINE_KEY: engine})
    assert refused.exit_code == 2 and "--db cannot be used here" in refused.output
