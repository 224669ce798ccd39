"""Declared indexes: create what a manifest's ``managed_indexes`` lists.

Every index is created on the app's physical collection with ``app_id`` as its first key, so
queries (which always carry ``app_id``) can use it and uniqueness never spans apps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure

from ..scoping.names import physical_name, validate_collection_name
from ..signals import index_created, index_failed

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

log = logging.getLogger(__name__)


def _keys(spec: Any) -> list[tuple[str, Any]]:
    if isinstance(spec, Mapping):
        return list(spec.items())
    return [tuple(pair) for pair in spec]  # type: ignore[misc]


def ensure_declared_indexes(
    engine: MongoDBEngine, slug: str, managed: Mapping[str, list[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Create the declared regular indexes of ``slug``; return one outcome per index."""
    outcomes: list[dict[str, Any]] = []
    for collection, definitions in managed.items():
        validate_collection_name(collection)
        raw = engine._raw_collection(physical_name(slug, collection))
        for definition in definitions:
            keys = _keys(definition["keys"])
            if keys[0][0] != "app_id":
                keys = [("app_id", 1), *[k for k in keys if k[0] != "app_id"]]
            options = dict(definition.get("options", {}))
            options.pop("background", None)
            name = definition.get("name")
            if name:
                options["name"] = name
            outcome = {"collection": collection, "name": name, "keys": keys}
            try:
                outcome["name"] = raw.create_index(keys, **options)
                outcome["status"] = "created"
                index_created.send(
                    engine,
                    slug=slug,
                    collection=collection,
                    name=outcome["name"],
                    keys=keys,
                    auto=False,
                )
            except OperationFailure as exc:
                outcome.update(status="failed", error=str(exc.details.get("errmsg", exc)))
                index_failed.send(
                    engine, slug=slug, collection=collection, name=name, error=outcome["error"]
                )
                log.warning(
                    "index %r on %s.%s failed: %s", name, slug, collection, outcome["error"]
                )
            outcomes.append(outcome)
    return outcomes
