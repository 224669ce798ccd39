"""``managed_indexes``: per collection, the indexes an app declares.

A definition is ``{"type", "name", "keys", "options", ...}`` as in the seeds; common options
(``unique``, ``sparse``, ``expireAfterSeconds``, ``partialFilterExpression``, ``collation``,
``hidden``, ``background``) may also be written next to ``keys``. Normalization fills the
type (inferred from the keys when absent), moves those options under ``options``, drops
the obsolete ``background`` and names unnamed indexes as MongoDB would name their final keys.
Checks that need the whole definition — which options suit which type, ``app_id`` and
uniqueness, duplicate names — happen here, before anything reaches the server.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, post_load, validates_schema

from ..exceptions import MongoDBEngineError
from ..indexes.spec import (
    ALL_TYPES,
    APP_ID,
    AUTO_PREFIX,
    SPECIAL_KEY_TYPES,
    TYPE_ALIASES,
    default_index_name,
    final_keys,
    is_wildcard_key,
    plan_indexes,
)
from ..scoping.guards import check_query
from ..scoping.limits import QueryLimits
from ..scoping.names import validate_collection_name
from .fields import (
    AnyObj,
    BaseSchema,
    Bool,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Str,
)

#: MongoDB allows 64 indexes per collection, one of which is ``_id``.
MAX_INDEXES_PER_COLLECTION = 63
INDEX_NAME_RE = r"[^\x00$][^\x00]{0,126}"
INDEX_NAME_HELP = "must be 1-127 characters, not starting with '$'"
REQUIRED_FOR = "required for {} indexes"


def collection_key(name: str) -> str | None:
    """Why ``name`` is not a usable logical collection name, or None."""
    try:
        validate_collection_name(name)
    except MongoDBEngineError as exc:
        return str(exc)
    return None


class CollationSchema(BaseSchema):
    locale = Str(
        required=True,
        max_len=64,
        metadata={"description": "The ICU locale (simple: binary comparison)."},
    )
    caseLevel = Bool(metadata={"description": "Compare case at strength 1 or 2."})
    caseFirst = Str(
        choices=("upper", "lower", "off"),
        metadata={"description": "Sort upper or lower case first."},
    )
    strength = Int(
        minimum=1,
        maximum=5,
        metadata={"description": "The level of comparison, 1 (base letters) to 5 (identical)."},
    )
    numericOrdering = Bool(metadata={"description": "Compare numeric strings as numbers."})
    alternate = Str(
        choices=("non-ignorable", "shifted"),
        metadata={"description": "Whether spaces and punctuation are base characters."},
    )
    maxVariable = Str(
        choices=("punct", "space"),
        metadata={"description": "With alternate shifted: which characters are ignorable."},
    )
    normalization = Bool(metadata={"description": "Check whether text needs normalization."})
    backwards = Bool(
        metadata={"description": "Sort strings with diacritics from the back (French)."}
    )


def _field_path_problem(path: str) -> str | None:
    if is_wildcard_key(path):
        head = path[: -len("$**")].rstrip(".")
        return _field_path_problem(head) if head else None
    if path.startswith("$"):
        return f"field {path!r} must not start with '$'"
    if any(not part for part in path.split(".")):
        return f"field {path!r} has an empty path segment"
    return None


class IndexKeys(AnyObj):
    """``{"field": 1, "other": -1}`` or ``[["field", 1], ["other", -1]]``, normalized to the
    object form; directions are 1/-1 or ``text``/``2dsphere``/``2d``/``hashed``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, Mapping):
            pairs = list(value.items())
        elif isinstance(value, (list, tuple)):
            pairs = []
            for i, pair in enumerate(value):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                    raise ValidationError({i: ["must be a [field, direction] pair"]})
                pairs.append((pair[0], pair[1]))
        else:
            raise ValidationError(
                "must be an object of field: direction (or [field, direction] pairs)"
            )
        if not pairs:
            raise ValidationError("must not be empty")
        keys: dict[str, Any] = {}
        for name, direction in pairs:
            if not isinstance(name, str) or not name:
                raise ValidationError("field names must be non-empty strings")
            problem = _field_path_problem(name) or (
                "field names must not contain NUL" if "\x00" in name else None
            )
            if problem:
                raise ValidationError(problem)
            if name in keys:
                raise ValidationError(f"field {name!r} appears twice")
            if isinstance(direction, bool) or direction not in (1, -1, *SPECIAL_KEY_TYPES):
                raise ValidationError(
                    f"direction of {name!r} must be 1, -1, 'text', '2dsphere', '2d' or 'hashed'"
                )
            keys[name] = int(direction) if isinstance(direction, (int, float)) else direction
        return keys


