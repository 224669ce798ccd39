"""Reading manifest files: JSON with errors that say where (line and column)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..exceptions import ManifestValidationError


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON silently keeps the last of two equal keys; in a manifest that is a mistake."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"duplicate key {key!r} in one JSON object")
        result[key] = value
    return result


def read_manifest_file(path: str | Path) -> dict[str, Any]:
    """Parse the JSON manifest at ``path`` (no validation).

    Raises :class:`ManifestValidationError` naming the file, line and column of a JSON
    syntax error, or the file when it cannot be read or is not a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestValidationError(
            f"cannot read manifest {str(path)!r}: {exc.strerror or exc}",
            errors={"": [f"cannot read file: {exc.strerror or exc}"]},
            context={"file": str(path)},
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestValidationError(
            f"manifest {str(path)!r} is not UTF-8 text",
            errors={"": ["not UTF-8 text"]},
            context={"file": str(path)},
        ) from exc
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ManifestValidationError(
            f"invalid manifest {str(path)!r}: {exc}",
            errors={"": [str(exc)]},
            context={"file": str(path)},
        ) from exc
    except json.JSONDecodeError as exc:
        raise ManifestValidationError(
            f"invalid JSON in {str(path)!r} at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            errors={"": [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]},
            context={"file": str(path), "line": exc.lineno, "column": exc.colno},
        ) from exc
    if not isinstance(data, dict):
        raise ManifestValidationError(
            f"manifest {str(path)!r} must be a JSON object, not {type(data).__name__}",
            errors={"": ["must be a JSON object"]},
            context={"file": str(path)},
        )
    return data
