"""Declared index builds off the caller's path (``register_app(..., background_indexes=True)``).

Building a manifest's indexes can take long — a big collection, an Atlas Search index that
must become queryable — and a web process registers its manifests on its first request.
With background builds the registration persists the manifest at once and reports each
declared index ``pending``; one worker thread per engine then reconciles the indexes
(exactly as a blocking registration would) and stores the outcomes in the registry, where
:meth:`~mdb_sync.MongoDBEngine.get_health_status` and ``mdb`` read them. Until then the
registry record says ``pending`` too, so every process sees the same state.

Unique indexes are the exception: they are constraints, not speed-ups — a document written
before such an index exists could break it (and then fail its build) — so they are
reconciled before the registration returns, background or not.

Builds of one app run one at a time and the newest registration wins: a build whose
manifest was registered again meanwhile is skipped (or, when already running, its outcomes
are not stored). :meth:`DeclaredIndexBuilds.wait` blocks until the builds are done (tests,
scripts); shutdown waits a bounded time and abandons the rest (the next registration
reconciles again). A forked child starts with no builds of its parent's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .declared import FAILED, ensure_declared_indexes, pending_outcomes

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

#: Background builds waiting at most (one per app: a newer registration replaces its job).
MAX_QUEUED = 10_000


def is_constraint(definition: Mapping[str, Any]) -> bool:
    """Whether a declared index constrains the data (a unique index): built before the
    registration returns, never in the background."""
    return bool((definition.get("options") or {}).get("unique"))


def split_constraints(
    managed: Mapping[str, list[Mapping[str, Any]]],
) -> tuple[dict[str, list[Mapping[str, Any]]], dict[str, list[Mapping[str, Any]]]]:
    """``(the unique indexes, the rest)`` of ``managed``, per collection."""
    now: dict[str, list[Mapping[str, Any]]] = {}
    later: dict[str, list[Mapping[str, Any]]] = {}
    for collection, definitions in managed.items():
        for definition in definitions:
            target = now if is_constraint(definition) else later
            target.setdefault(collection, []).append(definition)
    return now, later


def in_declared_order(
    managed: Mapping[str, list[Mapping[str, Any]]], outcomes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``outcomes`` in the order a blocking registration reports ``managed``'s indexes."""
    order = {(o["collection"], o["name"]): i for i, o in enumerate(pending_outcomes(managed))}
    return sorted(outcomes, key=lambda o: order.get((o["collection"], o["name"]), len(order)))


@dataclass
class _Job:
    slug: str
    managed: Mapping[str, Any]  # every declared index (for the order of the outcomes)
    deferred: Mapping[str, Any]  # those this build reconciles
    done: list[dict[str, Any]]  # the outcomes of those reconciled before it (unique ones)
    stored: list[dict[str, Any]]  # the outcomes the record holds until this build is done
    replace: bool
    search_timeout: float | None
    previous: list[dict[str, Any]]
    number: int


class DeclaredIndexBuilds:
    """The background index builds of one engine (thread-safe)."""

    def __init__(self, engine: MongoDBEngine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._queue: dict[str, _Job] = {}  # slug -> its newest job not started yet
        self._running: _Job | None = None
        self._latest: dict[str, int] = {}  # slug -> number of its newest job
        self._counter = 0
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(
        self,
        slug: str,
        managed: Mapping[str, list[Mapping[str, Any]]],
        *,
        replace: bool = False,
        search_timeout: float | None = None,
        previous: list[dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Reconcile ``slug``'s unique indexes now and queue the others (``managed``:
        normalized ``managed_indexes``); store and return the outcomes — ``pending`` for
        the queued ones. A background build's outcomes replace exactly these, only if they
        are still in the registry: a registration since, in any process, has the last word."""
        now, later = split_constraints(managed)
        done = []
        if now:
            done = ensure_declared_indexes(
                self._engine,
                slug,
                now,
                replace=replace,
                search_timeout=search_timeout,
                previous=previous,
            )
        outcomes = in_declared_order(managed, done + pending_outcomes(later))
        # Stored before the build starts, so that the build's outcomes replace them.
        self._engine.registry.store_index_outcomes(slug, outcomes)
        if not later:
            return outcomes
        with self._cond:
            self._stopping = False  # (an engine initialized again after a shutdown)
            if len(self._queue) >= MAX_QUEUED and slug not in self._queue:
                raise RuntimeError("too many background index builds queued")
            self._counter += 1
            self._queue[slug] = _Job(
                slug, managed, later, done, outcomes, replace, search_timeout,
                list(previous or []), self._counter,
            )  # fmt: skip
            self._latest[slug] = self._counter
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="mdb-index-builds", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return outcomes

    def pending(self) -> set[str]:
        """The apps whose declared indexes are being built (or wait to be) in this process."""
        with self._cond:
            running = {self._running.slug} if self._running is not None else set()
            return set(self._queue) | running

    def wait(self, slug: str | None = None, timeout: float | None = None) -> bool:
        """Block until the builds of ``slug`` (default: every app) are done; False when
        ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                busy = set(self._queue)
                if self._running is not None:
                    busy.add(self._running.slug)
                if not busy if slug is None else slug not in busy:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def stop(self, timeout: float) -> None:
        """Drop the queued builds and wait at most ``timeout`` s for the running one."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        """Internal (the fork handler calls it): a forked child starts with no queue and no
        builder thread of the parent's."""
        self._cond = threading.Condition()
        self._queue = {}
        self._running = None
        self._latest = {}
        self._thread = None
        self._stopping = False

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stopping or not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    return
                slug = next(iter(self._queue))
                job = self._running = self._queue.pop(slug)
            try:
                self._build(job)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _build(self, job: _Job) -> None:
        try:
            built = ensure_declared_indexes(
                self._engine,
                job.slug,
                job.deferred,
                replace=job.replace,
                search_timeout=job.search_timeout,
                previous=job.previous,
            )
        except Exception as exc:  # a server gone meanwhile: report, never crash the thread
            log.warning("background index build of app %r failed: %s", job.slug, exc)
            built = [
                {**o, "status": FAILED, "error": str(exc)[:300]}
                for o in pending_outcomes(job.deferred)
            ]
        with self._cond:
            if self._latest.get(job.slug) != job.number or self._stopping:
                return  # registered again meanwhile: the newer build reports
        outcomes = in_declared_order(job.managed, job.done + built)
        try:
            self._engine.registry.store_index_outcomes(job.slug, outcomes, expected=job.stored)
        except Exception as exc:
            log.warning("could not store the index outcomes of app %r: %s", job.slug, exc)
