"""Celery wiring: one engine per worker process, scoped databases in tasks, MongoDB as the
broker and result backend.

::

    from celery import Celery
    from mdb_sync.celery import MDBCelery, mongodb_broker_settings

    app = Celery("tasks")
    app.conf.update(mongodb_broker_settings())          # MDB_MONGO_URI / MDB_DB_NAME
    mdb = MDBCelery(app)                                # engine options: MongoDBEngine's

    @app.task
    def add_note(text):
        mdb.get_scoped_db("notes_app").notes.insert_one({"text": text})

**Fork safety.** With the prefork pool the worker's parent process forks its children; a
``MongoClient`` must never cross that fork. The engine is created in each child by
``worker_process_init`` (and lazily, per process id, for the solo and thread pools or code
that runs before the signal), and shut down by ``worker_process_shutdown`` /
``worker_shutdown``. The parent process never connects.

**Context.** The producer's current app and correlation id (:mod:`mdb_sync.context`: a
Flask view's, a script's ``log_context``) travel with the task as message headers
``mdb_app_id``/``mdb_correlation_id``; the worker runs the task in a context with them (or
with the task id as correlation id) and with its engine, so the task's log records link to
the request that queued it, its custom metrics go to its app, and
:func:`~mdb_sync.context.current_engine` is the worker's engine. Header values are checked
like an ``X-Request-ID`` (a bad app id is dropped, a bad correlation id replaced by the
task id). Each
task's duration and outcome is recorded in the worker engine's metrics as operation
``task.<name>``.

This module imports Celery; ``import mdb_sync`` never does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery import signals

from . import context
from . import uri as uri_helpers
from .connection import resolve_db_name
from .deprecation import renamed_parameters
from .engine import DB_NAME_ENV, MONGO_URI_ENV, MongoDBEngine
from .exceptions import ConfigurationError
from .scoping import ScopedDatabase

log = logging.getLogger(__name__)

CORRELATION_HEADER = "mdb_correlation_id"
APP_HEADER = "mdb_app_id"
#: Prefix of the broker's and result backend's collections: ``mdb`` is a reserved slug, so
#: no app can ever own (or drop) them.
COLLECTION_PREFIX = "mdb_celery"


def mongodb_broker_settings(
    mongo_uri: str | None = None,
    db_name: str | None = None,
    *,
    prefix: str = COLLECTION_PREFIX,
    polling_interval: float = 0.5,
) -> dict[str, Any]:
    """Celery settings that use MongoDB as broker and result backend (no Redis, no RabbitMQ).

    Messages and results live in ``db_name`` (default ``MDB_DB_NAME``, the URI's database, or
    ``mdb_sync``) in collections named ``<prefix>_messages``, ``<prefix>_taskmeta``...
    ``mongo_uri`` defaults to ``MDB_MONGO_URI``; for the embedded server, start it with
    ``mdb embedded start`` and use the URI it prints.
    """
    uri = mongo_uri or os.environ.get(MONGO_URI_ENV)
    if not uri:
        raise ConfigurationError(
            "the MongoDB broker needs a URI: pass mongo_uri or set MDB_MONGO_URI (for the "
            "embedded server, run `mdb embedded start` and use the URI it prints)"
        )
    if uri_helpers.parse(uri) is None:
        raise ConfigurationError("mongo_uri must be a mongodb:// or mongodb+srv:// URI")
    database = resolve_db_name(db_name or os.environ.get(DB_NAME_ENV), uri)
    url = uri_helpers.with_database(uri, database)
    return {
        "broker_url": url,
        "broker_transport_options": {
            "messages_collection": f"{prefix}_messages",
            "routing_collection": f"{prefix}_routing",
            "broadcast_collection": f"{prefix}_broadcast",
            "queues_collection": f"{prefix}_queues",
            "polling_interval": polling_interval,
        },
        "result_backend": url,
        "mongodb_backend_settings": {
            "database": database,
            "taskmeta_collection": f"{prefix}_taskmeta",
            "groupmeta_collection": f"{prefix}_groupmeta",
        },
    }


class MDBCelery:
    """One :class:`~mdb_sync.MongoDBEngine` per worker process for a Celery app.

    :param celery_app: the Celery app (or call :meth:`init_app` later).
    :param engine_factory: builds the (uninitialized) engine; by default
        ``MongoDBEngine(**engine_options)``, i.e. ``MDB_MONGO_URI``/``MDB_DB_NAME`` or the
        embedded server.
    :param manifests: manifest files registered by each process's engine when it starts
        (idempotent; unchanged manifests create no indexes).
    :param engine_options: passed to :class:`MongoDBEngine` (``mongo_uri``, ``db_name``,
        ``implicit_apps``, client options...).
    """

    def __init__(
        self,
        celery_app: Any = None,
        *,
        engine_factory: Callable[[], MongoDBEngine] | None = None,
        manifests: Iterable[str | os.PathLike[str]] = (),
        **engine_options: Any,
    ) -> None:
        self._factory = engine_factory or (lambda: MongoDBEngine(**engine_options))
        self._manifests = list(manifests)
        self._lock = threading.Lock()
        self._engine: MongoDBEngine | None = None
        self._engine_pid: int | None = None
        self._started: dict[str, tuple[float, Any]] = {}
        self.celery_app = None
        if celery_app is not None:
            self.init_app(celery_app)

    def init_app(self, celery_app: Any) -> None:
        """Connect the worker and task signals for ``celery_app``."""
        if self.celery_app is not None:
            raise RuntimeError("this MDBCelery is already bound to a Celery app")
        self.celery_app = celery_app
        celery_app.mdb = self
        signals.worker_process_init.connect(self._on_process_init, weak=False)
        signals.worker_process_shutdown.connect(self._on_process_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_process_shutdown, weak=False)
        signals.before_task_publish.connect(self._on_publish, weak=False)
        signals.task_prerun.connect(self._on_prerun, weak=False)
        signals.task_postrun.connect(self._on_postrun, weak=False)

    # --- the engine of this process -----------------------------------------------------------

    def get_engine(self) -> MongoDBEngine:
        """This process's initialized engine, created on first use (never one inherited
        through ``fork``)."""
        engine = self._engine
        if engine is not None and self._engine_pid == os.getpid():
            return engine
        with self._lock:
            if self._engine is None or self._engine_pid != os.getpid():
                engine = self._factory()
                engine.initialize()
                for path in self._manifests:
                    engine.register_app(engine.load_manifest(path))
                self._engine, self._engine_pid = engine, os.getpid()
            return self._engine

    engine = property(get_engine)

    @property
    def engine_pid(self) -> int | None:
        """The id of the process this worker's engine was built in (None before it is): the
        current process's in a healthy worker — never the parent's that forked it."""
        return self._engine_pid

    @renamed_parameters(app_slug="slug")
    def get_scoped_db(self, slug: str, **options: Any) -> ScopedDatabase:
        """The scoped database of ``slug`` for use in a task (see ``get_scoped_db``)."""
        return self.get_engine().get_scoped_db(slug, **options)

    def shutdown(self) -> None:
        """Shut down this process's engine, if it has one."""
        with self._lock:
            engine, self._engine = self._engine, None
            pid, self._engine_pid = self._engine_pid, None
        if engine is not None and pid == os.getpid():
            engine.shutdown()

    # --- signal receivers ---------------------------------------------------------------------

    def _on_process_init(self, **_: Any) -> None:
        self._started = {}
        try:
            self.get_engine()
        except Exception:
            # The task that needs it will retry (and fail with the real error).
            log.exception("could not start the mdb-sync engine in worker process %s", os.getpid())

    def _on_process_shutdown(self, **_: Any) -> None:
        self.shutdown()

    def _on_publish(self, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is None:
            return
        current = context.current()
        if current.correlation_id:
            headers.setdefault(CORRELATION_HEADER, current.correlation_id)
        if current.app_id:
            headers.setdefault(APP_HEADER, current.app_id)

    def _on_prerun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if getattr(task, "app", None) is not self.celery_app:
            return
        request = getattr(task, "request", None)
        app_id = getattr(request, APP_HEADER, None)
        if not (isinstance(app_id, str) and context.ID_PATTERN.fullmatch(app_id)):
            app_id = None  # absent, or not an id a log line may carry
        correlation_id = getattr(request, CORRELATION_HEADER, None)
        if not (isinstance(correlation_id, str) and context.ID_PATTERN.fullmatch(correlation_id)):
            correlation_id = context.accept_correlation_id(task_id)  # the task's own id
        engine = self._engine if self._engine_pid == os.getpid() else None
        task_context = context.Context(app_id=app_id, correlation_id=correlation_id, engine=engine)
        self._started[task_id or ""] = (time.perf_counter(), context.bind(task_context))

    def _on_postrun(
        self, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        started = self._started.pop(task_id or "", None)
        if started is None:
            return
        began, token = started
        app_id = context.get_app_id()
        context.reset(token)
        engine = self._engine
        if engine is not None and self._engine_pid == os.getpid():
            engine.record_operation(
                f"task.{getattr(task, 'name', 'unknown')}",
                (time.perf_counter() - began) * 1000.0,
                success=state == "SUCCESS",
                slug=app_id,
            )


__all__ = ["MDBCelery", "mongodb_broker_settings"]