class CommonOptionsSchema(BaseSchema):
    """The options every keyed index type may take, under ``options`` or next to ``keys``."""

    unique = Bool(
        metadata={
            "description": (
                "No two documents of the app with the same keys (app_id is always included)."
            )
        }
    )
    sparse = Bool(metadata={"description": "Only documents having the indexed fields."})
    hidden = Bool(metadata={"description": "Hidden from the query planner."})
    background = Bool(metadata={"description": "Obsolete: accepted and dropped."})
    partialFilterExpression = AnyObj(
        metadata={"description": "Only documents matching this filter."}
    )
    collation = Obj(CollationSchema, metadata={"description": "The index's collation."})
    expireAfterSeconds = Int(
        minimum=0,
        maximum=2_147_483_647,
        metadata={
            "description": "TTL indexes: seconds after the indexed date a document is removed."
        },
    )


#: Options that may be written next to ``keys`` instead of under ``options``.
SHORTCUT_OPTIONS = tuple(CommonOptionsSchema().fields)


class IndexOptionsSchema(CommonOptionsSchema):
    name = Str(
        pattern=INDEX_NAME_RE,
        pattern_help=INDEX_NAME_HELP,
        metadata={"description": "The index's name (as the definition's name)."},
    )
    weights = MapOf(
        Int(minimum=1, maximum=99_999),
        metadata={"description": "Text indexes: a weight per field."},
    )
    default_language = Str(
        max_len=64,
        metadata={"description": "Text indexes: the language of stemming and stop words."},
    )
    language_override = Str(
        max_len=256,
        metadata={"description": "Text indexes: the field naming a document's language."},
    )
    textIndexVersion = Int(
        minimum=1, maximum=3, metadata={"description": "Text indexes: the index version."}
    )
    index_version_2dsphere = Int(
        minimum=1,
        maximum=3,
        data_key="2dsphereIndexVersion",
        attribute="2dsphereIndexVersion",
        metadata={"description": "2dsphere indexes: the index version."},
    )
    bits = Int(
        minimum=1, maximum=32, metadata={"description": "2d indexes: the geohash precision."}
    )
    min = Num(metadata={"description": "2d indexes: the lowest coordinate."})
    max = Num(metadata={"description": "2d indexes: the highest coordinate."})
    wildcardProjection = MapOf(
        Int(minimum=0, maximum=1),
        metadata={"description": "Wildcard indexes: the fields included (1) or excluded (0)."},
    )


#: Options beyond the common ones, and the types they belong to.
TYPE_OPTIONS = {
    "expireAfterSeconds": ("ttl",),
    "weights": ("text",),
    "default_language": ("text",),
    "language_override": ("text",),
    "textIndexVersion": ("text",),
    "2dsphereIndexVersion": ("geospatial",),
    "bits": ("geospatial",),
    "min": ("geospatial",),
    "max": ("geospatial",),
    "wildcardProjection": ("wildcard",),
}
NO_UNIQUE_TYPES = ("text", "hashed", "geospatial", "wildcard")


