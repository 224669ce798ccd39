"""Schemas of an app's collections: infer one from a sample, check stored documents against
it (the dry run), and apply it as the collection's ``$jsonSchema`` validator through the
app's manifest.

::

    from mdb_sync.schema import apply_schema, infer_schema, validate_documents

    db = engine.get_scoped_db("shop")
    schema = infer_schema(db.orders, sample_size=500)       # $sample through the sandbox
    report = validate_documents(db.orders, schema)          # which stored documents would fail
    apply_schema(engine, "shop", "orders", schema)          # collection_settings + re-registration

Framework-free (no Flask): the ``mdb schema infer|apply`` commands and the parallax example
use it.
"""

from .apply import (
    VALIDATION_ACTIONS,
    VALIDATION_LEVELS,
    apply_schema,
    current_validator,
    remove_schema,
)
from .infer import (
    DEFAULT_ENUM_MAX_VALUES,
    DEFAULT_SAMPLE_SIZE,
    MAX_SAMPLE_SIZE,
    Inference,
    SchemaBuilder,
    bson_type,
    infer,
    infer_schema,
)
from .validate import ValidationReport, as_validator, explain, validate_documents

__all__ = [
    "DEFAULT_ENUM_MAX_VALUES",
    "DEFAULT_SAMPLE_SIZE",
    "MAX_SAMPLE_SIZE",
    "VALIDATION_ACTIONS",
    "VALIDATION_LEVELS",
    "Inference",
    "SchemaBuilder",
    "ValidationReport",
    "apply_schema",
    "as_validator",
    "bson_type",
    "current_validator",
    "explain",
    "infer",
    "infer_schema",
    "remove_schema",
    "validate_documents",
]
