"""Manifests: an app's declared identity, indexes, auth, realtime and AI configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .loader import read_manifest_file
from .validator import ManifestValidator, validate_manifest


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read the manifest at ``path`` and return it validated and normalized."""
    return validate_manifest(read_manifest_file(path))


__all__ = ["ManifestValidator", "load_manifest", "read_manifest_file", "validate_manifest"]
