"""Manifest validation (the identity keys; the full schemas extend this module)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..exceptions import ManifestValidationError
from ..scoping.names import SLUG_RE

STATUSES = ("active", "inactive", "archived")


def _errors(manifest: Any) -> dict[str, list[str]]:
    if not isinstance(manifest, Mapping):
        return {"": [f"a manifest must be an object, not {type(manifest).__name__}"]}
    errors: dict[str, list[str]] = {}
    slug = manifest.get("slug")
    if slug is None:
        errors["slug"] = ["required"]
    elif not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        errors["slug"] = [
            "must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
        ]
    status = manifest.get("status", "active")
    if status not in STATUSES:
        errors["status"] = [f"must be one of {', '.join(STATUSES)}"]
    for key in ("name", "description", "developer_id"):
        if key in manifest and not isinstance(manifest[key], str):
            errors[key] = ["must be a string"]
    indexes = manifest.get("managed_indexes", {})
    if not isinstance(indexes, Mapping):
        errors["managed_indexes"] = ["must be an object mapping collection names to index lists"]
    return errors


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Return a validated, normalized copy of ``manifest`` or raise
    :class:`ManifestValidationError` naming every bad path."""
    errors = _errors(manifest)
    if errors:
        detail = "; ".join(
            f"{path or '<root>'}: {', '.join(msgs)}" for path, msgs in errors.items()
        )
        raise ManifestValidationError(f"invalid manifest: {detail}", errors=errors)
    normalized = copy.deepcopy(dict(manifest))
    normalized.setdefault("schema_version", "2.0")
    normalized.setdefault("name", normalized["slug"])
    normalized.setdefault("status", "active")
    return normalized


class ManifestValidator:
    """``ManifestValidator().validate(manifest) -> (is_valid, error, paths)`` as in the seeds."""

    def validate(self, manifest: Any) -> tuple[bool, str | None, list[str]]:
        try:
            validate_manifest(manifest)
        except ManifestValidationError as exc:
            return False, str(exc), exc.paths
        return True, None, []
