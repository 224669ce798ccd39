"""Declared index builds off the caller's path (issue 18, item 4): the registration returns
with ``pending`` outcomes, unique indexes are built first all the same, the newest
registration has the last word, and the Flask extension builds off the first request unless
``MDB_INDEX_BUILDS`` is ``"blocking"`` (its CLI always waits). The server stopped during a
build is in ``tests/faults/test_background_indexes.py``."""

from __future__ import annotations

import pytest
from flask_apps import AppFactory, write_manifest

from flask_mdb import db
from mdb_sync.exceptions import ConfigurationError

REGULAR = {"type": "regular", "name": "by_status", "keys": {"status": 1}}
UNIQUE = {
    "type": "regular",
    "name": "code_unique",
    "keys": {"code": 1},
    "options": {"unique": True},
}


def _statuses(outcomes):
    return {o["name"]: o["status"] for o in outcomes}


def test_a_background_registration_reports_pending_then_created(engine, raw_db):
    manifest = {"slug": "later", "managed_indexes": {"tasks": [REGULAR, UNIQUE]}}
    result = engine.register_app(manifest, background_indexes=True)
    assert [o["name"] for o in result["indexes"]] == ["by_status", "code_unique"]  # as declared
    assert result["indexes"][0]["status"] in ("pending", "created")
    assert result["indexes"][1]["status"] == "created"  # a constraint: built before returning
    assert "code_unique" in raw_db["later_tasks"].index_information()
    assert engine.wait_for_indexes("later", timeout=60)
    assert engine.index_builds.pending() == set()
    stored = engine.registry.get_record("later")["index_outcomes"]
    assert _statuses(stored) == {"by_status": "created", "code_unique": "created"}
    assert "by_status" in raw_db["later_tasks"].index_information()
    assert engine.get_health_status()["indexes"]["pending"] == []
    # Registering the same manifest again in the background: everything exists.
    engine.register_app(manifest, background_indexes=True)
    assert engine.wait_for_indexes(timeout=60)
    stored = engine.registry.get_record("later")["index_outcomes"]
    assert _statuses(stored) == {"by_status": "exists", "code_unique": "exists"}


def test_only_unique_indexes_queue_no_build(engine):
    result = engine.register_app(
        {"slug": "strict", "managed_indexes": {"tasks": [UNIQUE]}}, background_indexes=True
    )
    assert _statuses(result["indexes"]) == {"code_unique": "created"}
    assert engine.index_builds.pending() == set()


def test_the_newest_registration_has_the_last_word(engine):
    first = {"slug": "twice", "managed_indexes": {"tasks": [REGULAR]}}
    other = {"type": "regular", "name": "by_owner", "keys": {"owner": 1}}
    second = {"slug": "twice", "managed_indexes": {"tasks": [other]}}
    engine.register_app(first, background_indexes=True)
    engine.register_app(second)  # blocking, while the first build may still run
    assert engine.wait_for_indexes(timeout=60)
    stored = engine.registry.get_record("twice")["index_outcomes"]
    assert _statuses(stored) == {"by_owner": "created"}


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


def test_the_flask_extension_builds_off_the_first_request(factory, tmp_path, raw_db):
    write_manifest(tmp_path, "web", managed_indexes={"tasks": [REGULAR, UNIQUE]})
    app = factory(MDB_MANIFESTS=str(tmp_path))
    app.add_url_rule("/n", "n", lambda: {"n": db.tasks.count_documents({})})
    assert app.test_client().get("/n").json == {"n": 0}
    state = app.extensions["mdb"]
    assert _statuses(state.registrations["web"]["indexes"])["code_unique"] == "created"
    assert state.engine.wait_for_indexes(timeout=60)
    assert {"by_status", "code_unique"} <= set(raw_db["web_tasks"].index_information())


def test_blocking_builds_are_done_before_the_first_request_is_served(factory, tmp_path, raw_db):
    write_manifest(tmp_path, "webb", managed_indexes={"tasks": [REGULAR]})
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_INDEX_BUILDS="blocking")
    app.add_url_rule("/n", "n", lambda: {"n": db.tasks.count_documents({})})
    assert app.test_client().get("/n").json == {"n": 0}
    state = app.extensions["mdb"]
    assert _statuses(state.registrations["webb"]["indexes"]) == {"by_status": "created"}
    assert "by_status" in raw_db["webb_tasks"].index_information()


def test_the_cli_builds_before_it_runs(factory, tmp_path):
    write_manifest(tmp_path, "clib", managed_indexes={"tasks": [REGULAR]})
    app = factory(MDB_MANIFESTS=str(tmp_path))
    result = app.test_cli_runner().invoke(args=["mdb", "apps", "list", "--json"])
    assert result.exit_code == 0, result.output
    state = app.extensions["mdb"]
    assert _statuses(state.registrations["clib"]["indexes"]) == {"by_status": "created"}


def test_a_bad_index_builds_setting_names_the_key(factory):
    with pytest.raises(ConfigurationError, match="MDB_INDEX_BUILDS must be one of"):
        factory(MDB_INDEX_BUILDS="later")
