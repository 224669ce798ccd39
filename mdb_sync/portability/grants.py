"""What an imported manifest may register: never access to another app's data by itself.

A dump is input from anywhere, and its manifest is registered as the new app's. A manifest
that lists another app in ``data_access.read_scopes`` would let the imported app read that
app's users and documents the moment it is registered (the owner's default policy,
``explicit``, accepts any app that names it). So an import keeps only the app's own scope:
each other app's grant is dropped unless the operator allows it by name
(``allow_read_scopes`` / ``mdb import --allow-read-scope``), and even then only when that
app is registered here and its ``cross_app_policy`` does not deny it. ``write_scope`` can
only ever be the app itself, so it is set to the new slug.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import PortabilityError
from ..manifest.model import as_manifest

if TYPE_CHECKING:
    from ..engine import MongoDBEngine


def sanitize_manifest(
    engine: MongoDBEngine,
    manifest: Mapping[str, Any] | None,
    source_slug: str,
    slug: str,
    allow_read_scopes: Iterable[str] = (),
) -> tuple[dict[str, Any], list[str]]:
    """The manifest to register for imported app ``slug`` and the read scopes dropped from it.

    ``source_slug`` (the app's slug in the dump) in ``read_scopes`` means the app's own
    data and becomes ``slug``. Raises :class:`PortabilityError` when an allowed scope is
    not registered here or its owner denies cross-app reads.
    """
    result = copy.deepcopy(dict(manifest or {}))
    result["slug"] = slug
    result.setdefault("name", slug)
    allowed = list(dict.fromkeys(allow_read_scopes))
    access = result.get("data_access")
    if not isinstance(access, dict):
        return result, []
    requested = access.get("read_scopes")
    scopes = requested if isinstance(requested, list) else []
    kept, dropped = [slug], []
    for scope in scopes:
        if scope in (slug, source_slug, "self"):
            continue
        if scope in allowed and isinstance(scope, str):
            _check_owner_allows(engine, scope, slug)
            kept.append(scope)
        else:
            dropped.append(scope if isinstance(scope, str) else repr(scope))
    if "read_scopes" in access:
        if len(kept) > 1:
            access["read_scopes"] = list(dict.fromkeys(kept))
        else:
            del access["read_scopes"]
    if "write_scope" in access:
        access["write_scope"] = slug
    return result, dropped


def _check_owner_allows(engine: MongoDBEngine, owner_slug: str, reader: str) -> None:
    record = engine.registry.get_record(owner_slug)
    if record is None:
        raise PortabilityError(
            f"cannot let imported app {reader!r} read {owner_slug!r}: no app {owner_slug!r} is "
            "registered here, so its owner has no policy that could allow it",
            context={"app": reader, "scope": owner_slug},
        )
    if as_manifest(record.get("manifest")).data_access.denies_all:
        raise PortabilityError(
            f"cannot let imported app {reader!r} read {owner_slug!r}: its owner denies reads "
            "by other apps (cross_app_policy: deny_all)",
            context={"app": reader, "scope": owner_slug},
        )


def summary(manifest: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    """What an import registers, for ``mdb import`` to print."""
    access = manifest.get("data_access") or {}
    auth = manifest.get("auth") or {}
    users = auth.get("users") if isinstance(auth, Mapping) else None
    return {
        "slug": manifest.get("slug"),
        "name": manifest.get("name"),
        "status": manifest.get("status", "active"),
        "developer_id": manifest.get("developer_id"),
        "read_scopes": list(access.get("read_scopes") or [manifest.get("slug")]),
        "dropped_read_scopes": dropped,
        "users": (users or {}).get("strategy") if isinstance(users, Mapping) else None,
        "managed_indexes": sorted((manifest.get("managed_indexes") or {}).keys()),
    }
