"""Apply a schema to an app's collection through its manifest.

The validator becomes ``collection_settings.<collection>.validation`` of the app's
registered manifest, and the manifest is registered again: the registry applies it to the
app's own physical collection (``collMod``, or a new collection), all or nothing, opening a
closed schema for ``app_id`` — the same path as a validator written in ``manifest.json``, never
a raw command beside the sandbox. The registered manifest then says what the collection
enforces (``mdb apps show``); put the same block in the manifest file too, or the next
registration from that file (a Flask app's start with ``MDB_MANIFESTS``) records the file's
settings again — the collection keeps its validator until a manifest changes it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from ..deprecation import renamed_parameters
from ..exceptions import AppNotFoundError, SchemaError
from ..scoping.names import validate_collection_name
from .validate import DEFAULT_LIMIT, as_validator, validate_documents

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

VALIDATION_LEVELS = ("strict", "moderate")
VALIDATION_ACTIONS = ("error", "warn")


def _own_collection(engine: MongoDBEngine, app: str, collection: str) -> Any:
    if engine.get_app(app) is None:
        raise AppNotFoundError(f"app {app!r} is not registered", context={"app": app})
    validate_collection_name(collection)
    return engine.get_scoped_db(app, read_scopes=[app], auto_index=False)[collection]


@renamed_parameters(app="slug")
def apply_schema(
    engine: MongoDBEngine,
    slug: str,
    collection: str,
    schema: Any,
    *,
    level: str = "strict",
    action: str = "error",
    allow_invalid: bool = False,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Make ``schema`` the validator of ``slug``'s ``collection`` through its manifest.

    A dry run comes first (:func:`~.validate.validate_documents`): when stored documents
    would fail, :class:`SchemaError` is raised (``context["failed"]``, ``context["report"]``)
    and nothing changes, unless ``allow_invalid`` — those documents then stay as they are and
    fail their next update under ``level="strict"`` (``"moderate"`` lets them be updated).
    ``action="warn"`` logs violations on the server instead of refusing them.

    Returns ``{"app", "collection", "status", "validator", "validationLevel",
    "validationAction", "report"}``; ``status`` is the registry's outcome for the
    collection (``created``, ``updated`` or ``exists`` when it already had this validator).
    """
    if level not in VALIDATION_LEVELS:
        raise ValueError(f"level must be one of {', '.join(VALIDATION_LEVELS)}, got {level!r}")
    if action not in VALIDATION_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(VALIDATION_ACTIONS)}, got {action!r}")
    validator = as_validator(schema)
    report = validate_documents(_own_collection(engine, slug, collection), validator, limit=limit)
    if not report.ok and not allow_invalid:
        raise SchemaError(
            f"{report.failed} of {report.checked} document(s) of {slug}.{collection} would fail "
            "this schema; fix them (or the schema), or apply it anyway (allow_invalid=True, "
            "mdb schema apply --force): they stay stored and fail their next update",
            context={"app": slug, "collection": collection, "failed": report.failed,
                     "report": report.as_dict()},
        )  # fmt: skip
    validation = {"validator": validator, "validationLevel": level, "validationAction": action}
    result = _register_validation(engine, slug, collection, validation)
    return {
        "app": slug,
        "collection": collection,
        "status": result,
        "validator": validator,
        "validationLevel": level,
        "validationAction": action,
        "report": report.as_dict(),
    }


@renamed_parameters(app="slug")
def remove_schema(engine: MongoDBEngine, slug: str, collection: str) -> dict[str, Any]:
    """Remove the validator of ``slug``'s ``collection`` (through the manifest, like
    :func:`apply_schema`): ``{"app", "collection", "status"}``."""
    _own_collection(engine, slug, collection)
    status = _register_validation(engine, slug, collection, {"validator": {}})
    return {"app": slug, "collection": collection, "status": status}


def current_validator(collection: Any) -> dict[str, Any] | None:
    """The validator the server enforces on a scoped collection (None if it has none)."""
    validator = collection.options().get("validator")
    return dict(validator) if validator else None


def _register_validation(
    engine: MongoDBEngine, app: str, collection: str, validation: dict[str, Any]
) -> str:
    """Set ``collection_settings.<collection>.validation`` of ``app``'s registered manifest,
    as a versioned compare-and-set (:meth:`~mdb_sync.registration.Registration.update_manifest`):
    a concurrent change of the app's manifest — another schema applied to another collection
    by another process, say — is never lost; this change is made again on top of it."""

    def change(manifest: dict[str, Any]) -> dict[str, Any]:
        settings = manifest.get("collection_settings") or {}
        entry = dict(settings.get(collection) or {})
        entry["validation"] = copy.deepcopy(validation)
        manifest["collection_settings"] = {**settings, collection: entry}
        return manifest

    result = engine.registration.update_manifest(app, change, create_indexes=False)
    for outcome in result.get("collections") or []:
        if outcome.get("collection") == collection:
            return str(outcome.get("status"))
    return "exists"
