"""Schema versions and the migration of version 1.0 keys to version 2.0.

Version 1.0 expressed auth with three top-level keys and data sharing with one; 2.0 nests
them. Both versions' keys are accepted (the seeds mix them: a ``"schema_version": "2.0"``
manifest with ``auth_policy``), and validation always returns a 2.0 manifest:

================  ==================================================================
1.0               2.0
================  ==================================================================
``version``       ``schema_version`` (the seeds' older spelling)
``auth_required`` ``auth.policy.required``
``auth_policy``   ``auth.policy`` (its ``roles`` is ``allowed_roles``)
``sub_auth``      ``auth.users`` (its ``users_collection`` is ``collection_name``)
``data_scope``    ``data_access.read_scopes`` (``"self"`` is the app's own slug)
================  ==================================================================

The migration is lossless: nothing is dropped, and a value given twice with different
meanings (``auth_required: true`` and ``auth.policy.required: false``) is an error naming
both paths rather than a silent choice. :func:`migrate_manifest` also goes back
(``target_version="1.0"``) for manifests that 1.0 can express, so a round trip of a 1.0
manifest gives it back.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..exceptions import ManifestValidationError
from .fields import describe_errors, join_path
from .schema import CURRENT_SCHEMA_VERSION, DEFAULT_SCHEMA_VERSION, SCHEMA_VERSIONS

#: Top-level keys of version 1.0 that 2.0 nests elsewhere.
V1_KEYS = ("auth_required", "auth_policy", "sub_auth", "data_scope")
_KEY_RENAMES = {
    "auth_policy": {"roles": "allowed_roles"},
    "sub_auth": {"users_collection": "collection_name"},
}
_TARGET = {"auth_policy": ("auth", "policy"), "sub_auth": ("auth", "users")}


def schema_version_of(value: Any) -> str | None:
    """``"2.0"`` for ``"2.0"``, ``"2"``, ``2`` or ``2.0``; None for anything unsupported."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        value = f"{float(value):.1f}"
    if isinstance(value, str):
        text = value.strip()
        if text in ("1", "2"):
            text += ".0"
        if text in SCHEMA_VERSIONS:
            return text
    return None


