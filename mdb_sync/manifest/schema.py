"""The manifest schema (version 2.0): identity plus every section, validated together."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, post_load, validates_schema

from ..scoping.names import RESERVED_SLUG_PREFIXES, RESERVED_SLUGS, SLUG_RE
from .fields import BaseSchema, Obj, Str
from .llm_providers import other_model_errors
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
    schema_version = Str(
        choices=SCHEMA_VERSIONS,
        metadata={
            "description": "The manifest format; absent: 2.0 (1.0 keys are migrated either way)."
        },
    )
    slug = Str(
        required=True,
        max_len=64,
        check=_slug,
        metadata={
            "description": (
                "The app's identifier: its collections are named <slug>_<name> and its "
                "documents carry app_id: <slug>. 1-64 lowercase letters, digits, _ or -, "
                "starting with a letter; reserved: apps, mdb, system, admin, config, local "
                "and mdb_*."
            )
        },
    )
    name = Str(max_len=200, metadata={"description": "A human-readable name (default: the slug)."})
    description = Str(min_len=0, max_len=10_000, metadata={"description": "What the app does."})
    status = Str(
        choices=STATUSES,
        load_default="active",
        metadata={
            "description": (
                "Only an active app can be used; inactive and archived apps raise "
                "AppNotActiveError."
            )
        },
    )
    developer_id = Str(
        max_len=256,
        metadata={
            "description": (
                "The owner's email: with auth.policy.owner_can_access, this account (once its"
                " email is proven) passes the app's access policy."
            )
        },
    )
    auth = Obj(
        AuthSchema,
        metadata={
            "description": (
                "Who may use the app: accounts, sign-in, authorization, sessions, CSRF, "
                "security headers."
            )
        },
    )
    token_management = Obj(
        TokenManagementSchema,
        metadata={
            "description": "Access and refresh tokens, cookies, rate limits and account lockout."
        },
    )
    managed_indexes = ManagedIndexesField(
        metadata={
            "description": (
                "The indexes registration creates and reconciles, per logical collection."
            )
        }
    )
    collection_settings = collection_settings_field(
        metadata={
            "description": (
                "Collections created at registration with validators, collation, capped size "
                "or time series, per logical collection."
            )
        }
    )
    initial_data = initial_data_field(
        metadata={
            "description": (
                "Seed documents (Extended JSON allowed), inserted once into each collection "
                "that holds none of the app's data."
            )
        }
    )
    websockets = WebsocketsField(
        metadata={"description": "Websocket endpoints served by flask_mdb, by name."}
    )
    llm_config = Obj(
        LLMConfigSchema,
        metadata={"description": "Chat and embedding models, providers, prices and budget."},
    )
    embedding_config = Obj(
        EmbeddingConfigSchema,
        metadata={
            "description": (
                "How texts are chunked before embedding (present: on unless enabled is false)."
            )
        },
    )
    memory_config = Obj(
        MemoryConfigSchema,
        metadata={"description": "Per-user memory (present: on unless enabled is false)."},
    )
    cors = Obj(
        CorsSchema,
        metadata={
            "description": "Cross-origin requests to the app's routes (absent: same-origin only)."
        },
    )
    data_access = Obj(
        DataAccessSchema,
        metadata={
            "description": "Which other apps this app reads, and whether others may read it."
        },
    )
    observability = Obj(
        ObservabilitySchema,
        metadata={"description": "The app's metrics and its part in the health verdict."},
    )
    auto_index = auto_index_field(
        metadata={"description": "Query-driven indexes for this app: true, false or settings."}
    )

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
        """A ``provider/model`` name of ``embedding_config`` or ``memory_config`` must name
        a provider ``llm_config`` configures (built-in or declared in
        ``llm_config.providers``; ``llm_config``'s own names are checked by its schema): a
        typo is refused here, with the list, rather than sent somewhere at the first call."""
        errors = other_model_errors(data)
        if errors:
            raise ValidationError(errors)

    @post_load
    def _defaults(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["schema_version"] = CURRENT_SCHEMA_VERSION
        data.setdefault("name", data["slug"])
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
