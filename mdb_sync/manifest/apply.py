"""Acting on the data sections of a manifest at registration: ``collection_settings`` and
``initial_data``.

Collection settings are applied all or nothing: a setting the server refuses (a malformed
``$jsonSchema``, say) undoes what this registration created or changed and raises
:class:`ManifestValidationError` naming the collection. Settings an existing collection
cannot take (capped, time series, collation are fixed at creation) are reported as a
``conflict``, never applied destructively. Seed documents are inserted once per app and
collection — claimed atomically in the registry, so two processes registering at once do
not both seed — and only into a collection that has none of the app's documents yet.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson import json_util
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from ..exceptions import ManifestValidationError
from ..indexes.declared import error_message, plain, subset
from ..scoping import ScopedDatabase
from ..scoping.names import physical_name

if TYPE_CHECKING:
    from ..catalog import AppCatalog
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)

_VALIDATION_KEYS = ("validator", "validationLevel", "validationAction")
_FIXED_KEYS = ("capped", "size", "max", "timeseries", "expireAfterSeconds", "collation")


def scoped_validator(validator: Mapping[str, Any]) -> dict[str, Any]:
    """``validator`` with ``app_id`` allowed by a closed ``$jsonSchema``
    (``additionalProperties: false`` would otherwise refuse every scoped insert)."""
    result = copy.deepcopy(dict(validator))
    schema = result.get("$jsonSchema")
    if isinstance(schema, dict) and schema.get("additionalProperties") is False:
        properties = schema.setdefault("properties", {})
        if isinstance(properties, dict):
            properties.setdefault("app_id", {"bsonType": "string"})
    return result


def _create_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {k: settings[k] for k in _FIXED_KEYS if k in settings}
    validation = settings.get("validation")
    if validation:
        options["validator"] = scoped_validator(validation["validator"])
        for key in ("validationLevel", "validationAction"):
            if key in validation:
                options[key] = validation[key]
    return options


def _same(key: str, wanted: Any, actual: Any) -> bool:
    if key in ("timeseries", "collation"):  # the server fills in defaults
        return subset(wanted, actual)
    if key == "capped":
        return bool(wanted) == bool(actual)
    return bool(plain(wanted) == plain(actual))


def apply_collection_settings(
    engine: MongoDBEngine, slug: str, settings: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Create or update the collections of ``settings``; one outcome per collection
    (``created``, ``updated``, ``exists`` or ``conflict``)."""
    db = engine.storage.database()
    names = {coll: physical_name(slug, coll) for coll in settings}
    current = {
        info["name"]: info.get("options", {})
        for info in db.list_collections(filter={"name": {"$in": list(names.values())}})
    }
    undo: list[tuple[str, str, dict[str, Any]]] = []
    outcomes: list[dict[str, Any]] = []
    coll = ""
    try:
        for coll, conf in settings.items():
            physical = names[coll]
            wanted = _create_options(conf)
            if physical not in current:
                try:
                    db.create_collection(physical, check_exists=False, **wanted)
                    undo.append(("drop", physical, {}))
                    outcomes.append({"collection": coll, "status": "created"})
                    continue
                except (CollectionInvalid, OperationFailure) as exc:
                    if getattr(exc, "code", None) != 48:  # NamespaceExists: created meanwhile
                        raise
                    current[physical] = db[physical].options()
            outcomes.append(_update(db, coll, physical, wanted, current[physical], undo))
    except PyMongoError as exc:
        _rollback(db, undo)
        message = f"the server refused these settings: {error_message(exc)}"
        raise ManifestValidationError(
            f"invalid manifest {slug!r}: collection_settings.{coll}: {message}",
            errors={f"collection_settings.{coll}": [message]},
            context={"app": slug, "collection": coll},
        ) from exc
    for outcome in outcomes:
        if outcome["status"] == "conflict":
            log.warning(
                "collection settings of %s.%s: %s", slug, outcome["collection"], outcome["error"]
            )
    return outcomes


def _update(
    db: Any,
    coll: str,
    physical: str,
    wanted: dict[str, Any],
    actual: dict[str, Any],
    undo: list[tuple[str, str, dict[str, Any]]],
) -> dict[str, Any]:
    fixed = [k for k in _FIXED_KEYS if k in wanted and not _same(k, wanted[k], actual.get(k))]
    change = {
        k: wanted[k]
        for k in _VALIDATION_KEYS
        if k in wanted and not _same(k, wanted[k], actual.get(k))
    }
    status = "exists"
    if change:
        previous = {k: actual[k] for k in change if k in actual}
        if "validator" in change:
            previous.setdefault("validator", {})
        db.command("collMod", physical, **change)
        undo.append(("collMod", physical, previous))
        status = "updated"
    outcome: dict[str, Any] = {"collection": coll, "status": status}
    if fixed:
        outcome["status"] = "conflict"
        outcome["error"] = (
            f"{', '.join(fixed)} of an existing collection cannot be changed in place "
            "(recreate the collection, or export and import it)"
        )
    return outcome


def _rollback(db: Any, undo: list[tuple[str, str, dict[str, Any]]]) -> None:
    for action, physical, previous in reversed(undo):
        try:
            if action == "drop":
                db.drop_collection(physical)
            else:
                db.command("collMod", physical, **previous)
        except PyMongoError:
            log.error("could not undo %s of %s after a refused registration", action, physical)


def _digest(documents: Any) -> str:
    return hashlib.sha256(json_util.dumps(documents).encode()).hexdigest()[:16]


def seed_initial_data(
    engine: MongoDBEngine,
    slug: str,
    initial_data: Mapping[str, list[Mapping[str, Any]]],
    catalog: AppCatalog,
    seeded: list[Mapping[str, Any]] | None,
) -> dict[str, int]:
    """Insert each collection's seed documents once; return ``{collection: inserted}``.

    ``seeded`` is the registry record's list of collections already seeded; each claim is
    written through the app ``catalog`` (which bumps the record's version). Documents may
    use MongoDB Extended JSON (``{"$oid": ...}``, ``{"$date": ...}``).
    """
    done = {entry.get("collection") for entry in seeded or []}
    counts: dict[str, int] = {}
    db = None
    for coll, documents in initial_data.items():
        if coll in done:
            continue
        claim = catalog.update(
            slug,
            {"seeded.collection": {"$ne": coll}},
            {
                "$push": {
                    "seeded": {
                        "collection": coll,
                        "digest": _digest(documents),
                        "count": len(documents),
                        "at": _dt.datetime.now(_dt.timezone.utc),
                    }
                }
            },
        )
        if claim.modified_count != 1:
            continue  # another process claimed it
        db = db or ScopedDatabase(engine.scope_host, slug, limits=engine.limits, auto_index=False)
        target = db[coll]
        if not documents or target.count_documents({}, limit=1):
            counts[coll] = 0
            continue
        decoded = json_util.loads(json_util.dumps(list(documents)))
        target.insert_many(decoded)
        counts[coll] = len(decoded)
        log.info("seeded %d document(s) into %s.%s", len(decoded), slug, coll)
    return counts
