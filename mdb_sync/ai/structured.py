"""Structured replies: describe a schema to the model, parse its JSON, validate it.

A schema may be a marshmallow ``Schema`` (class or instance; the result is what
``schema.load`` returns), a pydantic model class (``model_validate``; pydantic comes with the
openai client), or a JSON Schema dict. JSON Schema is checked by a small validator covering
what models are asked for in practice: ``type`` (and lists of types), ``properties``,
``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, numeric and length
bounds, ``anyOf``/``oneOf``/``allOf``. Unsupported keywords are ignored, not guessed at.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


class SchemaValidationError(ValueError):
    """The reply did not match the schema; ``errors`` says where and why."""

    def __init__(self, errors: Any) -> None:
        super().__init__(json.dumps(errors, default=str) if not isinstance(errors, str) else errors)
        self.errors = errors


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply: the whole reply, a fenced block, or the outermost
    ``{...}``/``[...]``. Raises :class:`SchemaValidationError` when there is none."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise SchemaValidationError("the reply is not valid JSON")


# --- JSON Schema ---------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def validate_json_schema(value: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema``, each as ``"$.path: message"``."""
    errors: list[str] = []
    if not isinstance(schema, Mapping):
        return errors
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, k) for k in kinds):
            return [f"{path}: expected {' or '.join(kinds)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, ok in (
            ("minimum", operator.ge),
            ("maximum", operator.le),
            ("exclusiveMinimum", operator.gt),
            ("exclusiveMaximum", operator.lt),
        ):
            if key in schema and not ok(value, schema[key]):
                errors.append(f"{path}: {key} is {schema[key]}")
    if isinstance(value, (str, list, dict)):
        suffix = (
            "Length"
            if isinstance(value, str)
            else "Items"
            if isinstance(value, list)
            else "Properties"
        )
        low, high = schema.get("min" + suffix), schema.get("max" + suffix)
        if low is not None and len(value) < low:
            errors.append(f"{path}: min{suffix} is {low}")
        if high is not None and len(value) > high:
            errors.append(f"{path}: max{suffix} is {high}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, item in value.items():
            if name in properties:
                errors += validate_json_schema(item, properties[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{name}: not allowed")
            elif isinstance(schema.get("additionalProperties"), Mapping):
                errors += validate_json_schema(
                    item, schema["additionalProperties"], f"{path}.{name}"
                )
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            errors += validate_json_schema(item, schema["items"], f"{path}[{i}]")
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if not options:
            continue
        results = [validate_json_schema(value, option, path) for option in options]
        passed = sum(1 for r in results if not r)
        if key == "allOf":
            errors += [e for r in results for e in r]
        elif key == "anyOf" and not passed:
            errors.append(f"{path}: matches none of anyOf")
        elif key == "oneOf" and passed != 1:
            errors.append(f"{path}: must match exactly one of oneOf (matched {passed})")
    return errors


# --- the kinds of schema -------------------------------------------------------------------------


def _marshmallow_field(field: Any) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        nested = field.schema
        described = _marshmallow_schema(nested)
        return {"type": "array", "items": described} if field.many else described
    if isinstance(field, fields.List):
        return {"type": "array", "items": _marshmallow_field(field.inner)}
    if isinstance(field, (fields.Dict, fields.Mapping)):
        return {"type": "object"}
    if isinstance(field, fields.Boolean):
        return {"type": "boolean"}
    if isinstance(field, fields.Integer):
        return {"type": "integer"}
    if isinstance(field, (fields.Float, fields.Decimal, fields.Number)):
        return {"type": "number"}
    if isinstance(field, fields.DateTime):
        return {"type": "string", "format": "date-time"}
    if isinstance(field, fields.Date):
        return {"type": "string", "format": "date"}
    if isinstance(field, fields.Email):
        return {"type": "string", "format": "email"}
    if isinstance(field, (fields.String, fields.UUID, fields.Url)):
        return {"type": "string"}
    return {}


def _marshmallow_schema(schema: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        key = field.data_key or name
        properties[key] = _marshmallow_field(field)
        if field.metadata.get("description"):
            properties[key]["description"] = field.metadata["description"]
        if field.required:
            required.append(key)
    return {"type": "object", "properties": properties, "required": required}


class ResponseSchema:
    """A schema the reply must satisfy, whatever kind it was given as."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.kind, self.name, self.json_schema, self._validate = self._resolve(spec)

    @staticmethod
    def _resolve(spec: Any) -> tuple[str, str, dict[str, Any], Any]:
        if isinstance(spec, Schema) or (isinstance(spec, type) and issubclass(spec, Schema)):
            schema = spec() if isinstance(spec, type) else spec

            def validate(data: Any) -> Any:
                try:
                    return schema.load(data)
                except ValidationError as exc:
                    raise SchemaValidationError(exc.messages) from exc

            name = type(schema).__name__
            return "marshmallow", name, _marshmallow_schema(schema), validate
        if (
            isinstance(spec, type)
            and hasattr(spec, "model_validate")
            and hasattr(spec, "model_json_schema")
        ):

            def validate(data: Any) -> Any:
                try:
                    return spec.model_validate(data)
                except Exception as exc:  # pydantic.ValidationError
                    errors = exc.errors() if hasattr(exc, "errors") else str(exc)
                    raise SchemaValidationError(errors) from exc

            return "pydantic", spec.__name__, spec.model_json_schema(), validate
        if isinstance(spec, Mapping):
            json_schema: dict[str, Any] = dict(spec)

            def validate(data: Any) -> Any:
                errors = validate_json_schema(data, json_schema)
                if errors:
                    raise SchemaValidationError(errors)
                return data

            name = str(json_schema.get("title") or "response")
            return "json_schema", re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64], json_schema, validate
        raise TypeError(
            "response_model must be a marshmallow Schema, a pydantic model class or a JSON "
            f"Schema dict, not {type(spec).__name__}"
        )

    def validate(self, data: Any) -> Any:
        return self._validate(data)

    def instructions(self) -> str:
        return (
            "Reply with a single JSON value and nothing else (no prose, no code fence). "
            "It must validate against this JSON Schema:\n"
            + json.dumps(self.json_schema, indent=None, default=str)
        )
