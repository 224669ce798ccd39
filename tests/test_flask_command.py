"""The real ``flask`` command on the shapes the README shows: a module that imports
``flask_mdb.db`` at module level and builds its app in ``create_app()`` or at import.

Flask's app discovery looks at every attribute of the module (``isinstance(obj, Flask)``),
so an unbound ``db`` proxy must raise a ``RuntimeError`` there, which Werkzeug's proxies
treat as "not bound", instead of crashing ``flask run``, ``routes`` and ``shell``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flask_apps import free_port

FACTORY = """\
from flask import Flask, request
from flask_mdb import MDB, db, get_current_app_slug

mdb = MDB()


def create_app():
    app = Flask(__name__)
    app.config["MDB_MANIFESTS"] = "manifests/"
    app.config["MDB_APP_SLUG"] = "my_app"
    mdb.init_app(app)

    @app.post("/tasks")
    def add_task():
        db.tasks.insert_one({"title": request.json["title"]})
        return {"app": get_current_app_slug(), "count": db.tasks.count_documents({})}, 201

    return app
"""

MODULE_APP = FACTORY + "\n\napp = create_app()\n"


@pytest.fixture
def project(tmp_path: Path, mongo_uri: str, db_name: str) -> tuple[Path, dict[str, str]]:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "my_app.json").write_text(
        json.dumps({"slug": "my_app", "name": "My app"}), encoding="utf-8"
    )
    (tmp_path / "factory_app.py").write_text(FACTORY, encoding="utf-8")
    (tmp_path / "module_app.py").write_text(MODULE_APP, encoding="utf-8")
    env = {
        **os.environ,
        "MDB_MONGO_URI": mongo_uri,
        "MDB_DB_NAME": db_name,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    env.pop("FLASK_APP", None)
    return tmp_path, env


def flask(
    project: tuple[Path, dict[str, str]], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    cwd, env = project
    return subprocess.run(
        [sys.executable, "-m", "flask", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("target", ["factory_app", "factory_app:create_app()", "module_app"])
def test_flask_routes_finds_the_app(project, target):
    result = flask(project, "--app", target, "routes")
    assert result.returncode == 0, result.stderr
    assert "add_task" in result.stdout and "/tasks" in result.stdout


@pytest.mark.parametrize("target", ["factory_app", "module_app"])
def test_flask_shell_runs_code_with_the_app(project, target):
    code = (
        "from flask_mdb import db\n"
        "with app.extensions['mdb'].extension.bind('my_app'):\n"
        "    print('tasks', db.tasks.count_documents({}))\n\n"
    )
    result = flask(project, "--app", target, "shell", stdin=code)
    assert result.returncode == 0, result.stderr
    assert "tasks 0" in result.stdout + result.stderr


def test_flask_run_serves_requests(project):
    cwd, env = project
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "factory_app", "run", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _post_when_up(f"http://127.0.0.1:{port}/tasks", {"title": "x"}, server)
        assert body == {"app": "my_app", "count": 1}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _post_when_up(url: str, payload: dict, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    data = json.dumps(payload).encode()
    while True:
        if server.poll() is not None:
            output = server.stdout.read() if server.stdout else ""
            pytest.fail(f"flask run exited with {server.returncode}:\n{output}")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
                return json.loads(response.read())
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
