"""Manifest validation: one entry point, every error with its JSON path, results cached.

:func:`validate_manifest` migrates 1.0 keys, validates every section and returns the
normalized 2.0 manifest, or raises :class:`ManifestValidationError` whose ``errors`` map
each bad path (``managed_indexes.tasks[1].keys``) to what is wrong there — all of them at
once, not just the first.

Unknown keys are refused by default. **Lenient mode** keeps them instead (logging a warning
with their paths): pass ``lenient=True`` or set ``MDB_MANIFEST_LENIENT=1``. Keys starting
with ``x-`` or ``x_`` are the author's own and are always kept, in both modes.

Results are cached by content (a SHA-256 of the manifest's BSON-extended JSON, key order
included), so registering the same manifest again, from any thread, costs a hash;
:func:`validate_manifests` validates many at once on a thread pool.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bson import json_util
from marshmallow import ValidationError

from ..exceptions import ManifestValidationError, ManifestWarning
from .fields import LENIENT, describe_errors, flatten_errors
from .inert import inert_message, inert_paths
from .migration import remap, upgrade
from .schema import ManifestSchema

log = logging.getLogger(__name__)

#: Environment variable turning lenient mode on for the whole process.
LENIENT_ENV = "MDB_MANIFEST_LENIENT"
#: Validation results kept in the content-hash cache.
CACHE_SIZE = 512

_cache: OrderedDict[str, tuple[bool, Any]] = OrderedDict()
_cache_lock = threading.Lock()
_schema_local = threading.local()


def lenient_default() -> bool:
    """Whether lenient mode is on for this process (``MDB_MANIFEST_LENIENT``)."""
    return os.environ.get(LENIENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _schema() -> ManifestSchema:
    # Schemas hold per-load state; one per thread keeps them thread-safe and cheap.
    schema = getattr(_schema_local, "schema", None)
    if schema is None:
        schema = _schema_local.schema = ManifestSchema()
    return schema


def _content_key(manifest: Any, lenient: bool) -> str | None:
    try:
        text = json_util.dumps(manifest)
    except (TypeError, ValueError, OverflowError):
        return None  # not serializable: validate without caching (it will be refused anyway)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{int(lenient)}:{digest}"


def _error(manifest: Any, errors: dict[str, list[str]]) -> ManifestValidationError:
    slug = manifest.get("slug") if isinstance(manifest, Mapping) else None
    what = f"invalid manifest {slug!r}" if isinstance(slug, str) else "invalid manifest"
    return ManifestValidationError(
        f"{what}: {describe_errors(errors)}",
        errors=errors,
        context={"app": slug} if isinstance(slug, str) else None,
    )


def _only_unknown(messages: list[str]) -> bool:
    return all(m.startswith("unknown key") for m in messages)


def _load(migrated: dict[str, Any], lenient: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    token = LENIENT.set(lenient)
    try:
        return _schema().load(migrated), {}
    except ValidationError as exc:
        return None, flatten_errors(exc.messages)
    finally:
        LENIENT.reset(token)


def _validate(manifest: Any, lenient: bool) -> tuple[dict[str, Any], list[str]]:
    """The normalized manifest and the paths of the inert keys it sets."""
    if not isinstance(manifest, Mapping):
        raise ManifestValidationError(
            f"a manifest must be an object, not {type(manifest).__name__}",
            errors={"": ["must be an object"]},
        )
    migrated, provenance, errors = upgrade(manifest)
    result, schema_errors = _load(migrated, False)
    if schema_errors and lenient:
        unknown = {p: m for p, m in schema_errors.items() if _only_unknown(m)}
        if len(unknown) == len(schema_errors):
            log.warning(
                "manifest %r: keeping unknown keys (lenient mode): %s",
                manifest.get("slug"),
                ", ".join(remap(p, provenance) for p in unknown),
            )
            result, schema_errors = _load(migrated, True)
        else:
            schema_errors = {p: m for p, m in schema_errors.items() if not _only_unknown(m)}
    for path, messages in schema_errors.items():
        errors.setdefault(remap(path, provenance), []).extend(messages)
    if errors:
        raise _error(manifest, errors)
    if any(k in manifest for k in ("auth_required", "auth_policy", "sub_auth", "data_scope")):
        log.info("manifest %r: 1.0 keys migrated to 2.0", manifest.get("slug"))
    assert result is not None
    inert = [remap(p, provenance) for p in inert_paths(_schema(), migrated)]
    return result, inert


def validate_manifest(manifest: Any, *, lenient: bool | None = None) -> dict[str, Any]:
    """Return a validated, normalized (schema 2.0) copy of ``manifest``.

    Raises :class:`ManifestValidationError` naming every bad path. ``lenient`` keeps unknown
    keys instead of refusing them (default: ``MDB_MANIFEST_LENIENT``). Each key that is
    accepted but has no effect yet is named in a :class:`ManifestWarning` (every time).
    """
    lenient = lenient_default() if lenient is None else lenient
    key = _content_key(manifest, lenient)
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
        if hit is not None:
            ok, value = hit
            if not ok:
                raise _error(manifest, copy.deepcopy(value))
            _warn_inert(value[0], value[1])
            return copy.deepcopy(value[0])
    try:
        result, inert = _validate(manifest, lenient)
    except ManifestValidationError as exc:
        _remember(key, False, exc.errors)
        raise
    _remember(key, True, (result, inert))
    _warn_inert(result, inert)
    return copy.deepcopy(result)


def _warn_inert(result: Mapping[str, Any], paths: list[str]) -> None:
    for path in paths:
        # stacklevel 3: the caller of validate_manifest (load_manifest, register_app, ...)
        warnings.warn(inert_message(result.get("slug"), path), ManifestWarning, stacklevel=3)


def _remember(key: str | None, ok: bool, value: Any) -> None:
    if key is None:
        return
    with _cache_lock:
        _cache[key] = (ok, copy.deepcopy(value))
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget cached validation results."""
    with _cache_lock:
        _cache.clear()


