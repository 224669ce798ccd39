"""Extra tasks loaded into the example worker by the Celery test (``--include``): they let
the test observe the worker processes from the outside."""

from __future__ import annotations

import logging
import os
import time

from tasks import app, mdb

from mdb_sync import current_engine
from mdb_sync.observability import (
    ContextFilter,
    get_app_context,
    get_correlation_id,
    record_operation,
)


@app.task(name="checks.rendezvous")
def rendezvous(app_slug: str, parties: int, timeout: float = 30.0) -> dict:
    """Write this process's pid, then wait until ``parties`` distinct processes have: only
    possible when that many pool processes run tasks at the same time."""
    db = mdb.get_scoped_db(app_slug)
    db.arrivals.insert_one({"pid": os.getpid()})
    deadline = time.monotonic() + timeout
    while len({d["pid"] for d in db.arrivals.find({}, {"pid": 1})}) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other pool processes never arrived")
        time.sleep(0.05)
    engine = mdb.get_engine()
    return {
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "engine_pid": mdb.engine_pid,
        "client_pid": engine.client_pid,
        "correlation_id": get_correlation_id(),
        "app_id": get_app_context(),
    }


@app.task(name="checks.task_metrics")
def task_metrics() -> dict:
    apps = mdb.get_engine().get_metrics()["apps"]
    return {
        app_id: {name: op["count"] for name, op in data.get("operations", {}).items()}
        for app_id, data in apps.items()
    }


@app.task(name="checks.deliver_reset_link")
def deliver_reset_link(user: dict, url: str) -> None:
    """A password-reset sender run by the worker (``MDB_PASSWORD_RESET_SENDER`` = this task):
    records what it was asked to deliver, and where it ran."""
    mdb.get_scoped_db("mailer_app").outbox.insert_one(
        {"to": user["email"], "user_id": user["user_id"], "url": url, "pid": os.getpid()}
    )


@app.task(name="checks.context_probe")
def context_probe() -> dict:
    """What a task sees of the context it was sent from: its app and correlation id (log
    records carry them), the current engine, and where its custom metrics go."""
    seen: list[tuple] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.app_id, record.correlation_id))  # type: ignore[attr-defined]

    handler = Keep()
    handler.addFilter(ContextFilter())
    probe_log = logging.getLogger("checks.context_probe")
    probe_log.addHandler(handler)
    probe_log.setLevel(logging.INFO)
    try:
        probe_log.info("probing")
    finally:
        probe_log.removeHandler(handler)
    record_operation("probe.step", 1.0)  # no app given: the task's
    return {
        "app_id": get_app_context(),
        "correlation_id": get_correlation_id(),
        "logged": seen,
        "current_engine_is_workers": current_engine() is mdb.get_engine(),
        "probe_steps": {
            app_id: data["operations"]["probe.step"]["count"]
            for app_id, data in mdb.get_engine().get_metrics()["apps"].items()
            if "probe.step" in data.get("operations", {})
        },
    }
