"""One behaviour across the APIs: timezone-aware datetimes from every auth API, ISO 8601 in
every ``--json`` output, an import whose progress adds up to its total, and displays of the
engine, a scoped database and a cursor that are short, readable and touch no server."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from auth_apps import SECRET, auth_manifest
from click.testing import CliRunner

from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.cli import cli

PW = "correct horse battery"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def _datetimes(value, path=""):
    if isinstance(value, dt.datetime):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _datetimes(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _datetimes(item, f"{path}[{i}]")


@pytest.mark.parametrize("strategy", ["app_users", "global_users"])
def test_every_auth_api_returns_timezone_aware_datetimes(engine, strategy):
    manifest = auth_manifest("tz_app")
    manifest["auth"]["users"]["strategy"] = strategy
    engine.register_app(manifest)
    auth = AuthService(engine, "tz_app", secret=SECRET, hasher=PasswordHasher(n=4096))
    registered = auth.register_user(
        "ada@example.com",
        PW,
        born=dt.datetime(1815, 12, 10),
        # datetimes inside lists too, next to plain items
        milestones=[dt.datetime(1833, 6, 5), {"at": dt.datetime(1843, 9, 1)}, "note"],
    )
    results = {
        "register_user": registered,
        "authenticate": auth.authenticate("ada@example.com", PW),
        "get_user": auth.get_user(registered["user_id"]),
        "get_user_by_email": auth.get_user_by_email("ada@example.com"),
        "list_users": auth.list_users(),
        "set_roles": auth.set_roles(registered["user_id"], ["user", "admin"]),
    }
    sid, started = auth.start_session(results["authenticate"])
    results["start_session"] = started
    results["load_session"] = list(auth.load_session(sid))
    for api, result in results.items():
        found = list(_datetimes(result))
        assert found, api
        for path, value in found:
            assert value.tzinfo is not None, f"{api}{path} is naive"
            assert value.utcoffset() == dt.timedelta(0), f"{api}{path}"
    assert results["authenticate"]["created_at"] == registered["created_at"].replace(
        microsecond=registered["created_at"].microsecond // 1000 * 1000
    )


@pytest.fixture
def run(mongo_uri, db_name):
    runner = CliRunner()
    env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    return lambda *args: runner.invoke(cli, list(args), env=env)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_json_output_renders_datetimes_in_iso_8601(engine, run):
    engine.register_app(auth_manifest("json_app"))
    auth = AuthService(engine, "json_app", secret=SECRET, hasher=PasswordHasher(n=4096))
    auth.register_user("bob@example.com", PW)
    outputs = {
        "apps show": run("apps", "show", "json_app", "--json"),
        "users list": run("users", "list", "json_app", "--json"),
        "health": run("health", "--json"),
    }
    for name, result in outputs.items():
        assert result.exit_code == 0, (name, result.output)
        data = json.loads(result.stdout)
        stamps = [s for s in _strings(data) if re.match(r"^\d{4}-\d\d-\d\d[T ]\d\d:", s)]
        assert stamps, name
        for stamp in stamps:
            assert ISO_UTC.match(stamp), f"{name}: {stamp!r} is not ISO 8601 UTC"
    shown = json.loads(outputs["apps show"].stdout)
    assert shown["registered_at"].endswith("Z")


def test_import_progress_adds_up_to_the_dump_size(engine, tmp_path, mongo_uri, raw_client):
    from mdb_sync import MongoDBEngine

    db = engine.get_scoped_db("movable")
    db.items.insert_many([{"n": i, "text": "x" * (i % 50)} for i in range(300)])
    db.more.insert_many([{"n": i} for i in range(40)])
    engine.export_app("movable", tmp_path)
    total = sum(p.stat().st_size for p in (tmp_path / "movable").glob("*.bson"))
    for options in ({"target_slug": "moved_far"}, {"drop_app_id": True}):
        other = f"{engine.db_name}_{'standalone' if options.get('drop_app_id') else 'moved'}"
        try:
            with MongoDBEngine(mongo_uri, other) as target:
                seen = []
                target.import_app(
                    "movable",
                    tmp_path,
                    progress=lambda _d, size, seen=seen: seen.append(size),
                    **options,
                )
            assert sum(seen) == total, options  # the slug's size changed; the progress did not
        finally:
            raw_client.drop_database(other)


def test_progress_bars_end_at_their_total():
    import io

    import click

    from mdb_sync.cli import _finish

    with click.progressbar(length=10, file=io.StringIO()) as bar:
        bar.update(7)
        _finish(bar)
        assert bar.pos == 10
        _finish(bar)
        assert bar.pos == 10


def test_displays_are_short_readable_and_touch_no_server(engine, recorder):
    db = engine.get_scoped_db("shown")
    db.items.insert_one({"x": 1})
    cursor = db.items.find({"x": {"$gt": 0}}, {"x": 1}).sort("x", -1).limit(3)
    recorder.clear()
    shown = {
        "engine": (repr(engine), engine._repr_html_()),
        "database": (repr(db), db._repr_html_()),
        "collection": (repr(db.items), db.items._repr_html_()),
        "cursor": (repr(cursor), cursor._repr_html_()),
    }
    assert recorder.commands() == [], "a display must not query the server"
    assert engine.db_name in shown["engine"][0] and "initialized=True" in shown["engine"][0]
    assert "shown" in shown["engine"][0]
    assert shown["database"][0] == "ScopedDatabase(app='shown', read_scopes=['shown'])"
    assert "write_scope" in shown["database"][1]
    assert shown["cursor"][0] == (
        "ScopedCursor(app='shown', collection='items', filter={'x': {'$gt': 0}}, "
        "projection={'x': 1}, sort={'x': -1}, limit=3)"
    )
    assert "app_id" not in shown["cursor"][0], "the caller's filter, not the scoped one"
    for text, html in shown.values():
        assert len(text) < 400 and html.startswith("<div>") and "<script" not in html
    assert cursor.to_list() == [{"_id": cursor.collection.find_one()["_id"], "x": 1}]
    huge = db.items.find({"k": "<script>" + "v" * 5000})
    assert len(repr(huge)) < 400 and "<script>" not in huge._repr_html_()


def test_engine_display_hides_credentials():
    from mdb_sync import MongoDBEngine

    engine = MongoDBEngine("mongodb://admin:hunter2@db.example.com:27017/app", "app")
    assert "hunter2" not in repr(engine) and "hunter2" not in engine._repr_html_()
    assert "initialized=False" in repr(engine)
