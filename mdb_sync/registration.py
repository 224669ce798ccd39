"""The registration workflow: validate, claim, collection settings, indexes, record, seed.

:meth:`Registration.register` is what ``engine.register_app`` (and ``engine.registry``'s
``register``) runs; :meth:`Registration.update_manifest` is the read-modify-write path for
changes computed from the current manifest (``mdb_sync.schema.apply_schema``): it registers
the changed manifest only if the record still has the version it was computed from, and
computes it again otherwise, so two concurrent changes of one app never lose one another.
Every write of the record goes through the :class:`~mdb_sync.catalog.AppCatalog`.

Registration enforces the physical half of the sandbox contract: two apps whose slugs could
produce the same physical collection name (``my`` + ``app_tasks`` vs ``my_app`` + ``tasks``)
are never both registered, even when processes register them at the same moment: a new slug
is claimed under a per-segment lock (see :mod:`mdb_sync.registry_claims`), so exactly one of
two overlapping registrations wins and the other gets :class:`AppConflictError` naming it;
of two registrations of the same new slug exactly one reports ``created: True``. Every
look-up by slug is an indexed query (``_id`` equality, ``$in`` or range), so registration
costs the same whatever the size of the registry.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, PyMongoError

from .catalog import ACTIVE, AppCatalog, AppRecord
from .exceptions import (
    AppConflictError,
    AppNotActiveError,
    AppNotFoundError,
    AppVersionConflictError,
    ManifestValidationError,
    ScopeError,
)
from .indexes.declared import CREATED, DEFAULT_SEARCH_TIMEOUT, EXISTS, ensure_declared_indexes
from .manifest import validate_manifest
from .manifest.apply import apply_collection_settings, seed_initial_data
from .registry_claims import (
    CLAIM_STALE_SECONDS,
    LOCKS_COLLECTION,
    REGISTERING,
    abandoned,
    claim_of,
    describe,
    let_go,
    new_holder,
    segment_lock,
    still_held,
)
from .scoping.names import APPS_COLLECTION, overlapping_prefixes, validate_slug
from .signals import app_registered, app_unregistered

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .engine import MongoDBEngine

log = logging.getLogger(__name__)

#: How long a registration waits for another process's first registration of the same slug.
REGISTRATION_WAIT_SECONDS = 60.0
#: How long a look-up (``get_scoped_db``, a request) waits for an app still being registered.
USE_WAIT_SECONDS = 5.0
#: Overlapping slugs named in an AppConflictError (the query stops there).
MAX_REPORTED_CONFLICTS = 10
#: How often :meth:`Registration.update_manifest` computes its change again when other
#: writes keep coming first.
UPDATE_ATTEMPTS = 20


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _created_earlier(
    earlier: list[dict[str, Any]], outcomes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``outcomes`` of a retried registration, an index its earlier attempt created
    reported as ``created`` (not ``exists``): the attempt lost the record write to another
    (a background index build storing its outcomes, say), not the index it built."""
    created = {(o.get("collection"), o.get("name")) for o in earlier if o.get("status") == CREATED}
    if not created:
        return outcomes
    return [
        {**o, "status": CREATED}
        if o.get("status") == EXISTS and (o.get("collection"), o.get("name")) in created
        else o
        for o in outcomes
    ]


def _version(doc: Mapping[str, Any]) -> int:
    return int(doc.get("version") or 0)