def _after_fork_in_child() -> None:
    # A lock held by another thread at the fork would never be released in the child.
    global _cache_lock
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def validate_manifests(
    manifests: Iterable[Any], *, lenient: bool | None = None, max_workers: int | None = None
) -> list[dict[str, Any] | ManifestValidationError]:
    """Validate several manifests on a thread pool; one result per manifest, in order: the
    normalized manifest, or the :class:`ManifestValidationError` it raised."""

    def one(manifest: Any) -> dict[str, Any] | ManifestValidationError:
        try:
            return validate_manifest(manifest, lenient=lenient)
        except ManifestValidationError as exc:
            return exc

    items = list(manifests)
    if len(items) <= 1:
        return [one(m) for m in items]
    with ThreadPoolExecutor(max_workers=max_workers or min(8, len(items))) as pool:
        return list(pool.map(one, items))


class ManifestValidator:
    """``ManifestValidator().validate(manifest) -> (is_valid, error, paths)`` as in the seeds."""

    def __init__(self, *, lenient: bool | None = None) -> None:
        self.lenient = lenient

    def validate(self, manifest: Any) -> tuple[bool, str | None, list[str]]:
        try:
            validate_manifest(manifest, lenient=self.lenient)
        except ManifestValidationError as exc:
            return False, str(exc), exc.paths
        return True, None, []

    def validate_many(self, manifests: Iterable[Any]) -> list[tuple[bool, str | None, list[str]]]:
        """:meth:`validate` for several manifests at once (in parallel)."""
        return [
            (False, str(r), r.paths) if isinstance(r, ManifestValidationError) else (True, None, [])
            for r in validate_manifests(manifests, lenient=self.lenient)
        ]

    def normalize(self, manifest: Any) -> dict[str, Any]:
        """The validated, normalized manifest (raises on error)."""
        return validate_manifest(manifest, lenient=self.lenient)
