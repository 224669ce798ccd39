"""``engine.registry``: the app registry as one object, a facade over two services.

The registry of apps (``apps_config``) is owned by the app catalog
(:mod:`mdb_sync.catalog`: the cached, versioned :class:`~mdb_sync.catalog.AppRecord` of
each app, and every write of a record) and changed by the registration workflow
(:mod:`mdb_sync.registration`). :class:`AppRegistry` keeps the methods ``engine.registry``
always had, returning registry documents as dicts; new code uses ``engine.catalog`` and
``engine.registration``.

Each engine re-reads a cached record (and a cached miss) after
``engine.registry_refresh_seconds``, so an app registered, deactivated or changed by another
process takes effect here within that delay; :meth:`AppRegistry.load` re-reads everything.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .catalog import ACTIVE, MISSING_CACHE_SIZE, AppCatalog
from .registration import (
    MAX_REPORTED_CONFLICTS,
    REGISTRATION_WAIT_SECONDS,
    USE_WAIT_SECONDS,
    Registration,
)

if TYPE_CHECKING:
    from pymongo.collection import Collection

__all__ = [
    "ACTIVE",
    "MAX_REPORTED_CONFLICTS",
    "MISSING_CACHE_SIZE",
    "REGISTRATION_WAIT_SECONDS",
    "USE_WAIT_SECONDS",
    "AppRegistry",
]


class AppRegistry:
    """Registered apps of one engine (the public face of its catalog and registration)."""

    def __init__(self, catalog: AppCatalog, registration: Registration) -> None:
        self.catalog = catalog
        self.registration = registration

    @property
    def collection(self) -> Collection[Any]:
        return self.catalog.collection

    # --- reading ------------------------------------------------------------------------------

    def load(self) -> int:
        """Replace the cache with the database's registry; return the number of active apps."""
        return self.catalog.load()

    def get_manifest(self, slug: str) -> dict[str, Any] | None:
        record = self.catalog.get(slug)
        return dict(record.manifest) if record else None

    def get_record(self, slug: str) -> dict[str, Any] | None:
        """The stored registry document of ``slug`` (manifest, status, index outcomes,
        ``version``)."""
        record = self.catalog.get(slug)
        return record.to_document() if record else None

    def cached_records(self) -> builtins.list[dict[str, Any]]:
        """Copies of the cached registry documents, without touching the server (the health
        check's view when the server does not answer)."""
        return [record.to_document() for record in self.catalog.records()]

    def list(self, status: str | None = None) -> builtins.list[dict[str, Any]]:
        return [
            dict(r.manifest)
            for r in self.catalog.records()
            if status is None or r.get("status") == status
        ]

    def cache_info(self) -> dict[str, dict[str, int]]:
        return self.catalog.cache_info()

    def slugs(self) -> builtins.list[str]:
        return self.catalog.slugs()

    def slug_for_physical(self, physical: str) -> str | None:
        return self.catalog.slug_for_physical(physical)

    def require_usable(self, slug: str) -> dict[str, Any]:
        """The record of an active app, registering ``slug`` implicitly when allowed (see
        :meth:`~mdb_sync.registration.Registration.require_usable`)."""
        return self.registration.require_usable(slug).to_document()

    # --- writing ------------------------------------------------------------------------------

    def register(self, manifest: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        """See :meth:`~mdb_sync.registration.Registration.register`."""
        return self.registration.register(manifest, **options)

    def unregister(self, slug: str) -> bool:
        return self.registration.unregister(slug)

    def store_index_outcomes(
        self,
        slug: str,
        outcomes: builtins.list[dict[str, Any]],
        *,
        expected: builtins.list[dict[str, Any]] | None = None,
    ) -> bool:
        """Record ``outcomes`` as ``slug``'s index outcomes (through the catalog: the
        record's version is bumped); with ``expected``, only while the record still holds
        exactly those (a registration since, in any process, is not overwritten). True if
        stored."""
        where: dict[str, Any] = {} if expected is None else {"index_outcomes": expected}
        stored = self.catalog.update(slug, where, {"$set": {"index_outcomes": outcomes}})
        if stored.matched_count:
            self.catalog.get(slug, refresh=True)
        return bool(stored.matched_count)
