"""The app registry: which apps exist, their manifests and status, persisted in ``apps_config``.

The registry is the source of truth shared by every process (web workers, Celery workers,
scripts); each engine keeps a cache whose entries (and misses) are re-read after
``engine.registry_refresh_seconds``, so an app registered, deactivated or changed by another
process takes effect here within that delay; :meth:`AppRegistry.load` re-reads everything.

Registration enforces the physical half of the sandbox contract: two apps whose slugs could
produce the same physical collection name (``my`` + ``app_tasks`` vs ``my_app`` + ``tasks``)
are never both registered. The check runs before and after the write, so two processes
registering overlapping slugs at once cannot both succeed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .exceptions import AppConflictError, AppNotActiveError, AppNotFoundError, ScopeError
from .scoping.names import APPS_COLLECTION, overlapping_prefixes, validate_slug
from .signals import app_registered, app_unregistered

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .engine import MongoDBEngine

log = logging.getLogger(__name__)

ACTIVE = "active"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class AppRegistry:
    """Registered apps of one engine (thread-safe cache over ``apps_config``)."""

    def __init__(self, engine: MongoDBEngine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._apps: dict[str, dict[str, Any]] = {}
        self._fetched: dict[str, float] = {}  # slug -> monotonic time its record was read
        self._missing: dict[str, float] = {}  # slug -> monotonic time a lookup found nothing

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @property
    def collection(self) -> Collection[Any]:
        return self._engine._raw_collection(APPS_COLLECTION)

    # --- reading ------------------------------------------------------------------------------

    def load(self) -> int:
        """Replace the cache with the database's registry; return the number of active apps."""
        records = {doc["_id"]: doc for doc in self.collection.find({})}
        now = time.monotonic()
        with self._lock:
            self._apps = records
            self._fetched = dict.fromkeys(records, now)
            self._missing = {}
        return sum(1 for doc in records.values() if doc.get("status") == ACTIVE)

    def _record(self, slug: str, refresh: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        if not refresh:
            ttl = self._engine.registry_refresh_seconds
            record = self._apps.get(slug)
            if record is not None:
                if now - self._fetched.get(slug, 0.0) < ttl:
                    return record
            elif now - self._missing.get(slug, -ttl) < ttl:
                return None
        record = self.collection.find_one({"_id": slug})
        with self._lock:
            if record is None:
                self._apps.pop(slug, None)
                self._fetched.pop(slug, None)
                self._missing[slug] = now
            else:
                self._apps[slug] = record
                self._fetched[slug] = now
                self._missing.pop(slug, None)
        return record

    def get_manifest(self, slug: str) -> dict[str, Any] | None:
        record = self._record(slug)
        return dict(record["manifest"]) if record else None

    def get_record(self, slug: str) -> dict[str, Any] | None:
        """The stored registry document of ``slug`` (manifest, status, index outcomes)."""
        record = self._record(slug)
        return dict(record) if record else None

    def cached_records(self) -> list[dict[str, Any]]:
        """Copies of the cached registry documents, without touching the server (the health
        check's view when the server does not answer)."""
        with self._lock:
            return [dict(record) for record in self._apps.values()]

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._apps.values())
        return [
            dict(r["manifest"])
            for r in sorted(records, key=lambda r: r["_id"])
            if status is None or r.get("status") == status
        ]

    def slugs(self) -> list[str]:
        with self._lock:
            return sorted(self._apps)

    def slug_for_physical(self, physical: str) -> str | None:
        """The registered app owning physical collection ``physical`` (``my_app_tasks`` ->
        ``my_app``), or None. Unambiguous because overlapping slugs are never registered."""
        with self._lock:
            apps = self._apps
            for i, ch in enumerate(physical):
                if ch == "_" and physical[:i] in apps:
                    return physical[:i]
        return None

    def require_usable(self, slug: str) -> dict[str, Any]:
        """The record of an active app, registering ``slug`` implicitly when allowed.

        Raises :class:`AppNotFoundError` for an unknown slug when implicit apps are off and
        :class:`AppNotActiveError` for an inactive or archived app.
        """
        validate_slug(slug)
        record = self._record(slug)
        if record is None:
            if not self._engine.implicit_apps:
                raise AppNotFoundError(
                    f"app {slug!r} is not registered (register its manifest first)",
                    context={"app": slug},
                )
            self.register({"slug": slug, "name": slug}, create_indexes=False, implicit=True)
            record = self._record(slug, refresh=True)
            if record is None:  # unregistered again by someone else in between
                raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
        if record.get("status", ACTIVE) != ACTIVE:
            raise AppNotActiveError(
                f"app {slug!r} is {record.get('status')}, not active", context={"app": slug}
            )
        return record

    # --- writing ------------------------------------------------------------------------------

    def _conflicts(self, slug: str) -> list[str]:
        escaped = re.escape(slug)
        query = {
            "$or": [
                {"_id": {"$in": overlapping_prefixes(slug)}},
                {"_id": {"$regex": f"^{escaped}_"}},
            ]
        }
        return sorted(doc["_id"] for doc in self.collection.find(query, {"_id": 1}))

    def _raise_conflict(self, slug: str, others: list[str]) -> None:
        raise AppConflictError(
            f"app {slug!r} cannot be registered next to {', '.join(map(repr, others))}: their "
            "physical collection names could collide (e.g. 'my' + 'app_tasks' and 'my_app' + "
            "'tasks' are both 'my_app_tasks'); choose a slug that is not a '_'-separated "
            "prefix of another",
            context={"app": slug, "conflicts": others},
        )

    def _lookup(self, slug: str) -> tuple[dict[str, Any] | None, list[str]]:
        """The stored record of ``slug`` and the registered slugs that overlap it, in one
        query."""
        escaped = re.escape(slug)
        query = {
            "$or": [
                {"_id": {"$in": [slug, *overlapping_prefixes(slug)]}},
                {"_id": {"$regex": f"^{escaped}_"}},
            ]
        }
        existing = None
        others = []
        for doc in self.collection.find(query):
            if doc["_id"] == slug:
                existing = doc
            else:
                others.append(doc["_id"])
        return existing, sorted(others)

    def register(
        self,
        manifest: Mapping[str, Any],
        *,
        create_indexes: bool = True,
        implicit: bool = False,
        replace_indexes: bool = False,
        search_index_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Validate, persist and act on ``manifest``.

        Order, so that a bad manifest changes nothing: validation and the slug-collision
        check, then ``collection_settings`` (undone and raised if the server refuses one),
        then the declared indexes (outcomes reported, never raised), then one write of the
        record, then ``initial_data`` (seeded once). An unchanged re-registration writes
        nothing and sends no index or collection command besides the listings.

        Returns ``{"slug", "created", "indexes": [outcome...], "collections": [...],
        "seeded": {collection: n}}``; index outcomes are also stored in the record
        (``index_outcomes``).
        """
        from .exceptions import ManifestValidationError
        from .manifest import validate_manifest
        from .manifest.apply import apply_collection_settings, seed_initial_data

        normalized = validate_manifest(manifest)
        slug = normalized["slug"]
        try:
            validate_slug(slug)
        except ScopeError as exc:
            raise ManifestValidationError(str(exc), errors={"slug": [str(exc)]}) from exc
        existing, others = self._lookup(slug)
        if others:
            self._raise_conflict(slug, others)
        if implicit and existing is not None:
            return {"slug": slug, "created": False, "indexes": [], "collections": [], "seeded": {}}
        from .auth.demo_users import hash_demo_passwords  # the registry keeps no clear password

        normalized = hash_demo_passwords(normalized, (existing or {}).get("manifest"))
        collections: list[dict[str, Any]] = []
        if normalized.get("collection_settings"):
            collections = apply_collection_settings(
                self._engine, slug, normalized["collection_settings"]
            )
        outcomes: list[dict[str, Any]] = list((existing or {}).get("index_outcomes") or [])
        if create_indexes:
            from .indexes import ensure_declared_indexes
            from .indexes.declared import DEFAULT_SEARCH_TIMEOUT

            outcomes = ensure_declared_indexes(
                self._engine,
                slug,
                normalized.get("managed_indexes") or {},
                replace=replace_indexes,
                search_timeout=(
                    DEFAULT_SEARCH_TIMEOUT if search_index_timeout is None else search_index_timeout
                ),
                previous=outcomes,
            )
        now = _now()
        fields: dict[str, Any] = {
            "slug": slug,
            "status": normalized.get("status", ACTIVE),
            "manifest": normalized,
            "implicit": implicit,
            "index_outcomes": outcomes,
        }
        changed = existing is None or any(existing.get(k) != v for k, v in fields.items())
        record = {**(existing or {"_id": slug, "registered_at": now}), **fields}
        if changed:
            record["updated_at"] = now
            self.collection.update_one(
                {"_id": slug},
                {"$set": {**fields, "updated_at": now}, "$setOnInsert": {"registered_at": now}},
                upsert=True,
            )
            others = self._conflicts(slug)
            if others:
                # Another process registered an overlapping slug meanwhile: undo our write.
                if existing is None:
                    self.collection.delete_one({"_id": slug})
                else:
                    self.collection.replace_one({"_id": slug}, existing)
                self._raise_conflict(slug, others)
        seeded: dict[str, int] = {}
        if normalized.get("initial_data"):
            seeded = seed_initial_data(
                self._engine,
                slug,
                normalized["initial_data"],
                self.collection,
                record.get("seeded"),
            )
            if seeded or not record.get("seeded"):
                record = self.collection.find_one({"_id": slug}) or record
        with self._lock:
            self._apps[slug] = record
            self._fetched[slug] = time.monotonic()
            self._missing.pop(slug, None)
        result = {
            "slug": slug,
            "created": existing is None,
            "indexes": outcomes,
            "collections": collections,
            "seeded": seeded,
        }
        app_registered.send(self._engine, slug=slug, manifest=normalized, result=result)
        log.info("registered app %r%s", slug, " (implicit)" if implicit else "")
        return result

    def store_index_outcomes(
        self,
        slug: str,
        outcomes: list[dict[str, Any]],
        *,
        expected: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Record ``outcomes`` as ``slug``'s index outcomes (a background build's); with
        ``expected``, only while the record still holds exactly those (a registration
        since, in any process, is not overwritten). True if stored."""
        query: dict[str, Any] = {"_id": slug}
        if expected is not None:
            query["index_outcomes"] = expected
        stored = self.collection.update_one(query, {"$set": {"index_outcomes": outcomes}})
        if stored.matched_count:
            with self._lock:
                record = self._apps.get(slug)
                if record is not None:
                    self._apps[slug] = {**record, "index_outcomes": outcomes}
        return bool(stored.matched_count)

    def unregister(self, slug: str) -> bool:
        deleted = self.collection.delete_one({"_id": slug}).deleted_count == 1
        with self._lock:
            self._apps.pop(slug, None)
            self._fetched.pop(slug, None)
            self._missing[slug] = time.monotonic()
        if deleted:
            app_unregistered.send(self._engine, slug=slug)
        return deleted
