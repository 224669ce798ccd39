"""The embedded server: started once per data directory, shared by processes, stopped by the
last user; a clear error when the package is missing; the ``mdb embedded`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from pymongo import MongoClient

from mdb_sync import EmbeddedServerNotInstalled, MongoDBEngine, embedded
from mdb_sync.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _run_python(
    code: str, *, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def _state(base: Path) -> dict:
    return json.loads((base / "server.json").read_text())


def test_no_uri_starts_a_persistent_embedded_server(tmp_path):
    base = tmp_path / "mdb"
    with MongoDBEngine(embedded_dir=base, db_name="persist") as engine:
        assert engine.uses_embedded_server
        server = engine.embedded_server
        assert server is not None and server.is_running()
        engine.get_scoped_db("keep").notes.insert_one({"text": "survives restarts"})
        assert (base / "data").is_dir()
        assert _state(base)["pid"] == server.pid
    assert not embedded.status(base)["running"], "the last user stops the server"
    # The data persists into the next server.
    with MongoDBEngine(embedded_dir=base, db_name="persist") as engine:
        assert engine.get_scoped_db("keep").notes.find_one({})["text"] == "survives restarts"


def test_second_process_reuses_the_running_server(tmp_path):
    base = tmp_path / "shared"
    with MongoDBEngine(embedded_dir=base, db_name="shared") as engine:
        pid, port = engine.embedded_server.pid, engine.embedded_server.port
        engine.get_scoped_db("app").items.insert_one({"from": "parent"})
        child = _run_python(
            f"""
            import json
            from mdb_sync import MongoDBEngine
            with MongoDBEngine(embedded_dir={str(base)!r}, db_name="shared") as engine:
                server = engine.embedded_server
                db = engine.get_scoped_db("app")
                db.items.insert_one({{"from": "child"}})
                print(json.dumps({{"pid": server.pid, "port": server.port,
                                   "seen": sorted(d["from"] for d in db.items.find())}}))
            """
        )
        assert child.returncode == 0, child.stderr
        report = json.loads(child.stdout.strip().splitlines()[-1])
        assert (report["pid"], report["port"]) == (pid, port), "no second server was started"
        assert report["seen"] == ["child", "parent"]
        # The child's shutdown left the server running for us.
        assert engine.embedded_server.is_running()
        assert sorted(d["from"] for d in engine.get_scoped_db("app").items.find()) == [
            "child",
            "parent",
        ]
    assert not embedded.status(base)["running"]


def test_stale_state_file_is_replaced(tmp_path):
    base = tmp_path / "stale"
    base.mkdir()
    (base / "server.json").write_text(
        json.dumps({"pid": 999_999_999, "port": 1, "host": "127.0.0.1"})
    )
    with MongoDBEngine(embedded_dir=base) as engine:
        assert engine.embedded_server.pid != 999_999_999
        assert _state(base)["pid"] == engine.embedded_server.pid


def test_private_memory_server_is_owned_and_stopped(tmp_path):
    engine = MongoDBEngine(embedded_dir=":memory:")
    engine.initialize()
    server = engine.embedded_server
    assert server.is_private and server.is_running()
    engine.get_scoped_db("tmp").x.insert_one({"a": 1})
    engine.shutdown()
    assert not embedded.is_alive(server.pid)


def test_missing_package_gives_an_install_hint(tmp_path):
    result = _run_python(
        f"""
        import sys, importlib.abc
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "secantus" or name.startswith("secantus."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        from mdb_sync import MongoDBEngine, EmbeddedServerNotInstalled
        try:
            MongoDBEngine(embedded_dir={str(tmp_path / "none")!r}).initialize()
        except EmbeddedServerNotInstalled as exc:
            print("ERROR:", exc)
        """,
        env={"MDB_EMBEDDED_COMMAND": ""},
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "mdb-sync[embedded]"' in result.stdout
    assert "URI" in result.stdout
    assert not (tmp_path / "none" / "server.json").exists()


def test_find_server_command_raises_when_package_missing(monkeypatch):
    import importlib.util

    monkeypatch.delenv("MDB_EMBEDDED_COMMAND", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "secantus" else real(name, *a)
    )
    with pytest.raises(EmbeddedServerNotInstalled):
        embedded.find_server_command()


def test_cli_start_status_stop(tmp_path):
    base = str(tmp_path / "cli")
    runner = CliRunner()
    result = runner.invoke(cli, ["embedded", "status", "--dir", base])
    assert result.exit_code == 1 and "not running" in result.output
    result = runner.invoke(cli, ["embedded", "start", "--dir", base, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["running"] and info["pinned"]
    assert info["durable"], "durable by default: the server fsyncs every commit"
    assert "--sync-on-commit" in embedded._process_args(info["pid"])
    client = MongoClient(info["uri"], serverSelectionTimeoutMS=2000)
    assert client.admin.command("ping")["ok"] == 1
    client.close()
    # A pinned server outlives the engines that use it.
    with MongoDBEngine(embedded_dir=base) as engine:
        assert engine.embedded_server.pid == info["pid"]
    assert embedded.status(base)["running"]
    result = runner.invoke(cli, ["embedded", "status", "--dir", base])
    assert result.exit_code == 0 and f"pid {info['pid']}" in result.output
    result = runner.invoke(cli, ["embedded", "stop", "--dir", base])
    assert result.exit_code == 0 and "stopped" in result.output
    assert not embedded.is_alive(info["pid"])
    result = runner.invoke(cli, ["embedded", "stop", "--dir", base])
    assert "no embedded server was running" in result.output
    result = runner.invoke(cli, ["embedded", "status", "--dir", base])
    assert result.exit_code == 1 and "stopped with `mdb embedded stop`" in result.output


def test_cli_start_not_durable(tmp_path):
    base = str(tmp_path / "fast")
    runner = CliRunner()
    result = runner.invoke(cli, ["embedded", "start", "--dir", base, "--no-durable"])
    assert result.exit_code == 0 and "NOT durable" in result.output, result.output
    info = embedded.status(base)
    assert info["durable"] is False
    assert "--sync-on-commit" not in embedded._process_args(info["pid"])
    assert runner.invoke(cli, ["embedded", "stop", "--dir", base]).exit_code == 0
