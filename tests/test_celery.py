"""Celery: the example worker runs with the prefork pool, MongoDB as broker and result
backend, one engine per pool process; tasks write scoped data; the producer's correlation id
reaches the task's logs; task durations land in the worker's metrics; the example's producer
script works against the worker."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdb_sync.observability import log_context

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "celery_worker"
SUPPORT = Path(__file__).resolve().parent / "celery_support"


@pytest.fixture
def celery_env(mongo_uri, db_name, monkeypatch):
    monkeypatch.setenv("MDB_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MDB_DB_NAME", db_name)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(SUPPORT))
    for name in ("tasks", "celery_checks"):
        sys.modules.pop(name, None)
    tasks = importlib.import_module("tasks")  # configured from the environment above
    checks = importlib.import_module("celery_checks")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), str(EXAMPLE), str(ROOT)]),
    }
    yield tasks, checks, env
    for name in ("tasks", "celery_checks"):
        sys.modules.pop(name, None)


@pytest.fixture
def worker(celery_env, tmp_path):
    tasks, checks, env = celery_env
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "--include",
                "celery_checks",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=EXAMPLE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield tasks, checks, env, proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: children finish and exit
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        tasks.app.close()


def test_prefork_worker_writes_scoped_data(worker, engine, raw_db):
    tasks, checks, env, proc, log_path = worker
    assert proc.poll() is None, log_path.read_text()
    with log_context(app_id="notes_app", correlation_id="req-celery-1"):
        meeting = [checks.rendezvous.delay("notes_app", 2) for _ in range(2)]
        notes = [tasks.add_note.delay("notes_app", f"note {i}") for i in range(4)]
        met = [r.get(timeout=90) for r in meeting]
        stored = [r.get(timeout=90) for r in notes]

    # Two pool processes ran at once, each with an engine and a client of its own, built in
    # that process (never inherited through fork from the worker's parent).
    assert len({m["pid"] for m in met}) == 2
    assert {m["parent_pid"] for m in met} == {proc.pid}
    for info in met + stored:
        assert info["engine_pid"] == info["pid"] == info["client_pid"]
        assert info["pid"] != proc.pid
    # The producer's context travelled with the tasks.
    assert {m["correlation_id"] for m in met} == {"req-celery-1"}
    assert {m["app_id"] for m in met} == {"notes_app"}

    # The tasks wrote scoped data: physically in notes_app_notes, tagged with app_id.
    docs = list(raw_db["notes_app_notes"].find())
    assert sorted(d["text"] for d in docs) == [f"note {i}" for i in range(4)]
    assert {d["app_id"] for d in docs} == {"notes_app"}
    assert engine.get_scoped_db("notes_app").notes.count_documents({}) == 4
    assert tasks.count_notes.delay("notes_app").get(timeout=60) == 4

    # Broker and results live in mdb_celery_* collections, which no app can own.
    names = set(raw_db.list_collection_names())
    assert "mdb_celery_messages" in names and "mdb_celery_taskmeta" in names

    metrics = checks.task_metrics.delay().get(timeout=60)
    recorded = {name for ops in metrics.values() for name in ops}
    assert "task.notes.add" in recorded or "task.checks.rendezvous" in recorded
    assert metrics["notes_app"]["insert"] >= 1

    # The example's producer works against the same worker.
    result = subprocess.run(
        [sys.executable, "producer.py"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + log_path.read_text()
    assert result.stdout.count("stored {") == 4
    assert "notes in notes_app: 8" in result.stdout


def test_a_celery_task_as_password_reset_sender(worker, mongo_uri, db_name, raw_db, tmp_path):
    """``MDB_PASSWORD_RESET_SENDER`` may be a Celery task: the web process's background
    sender queues it with ``(user, url)`` (the user as JSON), and a worker process sends."""
    from auth_apps import PASSWORD, add_views, auth_config, auth_manifest, write
    from flask_apps import AppFactory

    _tasks, checks, _env, proc, log_path = worker
    manifest = auth_manifest("mailer_app")
    manifest["auth"]["users"]["password_reset"] = {"token_ttl_seconds": 600}
    write(tmp_path, manifest)
    factory = AppFactory(mongo_uri, db_name)
    try:
        app = add_views(factory(**auth_config(
            MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG="mailer_app",
            MDB_PASSWORD_RESET_SENDER=checks.deliver_reset_link,
            MDB_EXTERNAL_URL="https://mailer.example",
        )))  # fmt: skip
        client = app.test_client()
        for path, body in (
            ("/auth/register", {"email": "ada@example.com", "password": PASSWORD}),
            ("/auth/forgot", {"email": "ada@example.com"}),
        ):
            csrf = client.get("/auth/csrf").json["csrf_token"]
            assert client.post(path, json=body, headers={"X-CSRF-Token": csrf}).status_code in (
                201,
                202,
            )
        deadline = time.monotonic() + 90
        while raw_db["mailer_app_outbox"].count_documents({}) == 0:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
    finally:
        factory.close()
    [sent] = list(raw_db["mailer_app_outbox"].find())
    assert sent["to"] == "ada@example.com" and sent["pid"] not in (os.getpid(), proc.pid)
    assert sent["url"].startswith("https://mailer.example/auth/reset?token=")


def test_a_task_sent_from_a_view_carries_its_app_and_correlation_id(worker, mongo_uri, db_name):
    """A Flask view bound to ``notes_app`` queues a task: the prefork worker runs it with the
    view's app and the request's X-Request-ID — in its log records, in its custom metrics
    (recorded without naming an app) — and with the worker's engine as the current one."""
    from flask_apps import AppFactory

    _tasks, checks, _env, proc, log_path = worker
    factory = AppFactory(mongo_uri, db_name)
    try:
        app = factory(MDB_APP_SLUG="notes_app")

        @app.post("/report")
        def report():
            return {"task": checks.context_probe.delay().id}

        client = app.test_client()
        response = client.post("/report", headers={"X-Request-ID": "view-req-7"})
        assert response.status_code == 200 and response.headers["X-Request-ID"] == "view-req-7"
        probe = checks.context_probe.AsyncResult(response.json["task"]).get(timeout=90)
        # A request without an id of its own: the task carries the id the server made up.
        other = client.post("/report")
        other_probe = checks.context_probe.AsyncResult(other.json["task"]).get(timeout=90)
    finally:
        factory.close()
    assert proc.poll() is None, log_path.read_text()
    assert (probe["app_id"], probe["correlation_id"]) == ("notes_app", "view-req-7")
    assert probe["logged"] == [["notes_app", "view-req-7"]]
    assert probe["current_engine_is_workers"] is True
    assert probe["probe_steps"].get("notes_app", 0) >= 1 and None not in probe["probe_steps"]
    assert other_probe["correlation_id"] == other.headers["X-Request-ID"] != "view-req-7"
    assert other_probe["app_id"] == "notes_app"


