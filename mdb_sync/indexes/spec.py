"""What a declared index becomes on the server: its final keys, name and options.

One function, :func:`plan_indexes`, turns a normalized manifest index definition into the
index (or, for ``hybrid``, the two Atlas indexes) to build. Manifest validation and index
reconciliation both use it, so what is validated is exactly what is built.

The sandbox rule for keys: every index starts with ``app_id`` (scoped queries always carry
it, uniqueness never spans apps, sharding on ``app_id`` stays targeted), except where MongoDB
forbids it: a TTL index must be single-field, and a ``2d`` key must come first (``app_id``
follows it). A definition may opt out with ``"include_app_id": false`` — never a unique one.
Atlas vector indexes get ``app_id`` as a ``filter`` field and search indexes map it as a
``token``, so ``$vectorSearch``/``$search`` can be filtered by app.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import IndexModel
from pymongo.operations import SearchIndexModel

APP_ID = "app_id"
#: Names of query-driven indexes start with this; manifests may not use it.
AUTO_PREFIX = "mdb_auto_"

#: Index types a manifest may declare; ``vector`` is an alias of ``vectorSearch``.
KEYED_TYPES = ("regular", "partial", "ttl", "text", "geospatial", "hashed", "wildcard")
SEARCH_TYPES = ("vectorSearch", "search", "hybrid")
TYPE_ALIASES = {"vector": "vectorSearch"}
ALL_TYPES = KEYED_TYPES + SEARCH_TYPES + tuple(TYPE_ALIASES)
#: Key values other than 1/-1, and the index type each implies.
SPECIAL_KEY_TYPES = {
    "text": "text",
    "2dsphere": "geospatial",
    "2d": "geospatial",
    "hashed": "hashed",
}


@dataclass
class IndexSpec:
    """A regular (B-tree, TTL, text, geo, hashed, wildcard) index to build."""

    collection: str
    name: str
    type: str
    keys: list[tuple[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        return IndexModel(self.keys, name=self.name, **self.options)

    def describe(self) -> dict[str, Any]:
        return {"collection": self.collection, "name": self.name, "type": self.type}


@dataclass
class SearchIndexSpec:
    """An Atlas Search or Vector Search index to build (``kind``: ``vectorSearch``/``search``)."""

    collection: str
    name: str
    type: str
    kind: str
    definition: dict[str, Any]

    def model(self) -> SearchIndexModel:
        return SearchIndexModel(self.definition, name=self.name, type=self.kind)

    def describe(self) -> dict[str, Any]:
        return {"collection": self.collection, "name": self.name, "type": self.type}


def default_index_name(keys: list[tuple[str, Any]]) -> str:
    """The name MongoDB drivers give an index of ``keys`` (``app_id_1_status_1``)."""
    return "_".join(f"{k}_{v}" for k, v in keys)


def is_wildcard_key(name: str) -> bool:
    return name == "$**" or name.endswith(".$**")


def final_keys(definition: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The key pattern built for a keyed definition, ``app_id`` placed by the sandbox rule."""
    keys = [(k, v) for k, v in definition["keys"].items()]
    if not definition.get("include_app_id", definition["type"] != "ttl"):
        return keys
    rest = [(k, v) for k, v in keys if k != APP_ID]
    if rest and rest[0][1] == "2d":
        return [rest[0], (APP_ID, 1), *rest[1:]]
    return [(APP_ID, 1), *rest]


def final_options(definition: Mapping[str, Any], keys: list[tuple[str, Any]]) -> dict[str, Any]:
    """Index options as sent to ``createIndexes``, with ``app_id`` kept out of a ``$**``
    wildcard projection (a compound wildcard index may not cover its other keys)."""
    options = copy.deepcopy(dict(definition.get("options") or {}))
    options.pop("background", None)
    options.pop("name", None)
    if any(k == "$**" for k, _ in keys) and any(k == APP_ID for k, _ in keys):
        projection = dict(options.get("wildcardProjection") or {})
        inclusive = any(v not in (0, False) for k, v in projection.items() if k != "_id")
        if not inclusive:
            projection[APP_ID] = 0
            options["wildcardProjection"] = projection
    return options


def vector_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A vector index definition with an ``app_id`` filter field."""
    result = copy.deepcopy(dict(definition))
    fields = list(result.get("fields") or [])
    if not any(f.get("path") == APP_ID for f in fields if isinstance(f, Mapping)):
        fields.append({"type": "filter", "path": APP_ID})
    result["fields"] = fields
    return result


def search_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """An Atlas Search definition that maps ``app_id`` as a ``token`` (exact filtering)."""
    result = copy.deepcopy(dict(definition))
    mappings = result.setdefault("mappings", {"dynamic": True})
    fields = mappings.setdefault("fields", {})
    fields.setdefault(APP_ID, {"type": "token"})
    return result


def plan_indexes(collection: str, definition: Mapping[str, Any]) -> list[Any]:
    """The indexes a normalized definition stands for (two for ``hybrid``, else one)."""
    kind = definition["type"]
    name = definition["name"]
    if kind == "vectorSearch":
        return [
            SearchIndexSpec(
                collection, name, kind, "vectorSearch", vector_definition(definition["definition"])
            )
        ]
    if kind == "search":
        return [
            SearchIndexSpec(
                collection, name, kind, "search", search_definition(definition["definition"])
            )
        ]
    if kind == "hybrid":
        hybrid = definition["hybrid"]
        vector, text = hybrid["vector_index"], hybrid["text_index"]
        return [
            SearchIndexSpec(
                collection,
                vector["name"],
                kind,
                "vectorSearch",
                vector_definition(vector["definition"]),
            ),
            SearchIndexSpec(
                collection, text["name"], kind, "search", search_definition(text["definition"])
            ),
        ]
    keys = final_keys(definition)
    return [IndexSpec(collection, name, kind, keys, final_options(definition, keys))]
