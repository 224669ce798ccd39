"""Infer a ``$jsonSchema`` from a sample of an app's documents.

The sample is read through the scoped collection (``$sample`` behind the sandbox's own
``$match`` on ``app_id``), so it only ever holds the app's documents. For every field the
schema gives:

- ``bsonType``: every type seen (one name, or a list). Numbers are widened the way drivers
  write them: integers are ``int`` or ``long`` by magnitude, so a field of integers accepts
  both; a field holding doubles also accepts integers (``10`` and ``10.0`` are the same price
  to an app, not to BSON).
- ``required``: the fields present in every sampled document (for a nested object: in every
  object at that path). A field that is sometimes ``null`` is present; ``null`` is then one
  of its types.
- ``enum``: only for small value sets — a field whose values are all short strings (``null``
  allowed), with at most ``enum_max_values`` distinct values, each seen twice on average. A
  field of names sampled once each is a string, not an enum of the names seen.
- nested objects (``properties``, ``required``) and arrays (``items``), down to the depth the
  engine's query guard lets a dry run check (``max_query_depth`` minus the two levels of
  ``{"$nor": [{"$jsonSchema": ...}]}``); deeper, or with more than ``max_properties``
  distinct keys (a map, not a record), an object is described by its type only.

``app_id`` is left out: it is the sandbox's tag, not the app's data — every scoped write sets
it, and its value changes when an app is imported under another slug (or disappears when it
graduates to a database of its own), so a schema requiring or pinning it would refuse writes
there. A closed schema (``additionalProperties: false``) is opened for ``app_id`` when it is
applied (:func:`mdb_sync.manifest.apply.scoped_validator`).
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.code import Code
from bson.datetime_ms import DatetimeMS

from ..exceptions import SchemaError
from ..scoping import ScopedCollection

#: Documents sampled by default, and at most (a scoped read returns at most 10,000).
DEFAULT_SAMPLE_SIZE = 1000
MAX_SAMPLE_SIZE = 10_000
#: An enum has at most this many values by default (0 turns enums off).
DEFAULT_ENUM_MAX_VALUES = 10
#: Strings longer than this are text, never enum members.
ENUM_MAX_LENGTH = 100
#: An object with more distinct keys than this across the sample is a map: type only.
DEFAULT_MAX_PROPERTIES = 200
#: Levels a dry run adds around a schema: ``{"$nor": [{"$jsonSchema": schema}]}``.
DRY_RUN_LEVELS = 2
#: The sandbox's own field, never part of an inferred schema.
SANDBOX_FIELDS = ("app_id",)

#: The order types are listed in (a stable order makes schemas comparable).
TYPE_ORDER = (
    "objectId", "string", "int", "long", "double", "decimal", "bool", "date", "timestamp",
    "binData", "regex", "javascript", "javascriptWithScope", "object", "array", "null",
    "minKey", "maxKey",
)  # fmt: skip
_INTEGERS = frozenset({"int", "long"})


def bson_type(value: Any) -> str:
    """The ``$jsonSchema`` ``bsonType`` name of a value as pymongo decodes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        return "int" if -(2**31) <= value < 2**31 else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, Code):  # a str subclass
        return "javascriptWithScope" if value.scope is not None else "javascript"
    if isinstance(value, str):
        return "string"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, (_dt.datetime, DatetimeMS)):
        return "date"
    if isinstance(value, Decimal128):
        return "decimal"
    if isinstance(value, (Mapping, DBRef)):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, uuid.UUID)):
        return "binData"
    if isinstance(value, (Regex, re.Pattern)):
        return "regex"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, MinKey):
        return "minKey"
    if isinstance(value, MaxKey):
        return "maxKey"
    raise SchemaError(f"no BSON type for a value of type {type(value).__name__}")


def widened(types: Iterable[str]) -> list[str]:
    """``types`` with the numeric widening described above, in :data:`TYPE_ORDER`."""
    result = set(types)
    if result & _INTEGERS or "double" in result:
        result |= _INTEGERS
    return sorted(result, key=_type_rank)


def _type_rank(name: str) -> int:
    return TYPE_ORDER.index(name) if name in TYPE_ORDER else len(TYPE_ORDER)


class _Node:
    """What the sample holds at one path: value count, types, short strings, sub-fields."""

    __slots__ = (
        "children",
        "count",
        "enum_blocked",
        "items",
        "map_like",
        "objects",
        "types",
        "values",
    )

    def __init__(self) -> None:
        self.count = 0
        self.types: Counter[str] = Counter()
        self.values: Counter[str] = Counter()
        self.enum_blocked = False
        self.children: dict[str, _Node] = {}
        self.objects = 0
        self.map_like = False
        self.items: _Node | None = None