def test_a_task_with_hostile_context_headers_gets_none_of_them(worker):
    """Message headers are client data too: an app id or correlation id a log line could not
    carry safely is dropped (no app) or replaced (by the task id)."""
    _tasks, checks, _env, _proc, _log_path = worker
    result = checks.context_probe.apply_async(
        headers={"mdb_app_id": "notes_app\nforged line", "mdb_correlation_id": "x" * 500}
    )
    probe = result.get(timeout=90)
    assert probe["app_id"] is None
    assert probe["correlation_id"] == result.id
    assert probe["logged"] == [[None, result.id]]


def test_importing_mdb_sync_does_not_import_celery():
    code = (
        "import sys, mdb_sync, mdb_sync.cli, mdb_sync.portability; print('celery' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_broker_settings(monkeypatch):
    from mdb_sync.celery import mongodb_broker_settings
    from mdb_sync.exceptions import ConfigurationError

    settings = mongodb_broker_settings("mongodb://u:p@h:1/?retryWrites=false", "appdb")
    assert settings["broker_url"] == "mongodb://u:p@h:1/appdb?retryWrites=false"
    assert settings["result_backend"] == settings["broker_url"]
    assert settings["mongodb_backend_settings"]["taskmeta_collection"] == "mdb_celery_taskmeta"
    assert settings["broker_transport_options"]["messages_collection"] == "mdb_celery_messages"
    assert mongodb_broker_settings("mongodb://h/fromuri")["broker_url"] == "mongodb://h/fromuri"
    monkeypatch.delenv("MDB_MONGO_URI", raising=False)
    with pytest.raises(ConfigurationError, match="MDB_MONGO_URI"):
        mongodb_broker_settings()
    with pytest.raises(ConfigurationError, match="mongodb://"):
        mongodb_broker_settings("redis://h")


def test_a_worker_engine_whose_manifest_fails_is_shut_down(mongo_uri, db_name, tmp_path):
    """A pool process whose engine cannot register its manifests raises on every task, and
    leaves no initialized engine behind each time (else the next task's engine makes two,
    and current_engine() in its tasks finds several)."""
    from mdb_sync import MongoDBEngine, context
    from mdb_sync.celery import MDBCelery
    from mdb_sync.exceptions import ManifestValidationError

    bad = tmp_path / "bad.json"
    bad.write_text('{"slug": "Not A Slug!"}')
    made: list[MongoDBEngine] = []

    def factory() -> MongoDBEngine:
        made.append(MongoDBEngine(mongo_uri, db_name))
        return made[-1]

    mdb = MDBCelery(engine_factory=factory, manifests=[bad])
    for _ in range(2):
        with pytest.raises(ManifestValidationError):
            mdb.get_engine()
    assert len(made) == 2
    assert not [e for e in context.live_engines() if e.is_initialized and e in made]
