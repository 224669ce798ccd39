"""The dry run of a validator: which of an app's stored documents it would refuse.

The server decides, not this module: the documents are those the scoped collection finds
with ``{"$nor": [validator]}`` — the same ``$jsonSchema`` engine that will enforce the
validator, on the app's own documents only. :func:`explain` then says in words why each one
fails, for the keywords schemas are usually made of (``bsonType``, ``required``,
``properties``, ``additionalProperties``, ``items``, ``enum``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``minItems``/``maxItems``); a failure it cannot explain is
reported as such, never hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import SchemaError
from ..manifest.apply import scoped_validator
from .infer import bson_type, own_collection

#: Failing documents listed by default, and at most.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
#: Problems described per document.
MAX_PROBLEMS = 10
_NUMBER = frozenset({"int", "long", "double", "decimal"})
#: The keywords of MongoDB's ``$jsonSchema``: a mapping made of these is a schema body.
SCHEMA_KEYWORDS = frozenset(
    {
        "bsonType", "type", "properties", "required", "additionalProperties", "items",
        "additionalItems", "enum", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "minItems",
        "maxItems", "uniqueItems", "minProperties", "maxProperties", "patternProperties",
        "dependencies", "allOf", "anyOf", "oneOf", "not", "title", "description",
    }
)  # fmt: skip


def as_validator(schema: Any) -> dict[str, Any]:
    """A collection validator from ``schema``: a ``$jsonSchema`` body (a mapping of schema
    keywords), a validator (``{"$jsonSchema": ...}`` or any query expression, such as
    ``{"qty": {"$gte": 0}}``), or :func:`~.infer`'s output (a mapping with a ``"schema"``
    key)."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"a schema must be a JSON object, not {type(schema).__name__}")
    if "schema" in schema and isinstance(schema["schema"], Mapping):
        schema = schema["schema"]
    if not schema:
        raise SchemaError("the schema is empty")
    body_only = set(schema) <= SCHEMA_KEYWORDS
    validator = {"$jsonSchema": dict(schema)} if body_only else dict(schema)
    body = validator.get("$jsonSchema")
    if "$jsonSchema" in validator and not isinstance(body, Mapping):
        raise SchemaError("$jsonSchema must be a JSON object")
    return validator


@dataclass
class ValidationReport:
    """``checked`` documents, of which ``failed`` would be refused; ``documents`` lists the
    first ``limit`` of those (by ``_id``): ``{"_id", "document", "problems"}``."""

    app: str
    collection: str
    checked: int
    failed: int
    documents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "collection": self.collection,
            "checked": self.checked,
            "failed": self.failed,
            "documents": self.documents,
        }


def validate_documents(
    collection: Any, schema: Any, *, limit: int = DEFAULT_LIMIT
) -> ValidationReport:
    """The dry run: which documents of ``collection`` (a scoped collection of one app)
    ``schema`` would refuse. Reads only; ``schema`` as :func:`as_validator` takes it."""
    app, name = own_collection(collection)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer between 0 and {MAX_LIMIT}, got {limit!r}")
    validator = scoped_validator(as_validator(schema))  # as the registry will apply it
    failing = {"$nor": [validator]}
    checked = collection.count_documents({})
    failed = collection.count_documents(failing)
    documents = []
    if failed and limit:
        body = validator.get("$jsonSchema")
        for document in collection.find(failing).sort("_id", 1).limit(limit):
            problems = explain(document, body) if isinstance(body, Mapping) else []
            documents.append(
                {
                    "_id": document.get("_id"),
                    "document": document,
                    "problems": problems or ["fails the validator (a rule not explained here)"],
                }
            )
    return ValidationReport(app, name, checked, failed, documents)


def explain(document: Any, schema: Mapping[str, Any]) -> list[str]:
    """Why ``document`` does not match ``schema``, in words (at most 10 reasons)."""
    problems: list[str] = []
    _check(document, schema, "", problems)
    return problems[:MAX_PROBLEMS]


def _allowed_types(schema: Mapping[str, Any]) -> set[str] | None:
    declared = schema.get("bsonType")
    if declared is None:
        return None
    names = {declared} if isinstance(declared, str) else set(declared)
    if "number" in names:
        names |= _NUMBER
    return names


def _same(a: Any, b: Any) -> bool:
    """Equality as ``enum`` means it: ``1`` is not ``True``."""
    return a == b and (isinstance(a, bool) == isinstance(b, bool))


def _check(value: Any, schema: Mapping[str, Any], path: str, problems: list[str]) -> None:
    if len(problems) >= MAX_PROBLEMS or not isinstance(schema, Mapping):
        return
    where = path or "the document"
    try:
        kind = bson_type(value)
    except SchemaError:
        return
    allowed = _allowed_types(schema)
    if allowed is not None and kind not in allowed:
        expected = " or ".join(sorted(allowed))
        problems.append(f"{where}: {kind}, expected {expected}")
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same(value, option) for option in enum):
        shown = ", ".join(repr(option) for option in enum[:10])
        problems.append(f"{where}: {value!r} is not one of {shown}")
    if kind in _NUMBER and not isinstance(value, bool):
        number = float(str(value)) if kind == "decimal" else value
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, (int, float)) and number < low:
            problems.append(f"{where}: {value!r} is below the minimum {low}")
        if isinstance(high, (int, float)) and number > high:
            problems.append(f"{where}: {value!r} is above the maximum {high}")
    if kind == "string":
        shortest, longest = schema.get("minLength"), schema.get("maxLength")
        if isinstance(shortest, int) and len(value) < shortest:
            problems.append(f"{where}: shorter than {shortest} characters")
        if isinstance(longest, int) and len(value) > longest:
            problems.append(f"{where}: longer than {longest} characters")
    if kind == "object" and isinstance(value, Mapping):
        _check_object(value, schema, path, problems)
    if kind == "array":
        fewest, most = schema.get("minItems"), schema.get("maxItems")
        if isinstance(fewest, int) and len(value) < fewest:
            problems.append(f"{where}: fewer than {fewest} items")
        if isinstance(most, int) and len(value) > most:
            problems.append(f"{where}: more than {most} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", problems)


def _check_object(
    value: Mapping[str, Any], schema: Mapping[str, Any], path: str, problems: list[str]
) -> None:
    prefix = f"{path}." if path else ""
    for key in schema.get("required") or ():
        if key not in value:
            problems.append(f"{prefix}{key}: missing (required)")
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], f"{prefix}{key}", problems)
        elif schema.get("additionalProperties") is False:
            problems.append(f"{prefix}{key}: not allowed (additionalProperties is false)")
        elif isinstance(schema.get("additionalProperties"), Mapping):
            _check(item, schema["additionalProperties"], f"{prefix}{key}", problems)
