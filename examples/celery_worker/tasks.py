"""A Celery worker whose tasks write to a sandboxed app database, with MongoDB as the broker
and the result backend: no Redis, no RabbitMQ.

Start the shared embedded server (or use any MongoDB) and point everything at it::

    mdb embedded start                       # prints the URI
    export MDB_MONGO_URI='mongodb://127.0.0.1:PORT/?retryWrites=false&directConnection=true'
    export MDB_DB_NAME=celery_example
    cd examples/celery_worker
    celery -A tasks worker -P prefork -c 2 --loglevel=INFO

Each worker process gets its own engine (and MongoClient) in ``worker_process_init``; no
client crosses the fork. Queue tasks with ``python producer.py``.
"""

from __future__ import annotations

import os

from celery import Celery

from mdb_sync.celery import MDBCelery, mongodb_broker_settings
from mdb_sync.observability import get_logger

app = Celery("celery_example")
app.conf.update(
    mongodb_broker_settings(),  # MDB_MONGO_URI and MDB_DB_NAME
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
mdb = MDBCelery(app)  # the engine also reads MDB_MONGO_URI / MDB_DB_NAME
log = get_logger(__name__)


@app.task(name="notes.add")
def add_note(app_slug: str, text: str) -> dict:
    """Store a note in ``app_slug``'s sandbox (collection ``notes``, tagged with app_id)."""
    engine = mdb.get_engine()
    result = mdb.get_scoped_db(app_slug).notes.insert_one({"text": text, "worker_pid": os.getpid()})
    log.info("note stored", extra={"note_id": str(result.inserted_id)})
    return {
        "id": str(result.inserted_id),
        "pid": os.getpid(),
        # Proof of fork safety: this process's engine built its own client.
        "engine_pid": mdb.engine_pid,
        "client_pid": engine.client_pid,
    }


@app.task(name="notes.count")
def count_notes(app_slug: str) -> int:
    return mdb.get_scoped_db(app_slug).notes.count_documents({})
