"""Demo users' passwords are never kept, shown or exported in clear, and the todo example
ships no fixed admin password.

Whoever reads the registry (every process does), runs ``mdb apps show`` or gets an export
learns no demo password; the demo user still signs in with it. The todo example, started
fresh as a script (its real interface) on two machines, gets two different admin passwords,
and the one it used to ship opens neither.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from auth_apps import SECRET, auth_manifest
from click.testing import CliRunner
from flask_apps import free_port, http

from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.cli import cli
from mdb_sync.exceptions import ManifestValidationError

CLEAR = "Demo admin passphrase 42"
TODO = Path(__file__).resolve().parents[2] / "examples" / "todo"
OLD_TODO_PASSWORD = "todo admin demo"


def _manifest(slug="demo", password=CLEAR):
    manifest = auth_manifest(slug)
    manifest["auth"]["users"]["demo_users"] = [
        {"email": "admin@example.com", "password": password, "role": "admin"}
    ]
    return manifest


def _run(mongo_uri, db_name, *args):
    env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _tree_text(directory: Path) -> str:
    return "".join(
        p.read_bytes().decode("latin-1") for p in sorted(directory.rglob("*")) if p.is_file()
    )


def test_no_clear_demo_password_in_the_registry_the_cli_or_an_export(
    engine, raw_db, mongo_uri, db_name, tmp_path
):
    engine.register_app(_manifest())
    record = raw_db["apps_config"].find_one({"_id": "demo"})
    assert CLEAR not in json.dumps(record, default=str)
    [demo] = record["manifest"]["auth"]["users"]["demo_users"]
    assert "password" not in demo and demo["password_hash"].startswith("mdb-scrypt$")

    # The demo user signs in with the password only its hash was kept of.
    auth = AuthService(engine, "demo", secret=SECRET, hasher=PasswordHasher(n=4096))
    assert auth.authenticate("admin@example.com", CLEAR)["roles"] == ["admin"]

    # Registering the same manifest again changes nothing stored (the hash is reused).
    engine.register_app(_manifest())
    again = raw_db["apps_config"].find_one({"_id": "demo"})
    assert again["manifest"] == record["manifest"] and again["updated_at"] == record["updated_at"]

    shown = _run(mongo_uri, db_name, "apps", "show", "demo")
    shown_json = _run(mongo_uri, db_name, "apps", "show", "demo", "--json")
    for text in (shown, shown_json):
        assert CLEAR not in text and demo["password_hash"] not in text and "<hidden>" in text
    _run(mongo_uri, db_name, "export", "demo", str(tmp_path / "dump"))
    assert CLEAR not in _tree_text(tmp_path / "dump")


def test_a_weak_demo_password_is_refused_at_registration(engine):
    with pytest.raises(ManifestValidationError) as info:
        engine.register_app(_manifest(password="hunter2"))
    assert info.value.errors == {
        "auth.users.demo_users[0].password": [
            "password must be at least 8 characters",
            "password is too common",
        ]
    }
    assert "hunter2" not in str(info.value)  # the error names the place, not the password
    assert engine.get_app("demo") is None


def test_a_record_written_before_hashing_is_never_shown_or_exported_in_clear(
    engine, raw_db, mongo_uri, db_name, tmp_path
):
    engine.register_app(_manifest())
    raw_db["apps_config"].update_one(
        {"_id": "demo"},
        {
            "$set": {
                "manifest.auth.users.demo_users": [
                    {"email": "admin@example.com", "password": CLEAR, "role": "admin"}
                ]
            }
        },
    )
    assert CLEAR not in _run(mongo_uri, db_name, "apps", "show", "demo")
    _run(mongo_uri, db_name, "export", "demo", str(tmp_path / "dump"))
    dumped = _tree_text(tmp_path / "dump")
    assert CLEAR not in dumped and "mdb-scrypt$" in dumped


def _start_todo(tmp_path: Path, name: str):
    """``python examples/todo/app.py`` on a fresh embedded database: (process, base URL,
    the admin password it printed)."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "MDB_EMBEDDED_DIR": str(tmp_path / name)}
    for key in ("MDB_MONGO_URI", "TODO_ADMIN_PASSWORD"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, str(TODO / "app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = []
    assert proc.stdout is not None
    for line in proc.stdout:  # until the server announces itself
        printed.append(line)
        if "todo example on" in line:
            break
    found = re.search(r"admin: admin@example.com / (\S+)\s+\(shown once\)", "".join(printed))
    assert found, "".join(printed)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if http(f"{base}/health")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "the example did not start"
        time.sleep(0.1)
    return proc, base, found.group(1)


def _stop(proc):
    proc.send_signal(2)  # Ctrl-C
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _sign_in(base, password):
    body = {"email": "admin@example.com", "password": password}
    return http(f"{base}/work/auth/token", "POST", body)[0]


def test_two_fresh_todo_deployments_get_different_admin_passwords(tmp_path):
    first = _start_todo(tmp_path, "one")
    try:
        second = _start_todo(tmp_path, "two")
        try:
            assert first[2] != second[2] and len(first[2]) >= 16
            for _proc, base, password in (first, second):
                assert _sign_in(base, OLD_TODO_PASSWORD) == 401
                assert _sign_in(base, password) == 200
            assert _sign_in(second[1], first[2]) == 401
        finally:
            _stop(second[0])
    finally:
        _stop(first[0])
    manifest = json.loads((TODO / "manifests" / "work.json").read_text())
    assert "demo_users" not in manifest["auth"]["users"]
