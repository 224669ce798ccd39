"""Keys a manifest may hold that have no effect yet, and the warning that names them.

Manifests written for the predecessor project stay valid, so the schemas accept a few keys
this library does not act on (``observability.logging``, ``auth.jwt.token_expiry_hours``,
...). Accepting them silently would let an author believe a setting is in force; each such
field carries ``metadata["inert"] = True`` and :func:`inert_paths` finds the ones a manifest
actually sets, which :func:`~mdb_sync.manifest.validate_manifest` reports as a
:class:`~mdb_sync.exceptions.ManifestWarning` (the schema's own defaults never warn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import fields as ma_fields

from .fields import ListOf, MapOf, OneOfTypes

#: The metadata key marking a field accepted without effect.
INERT = "inert"


def _nested(field: ma_fields.Nested) -> Any:
    schema = field.nested
    return schema() if isinstance(schema, type) else schema


def inert_paths(schema: Any, data: Any, prefix: str = "") -> list[str]:
    """The paths (``observability.logging``, ``auth.users.demo_users[0].link_to_platform``)
    of the inert keys ``data`` sets, for ``schema`` (a marshmallow schema instance)."""
    if not isinstance(data, Mapping):
        return []
    found: list[str] = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        if key in data:
            found.extend(_field_paths(field, data[key], f"{prefix}.{key}" if prefix else key))
    return found


def _field_paths(field: ma_fields.Field[Any], value: Any, path: str) -> list[str]:
    if (field.metadata or {}).get(INERT):
        return [] if value is None else [path]  # an explicit null sets nothing
    if isinstance(field, ma_fields.Nested):
        return inert_paths(_nested(field), value, path)
    if isinstance(field, ListOf) and isinstance(value, list):
        return [
            p
            for i, item in enumerate(value)
            for p in _field_paths(field.inner, item, f"{path}[{i}]")
        ]
    if isinstance(field, MapOf) and isinstance(value, Mapping):
        return [
            p for k, item in value.items() for p in _field_paths(field.values, item, f"{path}.{k}")
        ]
    if isinstance(field, OneOfTypes):
        for types, choice in field.choices:
            if isinstance(value, types):
                return _field_paths(choice, value, path)
    return []


def inert_message(slug: Any, path: str) -> str:
    what = f"manifest {slug!r}" if isinstance(slug, str) else "manifest"
    return (
        f"{what}: {path} is accepted but has no effect yet (kept for manifests written for "
        "the predecessor); see the manifest key reference"
    )