class VectorFieldSchema(BaseSchema):
    type = Str(
        required=True,
        choices=("vector", "filter", "autoEmbed"),
        metadata={
            "description": (
                "vector (the embedding), filter (a field $vectorSearch may filter on) or autoEmbed."
            )
        },
    )
    path = Str(required=True, max_len=512, metadata={"description": "The field's path."})
    numDimensions = Int(
        minimum=1, maximum=8192, metadata={"description": "The vectors' size (vector fields)."}
    )
    similarity = Str(
        choices=("cosine", "euclidean", "dotProduct"),
        metadata={"description": "cosine, euclidean or dotProduct (vector fields)."},
    )
    quantization = Str(
        choices=("none", "scalar", "binary"), metadata={"description": "Atlas vector quantization."}
    )
    hnswOptions = AnyObj(metadata={"description": "Atlas HNSW graph options."})
    modality = Str(max_len=64, metadata={"description": "autoEmbed fields: what is embedded."})
    model = Str(max_len=256, metadata={"description": "autoEmbed fields: the embedding model."})

    @validates_schema
    def _vector_needs(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") == "vector":
            missing = [k for k in ("numDimensions", "similarity") if k not in data]
            if missing:
                raise ValidationError({k: ["required for a vector field"] for k in missing})


class VectorDefinitionSchema(BaseSchema):
    # Atlas names the key "fields": declared under another name (a field named "fields"
    # would shadow Schema.fields), read from and loaded as "fields".
    vector_fields = ListOf(
        Obj(VectorFieldSchema),
        data_key="fields",
        attribute="fields",
        required=True,
        min_items=1,
        metadata={
            "description": "The vector field and the filter fields (app_id is added as a filter)."
        },
    )

    @validates_schema
    def _one_vector(self, data: dict[str, Any], **kwargs: Any) -> None:
        entries = data.get("fields") or []
        if not any(f.get("type") in ("vector", "autoEmbed") for f in entries):
            raise ValidationError({"fields": ["must contain a field of type 'vector'"]})
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if entry["path"] in seen:
                raise ValidationError(
                    {"fields": {i: [f"path {entry['path']!r} is also field {seen[entry['path']]}"]}}
                )
            seen[entry["path"]] = i


class SearchMappingsSchema(BaseSchema):
    dynamic = Bool(metadata={"description": "Index every field dynamically."})
    field_mappings = AnyObj(  # Atlas's key "fields"; see VectorDefinitionSchema
        data_key="fields",
        attribute="fields",
        metadata={"description": "The Atlas Search field mappings."},
    )


class SearchDefinitionSchema(BaseSchema):
    mappings = Obj(
        SearchMappingsSchema,
        required=True,
        metadata={"description": "Which fields are indexed, and how (app_id is mapped as token)."},
    )
    analyzer = Str(max_len=128, metadata={"description": "The analyzer of indexed text."})
    searchAnalyzer = Str(max_len=128, metadata={"description": "The analyzer of queries."})
    analyzers = ListOf(AnyObj(), metadata={"description": "Custom analyzers."})
    storedSource = AnyObj(metadata={"description": "Fields stored in the search index."})
    synonyms = ListOf(AnyObj(), metadata={"description": "Synonym mappings."})
    numPartitions = Int(minimum=1, maximum=64, metadata={"description": "Index partitions."})


class HybridPartSchema(BaseSchema):
    name = Str(
        pattern=INDEX_NAME_RE,
        pattern_help=INDEX_NAME_HELP,
        metadata={"description": "The part's index name (default <name>_vector / <name>_text)."},
    )
    definition = AnyObj(
        required=True, metadata={"description": "The part's Atlas index definition."}
    )


class HybridSchema(BaseSchema):
    vector_index = Obj(
        HybridPartSchema, required=True, metadata={"description": "The vector search index."}
    )
    text_index = Obj(
        HybridPartSchema, required=True, metadata={"description": "The full-text search index."}
    )


class IndexDefinitionSchema(CommonOptionsSchema):
    """One entry of ``managed_indexes.<collection>``."""

    type = Str(
        choices=ALL_TYPES,
        metadata={
            "description": (
                "The index type (default: inferred from the keys and options); vector is "
                "vectorSearch."
            )
        },
    )
    name = Str(
        pattern=INDEX_NAME_RE,
        pattern_help=INDEX_NAME_HELP,
        metadata={
            "description": (
                "The index name (default: MongoDB's name of the final keys, app_id first)."
            )
        },
    )
    keys = IndexKeys(
        metadata={
            "description": (
                "Field: direction (1, -1, text, 2dsphere, 2d, hashed), as an object or "
                "[field, direction] pairs; app_id is added first."
            )
        }
    )
    options = Obj(
        IndexOptionsSchema,
        metadata={
            "description": "The index options (the common ones may also be written next to keys)."
        },
    )
    include_app_id = Bool(
        metadata={"description": "false leaves app_id out of the keys (never for a unique index)."}
    )
    definition = AnyObj(
        metadata={"description": "vectorSearch and search indexes: the Atlas index definition."}
    )
    hybrid = Obj(
        HybridSchema,
        metadata={
            "description": (
                "hybrid indexes: the vector and text indexes used together by $rankFusion."
            )
        },
    )
    description = Str(max_len=1000, metadata={"description": "What the index is for."})

    @validates_schema(skip_on_field_errors=True)
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        _, errors = normalize_index(data)
        if errors:
            raise ValidationError(errors)

    @post_load
    def _normalize(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        normalized, _ = normalize_index(data)
        return dict(sorted(normalized.items(), key=lambda kv: _KEY_ORDER.get(kv[0], 99)))


_KEY_ORDER = {
    k: i
    for i, k in enumerate(
        ("type", "name", "keys", "options", "include_app_id", "definition", "hybrid", "description")
    )
}


def _infer_type(data: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    keys = data.get("keys") or {}
    for name, direction in keys.items():
        if isinstance(direction, str):
            return SPECIAL_KEY_TYPES[direction]
        if is_wildcard_key(name):
            return "wildcard"
    if "expireAfterSeconds" in options:
        return "ttl"
    if "definition" in data:
        return "vectorSearch" if "fields" in (data.get("definition") or {}) else "search"
    if "hybrid" in data:
        return "hybrid"
    return "regular"


def normalize_index(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The normalized definition and the errors (by key) of one deserialized definition."""
    errors: dict[str, Any] = {}  # key -> messages, or a nested section's errors

    def err(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    out = {k: copy.deepcopy(v) for k, v in data.items() if k not in SHORTCUT_OPTIONS}
    options = dict(out.pop("options", None) or {})
    for key in SHORTCUT_OPTIONS:
        if key in data:
            if key in options and options[key] != data[key]:
                err(key, f"conflicts with options.{key}")
            options.setdefault(key, data[key])
    options.pop("background", None)
    if "name" in options:
        if "name" in out and out["name"] != options["name"]:
            err("name", "conflicts with options.name")
        out.setdefault("name", options.pop("name"))
    kind = TYPE_ALIASES.get(out.get("type", ""), out.get("type")) or _infer_type(out, options)
    out["type"] = kind
    keyed = kind not in ("vectorSearch", "search", "hybrid")
    keys = out.get("keys")

    if keyed:
        for key in ("definition", "hybrid"):
            if key in out:
                err(key, f"not used by {kind} indexes")
        if not keys:
            err("keys", REQUIRED_FOR.format(kind))
        else:
            _check_keys(kind, keys, err)
        for key, types in TYPE_OPTIONS.items():
            if key in options and kind not in types:
                err("options", f"{key} is only valid for {'/'.join(types)} indexes")
        if kind == "ttl" and "expireAfterSeconds" not in options:
            err("options", "expireAfterSeconds is required for ttl indexes")
        if kind == "partial" and "partialFilterExpression" not in options:
            err("options", "partialFilterExpression is required for partial indexes")
        if options.get("unique") and kind in NO_UNIQUE_TYPES:
            err("options", f"{kind} indexes cannot be unique")
        if options.get("sparse") and "partialFilterExpression" in options:
            err("options", "sparse and partialFilterExpression cannot be combined")
        if "partialFilterExpression" in options:
            try:
                check_query(
                    options["partialFilterExpression"], QueryLimits(), "partialFilterExpression"
                )
            except MongoDBEngineError as exc:
                err("options", str(exc))
        include = out.get("include_app_id", kind != "ttl")
        if kind == "ttl" and out.get("include_app_id"):
            err(
                "include_app_id",
                "ttl indexes are single-field (MongoDB ignores TTL on compound indexes)",
            )
        if options.get("unique") and not include:
            err("options", "a unique index must include app_id, else uniqueness would span apps")
        if keys and kind == "ttl" and len(keys) != 1:
            err("keys", "ttl indexes must have exactly one field")
        if keys and include and APP_ID in keys:
            position = list(keys).index(APP_ID)
            allowed = 1 if keys.get(next(iter(keys))) == "2d" else 0
            if position != allowed or keys[APP_ID] != 1:
                err("keys", "app_id is added as the first key automatically; remove it")
        if "wildcardProjection" in options:
            wild = [k for k in (keys or {}) if is_wildcard_key(k)]
            if wild and wild[0] != "$**":
                err("options", "wildcardProjection requires the key '$**'")
            values = {v for k, v in options["wildcardProjection"].items() if k != "_id"}
            if len(values) > 1:
                err("options", "wildcardProjection cannot mix inclusion and exclusion")
            if options["wildcardProjection"].get(APP_ID) == 1 and include:
                err("options", "wildcardProjection cannot include app_id (it is a separate key)")
    else:
        if keys:
            err("keys", f"not used by {kind} indexes (they take a 'definition')")
        if options:
            err("options", f"not used by {kind} indexes")
        if "include_app_id" in out:
            err("include_app_id", f"{kind} indexes always get an app_id filter")
        if kind == "hybrid":
            if "hybrid" not in out:
                err("hybrid", "required for hybrid indexes (vector_index and text_index)")
            if "definition" in out:
                err("definition", "hybrid indexes take 'hybrid', not 'definition'")
        elif "definition" not in out:
            err("definition", REQUIRED_FOR.format(kind))
        else:
            schema = VectorDefinitionSchema if kind == "vectorSearch" else SearchDefinitionSchema
            _nested(schema, out, "definition", errors)
        if kind == "hybrid" and "hybrid" in out:
            if not out.get("name"):
                err("name", "required for hybrid indexes")
            for part, schema, suffix in (
                ("vector_index", VectorDefinitionSchema, "vector"),
                ("text_index", SearchDefinitionSchema, "text"),
            ):
                section = out["hybrid"][part]
                section.setdefault("name", f"{out.get('name', 'hybrid')}_{suffix}")
                sub: dict[str, Any] = {}
                _nested(schema, section, "definition", sub)
                if sub:
                    errors.setdefault("hybrid", {}).setdefault(part, {}).update(sub)

    if options and keyed:
        out["options"] = options
    if not out.get("name"):
        if keyed and keys and not errors:
            out["name"] = default_index_name(final_keys({**out, "keys": keys}))
        elif kind == "vectorSearch":
            out["name"] = "vector_index"
        elif kind == "search":
            out["name"] = "default"
    if str(out.get("name", "")).startswith(AUTO_PREFIX):
        err("name", f"names starting with {AUTO_PREFIX!r} are reserved for automatic indexes")
    if out.get("name") == "_id_":
        err("name", "'_id_' is the name of the _id index")
    return out, errors


def _nested(schema: type, holder: dict[str, Any], key: str, errors: dict[str, Any]) -> None:
    try:
        holder[key] = schema().load(holder[key])
    except ValidationError as exc:
        errors[key] = exc.messages


def _check_keys(kind: str, keys: Mapping[str, Any], err: Any) -> None:
    special = [v for v in keys.values() if isinstance(v, str)]
    wild = [k for k in keys if is_wildcard_key(k)]
    if kind in ("regular", "partial", "ttl") and (special or wild):
        err("keys", f"{kind} index keys take 1 or -1 (the type of this index follows its keys)")
    elif kind == "text" and "text" not in special:
        err("keys", "a text index needs at least one 'text' key")
    elif kind == "geospatial" and not any(v in ("2dsphere", "2d") for v in special):
        err("keys", "a geospatial index needs a '2dsphere' or '2d' key")
    elif kind == "hashed" and special.count("hashed") != 1:
        err("keys", "a hashed index needs exactly one 'hashed' key")
    elif kind == "wildcard" and len(wild) != 1:
        err("keys", "a wildcard index needs exactly one '$**' or 'path.$**' key")
    if kind == "geospatial" and "2d" in special:
        first = next(iter(keys))
        if keys[first] != "2d" or special.count("2d") > 1:
            err("keys", "the '2d' key must be the first key of its index")
    if kind != "text" and "text" in special:
        err("keys", f"'text' keys need type text, not {kind}")
    if kind != "hashed" and "hashed" in special:
        err("keys", f"'hashed' keys need type hashed, not {kind}")
    if kind != "geospatial" and any(v in ("2dsphere", "2d") for v in special):
        err("keys", f"geospatial keys need type geospatial, not {kind}")
    if kind != "wildcard" and wild:
        err("keys", f"wildcard keys need type wildcard, not {kind}")


def check_collection_indexes(definitions: list[dict[str, Any]], collection: str) -> dict[Any, Any]:
    """Errors (by list index) across one collection's definitions: duplicate names or
    keys, too many indexes."""
    errors: dict[Any, Any] = {}
    names: dict[str, int] = {}
    patterns: dict[str, int] = {}
    count = 0
    for i, definition in enumerate(definitions):
        for spec in plan_indexes(collection, definition):
            count += 1
            if spec.name in names and names[spec.name] != i:
                errors.setdefault(i, {}).setdefault("name", []).append(
                    f"duplicate index name {spec.name!r} (also [{names[spec.name]}])"
                )
            names.setdefault(spec.name, i)
            if hasattr(spec, "keys"):
                signature = repr((spec.keys, sorted(spec.options.items(), key=lambda kv: kv[0])))
                if signature in patterns:
                    errors.setdefault(i, {}).setdefault("keys", []).append(
                        f"same keys and options as [{patterns[signature]}]"
                    )
                patterns.setdefault(signature, i)
    if count > MAX_INDEXES_PER_COLLECTION:
        errors.setdefault("_schema", []).append(
            f"declares {count} indexes; MongoDB allows {MAX_INDEXES_PER_COLLECTION} besides _id"
        )
    return errors


class ManagedIndexesField(MapOf):
    """``{collection: [definition, ...]}`` with the cross-definition checks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ListOf(Obj(IndexDefinitionSchema)), key=collection_key, **kwargs)

    def check_items(self, items: dict[str, Any]) -> dict[str, Any]:
        return {
            coll: problems
            for coll, definitions in items.items()
            if (problems := check_collection_indexes(definitions, coll))
        }


__all__ = ["CollationSchema", "IndexDefinitionSchema", "ManagedIndexesField", "collection_key"]
