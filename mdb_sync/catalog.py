"""The app catalog: the only owner of the registry collection (``apps_config``).

Every process (web workers, Celery workers, scripts) shares the registry; the catalog is one
engine's view of it. It hands out :class:`AppRecord` objects — frozen, typed, with a
``version`` stored in the document and bumped atomically (``$inc``) by every write of the
record — and keeps them in a per-process cache whose entries (and misses) are re-read after
``engine.registry_refresh_seconds``; :meth:`AppCatalog.load` re-reads everything.

The version is what everything derived from a manifest is keyed by
(:mod:`mdb_sync.app_services`): a change written by any process bumps it, so a process sees
the change — and rebuilds what it derived — as soon as its cache reads the record again. A
record also carries an ``incarnation`` (a fresh ObjectId at each first registration), so an
app unregistered and registered again never reuses the version of its former self.

Nothing else writes ``apps_config``: the registration workflow
(:mod:`mdb_sync.registration`), index outcomes and seed claims go through the methods here,
each of which bumps the version. :meth:`AppCatalog.compare_and_set` writes only when the
record still has the version the caller read (the lost-update guard of read-modify-write
changes such as :func:`mdb_sync.schema.apply_schema`).

The cache of slugs found *not* registered is bounded (:data:`MISSING_CACHE_SIZE` entries,
oldest dropped first), so requests naming ever new slugs cannot grow it; registered apps are
cached in full (they are what was registered).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from .manifest.model import Manifest

if TYPE_CHECKING:
    from pymongo.collection import Collection
    from pymongo.results import DeleteResult, UpdateResult

#: Status of a usable app.
ACTIVE = "active"
#: At most this many slugs found unregistered are remembered (for ``registry_refresh_seconds``).
MISSING_CACHE_SIZE = 1024

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class AppRecord:
    """One registered app as the registry stores it, read-only.

    ``version`` changes on every write of the record (by any process); ``key`` —
    ``(slug, incarnation, version, revision)`` — identifies this exact state of the app,
    which is what per-app caches are keyed by. ``revision`` is this process's count of
    changed documents read for the app: a document changed without a version bump (by an
    older release or by hand) still makes a new key. ``manifest`` is the validated
    manifest (a read-only view: copy it to change it, then register the copy).
    """

    slug: str
    version: int
    incarnation: str
    status: str
    manifest: Mapping[str, Any] = field(repr=False)
    implicit: bool = False
    claim: Mapping[str, Any] | None = field(default=None, repr=False)
    revision: int = 0
    _document: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AppRecord:
        """The record of registry document ``doc`` (older documents without a version or
        an incarnation read as version 0 of incarnation ``""``)."""
        document = dict(doc)
        claim = document.get("claim")
        return cls(
            slug=str(document["_id"]),
            version=int(document.get("version") or 0),
            incarnation=str(document.get("incarnation") or ""),
            status=str(document.get("status") or ACTIVE),
            manifest=MappingProxyType(document.get("manifest") or {}),
            implicit=bool(document.get("implicit")),
            claim=MappingProxyType(claim) if isinstance(claim, dict) else None,
            _document=MappingProxyType(document),
        )

    @property
    def key(self) -> tuple[str, str, int, int]:
        """``(slug, incarnation, version, revision)``: this state of the app."""
        return (self.slug, self.incarnation, self.version, self.revision)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE and self.claim is None

    @functools.cached_property
    def typed_manifest(self) -> Manifest:
        """The manifest as a frozen, typed :class:`~mdb_sync.manifest.model.Manifest`
        (built on first use, once per record)."""
        return Manifest.from_dict(self.manifest, validate=False)

    def get(self, name: str, default: Any = None) -> Any:
        """A field of the stored document (``registered_at``, ``seeded``...)."""
        return self._document.get(name, default)

    def to_document(self) -> dict[str, Any]:
        """The registry document, as a new dict (top level copied: change the copy, not
        what it holds)."""
        return dict(self._document)


class AppCatalog:
    """The registered apps of one engine: a thread-safe cache over ``apps_config`` and the
    only code that writes it.

    :param collection: returns the registry collection (the engine's current client).
    :param refresh_seconds: returns how long a cached record is trusted.
    """

    def __init__(
        self, collection: Callable[[], Collection[Any]], refresh_seconds: Callable[[], float]
    ) -> None:
        self._collection = collection
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._records: dict[str, AppRecord] = {}
        self._fetched: dict[str, float] = {}  # slug -> monotonic time its record was read
        self._missing: dict[str, float] = {}  # slug -> monotonic time a lookup found nothing

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @property
    def collection(self) -> Collection[Any]:
        """The registry collection (for reads the catalog has no method for; write through
        the catalog)."""
        return self._collection()

    # --- reading ------------------------------------------------------------------------------

    def load(self) -> int:
        """Replace the cache with the database's registry; return the number of active apps."""
        fresh = {doc["_id"]: AppRecord.from_document(doc) for doc in self.collection.find({})}
        now = time.monotonic()
        with self._lock:
            records = {slug: self._keep(slug, record) for slug, record in fresh.items()}
            self._records = records
            self._fetched = dict.fromkeys(records, now)
            self._missing = {}
        return sum(1 for record in records.values() if record.status == ACTIVE)

    def _keep(self, slug: str, record: AppRecord) -> AppRecord:
        """``record``, or the cached object when the stored record is unchanged (so what is
        keyed by the object is not rebuilt at every refresh). Caller holds the lock."""
        cached = self._records.get(slug)
        if cached is None:
            return record
        if cached.to_document() == record.to_document():
            return cached
        return replace(record, revision=cached.revision + 1)

    def get(self, slug: str, refresh: bool = False) -> AppRecord | None:
        """The record of ``slug``: cached, read again once older than
        ``registry_refresh_seconds`` (or at once with ``refresh``); None if unregistered."""
        now = time.monotonic()
        if not refresh:
            ttl = self._refresh_seconds()
            record = self._records.get(slug)
            if record is not None:
                if now - self._fetched.get(slug, 0.0) < ttl:
                    return record
            elif now - self._missing.get(slug, -ttl) < ttl:
                return None
        doc = self.collection.find_one({"_id": slug})
        with self._lock:
            if doc is None:
                self._records.pop(slug, None)
                self._fetched.pop(slug, None)
                self._remember_missing(slug, now)
                return None
            record = self._keep(slug, AppRecord.from_document(doc))
            self._records[slug] = record
            self._fetched[slug] = now
            self._missing.pop(slug, None)
        return record

    def cached(self, slug: str) -> AppRecord | None:
        """The cached record of ``slug``, never a query (for code on every operation's path
        or inside a pymongo listener)."""
        return self._records.get(slug)

    def records(self) -> list[AppRecord]:
        """Every cached record, by slug (no I/O)."""
        with self._lock:
            records = list(self._records.values())
        return sorted(records, key=lambda r: r.slug)

    def slugs(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    def slug_for_physical(self, physical: str) -> str | None:
        """The registered app owning physical collection ``physical`` (``my_app_tasks`` ->
        ``my_app``), or None. Unambiguous because overlapping slugs are never registered."""
        records = self._records
        for i, ch in enumerate(physical):
            if ch == "_" and physical[:i] in records:
                return physical[:i]
        return None

    def cache_info(self) -> dict[str, dict[str, int]]:
        """Sizes of this process's registry cache: ``registered_apps`` (every app read or
        registered here; limit 0: bounded by the registry itself) and ``unknown_slugs``."""
        with self._lock:
            return {
                "registered_apps": {"size": len(self._records), "limit": 0},
                "unknown_slugs": {"size": len(self._missing), "limit": MISSING_CACHE_SIZE},
            }

    def _remember_missing(self, slug: str, now: float) -> None:
        """Note that ``slug`` is not registered (caller holds the lock). Oldest first out: the
        cache never holds more than :data:`MISSING_CACHE_SIZE` slugs, whatever is asked."""
        missing = self._missing
        missing.pop(slug, None)
        missing[slug] = now
        while len(missing) > MISSING_CACHE_SIZE:
            del missing[next(iter(missing))]

    def remember(self, doc: Mapping[str, Any]) -> AppRecord:
        """Put a document this process just wrote (or read) into the cache."""
        record = AppRecord.from_document(doc)
        with self._lock:
            record = self._keep(record.slug, record)
            self._records[record.slug] = record
            self._fetched[record.slug] = time.monotonic()
            self._missing.pop(record.slug, None)
        return record

    def forget(self, slug: str) -> None:
        """Drop ``slug`` from the cache and remember it as unregistered."""
        with self._lock:
            self._records.pop(slug, None)
            self._fetched.pop(slug, None)
            self._remember_missing(slug, time.monotonic())

    # --- writing (every write bumps the version) ----------------------------------------------

    def insert_new(self, slug: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Insert the first record of ``slug`` (version 1, a new incarnation); raises
        ``DuplicateKeyError`` when a record of ``slug`` exists. Returns the document."""
        doc = {"_id": slug, "slug": slug, **fields, "version": 1, "incarnation": str(ObjectId())}
        self.collection.insert_one(doc)
        return doc

    def update(
        self,
        slug: str,
        where: Mapping[str, Any],
        change: Mapping[str, Any],
    ) -> UpdateResult:
        """Apply update ``change`` (``$set``, ``$unset``, ``$push``...) to the record of
        ``slug`` if it matches ``where``, bumping its version in the same write."""
        update = {k: dict(v) for k, v in change.items()}
        update.setdefault("$inc", {})["version"] = 1
        return self.collection.update_one({**where, "_id": slug}, update)

    def compare_and_set(
        self, slug: str, version: int, change: Mapping[str, Any], where: Mapping[str, Any] = _EMPTY
    ) -> UpdateResult:
        """:meth:`update` only if the record still has ``version`` (``matched_count`` 0
        when another write came first)."""
        return self.update(slug, {**where, **version_filter(version)}, change)

    def delete(self, slug: str, where: Mapping[str, Any] = _EMPTY) -> DeleteResult:
        """Delete the record of ``slug`` if it matches ``where``."""
        return self.collection.delete_one({**where, "_id": slug})


def version_filter(version: int) -> dict[str, Any]:
    """The filter matching a record at ``version`` (0: a document written before records
    had versions)."""
    if version == 0:
        return {"version": {"$in": [0, None]}}
    return {"version": version}
