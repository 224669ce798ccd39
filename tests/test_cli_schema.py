"""``mdb schema infer|apply APP COLLECTION``: through click's runner, and once as a real
process. Exit status 0 ok, 1 when documents would fail (or an unknown app), 2 usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mdb_sync.cli import cli

APP = "cli_shop"


@pytest.fixture
def run(mongo_uri, db_name):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(
            cli,
            ["schema", *args],
            env={"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name},
            input=input,
        )

    return invoke


@pytest.fixture
def orders(engine):
    engine.register_app({"slug": APP, "name": "CLI shop"})
    db = engine.get_scoped_db(APP)
    db.orders.insert_many(
        [{"_id": i, "status": ["new", "paid"][i % 2], "total": i * 1.5} for i in range(10)]
    )
    return db.orders


def test_infer_prints_fields_and_the_schema(run, orders):
    result = run("infer", APP, "orders")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{APP}.orders: 10 document(s) sampled"
    assert lines[1].split() == ["field", "present", "type"]
    assert lines[3].split() == [
        "status",
        "10/10",
        "string",
        "required",
        "enum",
        '["new",',
        '"paid"]',
    ]
    assert '"$jsonSchema:' not in result.stdout and "$jsonSchema:" in result.stdout

    data = json.loads(run("infer", APP, "orders", "--json", "--enum-max", "0").stdout)
    assert data["sampled"] == 10 and data["app"] == APP and data["collection"] == "orders"
    assert data["schema"]["properties"]["status"] == {"bsonType": "string"}
    assert data["schema"]["required"] == ["_id", "status", "total"]
    closed = json.loads(run("infer", APP, "orders", "--json", "--closed").stdout)["schema"]
    assert closed["additionalProperties"] is False


def test_apply_runs_a_dry_run_first_and_refuses_failures_without_force(
    run, engine, orders, tmp_path
):
    orders.insert_one({"_id": 99, "status": "lost", "total": "n/a"})
    schema = json.loads(run("infer", APP, "orders", "--json").stdout)  # 11 docs, "lost" once
    assert "enum" in schema["schema"]["properties"]["status"]
    schema["schema"]["properties"]["total"] = {"bsonType": "double"}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))

    result = run("apply", APP, "orders", "--schema", str(path), "--dry-run")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "11 document(s) checked: 1 would fail",
        "  99: total: string, expected double",
    ]
    assert "validator" not in orders.options()

    result = run("apply", APP, "orders", "--schema", str(path))
    assert result.exit_code == 1 and "not applied: pass --force" in result.stderr
    assert "validator" not in orders.options()
    assert "collection_settings" not in engine.get_app(APP)

    result = run("apply", APP, "orders", "--schema", str(path), "--force", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["applied"] and data["status"] == "updated" and data["report"]["failed"] == 1
    engine.reload_apps()
    validation = engine.get_app(APP)["collection_settings"]["orders"]["validation"]
    assert validation["validator"]["$jsonSchema"]["properties"]["total"] == {"bsonType": "double"}
    assert orders.options()["validator"] == validation["validator"]


def test_apply_infers_when_no_schema_is_given(run, orders):
    result = run("apply", APP, "orders", "--level", "moderate", "--action", "warn")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"applied to {APP}.orders (updated; moderate, warn): 10 document(s) checked: none"
    )
    options = orders.options()
    assert (options["validationLevel"], options["validationAction"]) == ("moderate", "warn")
    assert options["validator"]["$jsonSchema"]["properties"]["status"]["enum"] == ["new", "paid"]
    assert (
        run("apply", APP, "orders", "--schema", "-", input='{"required": ["_id"]}').exit_code == 0
    )
    assert orders.options()["validator"] == {"$jsonSchema": {"required": ["_id"]}}


def test_unknown_apps_bad_schemas_and_empty_collections(run, engine, orders):
    result = run("infer", "no_such_app", "orders")
    assert result.exit_code == 1 and "'no_such_app' is not registered" in result.output
    assert engine.get_app("no_such_app") is None  # a typo never registers an app
    result = run("infer", APP, "nothing_here")
    assert result.exit_code == 1 and "has no documents to infer a schema from" in result.output
    result = run("apply", APP, "orders", "--schema", "-", input="{not json")
    assert result.exit_code == 2 and "not JSON" in result.output
    result = run("apply", APP, "orders", "--schema", "-", input="[]")
    assert result.exit_code == 1 and "a schema must be a JSON object" in result.output
    result = run("apply", APP, "orders", "--schema", "-", "--closed", input="{}")
    assert result.exit_code == 2 and "--closed: for inferring, not with --schema" in result.output
    result = run("infer", APP, "orders", "--sample-size", "0")
    assert result.exit_code == 2
    result = run("infer", APP, "system.views")
    assert result.exit_code == 1 and "system." in result.output


def test_schema_apply_as_a_real_process(mongo_uri, db_name, orders):
    env = {**os.environ, "MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    result = subprocess.run(
        [sys.executable, "-m", "mdb_sync.cli", "schema", "apply", APP, "orders", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["applied"] is True and data["report"] == {
        "app": APP,
        "collection": "orders",
        "checked": 10,
        "failed": 0,
        "documents": [],
    }
    with pytest.raises(Exception, match="Document failed validation"):
        orders.insert_one({"_id": 100, "status": "unknown", "total": 1.0})
