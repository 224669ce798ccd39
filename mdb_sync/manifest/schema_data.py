"""``collection_settings`` (validators, collation, capped, time series — applied at
registration) and ``initial_data`` (seed documents, inserted once)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, post_load, validates_schema

from .fields import AnyObj, BaseSchema, Bool, Int, ListOf, MapOf, Obj, Str
from .schema_indexes import CollationSchema, collection_key

#: At most this many seed documents per collection: seeds are fixtures, not data loads.
MAX_SEED_DOCUMENTS = 10_000
FORBIDDEN_OPERATORS = frozenset({"$where", "$function", "$accumulator", "$eval"})


def forbidden_operator(value: Any, depth: int = 0) -> str | None:
    """The first server-side JavaScript operator inside ``value``, if any."""
    if depth > 100:
        return "is nested too deeply"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in FORBIDDEN_OPERATORS:
                return f"uses {key}, which is refused (server-side JavaScript)"
            found = forbidden_operator(item, depth + 1)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = forbidden_operator(item, depth + 1)
            if found:
                return found
    return None


class ValidationSettingsSchema(BaseSchema):
    """``{"validator": {...}}`` or the shortcut ``{"$jsonSchema": {...}}``."""

    validator = AnyObj(
        metadata={
            "description": (
                'The collection\'s validator (a query document, usually {"$jsonSchema": ...}).'
            )
        }
    )
    json_schema = AnyObj(
        data_key="$jsonSchema",
        attribute="$jsonSchema",
        metadata={
            "description": (
                'A $jsonSchema, shorthand for validator: {"$jsonSchema": ...} (a closed '
                "schema is opened for app_id)."
            )
        },
    )
    validationLevel = Str(
        choices=("off", "strict", "moderate"),
        metadata={"description": "Which writes are validated: strict, moderate or off."},
    )
    validationAction = Str(
        choices=("error", "warn", "errorAndLog"),
        metadata={"description": "What a failing write does: error, warn or errorAndLog."},
    )

    @validates_schema
    def _one_validator(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "validator" in data and "$jsonSchema" in data:
            raise ValidationError({"$jsonSchema": ["give either validator or $jsonSchema"]})
        if "validator" not in data and "$jsonSchema" not in data:
            raise ValidationError({"validator": ["required (or $jsonSchema)"]})
        validator = data.get("validator", {"$jsonSchema": data.get("$jsonSchema")})
        problem = forbidden_operator(validator)
        if problem:
            raise ValidationError({"validator": [problem]})

    @post_load
    def _normalize(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "$jsonSchema" in data:
            data["validator"] = {"$jsonSchema": data.pop("$jsonSchema")}
        return data


class TimeseriesSchema(BaseSchema):
    timeField = Str(
        required=True,
        max_len=256,
        metadata={"description": "The field holding each measurement's date."},
    )
    metaField = Str(max_len=256, metadata={"description": "The field identifying a series."})
    granularity = Str(
        choices=("seconds", "minutes", "hours"),
        metadata={"description": "The expected interval between measurements."},
    )
    bucketMaxSpanSeconds = Int(
        minimum=1,
        maximum=31_536_000,
        metadata={"description": "A bucket's span (with bucketRoundingSeconds, equal to it)."},
    )
    bucketRoundingSeconds = Int(
        minimum=1,
        maximum=31_536_000,
        metadata={"description": "Where buckets start (equal to bucketMaxSpanSeconds)."},
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data.get("metaField") and data.get("metaField") == data.get("timeField"):
            errors["metaField"] = ["must differ from timeField"]
        buckets = [k for k in ("bucketMaxSpanSeconds", "bucketRoundingSeconds") if k in data]
        if buckets and "granularity" in data:
            errors["granularity"] = ["cannot be combined with bucket* settings"]
        if len(buckets) == 1:
            errors[buckets[0]] = ["bucketMaxSpanSeconds and bucketRoundingSeconds go together"]
        elif buckets and data["bucketMaxSpanSeconds"] != data["bucketRoundingSeconds"]:
            errors["bucketRoundingSeconds"] = ["must equal bucketMaxSpanSeconds"]
        if errors:
            raise ValidationError(errors)


class CollectionSettingsSchema(BaseSchema):
    validation = Obj(
        ValidationSettingsSchema,
        metadata={"description": "A document validator, applied with collMod when it changes."},
    )
    collation = Obj(
        CollationSchema,
        metadata={"description": "The collection's default collation (fixed at creation)."},
    )
    capped = Bool(metadata={"description": "A capped collection (needs size; fixed at creation)."})
    size = Int(
        minimum=1, maximum=2**53, metadata={"description": "A capped collection's size, in bytes."}
    )
    max = Int(
        minimum=1,
        maximum=2**31 - 1,
        metadata={"description": "A capped collection's maximum number of documents."},
    )
    timeseries = Obj(
        TimeseriesSchema, metadata={"description": "A time-series collection (fixed at creation)."}
    )
    expireAfterSeconds = Int(
        minimum=0,
        maximum=2_147_483_647,
        metadata={"description": "Seconds after which time-series documents are removed."},
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        if data.get("capped"):
            if "size" not in data:
                errors["size"] = ["required for a capped collection (bytes)"]
            if "timeseries" in data:
                errors["timeseries"] = ["a collection cannot be both capped and a time series"]
        else:
            for key in ("size", "max"):
                if key in data:
                    errors[key] = ["only valid with capped: true"]
        if "expireAfterSeconds" in data and "timeseries" not in data:
            errors["expireAfterSeconds"] = [
                "only valid for time series (use a ttl index otherwise)"
            ]
        if errors:
            raise ValidationError(errors)


class SeedDocument(AnyObj):
    """A seed document: an object without ``$``-prefixed top-level keys."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        document = super()._deserialize(value, attr, data, **kwargs)
        for key in document:
            if not isinstance(key, str) or key.startswith("$") or "\x00" in key:
                raise ValidationError(f"invalid field name {key!r}")
        return document


def collection_settings_field(**kwargs: Any) -> MapOf:
    return MapOf(Obj(CollectionSettingsSchema), key=collection_key, **kwargs)


def initial_data_field(**kwargs: Any) -> MapOf:
    return MapOf(ListOf(SeedDocument(), max_items=MAX_SEED_DOCUMENTS), key=collection_key, **kwargs)
