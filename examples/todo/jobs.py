"""Celery jobs of the todo example: a worker adds a task for an account, and that account's
open pages of the space show it at once — the worker's message reaches the web process's
websockets through MongoDB (see app.py for how to run both)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("MDB_DB_NAME", "todo_example")  # the web app's default database

from app import SLUG_PREFIX, add_task  # noqa: E402

from mdb_sync.auth import get_auth_service  # noqa: E402
from mdb_sync.celery import MDBCelery, mongodb_broker_settings  # noqa: E402

app = Celery("todo_jobs")
app.conf.update(
    mongodb_broker_settings(),  # MDB_MONGO_URI and MDB_DB_NAME, as the web app
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
mdb = MDBCelery(app, manifests=sorted((HERE / "manifests").glob("*.json")))


@app.task(name="todo.add_task")
def add_task_job(space: str, email: str, title: str) -> dict[str, Any]:
    """Add a task for the account ``email`` to ``space`` (``work``, ``home``) and announce it
    to that account's open pages."""
    slug = f"{SLUG_PREFIX}{space}"
    user = get_auth_service(mdb.engine, slug).get_user_by_email(email)
    if user is None:
        raise ValueError(f"no account {email!r} in {space!r}")
    task = add_task(mdb.get_scoped_db(slug), str(user["user_id"]), title)
    return {"id": str(task["_id"]), "title": task["title"]}