class Registration:
    """Registers, updates and unregisters the apps of one engine."""

    def __init__(
        self,
        engine: MongoDBEngine,
        catalog: AppCatalog,
        collection: Callable[[str], Collection[Any]],
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._collection = collection  # an engine-internal collection by name

    @property
    def _registry(self) -> Collection[Any]:
        return self._catalog.collection

    @property
    def _locks(self) -> Collection[Any]:
        return self._collection(LOCKS_COLLECTION)

    # --- using an app -------------------------------------------------------------------------

    def require_usable(self, slug: str) -> AppRecord:
        """The record of an active app, registering ``slug`` implicitly when allowed.

        Raises :class:`AppNotFoundError` for an unknown slug when implicit apps are off and
        :class:`AppNotActiveError` for an inactive or archived app.
        """
        validate_slug(slug)
        record = self._catalog.get(slug)
        if record is not None and record.status == ACTIVE:
            return record  # the common case, no copy
        doc = record.to_document() if record is not None else None
        if claim_of(doc) is not None:
            doc = self._settled(slug, USE_WAIT_SECONDS)
        if doc is None:
            if not self._engine.implicit_apps:
                raise AppNotFoundError(
                    f"app {slug!r} is not registered (register its manifest first)",
                    context={"app": slug},
                )
            self.register({"slug": slug, "name": slug}, create_indexes=False, implicit=True)
            fresh = self._catalog.get(slug, refresh=True)
            if fresh is None:  # unregistered again by someone else in between
                raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
            doc = fresh.to_document()
        claim = claim_of(doc)
        if claim is not None:
            state = (
                "registration did not finish (register it again)"
                if abandoned(claim, CLAIM_STALE_SECONDS)
                else "registration is still running; it can be used once it finishes"
            )
            raise AppNotActiveError(
                f"app {slug!r} is not usable: its first {state} ({describe(claim)})",
                context={"app": slug},
            )
        if doc.get("status", ACTIVE) != ACTIVE:
            raise AppNotActiveError(
                f"app {slug!r} is {doc.get('status')}, not active", context={"app": slug}
            )
        return self._catalog.cached(slug) or AppRecord.from_document(doc)

    def _fresh(self, slug: str) -> dict[str, Any] | None:
        record = self._catalog.get(slug, refresh=True)
        return record.to_document() if record is not None else None

    def _settled(self, slug: str, timeout: float) -> dict[str, Any] | None:
        """The record of ``slug`` once a first registration in progress elsewhere has
        finished, failed or been abandoned (waiting at most ``timeout`` seconds; a record
        still pending after that is returned as it is)."""
        record = self._fresh(slug)
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            claim = claim_of(record)
            if claim is None or abandoned(claim, CLAIM_STALE_SECONDS):
                return record
            if time.monotonic() >= deadline:
                return record
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
            record = self._fresh(slug)

    # --- claiming a slug ----------------------------------------------------------------------

    def _raise_conflict(self, slug: str, others: list[str]) -> None:
        raise AppConflictError(
            f"app {slug!r} cannot be registered next to {', '.join(map(repr, others))}: their "
            "physical collection names could collide (e.g. 'my' + 'app_tasks' and 'my_app' + "
            "'tasks' are both 'my_app_tasks'); choose a slug that is not a '_'-separated "
            "prefix of another",
            context={"app": slug, "conflicts": others},
        )

    def _lookup(self, slug: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The stored record of ``slug`` and the records whose slugs overlap it.

        Two indexed queries: ``$in`` over the slug and its ``_``-prefixes (``a_b_c``: ``a``,
        ``a_b``) on ``_id``, and the range of slugs starting with ``<slug>_`` on the ``slug``
        index (the embedded server plans a range on ``_id`` as a scan).
        """
        self._ensure_indexes()
        existing = None
        others = []
        for doc in self._registry.find({"_id": {"$in": [slug, *overlapping_prefixes(slug)]}}):
            if doc["_id"] == slug:
                existing = doc
            else:
                others.append(doc)
        # Slugs use [a-z0-9_-]: those starting with "<slug>_" are exactly [slug_, slug`).
        longer = self._registry.find(
            {"slug": {"$gte": slug + "_", "$lt": slug + "`"}},
            {"_id": 1, "status": 1, "claim": 1},
            limit=MAX_REPORTED_CONFLICTS,
        )
        others.extend(longer)
        return existing, others

    def _ensure_indexes(self) -> None:
        """The ``slug`` index the overlap look-up needs, and the ``slug`` field of records
        written before it existed: once per process (see :mod:`mdb_sync.storage`)."""
        self._collection(APPS_COLLECTION)

    def _live_conflicts(self, others: list[dict[str, Any]], clean: bool = False) -> list[str]:
        """Slugs of ``others`` that block a registration: registered apps and first
        registrations still running. Abandoned claims do not count (and are removed when
        ``clean``, which is only done under the segment lock)."""
        live = []
        for other in others:
            claim = claim_of(other)
            if claim is not None and abandoned(claim, CLAIM_STALE_SECONDS):
                if not clean:
                    continue
                gone = self._catalog.delete(
                    other["_id"], {"status": REGISTERING, "claim.token": claim.get("token")}
                )
                if gone.deleted_count == 1:
                    continue  # else it was taken over meanwhile: it still blocks
            live.append(other["_id"])
        return sorted(live)

    def _claim(
        self, slug: str, normalized: dict[str, Any], implicit: bool
    ) -> dict[str, Any] | None:
        """Claim the new slug ``slug``: under the lock of its segment, check that no app
        overlaps it and insert its pending record. Returns the claim, or None when a record of
        ``slug`` itself appeared meanwhile (the caller looks again)."""
        with segment_lock(self._locks, slug) as lock:
            existing, others = self._lookup(slug)
            conflicts = self._live_conflicts(others, clean=True)
            if conflicts:
                self._raise_conflict(slug, conflicts)
            if existing is not None:
                return None
            claim = new_holder()
            try:
                self._insert_claim(slug, claim, lock, normalized, implicit)
            except DuplicateKeyError:
                let_go(claim)
                return None
            except BaseException:
                let_go(claim)
                raise
            return claim

    def _insert_claim(
        self,
        slug: str,
        claim: dict[str, Any],
        lock: dict[str, Any],
        normalized: dict[str, Any],
        implicit: bool,
    ) -> None:
        now = claim["at"]
        self._catalog.insert_new(
            slug,
            {
                "status": REGISTERING,
                "manifest": normalized,
                "implicit": implicit,
                "index_outcomes": [],
                "registered_at": now,
                "updated_at": now,
                "claim": claim,
            },
        )
        if not still_held(self._locks, slug, lock):
            # Stalled past the lease: another registration may have checked without seeing
            # this claim. Withdraw rather than risk two overlapping apps.
            self._release_claim(slug, claim)
            raise AppConflictError(
                f"app {slug!r} was not registered: the registration stalled past its lock "
                "lease; nothing was changed, retry",
                context={"app": slug},
            )

    def _release_claim(self, slug: str, claim: dict[str, Any]) -> None:
        self._catalog.delete(slug, {"status": REGISTERING, "claim.token": claim["token"]})

    def _take_over(self, slug: str, record: dict[str, Any]) -> dict[str, Any] | None:
        """Take the abandoned claim of ``record`` over (None if someone else did)."""
        old = claim_of(record) or {}
        claim = new_holder()
        try:
            # Under the segment lock like every claim (and so a lock the same dead attempt
            # left behind is taken over and released too).
            with segment_lock(self._locks, slug):
                result = self._catalog.update(
                    slug,
                    {"status": REGISTERING, "claim.token": old.get("token")},
                    {"$set": {"claim": claim, "updated_at": claim["at"]}},
                )
        except BaseException:
            let_go(claim)
            raise
        if result.modified_count != 1:
            let_go(claim)
            return None
        log.warning("took over the abandoned registration of %r (%s)", slug, describe(old))
        return claim

    def _own(
        self, slug: str, normalized: dict[str, Any], implicit: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(existing record, claim)``: the registered record of ``slug`` to update (claim
        None), or the claim of its first registration (existing None) — after overlap
        checks, waiting for another process's first registration of the same slug."""
        deadline = time.monotonic() + REGISTRATION_WAIT_SECONDS
        while True:
            existing, others = self._lookup(slug)
            conflicts = self._live_conflicts(others)
            if conflicts:
                self._raise_conflict(slug, conflicts)
            claim: dict[str, Any] | None = None
            if existing is None:
                claim = self._claim(slug, normalized, implicit)
            elif claim_of(existing) is None:
                return existing, None
            elif abandoned(claim_of(existing), CLAIM_STALE_SECONDS):
                claim = self._take_over(slug, existing)
            else:
                settled = self._settled(slug, max(0.0, deadline - time.monotonic()))
                pending = claim_of(settled)
                if pending is not None and not abandoned(pending, CLAIM_STALE_SECONDS):
                    raise AppConflictError(
                        f"app {slug!r} is still being registered by another process "
                        f"({describe(pending)}) after {REGISTRATION_WAIT_SECONDS:.0f} s; retry "
                        "once it has finished",
                        context={"app": slug},
                    )
                continue
            if claim is not None:
                return None, claim
            if time.monotonic() >= deadline:  # pragma: no cover - needs a registry in churn
                raise AppConflictError(
                    f"app {slug!r} could not be claimed: its record kept changing",
                    context={"app": slug},
                )

    # --- applying a manifest ------------------------------------------------------------------

    def _apply(
        self,
        normalized: dict[str, Any],
        existing: dict[str, Any] | None,
        claim: dict[str, Any] | None,
        *,
        implicit: bool,
        create_indexes: bool,
        replace_indexes: bool,
        search_index_timeout: float | None,
        earlier: list[dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]] | None:
        """Apply collection settings and indexes, then write the record: the first
        registration's (``claim``) or an update of ``existing`` (only if it still has the
        version read). Returns ``(record, collections, index outcomes)``, or None when the
        record was unregistered or written by someone else meanwhile — then ``earlier``
        (if given) holds the index outcomes of this attempt, for the next one."""
        slug = normalized["slug"]
        try:
            collections: list[dict[str, Any]] = []
            if normalized.get("collection_settings"):
                collections = apply_collection_settings(
                    self._engine, slug, normalized["collection_settings"]
                )
            outcomes: list[dict[str, Any]] = list((existing or {}).get("index_outcomes") or [])
            if create_indexes:
                outcomes = ensure_declared_indexes(
                    self._engine,
                    slug,
                    normalized.get("managed_indexes") or {},
                    replace=replace_indexes,
                    search_timeout=(
                        DEFAULT_SEARCH_TIMEOUT
                        if search_index_timeout is None
                        else search_index_timeout
                    ),
                    previous=outcomes,
                )
                if earlier is not None:
                    outcomes = _created_earlier(earlier, outcomes)
                    earlier[:] = outcomes
        except BaseException:
            if claim is not None:
                try:
                    self._release_claim(slug, claim)
                except PyMongoError:  # left "registering": a retry takes it over
                    log.warning("could not withdraw the failed registration of %r", slug)
            raise
        now = _now()
        fields: dict[str, Any] = {
            "slug": slug,
            "status": normalized.get("status", ACTIVE),
            "manifest": normalized,
            "implicit": implicit,
            "index_outcomes": outcomes,
        }
        if claim is not None:
            done = self._catalog.update(
                slug,
                {"status": REGISTERING, "claim.token": claim["token"]},
                {"$set": {**fields, "updated_at": now}, "$unset": {"claim": ""}},
            )
            if done.matched_count != 1:
                raise AppConflictError(
                    f"app {slug!r} was not registered: its registration took longer than "
                    f"{CLAIM_STALE_SECONDS:.0f} s and was taken over or withdrawn",
                    context={"app": slug},
                )
            return self._fresh(slug) or {"_id": slug, **fields}, collections, outcomes
        assert existing is not None
        record = {**existing, **fields}
        if any(existing.get(k) != v for k, v in fields.items()):
            updated = self._catalog.compare_and_set(
                slug,
                _version(existing),
                {"$set": {**fields, "updated_at": now}},
                {"status": {"$ne": REGISTERING}},
            )
            if updated.matched_count != 1:
                return None  # unregistered or changed meanwhile: look again
            record = self._fresh(slug) or record
        return record, collections, outcomes

    def register(
        self,
        manifest: Mapping[str, Any],
        *,
        create_indexes: bool = True,
        implicit: bool = False,
        replace_indexes: bool = False,
        search_index_timeout: float | None = None,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Validate, persist and act on ``manifest``.

        Order, so that a bad manifest changes nothing: validation and the slug-collision
        check (a new slug is claimed atomically: its record appears with status
        ``registering``), then ``collection_settings`` (undone and raised if the server
        refuses one, and the claim withdrawn), then the declared indexes (outcomes reported,
        never raised), then one write of the record (bumping its version), then
        ``initial_data`` (seeded once). An unchanged re-registration writes nothing and
        sends no index or collection command besides the listings.

        With ``expected_version``, the app must be registered at that version:
        :class:`AppVersionConflictError` otherwise, or when another write comes first.

        Returns ``{"slug", "created", "indexes": [outcome...], "collections": [...],
        "seeded": {collection: n}}``; index outcomes are also stored in the record
        (``index_outcomes``). Of concurrent registrations of one new slug, exactly one
        reports ``created: True``; the others wait for it and then update the app.
        """
        normalized = validate_manifest(manifest)
        slug = normalized["slug"]
        try:
            validate_slug(slug)
        except ScopeError as exc:
            raise ManifestValidationError(str(exc), errors={"slug": [str(exc)]}) from exc
        # mdb_sync.auth needs the optional auth extra (PyJWT): imported only when used.
        from .auth.demo_users import has_clear_passwords, hash_demo_passwords

        if has_clear_passwords(normalized):  # the registry keeps no clear password
            stored = self._registry.find_one({"_id": slug}, {"manifest": 1})
            normalized = hash_demo_passwords(normalized, (stored or {}).get("manifest"))
        earlier: list[dict[str, Any]] = []  # index outcomes of an attempt that lost a race
        for _attempt in range(3):
            existing, claim = self._own(slug, normalized, implicit)
            if expected_version is not None and (
                existing is None or _version(existing) != expected_version
            ):
                let_go(claim)
                if claim is not None:
                    self._release_claim(slug, claim)
                raise self._version_conflict(slug, expected_version, existing)
            if implicit and existing is not None:
                return {
                    "slug": slug, "created": False, "indexes": [], "collections": [], "seeded": {},
                }  # fmt: skip
            try:
                applied = self._apply(
                    normalized,
                    existing,
                    claim,
                    implicit=implicit,
                    create_indexes=create_indexes,
                    replace_indexes=replace_indexes,
                    search_index_timeout=search_index_timeout,
                    earlier=earlier,
                )
            finally:
                let_go(claim)
            if applied is not None:
                record, collections, outcomes = applied
                break
            if expected_version is not None:
                raise self._version_conflict(slug, expected_version, None)
        else:  # pragma: no cover - needs three writes racing one registration
            raise AppConflictError(
                f"app {slug!r} kept changing (or was unregistered) while being registered, "
                "three times",
                context={"app": slug},
            )
        seeded: dict[str, int] = {}
        if normalized.get("initial_data"):
            seeded = seed_initial_data(
                self._engine, slug, normalized["initial_data"], self._catalog, record.get("seeded")
            )
            if seeded or not record.get("seeded"):
                record = self._fresh(slug) or record
        self._catalog.remember(record)
        result = {
            "slug": slug,
            "created": claim is not None,
            "indexes": outcomes,
            "collections": collections,
            "seeded": seeded,
        }
        app_registered.send(self._engine, slug=slug, manifest=normalized, result=result)
        log.info("registered app %r%s", slug, " (implicit)" if implicit else "")
        return result

    @staticmethod
    def _version_conflict(
        slug: str, expected: int, existing: dict[str, Any] | None
    ) -> AppVersionConflictError:
        found = "not registered" if existing is None else f"at version {_version(existing)}"
        return AppVersionConflictError(
            f"app {slug!r} changed meanwhile: expected version {expected}, it is {found}"
            if existing is not None
            else f"app {slug!r} changed meanwhile (expected version {expected})",
            context={"app": slug, "expected_version": expected},
        )

    def update_manifest(
        self,
        slug: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        **options: Any,
    ) -> dict[str, Any]:
        """Register ``change(manifest)`` computed from the app's current manifest, as one
        versioned compare-and-set: when another process (or thread) writes the record
        first, the change is computed again from the newer manifest (at most
        :data:`UPDATE_ATTEMPTS` times). ``options`` are :meth:`register`'s. Returns its
        result."""
        for _attempt in range(UPDATE_ATTEMPTS):
            record = self._catalog.get(slug, refresh=True)
            if record is None or record.status == REGISTERING:
                raise AppNotFoundError(f"app {slug!r} is not registered", context={"app": slug})
            updated = change(copy.deepcopy(dict(record.manifest)))
            try:
                return self.register(updated, expected_version=record.version, **options)
            except AppVersionConflictError:
                time.sleep(0.005)
        raise AppVersionConflictError(
            f"app {slug!r} kept changing: {UPDATE_ATTEMPTS} attempts to update its manifest "
            "were overtaken by other writes; retry",
            context={"app": slug},
        )

    def create_collection_indexes(
        self, slug: str, collection: str, definitions: list[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Validate ``definitions`` as the ``managed_indexes`` of ``slug``'s ``collection``
        (as in a manifest: :class:`ManifestValidationError` names every bad path, nothing is
        built) and reconcile them with the server now; one outcome per index. The registry
        is not changed: the indexes are not declared in the app's manifest (the
        predecessor's ``run_index_creation_for_collection``)."""
        normalized = validate_manifest({"slug": slug, "managed_indexes": {collection: definitions}})
        return ensure_declared_indexes(self._engine, slug, normalized["managed_indexes"])

    def unregister(self, slug: str) -> bool:
        deleted = self._catalog.delete(slug).deleted_count == 1
        self._catalog.forget(slug)
        if deleted:
            app_unregistered.send(self._engine, slug=slug)
        return deleted
