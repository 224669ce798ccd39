"""The complete example files the documentation includes (``docs/examples``), run as a user
runs them: the real ``flask`` command in the example's directory, and HTTP against the app on
a real WSGI server."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flask_mdb.testing import LiveServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
FLASK_FACTORY = EXAMPLES / "flask_factory"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_env(monkeypatch, mongo_uri, db_name):
    """The environment the docs' convention describes: the server and database to use."""
    monkeypatch.setenv("MDB_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MDB_DB_NAME", db_name)
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _request(url: str, method: str = "GET", payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_flask_factory_app_py_serves_one_apps_sandbox(example_env, raw_db):
    module = _load(FLASK_FACTORY / "app.py", "docs_flask_factory_app")
    app = module.create_app()
    try:
        with LiveServer(app) as server:
            status, created = _request(server.url + "/tasks", "POST", {"title": "write docs"})
            assert status == 201 and created["app"] == "my_app"
            status, task = _request(f"{server.url}/tasks/{created['id']}")
            assert status == 200 and task["title"] == "write docs" and task["app_id"] == "my_app"
            assert _request(server.url + "/tasks")[1] == {"tasks": [{"title": "write docs"}]}
            assert _request(f"{server.url}/tasks/{'0' * 24}")[0] == 404
            assert _request(server.url + "/tasks/not-an-id")[0] == 404
        stored = raw_db["my_app_tasks"].find_one()
        assert stored["app_id"] == "my_app"
        deadline = time.monotonic() + 10  # the thread archive_later started
        while not raw_db["my_app_tasks"].find_one({"seen_by_worker": True}):
            assert time.monotonic() < deadline, "the worker thread never wrote"
            time.sleep(0.05)
        names = {i["name"] for i in raw_db["my_app_tasks"].list_indexes()}
        assert "app_id_1_created_at_-1" in names  # declared in manifests/my_app.json
    finally:
        module.mdb.shutdown(app)


@pytest.mark.parametrize("target", ["app", "app:create_app()"])
def test_flask_factory_app_py_with_the_flask_command(example_env, target):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", target, "routes"],
        cwd=FLASK_FACTORY,
        env=example_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for endpoint in ("tasks.add_task", "tasks.show_task", "tasks.list_tasks"):
        assert endpoint in result.stdout