def upgrade(
    manifest: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]]]:
    """Move 1.0 keys into their 2.0 places.

    Returns the migrated copy, the provenance of moved values (``{new path: old path}``, so
    errors found later can name the path the author wrote) and the migration errors.
    """
    out = copy.deepcopy(dict(manifest))
    provenance: dict[str, str] = {}
    errors: dict[str, list[str]] = {}

    def error(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    if "version" in out:
        version = out.pop("version")
        if "schema_version" in out and schema_version_of(
            out["schema_version"]
        ) != schema_version_of(version):
            error("version", "conflicts with schema_version (version is read as schema_version)")
        else:
            out.setdefault("schema_version", version)
            provenance["schema_version"] = "version"
    version = out.get("schema_version", DEFAULT_SCHEMA_VERSION)
    if schema_version_of(version) is None:
        error(
            provenance.get("schema_version", "schema_version"),
            f"unsupported schema version {version!r} (supported: {', '.join(SCHEMA_VERSIONS)})",
        )
    out["schema_version"] = CURRENT_SCHEMA_VERSION

    def parent_of(parent: tuple[str, ...], origin: str) -> dict[str, Any] | None:
        node: dict[str, Any] = out
        for part in parent:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                error(origin, f"cannot be merged: {'.'.join(parent)} is not an object")
                return None
            node = child
        return node

    def place(parent: tuple[str, ...], key: str, value: Any, origin: str) -> None:
        node = parent_of(parent, origin)
        if node is None:
            return
        target = ".".join((*parent, key))
        if key in node and node[key] != value:
            error(origin, f"conflicts with {target} (given twice with different values)")
            return
        node[key] = value
        provenance[target] = origin

    for v1_key in ("auth_policy", "sub_auth"):
        if v1_key not in out:
            continue
        section = out.pop(v1_key)
        if not isinstance(section, Mapping):
            error(v1_key, "must be an object")
            continue
        if parent_of(_TARGET[v1_key], v1_key) is None:
            continue
        renames = _KEY_RENAMES[v1_key]
        for old, new in renames.items():
            if old in section and new in section:
                error(join_path(v1_key, old), f"conflicts with {v1_key}.{new} (same setting)")
        for key, value in section.items():
            place(_TARGET[v1_key], renames.get(key) or key, value, join_path(v1_key, key))
    if "auth_required" in out:
        place(("auth", "policy"), "required", out.pop("auth_required"), "auth_required")
    if "data_scope" in out:
        scopes = out.pop("data_scope")
        if isinstance(scopes, list):
            slug = out.get("slug")
            scopes = [slug if s == "self" else s for s in scopes]
        place(("data_access",), "read_scopes", scopes, "data_scope")
    return out, provenance, errors


def downgrade(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Express a 2.0 manifest with 1.0 keys; raise if it uses something 1.0 cannot say."""
    out = copy.deepcopy(dict(manifest))
    out.pop("version", None)
    problems: dict[str, list[str]] = {}
    auth = out.pop("auth", None)
    if auth is not None:
        if not isinstance(auth, Mapping):
            problems["auth"] = ["must be an object"]
        else:
            for key, value in auth.items():
                if key not in ("policy", "users") and not (key == "mode" and value == "app"):
                    problems[f"auth.{key}"] = ["has no schema 1.0 equivalent"]
            policy = dict(auth.get("policy") or {})
            if "required" in policy:
                out["auth_required"] = policy.pop("required")
            if policy or auth.get("policy") == {}:
                out["auth_policy"] = policy
            if "users" in auth:
                out["sub_auth"] = dict(auth["users"])
    access = out.pop("data_access", None)
    if access is not None:
        extra = {
            k: v
            for k, v in access.items()
            if k != "read_scopes"
            and not (k == "write_scope" and v == out.get("slug"))
            and not (k == "cross_app_policy" and v == "explicit")
        }
        for key in extra:
            problems[f"data_access.{key}"] = ["has no schema 1.0 equivalent"]
        if "read_scopes" in access:
            out["data_scope"] = [
                "self" if s == out.get("slug") else s for s in access["read_scopes"]
            ]
    if problems:
        raise ManifestValidationError(
            "manifest cannot be expressed in schema 1.0: " + describe_errors(problems),
            errors=problems,
        )
    out["schema_version"] = "1.0"
    return out


def migrate_manifest(
    manifest: Mapping[str, Any], target_version: str = CURRENT_SCHEMA_VERSION
) -> dict[str, Any]:
    """A copy of ``manifest`` written for ``target_version`` (``"2.0"`` or ``"1.0"``).

    No validation beyond the migration itself (use
    :func:`~mdb_sync.manifest.validate_manifest` for that); raises
    :class:`ManifestValidationError` when a value is given twice with different meanings or
    cannot be expressed in the target version.
    """
    if not isinstance(manifest, Mapping):
        raise ManifestValidationError(
            f"a manifest must be an object, not {type(manifest).__name__}",
            errors={"": ["must be an object"]},
        )
    target = schema_version_of(target_version)
    if target is None:
        raise ValueError(f"unsupported target version {target_version!r}")
    migrated, _, errors = upgrade(manifest)
    if errors:
        raise ManifestValidationError(
            "cannot migrate manifest: " + describe_errors(errors), errors=errors
        )
    return migrated if target == CURRENT_SCHEMA_VERSION else downgrade(migrated)


def remap(path: str, provenance: Mapping[str, str]) -> str:
    """The path the author wrote for ``path`` of the migrated manifest."""
    best = ""
    for new in provenance:
        if (path == new or path.startswith((new + ".", new + "["))) and len(new) > len(best):
            best = new
    if not best or provenance[best] == best:
        return path
    return provenance[best] + path[len(best) :]
