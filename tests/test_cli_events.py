"""`mdb events publish|tail`: realtime messages from the shell, between real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from realtime_support import Inbox

from mdb_sync.cli import cli

APP = "cli_events"


@pytest.fixture
def run(mongo_uri, db_name):
    def invoke(*args: str):
        env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
        return CliRunner().invoke(cli, ["events", *args], env=env)

    return invoke


@pytest.fixture
def app(engine):
    engine.get_scoped_db(APP)  # registers the app
    return APP


def test_publish_reaches_the_subscribers_of_another_process(run, engine, app):
    inbox = Inbox()
    engine.events.subscribe(app, inbox)
    result = run("publish", app, '{"type": "notice", "text": "maintenance at 6"}', "--json")
    assert result.exit_code == 0, result.output
    published = json.loads(result.output)
    assert published["app"] == app and published["user_id"] is None
    assert inbox.wait(1) == [{"type": "notice", "text": "maintenance at 6"}]
    assert str(inbox.events[0].id) == published["id"]

    result = run("publish", app, '{"type": "dm"}', "--user", "ada")
    assert result.exit_code == 0 and f"user 'ada' of {app}" in result.output
    inbox.wait(2)
    assert inbox.events[1].user_id == "ada"


def test_publish_refuses_bad_json_and_unknown_apps(run, engine, app):
    result = run("publish", app, "{not json")
    assert result.exit_code == 2 and "not JSON" in result.output
    result = run("publish", "no_such_app", "{}")
    assert result.exit_code == 1 and "'no_such_app' is not registered" in result.output
    assert engine.get_app("no_such_app") is None  # a typo never registers an app
    result = run("tail", "no_such_app", "--timeout", "1")
    assert result.exit_code == 1 and "not registered" in result.output


def _tail(mongo_uri, db_name, *args):
    env = {**os.environ, "MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    command = [sys.executable, "-m", "mdb_sync.cli", "events", "tail", APP, *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_tail_prints_the_events_other_processes_publish(engine, app, mongo_uri, db_name):
    tail = _tail(mongo_uri, db_name, "--count", "2", "--timeout", "60", "--json")
    try:
        assert tail.stderr.readline().startswith(f"listening for events of {app}")
        engine.events.publish(app, {"n": 1})
        engine.events.publish(app, {"n": 2}, user_id="ada")
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["message"], r["user_id"]) for r in lines] == [({"n": 1}, None), ({"n": 2}, "ada")]
    assert all(r["app"] == app and r["created_at"].endswith("+00:00") for r in lines)


def test_tail_exits_1_when_the_events_do_not_come_in_time(app, mongo_uri, db_name):
    tail = _tail(mongo_uri, db_name, "--count", "1", "--timeout", "0.5")
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 1 and out == ""
    assert "0 of 1 event(s) before the timeout" in err
