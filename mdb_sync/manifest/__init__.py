"""Manifests: an app's declared identity, indexes, auth, realtime and AI configuration.

``validate_manifest(manifest)`` returns the normalized (schema 2.0) manifest or raises
:class:`~mdb_sync.exceptions.ManifestValidationError` naming every bad JSON path;
``load_manifest(path)`` reads a file first (JSON errors give line and column);
``migrate_manifest`` moves schema 1.0 keys to 2.0 (and back); ``Manifest.from_dict(m)`` is
the validated manifest as a frozen, typed object (:mod:`mdb_sync.manifest.model`), each
section loaded by its schema into a dataclass; ``load_section(path, value)`` checks and
types one section given on its own (:mod:`mdb_sync.manifest.sections`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .loader import read_manifest_file
from .migration import V1_KEYS, migrate_manifest
from .model import Manifest
from .schema import CURRENT_SCHEMA_VERSION, DEFAULT_SCHEMA_VERSION, SCHEMA_VERSIONS
from .sections import load_section
from .validator import (
    LENIENT_ENV,
    ManifestValidator,
    clear_cache,
    validate_manifest,
    validate_manifests,
)


def load_manifest(path: str | Path, *, lenient: bool | None = None) -> dict[str, Any]:
    """Read the manifest at ``path`` and return it validated and normalized."""
    return validate_manifest(read_manifest_file(path), lenient=lenient)


__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_SCHEMA_VERSION",
    "LENIENT_ENV",
    "SCHEMA_VERSIONS",
    "V1_KEYS",
    "Manifest",
    "ManifestValidator",
    "clear_cache",
    "load_manifest",
    "load_section",
    "migrate_manifest",
    "read_manifest_file",
    "validate_manifest",
    "validate_manifests",
]
