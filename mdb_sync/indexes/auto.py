"""Query-driven indexing: the AutoIndexManager.

Every scoped query (``find``, ``find_one``, ``count_documents``...) reports its filter and
sort to :meth:`AutoIndexManager.observe`, on the caller's thread. From them the manager
derives the index the ESR rule would choose — ``app_id``, then the equality fields, then
the sort fields, then the range fields — and counts how often each such *shape* is seen, for
the whole engine (every scoped database of the app, every thread). When a shape reaches the
threshold (default 3) its index is built **in a background thread**: never on the query's
thread, never twice, never when an existing index already serves it (the desired keys are
a prefix of that index), and at most ``max_per_collection`` (default 10) automatic indexes
per collection. Automatic indexes are named ``mdb_auto_<keys>``.

The per-query cost is a walk over the filter's top-level keys, a tuple and a dict update
(see ``benchmarks/registration.py``); no lock is taken until a shape crosses the threshold,
and nothing touches the network. Turn it off per app (manifest ``"auto_index": false``) or
per scoped database (``get_scoped_db(slug, auto_index=False)``); tune it per app with
``"auto_index": {"threshold": 5, "max_indexes_per_collection": 3}`` or per engine with
:meth:`AutoIndexManager.configure`.

Shapes are also saved (counts only, never values) in the ``mdb_query_shapes`` collection,
every ``flush_interval`` seconds and at shutdown, so ``mdb indexes suggest`` can show what
an app's queries would like indexed, across processes and restarts.

Field and collection names can come from users, so both tables are bounded. In memory: at
most ``max_shapes_per_collection`` (100) shapes per collection, ``max_shapes_per_app``
(1,000) per app and ``max_shapes`` (10,000) in all; a new shape over a bound evicts the
least-seen tenth of that collection's, app's or process's shapes (never one whose index is
being built). Stored: at most ``max_shapes_per_app`` documents per app (checked when new
shapes are saved, so several processes may overshoot it by one flush each), and each
document expires ``shape_ttl`` seconds (7 days) after its shape was last seen (a TTL index,
and a sweep at each save); in memory too, a shape unseen for ``shape_ttl`` is forgotten.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pymongo
from bson import Decimal128, ObjectId, Regex
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from .. import storage
from ..signals import index_created, index_failed
from .declared import CONFLICT, classify, error_message
from .spec import APP_ID, AUTO_PREFIX

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

#: Engine-internal collection of observed query shapes (named ``mdb.query_shapes`` before:
#: migrated on first use, see :mod:`mdb_sync.storage`).
SHAPES_COLLECTION = storage.QUERY_SHAPES
DEFAULT_THRESHOLD = 3
DEFAULT_MAX_PER_COLLECTION = 10
#: Bounds of the shape tables (see the module docstring).
DEFAULT_MAX_SHAPES_PER_COLLECTION = 100
DEFAULT_MAX_SHAPES_PER_APP = 1_000
DEFAULT_MAX_SHAPES = 10_000
DEFAULT_SHAPE_TTL = 7 * 24 * 3600.0
#: Share of a full scope's shapes evicted at once (amortises the scan over many admissions).
_EVICT_SHARE = 0.1
#: Longest automatic index (fields, including app_id).
MAX_FIELDS = 8

_EQUALITY_OPS = frozenset({"$eq", "$in"})
_RANGE_OPS = frozenset({"$gt", "$gte", "$lt", "$lte"})
_STOP = object()

Shape = tuple[tuple[str, ...], tuple[tuple[str, int], ...], tuple[str, ...]]


def query_shape(user_filter: Any, sort: Any) -> Shape | None:
    """``(equality fields, sort pairs, range fields)`` of a query, or None when no index
    would help (no fields, an ``_id`` lookup, only operators an index cannot serve).

    Only top-level fields are considered; ``$or``/``$and``/``$text``/``$expr`` and
    operators like ``$ne``, ``$exists`` or geo queries are left to declared indexes.
    """
    eq: list[str] = []
    rng: list[str] = []
    if user_filter:
        for field, value in user_filter.items():
            if field == APP_ID or field[:1] == "$":
                continue
            kind = _SCALAR_KIND if type(value) in _SCALARS else _kind(value)
            if kind is None:
                continue
            if field == "_id":
                if kind is _SCALAR_KIND:
                    return None  # served by the _id index
                continue
            (eq if kind is _SCALAR_KIND else rng).append(field)
    pairs: list[tuple[str, int]] = []
    if sort:
        for field, direction in sort.items():
            ok = direction.__class__ is int and direction in (1, -1)
            if ok and field not in eq and field != APP_ID:
                pairs.append((field, direction))
    if not eq and not pairs and not rng:
        return None
    if rng and pairs:
        sorted_fields = {f for f, _ in pairs}
        rng = [f for f in rng if f not in sorted_fields]
    return (
        tuple(sorted(eq)) if len(eq) > 1 else tuple(eq),
        tuple(pairs),
        tuple(sorted(rng)) if len(rng) > 1 else tuple(rng),
    )


_SCALAR_KIND = "eq"
_SCALARS = frozenset({str, int, float, bool, type(None), ObjectId, datetime, Decimal128, UUID})


def _kind(value: Any) -> str | None:
    """``"eq"``, ``"range"`` or None (no index helps) for a non-scalar filter value."""
    if isinstance(value, Mapping):
        if not value:
            return _SCALAR_KIND
        first = next(iter(value))
        if not isinstance(first, str) or first[:1] != "$":
            return _SCALAR_KIND  # an embedded-document equality
        ops = value.keys()
        if ops <= _EQUALITY_OPS:
            return _SCALAR_KIND
        if ops & _RANGE_OPS or str(value.get("$regex", "")).startswith("^"):
            return "range"
        return None
    if isinstance(value, (re.Pattern, Regex)):
        return "range" if str(value.pattern).startswith("^") else None
    return _SCALAR_KIND


def shape_keys(shape: Shape) -> list[tuple[str, int]]:
    """The ESR index of a shape: ``app_id``, equality fields, sort fields, range fields."""
    eq, pairs, rng = shape
    keys = [(APP_ID, 1), *((f, 1) for f in eq), *pairs, *((f, 1) for f in rng)]
    return keys[:MAX_FIELDS]


def auto_index_name(keys: list[tuple[str, Any]]) -> str:
    name = AUTO_PREFIX + "_".join(f"{k}_{v}" for k, v in keys)
    if len(name) > 120:
        name = name[:100] + "_" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def serves(existing: list[tuple[str, Any]], wanted: list[tuple[str, int]], shape: Shape) -> bool:
    """True when an index with keys ``existing`` serves the query ``shape`` (``wanted`` being
    its ESR keys): its first keys are ``app_id``, the equality fields in any order, the sort
    fields in order (all in the same or all in the opposite direction), then the range
    fields in any order."""
    if len(existing) < len(wanted):
        return False
    head = existing[: len(wanted)]
    if any(not isinstance(d, (int, float)) or isinstance(d, bool) for _, d in head):
        return False  # text, hashed and geo keys
    names = [f for f, _ in head]
    want = [f for f, _ in wanted]
    eq, pairs, _ = shape
    end_eq = min(len(wanted), 1 + len(eq))
    end_sort = min(len(wanted), end_eq + len(pairs))
    if names[0] != APP_ID or sorted(names[1:end_eq]) != sorted(want[1:end_eq]):
        return False
    if names[end_eq:end_sort] != want[end_eq:end_sort]:
        return False
    sort_part = zip(head[end_eq:end_sort], wanted[end_eq:end_sort], strict=True)
    signs = {int(d) * w for (_, d), (_, w) in sort_part}
    if len(signs) > 1:
        return False  # mixed: neither the same order nor its reverse
    return sorted(names[end_sort:]) == sorted(want[end_sort:])


def _usable(info: Mapping[str, Any]) -> bool:
    """Indexes the planner can use for any query of the shape (not partial, sparse, hidden
    or with a collation the query may not share)."""
    return not any(
        info.get(k) for k in ("partialFilterExpression", "sparse", "hidden", "collation")
    )


class AutoIndexManager:
    """Counts query shapes and builds their indexes in the background (see module doc)."""

    def __init__(
        self,
        engine: MongoDBEngine,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        max_per_collection: int = DEFAULT_MAX_PER_COLLECTION,
        flush_interval: float = 30.0,
        persist: bool = True,
        flush_timeout: float = 5.0,
    ) -> None:
        self._engine = engine
        self.threshold = threshold
        self.max_per_collection = max_per_collection
        self.flush_interval = flush_interval
        self.persist = persist
        #: Longest a periodic flush waits for the server (seconds).
        self.flush_timeout = flush_timeout
        self._stop_timeout = flush_timeout
        self.max_shapes_per_collection = DEFAULT_MAX_SHAPES_PER_COLLECTION
        self.max_shapes_per_app = DEFAULT_MAX_SHAPES_PER_APP
        self.max_shapes = DEFAULT_MAX_SHAPES
        self.shape_ttl = DEFAULT_SHAPE_TTL
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts: dict[tuple[str, str, Shape], int] = {}
        self._flushed: dict[tuple[str, str, Shape], int] = {}
        #: Stored shapes forgotten here since the last flush (their ``_id``), to delete.
        self._unstore: set[str] = set()
        self._state: dict[tuple[str, str, Shape], str] = {}
        # Bookkeeping of the bounds: shapes per (app, collection) and per app (recounted at
        # each eviction and expiry), and per shape (count at the last expiry pass, since when).
        self._per_collection: dict[tuple[str, str], int] = {}
        self._per_app: dict[str, int] = {}
        self._marks: dict[tuple[str, str, Shape], tuple[int, float]] = {}
        self._stored_indexes = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0

    def configure(
        self,
        *,
        threshold: int | None = None,
        max_per_collection: int | None = None,
        max_shapes_per_collection: int | None = None,
        max_shapes_per_app: int | None = None,
        max_shapes: int | None = None,
        shape_ttl: float | None = None,
    ) -> None:
        """Change the engine-wide defaults (an app's manifest may override the first two)
        and the bounds of the shape tables (see the module docstring)."""
        for name, value in (
            ("max_shapes_per_collection", max_shapes_per_collection),
            ("max_shapes_per_app", max_shapes_per_app),
            ("max_shapes", max_shapes),
            ("shape_ttl", shape_ttl),
        ):
            if value is not None:
                if value <= 0:
                    raise ValueError(f"{name} must be positive")
                setattr(self, name, value)
        if threshold is not None:
            if threshold < 1:
                raise ValueError("threshold must be at least 1")
            self.threshold = threshold
        if max_per_collection is not None:
            if max_per_collection < 0:
                raise ValueError("max_per_collection must be >= 0")
            self.max_per_collection = max_per_collection

    # --- the query path (caller's thread: keep it cheap) --------------------------------------

    def _settings(self, slug: str) -> tuple[int, int] | None:
        record = self._engine.catalog.cached(slug)
        flag = record.manifest.get("auto_index", True) if record else True
        if flag is True:  # the common case, without building anything
            return self.threshold, self.max_per_collection
        assert record is not None  # no record: the flag is True
        settings = record.typed_manifest.auto_index
        if not settings.enabled:
            return None
        return (
            self.threshold if settings.threshold is None else settings.threshold,
            self.max_per_collection
            if settings.max_indexes_per_collection is None
            else settings.max_indexes_per_collection,
        )

    def observe(
        self, slug: str, collection: str, raw: Collection[Any], user_filter: Any, sort: Any
    ) -> None:
        """Count one query; queue its index when the shape reaches the threshold."""
        settings = self._settings(slug)
        if settings is None:
            return
        shape = query_shape(user_filter, sort)
        if shape is None:
            return
        key = (slug, collection, shape)
        counts = self._counts
        count = counts.get(key)
        if count is None:
            if not self._admit(key):
                return
            count = 0
        count += 1
        counts[key] = count  # unlocked: a lost increment under a race only delays a build
        if count < settings[0] or key in self._state:
            return
        with self._lock:
            if key in self._state:
                return
            self._state[key] = "queued"
            self._pending += 1
            self._idle.clear()
        self._submit((key, raw, settings[1]))

    # --- the background thread ---------------------------------------------------------------

    def _submit(self, job: Any) -> None:
        self._queue.put(job)
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="mdb-auto-index", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                job = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                job = None
            if job is _STOP:
                self.flush(timeout=self._stop_timeout)
                return
            if job is not None:
                try:
                    self._build(*job)
                except Exception:  # pragma: no cover - never let the thread die
                    log.exception("automatic index build failed")
                finally:
                    with self._lock:
                        self._pending -= 1
                        if self._pending <= 0:
                            self._pending = 0
                            self._idle.set()
            if time.monotonic() - last_flush >= self.flush_interval:
                last_flush = time.monotonic()
                self.flush()

    def _build(self, key: tuple[str, str, Shape], raw: Collection[Any], limit: int) -> None:
        slug, collection, shape = key
        keys = shape_keys(shape)
        try:
            existing = raw.index_information()
        except PyMongoError as exc:
            self._finish(key, "failed")
            log.warning("auto index for %s.%s: cannot list indexes: %s", slug, collection, exc)
            return
        for info in existing.values():
            if _usable(info) and serves(list(info.get("key", [])), keys, shape):
                self._finish(key, "served")
                return
        autos = sum(1 for name in existing if name.startswith(AUTO_PREFIX))
        if autos >= limit:
            self._finish(key, "limit")
            log.info(
                "auto index for %s.%s not built: %d automatic indexes already (limit %d)",
                slug,
                collection,
                autos,
                limit,
            )
            return
        name = auto_index_name(keys)
        try:
            raw.create_index(keys, name=name)
        except PyMongoError as exc:
            if classify(exc) == CONFLICT:  # built meanwhile (another process) or same keys
                self._finish(key, "served")
                return
            self._finish(key, "failed")
            self._engine.metrics.increment("index.auto_failed", slug=slug)
            index_failed.send(
                self._engine,
                slug=slug,
                collection=collection,
                name=name,
                error=error_message(exc),
                status="failed",
            )
            log.warning("auto index %r on %s.%s failed: %s", name, slug, collection, exc)
            return
        self._finish(key, "created")
        self._engine.metrics.increment("index.auto_created", slug=slug)
        index_created.send(
            self._engine, slug=slug, collection=collection, name=name, keys=keys, auto=True
        )
        log.info("auto index %r created on %s.%s", name, slug, collection)

    def _finish(self, key: tuple[str, str, Shape], state: str) -> None:
        with self._lock:
            self._state[key] = state

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until queued builds are done (for tests, scripts and benchmarks)."""
        return self._idle.wait(timeout)

    # --- introspection and persistence ---------------------------------------------------------

    def shapes(self, slug: str | None = None) -> list[dict[str, Any]]:
        """The shapes seen by this process: app, collection, ESR keys, count, state."""
        with self._lock:
            counts = dict(self._counts)
            states = dict(self._state)
        return [
            {
                "slug": s,
                "collection": c,
                "keys": [[k, d] for k, d in shape_keys(shape)],
                "count": n,
                "state": states.get((s, c, shape), "observed"),
            }
            for (s, c, shape), n in sorted(counts.items(), key=lambda kv: -kv[1])
            if slug is None or s == slug
        ]

    def cache_info(self) -> dict[str, dict[str, int]]:
        """``query_shapes`` (all counted shapes), ``query_shapes_per_app`` and
        ``query_shapes_per_collection`` (the fullest app / collection), with their bounds."""
        with self._lock:
            return {
                "query_shapes": {"size": len(self._counts), "limit": self.max_shapes},
                "query_shapes_per_app": {
                    "size": max(self._per_app.values(), default=0),
                    "limit": self.max_shapes_per_app,
                },
                "query_shapes_per_collection": {
                    "size": max(self._per_collection.values(), default=0),
                    "limit": self.max_shapes_per_collection,
                },
            }

    def flush(self, timeout: float | None = None) -> None:
        """Save the shape counts seen since the last flush in ``mdb.query_shapes``, waiting
        at most ``timeout`` seconds (default :attr:`flush_timeout`) for the server; skipped
        while the client knows no server it could write to (a server that is down costs
        nothing, a stalled one at most the timeout)."""
        self._expire()
        if not self.persist or not self._engine.is_initialized:
            return
        with self._flush_lock:
            try:
                if not self._engine.client.topology_description.has_writable_server():
                    log.debug("query shapes not saved: no server is known to be up")
                    return
            except PyMongoError:
                return
            with pymongo.timeout(timeout or self.flush_timeout):
                self._flush()

    def _flush(self) -> None:
        ops = []
        written: list[tuple[tuple[str, str, Shape], int, str]] = []
        now = _dt.datetime.now(_dt.timezone.utc)
        stored = self._engine.storage.system(SHAPES_COLLECTION)
        with self._lock:
            forgotten, self._unstore = self._unstore, set()
            counts = dict(self._counts)
        try:
            if forgotten:
                stored.delete_many({"_id": {"$in": sorted(forgotten)}})
            room = self._stored_room(stored, counts, now)
        except PyMongoError as exc:
            log.debug("could not save query shapes: %s", exc)
            return
        for key, count in counts.items():
            delta = count - self._flushed.get(key, 0)
            if delta <= 0:
                continue
            slug, collection, shape = key
            if key not in self._flushed:
                if room.get(slug, 0) <= 0:
                    continue  # the app's stored shapes are at their bound
                room[slug] -= 1
            keys = shape_keys(shape)
            stored_id = f"{slug}:{collection}:{auto_index_name(keys)}"
            ops.append(
                UpdateOne(
                    {"_id": stored_id},
                    {
                        "$inc": {"count": delta},
                        "$set": {
                            "slug": slug,
                            "collection": collection,
                            "keys": [[k, d] for k, d in keys],
                            "shape": [list(shape[0]), [list(p) for p in shape[1]], list(shape[2])],
                            "last_seen": now,
                            "expires_at": now + _dt.timedelta(seconds=self.shape_ttl),
                        },
                    },
                    upsert=True,
                )
            )
            written.append((key, count, stored_id))
        if not ops:
            return
        with self._lock:
            for key, count, stored_id in written:
                if key in self._counts:
                    self._flushed[key] = count
                elif len(self._unstore) < self.max_shapes:
                    self._unstore.add(stored_id)  # forgotten meanwhile: deleted next time
        try:
            stored.bulk_write(ops, ordered=False)
        except PyMongoError as exc:
            log.debug("could not save query shapes: %s", exc)

    # --- bounds ----------------------------------------------------------------------------------

    def _admit(self, key: tuple[str, str, Shape]) -> bool:
        """Start counting a new shape, evicting the least-seen ones of a full scope first;
        False (the query is not counted) when nothing can be evicted."""
        slug, collection, _ = key
        with self._lock:
            if key in self._counts:
                return True
            scope = self._full_scope(slug, collection)
            while scope is not None and self._evict(scope):  # each pass removes shapes
                scope = self._full_scope(slug, collection)
            if scope is None:
                self._counts[key] = 0
                per_coll = (slug, collection)
                self._per_collection[per_coll] = self._per_collection.get(per_coll, 0) + 1
                self._per_app[slug] = self._per_app.get(slug, 0) + 1
                return True
        # Every shape of the full scope has its index being built: this one is not counted.
        self._engine.metrics.increment("index.shapes_dropped", slug=slug)
        return False

    def _full_scope(self, slug: str, collection: str) -> tuple[str | None, str | None] | None:
        """The scope a new shape of ``slug``/``collection`` would overflow: ``(slug,
        collection)``, ``(slug, None)``, ``(None, None)`` (everything), or None."""
        if self._per_collection.get((slug, collection), 0) >= self.max_shapes_per_collection:
            return (slug, collection)
        if self._per_app.get(slug, 0) >= self.max_shapes_per_app:
            return (slug, None)
        if len(self._counts) >= self.max_shapes:
            return (None, None)
        return None

    def _evict(self, scope: tuple[str | None, str | None]) -> bool:
        """Forget the least-seen tenth of ``scope``'s shapes (caller holds the lock)."""
        slug, collection = scope
        candidates = [
            (count, key)
            for key, count in self._counts.items()
            if (slug is None or key[0] == slug)
            and (collection is None or key[1] == collection)
            and self._state.get(key) != "queued"
        ]
        if not candidates:
            return False
        candidates.sort(key=lambda item: item[0])
        for _, key in candidates[: max(1, int(len(candidates) * _EVICT_SHARE))]:
            self._forget(key)
        self._recount()
        return True

    def _forget(self, key: tuple[str, str, Shape]) -> None:
        """Forget ``key`` here and, at the next flush, in the stored shapes (caller holds the
        lock): what is stored never outgrows what is counted."""
        if key in self._flushed and len(self._unstore) < self.max_shapes:
            slug, collection, shape = key
            self._unstore.add(f"{slug}:{collection}:{auto_index_name(shape_keys(shape))}")
        tables: tuple[dict[Any, Any], ...] = (self._counts, self._flushed, self._state, self._marks)
        for table in tables:
            table.pop(key, None)

    def _recount(self) -> None:
        per_collection: dict[tuple[str, str], int] = {}
        per_app: dict[str, int] = {}
        for slug, collection, _ in list(self._counts):
            per_collection[(slug, collection)] = per_collection.get((slug, collection), 0) + 1
            per_app[slug] = per_app.get(slug, 0) + 1
        self._per_collection, self._per_app = per_collection, per_app

    def _expire(self) -> None:
        """Forget shapes whose count has not moved for ``shape_ttl`` seconds."""
        now = time.monotonic()
        with self._lock:
            marks = self._marks
            expired = []
            for key, count in list(self._counts.items()):
                mark = marks.get(key)
                if mark is None or mark[0] != count:
                    marks[key] = (count, now)
                elif now - mark[1] > self.shape_ttl and self._state.get(key) != "queued":
                    expired.append(key)
            for key in expired:
                self._forget(key)
            if expired:
                self._recount()

    def _stored_room(
        self, stored: Collection[Any], counts: dict[tuple[str, str, Shape], int], now: datetime
    ) -> dict[str, int]:
        """How many new shapes each app may still store, after removing expired ones (the
        TTL index does it too, but only once a minute or so)."""
        if not self._stored_indexes:
            stored.update_many(  # shapes saved before they had an expiry
                {"expires_at": {"$exists": False}},
                {"$set": {"expires_at": now + _dt.timedelta(seconds=self.shape_ttl)}},
            )
            self._stored_indexes = True
        stored.delete_many({"expires_at": {"$lt": now}})
        new = {key[0] for key in counts if key not in self._flushed}
        return {
            slug: self.max_shapes_per_app - stored.count_documents({"slug": slug})
            for slug in sorted(new)
        }

    # --- lifecycle -------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Finish queued builds, save the shapes and stop the thread, within ``timeout``
        seconds: a build or flush still waiting on the server then is abandoned (the thread
        is a daemon; the engine's shutdown closes its client)."""
        self._stop_timeout = timeout
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)
        else:
            self.flush(timeout=timeout)
        self._thread = None

    def after_fork_in_child(self) -> None:
        # The parent's thread and queued jobs do not exist here; start afresh.
        self._reset()
