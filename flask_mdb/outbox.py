"""The background sender: work a request hands off so that its answer, and how long the
answer takes, cannot depend on that work (password-reset links: whether the email has an
account, and a slow mail server, must not show in the response time).

One :class:`Outbox` per Flask app, with one worker thread per process, started on first use.
The queue is bounded: when it is full the job is dropped with a warning and the caller's
answer stays the same (a flood of requests costs a bounded amount of memory, never a slower
or different answer). A job runs in the Flask app's context, with the submitting request's
context (:mod:`mdb_sync.context`: app, correlation id, engine) but never its request
context. Fork-safe: a child
process starts with an empty outbox and its own worker (the parent keeps and runs the jobs
it had queued). :meth:`Outbox.stop` — called by ``mdb.shutdown(app)`` and at interpreter
exit — lets queued jobs finish within a bound, then stops the worker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from mdb_sync import context

from .state import get_state

log = logging.getLogger("flask_mdb.outbox")

#: Seconds :meth:`Outbox.stop` waits for queued jobs by default.
STOP_TIMEOUT = 10.0

_STOP = object()
_OUTBOXES: weakref.WeakSet[Outbox] = weakref.WeakSet()
_create_lock = threading.Lock()


@dataclass
class _Job:
    run: Callable[[], Any]
    what: str
    context: context.Context


@dataclass
class _Worker:
    queue: queue.Queue[Any]
    thread: threading.Thread


class Outbox:
    """A bounded queue of jobs run one at a time by a worker thread of this process.

    :param app: the Flask app whose context the jobs run in.
    :param maxsize: jobs that may wait; beyond, :meth:`submit` drops the job (logged).
    :param name: names the worker thread (``mdb-<name>``) and the log lines.
    """

    def __init__(self, app: Flask, maxsize: int, name: str = "outbox") -> None:
        if maxsize < 1:
            raise ValueError("an Outbox needs maxsize >= 1")
        self._app = weakref.ref(app)
        self.maxsize = maxsize
        self.name = name
        self.dropped = 0
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        _OUTBOXES.add(self)

    # --- submitting -----------------------------------------------------------------------------

    def submit(self, run: Callable[[], Any], what: str) -> bool:
        """Queue ``run`` (no arguments) to run on the worker; False when the queue is full
        and the job was dropped. Never blocks and never raises for a full queue."""
        job = _Job(run, what, context.current())
        worker = self._running_worker()
        try:
            worker.queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning(
                "%s: %d jobs are waiting already: %s dropped", self.name, self.maxsize, what
            )
            return False
        return True

    @property
    def pending(self) -> int:
        """Jobs queued or running now."""
        worker = self._worker
        return worker.queue.unfinished_tasks if worker is not None else 0

    def _running_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.thread.is_alive():
            return worker
        with self._lock:
            worker = self._worker
            if worker is None or not worker.thread.is_alive():
                jobs: queue.Queue[Any] = queue.Queue(self.maxsize)
                if worker is not None:  # the thread died (it should not): keep its jobs
                    _move(worker.queue, jobs)
                thread = threading.Thread(
                    target=self._run, args=(jobs,), name=f"mdb-{self.name}", daemon=True
                )
                worker = self._worker = _Worker(jobs, thread)
                thread.start()
            return worker

    # --- running --------------------------------------------------------------------------------

    def _run(self, jobs: queue.Queue[Any]) -> None:
        while True:
            job = jobs.get()
            try:
                if job is _STOP:
                    return
                self._run_one(job)
            finally:
                jobs.task_done()

    def _run_one(self, job: _Job) -> None:
        app = self._app()
        if app is None:
            return
        token = context.bind(job.context)
        try:
            with app.app_context():
                job.run()
        except Exception:
            log.exception("%s: %s failed", self.name, job.what)
        finally:
            context.reset(token)

    # --- waiting and stopping -------------------------------------------------------------------

    def join(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Wait until every queued job has run (at most ``timeout`` seconds); True if so."""
        worker = self._worker
        if worker is None:
            return True
        jobs = worker.queue
        deadline = time.monotonic() + timeout
        with jobs.all_tasks_done:
            while jobs.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                jobs.all_tasks_done.wait(remaining)
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Let the queued jobs run (within ``timeout`` seconds), then stop the worker; jobs
        still waiting then are dropped, and counted in the warning. True when none was.
        The next :meth:`submit` starts a new worker."""
        drained = self.join(timeout)
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is None:
            return True
        left = 0
        if not drained:
            left = _discard(worker.queue)
            log.warning("%s: stopped with %d jobs not run", self.name, left)
        with contextlib.suppress(queue.Full):  # just emptied; a daemon thread ends at exit anyway
            worker.queue.put_nowait(_STOP)
        worker.thread.join(1.0)
        return left == 0

    def after_fork_in_child(self) -> None:
        # Only the forking thread survives a fork: the lock may be held by a thread that no
        # longer exists, and the parent's worker and queue are the parent's.
        self._lock = threading.Lock()
        self._worker = None


def _move(source: queue.Queue[Any], target: queue.Queue[Any]) -> None:
    while True:
        try:
            item = source.get_nowait()
        except queue.Empty:
            return
        source.task_done()
        if item is not _STOP:
            try:
                target.put_nowait(item)
            except queue.Full:
                return


def _discard(jobs: queue.Queue[Any]) -> int:
    count = 0
    while True:
        try:
            jobs.get_nowait()
        except queue.Empty:
            return count
        jobs.task_done()
        count += 1


def get_outbox(app: Flask, maxsize: int, name: str = "outbox") -> Outbox:
    """The outbox of ``app`` (created on first use, kept in the extension's state)."""
    state = get_state(app)
    outbox = state.outbox
    if outbox is None:
        with _create_lock:
            outbox = state.outbox
            if outbox is None:
                outbox = state.outbox = Outbox(app, maxsize, name)
    return outbox


def stop_outbox(app: Flask, timeout: float = STOP_TIMEOUT) -> bool:
    """Run what ``app``'s outbox holds (within ``timeout``) and stop its worker."""
    outbox = get_state(app).outbox
    return outbox.stop(timeout) if outbox is not None else True


def _after_fork_in_child() -> None:
    global _create_lock
    _create_lock = threading.Lock()
    for outbox in list(_OUTBOXES):
        outbox.after_fork_in_child()


def _stop_all_at_exit() -> None:
    for outbox in list(_OUTBOXES):
        outbox.stop(STOP_TIMEOUT / 2)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
