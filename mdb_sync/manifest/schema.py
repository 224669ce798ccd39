"""The manifest schema (version 2.0): identity plus every section, validated together."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, post_load, validates_schema

from ..scoping.names import RESERVED_SLUG_PREFIXES, RESERVED_SLUGS, SLUG_RE
from .fields import BaseSchema, Obj, Str
from .schema_auth import AuthSchema, TokenManagementSchema
from .schema_data import collection_settings_field, initial_data_field
from .schema_indexes import ManagedIndexesField
from .schema_services import (
    CorsSchema,
    DataAccessSchema,
    EmbeddingConfigSchema,
    LLMConfigSchema,
    MemoryConfigSchema,
    ObservabilitySchema,
    WebsocketsField,
    auto_index_field,
)

STATUSES = ("active", "inactive", "archived")
SCHEMA_VERSIONS = ("1.0", "2.0")
#: A manifest without ``schema_version`` is read as this version.
DEFAULT_SCHEMA_VERSION = "2.0"
CURRENT_SCHEMA_VERSION = "2.0"


def _slug(value: str) -> str | None:
    if not SLUG_RE.fullmatch(value):
        return "must be 1-64 lowercase letters, digits, '_' or '-', starting with a letter"
    if value in RESERVED_SLUGS or value.startswith(RESERVED_SLUG_PREFIXES):
        return f"{value!r} is reserved"
    return None


class ManifestSchema(BaseSchema):
    schema_version = Str(choices=SCHEMA_VERSIONS)
    slug = Str(required=True, max_len=64, check=_slug)
    name = Str(max_len=200)
    description = Str(min_len=0, max_len=10_000)
    status = Str(choices=STATUSES, load_default="active")
    developer_id = Str(max_len=256)
    auth = Obj(AuthSchema)
    token_management = Obj(TokenManagementSchema)
    managed_indexes = ManagedIndexesField()
    collection_settings = collection_settings_field()
    initial_data = initial_data_field()
    websockets = WebsocketsField()
    llm_config = Obj(LLMConfigSchema)
    embedding_config = Obj(EmbeddingConfigSchema)
    memory_config = Obj(MemoryConfigSchema)
    cors = Obj(CorsSchema)
    data_access = Obj(DataAccessSchema)
    observability = Obj(ObservabilitySchema)
    auto_index = auto_index_field()

    @validates_schema
    def _owned_by_slug(self, data: dict[str, Any], **kwargs: Any) -> None:
        slug = data.get("slug")
        if slug is None:
            return
        errors: dict[str, Any] = {}
        for coll, documents in (data.get("initial_data") or {}).items():
            for i, document in enumerate(documents):
                if "app_id" in document and document["app_id"] != slug:
                    errors.setdefault("initial_data", {}).setdefault(coll, {})[i] = {
                        "app_id": [f"must be {slug!r} (or left out: it is added)"]
                    }
        access = data.get("data_access") or {}
        if "write_scope" in access and access["write_scope"] != slug:
            errors["data_access"] = {
                "write_scope": [f"must be {slug!r}: an app only ever writes its own data"]
            }
        audience = ((data.get("auth") or {}).get("jwt") or {}).get("audience")
        if audience is not None and audience != slug:
            errors["auth"] = {
                "jwt": {
                    "audience": [
                        f"must be {slug!r} (or left out): a token is valid for its own app only"
                    ]
                }
            }
        if errors:
            raise ValidationError(errors)

    @validates_schema
    def _model_providers(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A ``provider/model`` name must name a configured provider (built-in or declared
        in ``llm_config.providers``): a typo is refused here, with the list, rather than
        sent somewhere at the first call."""
        if not any(data.get(k) for k in ("llm_config", "embedding_config", "memory_config")):
            return
        from ..ai.routing import manifest_model_errors

        errors = manifest_model_errors(data)
        if errors:
            raise ValidationError(errors)

    @post_load
    def _defaults(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["schema_version"] = CURRENT_SCHEMA_VERSION
        data.setdefault("name", data["slug"])
        if "embedding_config" in data:
            EmbeddingConfigSchema().normalize(data["embedding_config"])
        if "data_access" in data:
            access = data["data_access"]
            scopes = [data["slug"]] + [
                s for s in access.get("read_scopes", []) if s != data["slug"]
            ]
            access["read_scopes"] = scopes
            access.setdefault("write_scope", data["slug"])
        return dict(sorted(data.items(), key=lambda kv: _ORDER.get(kv[0], len(_ORDER))))


#: Key order of normalized manifests (identity first, then sections as documented).
_ORDER = {
    key: i
    for i, key in enumerate(
        (
            "schema_version",
            "slug",
            "name",
            "description",
            "status",
            "developer_id",
            "auth",
            "token_management",
            "data_access",
            "collection_settings",
            "managed_indexes",
            "initial_data",
            "auto_index",
            "websockets",
            "cors",
            "llm_config",
            "embedding_config",
            "memory_config",
            "observability",
        )
    )
}