@dataclass
class Inference:
    """An inferred schema and what it was inferred from.

    ``fields``: one row per described field — ``path`` (``a.b``, ``tags[]`` for array
    elements), ``types``, ``present`` (values seen), ``of`` (documents, or objects at the
    parent path), ``required`` and ``enum`` (or None).
    """

    app: str
    collection: str
    sampled: int
    schema: dict[str, Any]
    fields: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "collection": self.collection,
            "sampled": self.sampled,
            "schema": self.schema,
            "fields": self.fields,
        }


class SchemaBuilder:
    """Accumulates documents (:meth:`add`) and renders their JSON Schema (:meth:`schema`).

    Framework-free and independent of the database: :func:`infer` feeds it a sample. Memory
    is bounded by the sample: at most ``enum_max_values + 1`` strings and ``max_properties``
    keys are tracked per path, and nothing below ``max_depth``.
    """

    def __init__(
        self,
        *,
        enum_max_values: int = DEFAULT_ENUM_MAX_VALUES,
        max_properties: int = DEFAULT_MAX_PROPERTIES,
        max_depth: int = 10 - DRY_RUN_LEVELS,
        ignore: Iterable[str] = (),
    ) -> None:
        for name, value, low in (
            ("enum_max_values", enum_max_values, 0),
            ("max_properties", max_properties, 1),
            ("max_depth", max_depth, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.enum_max_values = enum_max_values
        self.max_properties = max_properties
        self.max_depth = max_depth
        self.ignore = frozenset(ignore)
        self._root = _Node()

    @property
    def documents(self) -> int:
        """Documents added so far."""
        return self._root.count

    def add(self, document: Mapping[str, Any]) -> None:
        """Account for one document (its top-level ``ignore`` fields are skipped)."""
        if not isinstance(document, Mapping):
            raise SchemaError(f"a document must be a mapping, not {type(document).__name__}")
        self._add(self._root, document, 1, top=True)

    def _add(self, node: _Node, value: Any, depth: int, top: bool = False) -> None:
        node.count += 1
        kind = bson_type(value)
        node.types[kind] += 1
        if kind == "string":
            if len(value) > ENUM_MAX_LENGTH:
                node.enum_blocked = True
            elif not node.enum_blocked:
                node.values[value] += 1
                if len(node.values) > self.enum_max_values:
                    node.enum_blocked = True
                    node.values.clear()
        elif kind == "object" and isinstance(value, Mapping):
            node.objects += 1
            # An object's properties sit two levels below it (properties -> field).
            if depth + 2 <= self.max_depth and not node.map_like:
                for key, item in value.items():
                    if top and key in self.ignore:
                        continue
                    child = node.children.get(key)
                    if child is None:
                        if len(node.children) >= self.max_properties:
                            node.map_like = True
                            node.children.clear()
                            break
                        child = node.children[key] = _Node()
                    self._add(child, item, depth + 2)
        elif kind == "array" and depth + 1 <= self.max_depth:
            items = node.items
            if items is None:
                items = node.items = _Node()
            for item in value:
                self._add(items, item, depth + 1)

    def _enum(self, node: _Node) -> list[Any] | None:
        strings = node.types.get("string", 0)
        if self.enum_max_values == 0 or node.enum_blocked or not strings:
            return None
        if set(node.types) - {"string", "null"}:
            return None
        if strings < 2 * len(node.values):
            return None  # values mostly seen once: data, not a set of labels
        values: list[Any] = sorted(node.values)
        if "null" in node.types:
            values.append(None)
        return values

    def schema(self, *, closed: bool = False, description: str | None = None) -> dict[str, Any]:
        """The JSON Schema of what was added (``closed``: refuse fields not seen)."""
        rows: list[dict[str, Any]] = []
        rendered = self._render(self._root, closed, "", rows)
        if description:
            rendered["description"] = description
        return rendered

    def fields(self) -> list[dict[str, Any]]:
        """The field table (see :class:`Inference`)."""
        rows: list[dict[str, Any]] = []
        self._render(self._root, False, "", rows)
        return rows

    def _render(
        self, node: _Node, closed: bool, path: str, rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        types = widened(node.types)
        schema: dict[str, Any] = {"bsonType": types[0] if len(types) == 1 else types}
        enum = self._enum(node)
        if enum is not None:
            schema["enum"] = enum
        if node.children:
            properties = {}
            for key, child in node.children.items():
                child_path = f"{path}.{key}" if path else key
                row = {
                    "path": child_path,
                    "types": widened(child.types),
                    "present": child.count,
                    "of": node.objects,
                    "required": child.count == node.objects,
                    "enum": self._enum(child),
                }
                rows.append(row)
                properties[key] = self._render(child, closed, child_path, rows)
            schema["properties"] = properties
            required = [k for k, child in node.children.items() if child.count == node.objects]
            if required:
                schema["required"] = required
            if closed:
                schema["additionalProperties"] = False
        if node.items is not None and node.items.count:
            item_path = f"{path}[]"
            rows.append(
                {
                    "path": item_path,
                    "types": widened(node.items.types),
                    "present": node.items.count,
                    "of": node.types.get("array", 0),
                    "required": False,
                    "enum": self._enum(node.items),
                }
            )
            schema["items"] = self._render(node.items, closed, item_path, rows)
        return schema


def _checked_sample_size(sample_size: Any, cap: int) -> int:
    if isinstance(sample_size, bool) or not isinstance(sample_size, int):
        raise ValueError(f"sample_size must be an integer, got {sample_size!r}")
    if not 1 <= sample_size <= cap:
        raise ValueError(f"sample_size must be between 1 and {cap}, got {sample_size}")
    return sample_size


def own_collection(collection: Any) -> tuple[str, str]:
    """``(app, logical name)`` of a scoped collection that reads its own app only.

    A schema applies to one physical collection, the app's own: a collection that also reads
    other apps (``data_access.read_scopes``) would mix their documents into the sample and the
    dry run, so it is refused.
    """
    if not isinstance(collection, ScopedCollection):
        raise TypeError(
            "collection must be a scoped collection, e.g. engine.get_scoped_db(app).orders, "
            f"not {type(collection).__name__}"
        )
    scopes, write_scope = collection.database.read_scopes, collection.database.write_scope
    if tuple(scopes) != (write_scope,):
        raise SchemaError(
            f"collection {collection.name!r} of app {write_scope!r} also reads "
            f"{', '.join(s for s in scopes if s != write_scope)}: a schema describes the app's "
            f"own collection; use engine.get_scoped_db({write_scope!r}, "
            f"read_scopes=[{write_scope!r}])",
            context={"app": write_scope, "collection": collection.name},
        )
    return write_scope, collection.name


def infer(
    collection: Any,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    *,
    enum_max_values: int = DEFAULT_ENUM_MAX_VALUES,
    max_properties: int = DEFAULT_MAX_PROPERTIES,
    closed: bool = False,
) -> Inference:
    """Sample up to ``sample_size`` documents of ``collection`` (a scoped collection) and
    infer their schema; see the module docstring for the rules.

    Raises :class:`SchemaError` when the app has no documents in the collection, and
    ``ValueError`` for a bad argument.
    """
    app, name = own_collection(collection)
    limits = collection.database.limits
    size = _checked_sample_size(sample_size, min(MAX_SAMPLE_SIZE, limits.max_result_docs))
    builder = SchemaBuilder(
        enum_max_values=enum_max_values,
        max_properties=max_properties,
        max_depth=max(1, limits.max_query_depth - DRY_RUN_LEVELS),
        ignore=SANDBOX_FIELDS,
    )
    for document in collection.aggregate([{"$sample": {"size": size}}]):
        builder.add(document)
    if not builder.documents:
        raise SchemaError(
            f"collection {name!r} of app {app!r} has no documents to infer a schema from",
            context={"app": app, "collection": name},
        )
    plural = "s" if builder.documents != 1 else ""
    schema = builder.schema(
        closed=closed,
        description=f"inferred from {builder.documents} sampled document{plural} of {app}.{name}",
    )
    return Inference(app, name, builder.documents, schema, builder.fields())


def infer_schema(
    collection: Any,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    *,
    enum_max_values: int = DEFAULT_ENUM_MAX_VALUES,
    max_properties: int = DEFAULT_MAX_PROPERTIES,
    closed: bool = False,
) -> dict[str, Any]:
    """The ``$jsonSchema`` inferred from a sample of ``collection`` (see :func:`infer`).

    For example::

        schema = infer_schema(db.orders, sample_size=500)
        db.create_collection("orders_v2", validator={"$jsonSchema": schema})
    """
    return infer(
        collection,
        sample_size,
        enum_max_values=enum_max_values,
        max_properties=max_properties,
        closed=closed,
    ).schema
