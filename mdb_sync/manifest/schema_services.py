"""The service sections of a manifest: websockets, AI (LLM, embeddings, memory), CORS, data
access, observability and auto-indexing. The shapes are the ones agreed between the
features that act on them; this module only validates and normalizes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, validates_schema

from ..scoping.names import SLUG_RE
from .fields import (
    IDENT_HELP,
    IDENT_RE,
    BaseSchema,
    Bool,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    OneOfTypes,
    Str,
    route,
    strings,
    url,
)
from .schema_auth import collection_name

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _ident_key(key: str) -> str | None:
    return None if re.fullmatch(IDENT_RE, key) else "endpoint names " + IDENT_HELP


class WebsocketAuthSchema(BaseSchema):
    required = Bool(load_default=False)
    allow_anonymous = Bool(load_default=True)


class WebsocketSchema(BaseSchema):
    path = route(required=True)
    description = Str(max_len=1000)
    auth = Obj(WebsocketAuthSchema)
    ping_interval = Int(minimum=0, maximum=3600, load_default=30)
    max_message_size = Int(minimum=1, maximum=64 * 1024 * 1024, load_default=65_536)


class WebsocketsField(MapOf):
    """``{name: endpoint}``; two endpoints cannot share a path."""

    def __init__(self) -> None:
        super().__init__(Obj(WebsocketSchema), key=_ident_key)

    def check_items(self, items: dict[str, Any]) -> dict[str, Any]:
        seen: dict[str, str] = {}
        errors = {}
        for name, endpoint in items.items():
            if endpoint["path"] in seen:
                errors[name] = {"path": [f"same path as endpoint {seen[endpoint['path']]!r}"]}
            seen.setdefault(endpoint["path"], name)
        return errors


PROVIDER_TYPES = ("openai", "azure", "openai_compatible", "local")
PROVIDER_NAME_RE = r"[a-z][a-z0-9_-]{0,31}"
#: Only API keys: a manifest cannot make the process read any other variable.
ENV_NAME_RE = r"[A-Z][A-Z0-9_]{0,119}_API_KEY"


def _provider_key(key: str) -> str | None:
    if re.fullmatch(PROVIDER_NAME_RE, key):
        return None
    return (
        "provider names must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter"
    )


class _NeverInManifest(Str):
    """A key that must not be in a manifest (it is stored and exported): a secret."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(
            "API keys never go in the manifest: put the key in an environment variable "
            "(<NAME>_API_KEY, or the one api_key_env names)"
        )


class LLMProviderSchema(BaseSchema):
    """One entry of ``llm_config.providers``: how a named provider is reached. Its key comes
    from the environment (``api_key_env``, default ``<NAME>_API_KEY``)."""

    type = Str(choices=PROVIDER_TYPES)
    base_url = url()
    api_version = Str(max_len=64)
    api_key_env = Str(
        pattern=ENV_NAME_RE,
        pattern_help="must be an environment variable name ending in _API_KEY (upper case)",
    )
    timeout_seconds = Num(minimum=0, exclusive_minimum=True, maximum=3600)
    api_key = _NeverInManifest()


class PriceSchema(BaseSchema):
    """USD per million tokens."""

    input = Num(minimum=0, maximum=100_000)
    output = Num(minimum=0, maximum=100_000)

    @validates_schema
    def _one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "input" not in data and "output" not in data:
            raise ValidationError("give input and/or output (USD per million tokens)")


def _price_key(key: str) -> str | None:
    if not key.strip() or len(key) > 256 or "\x00" in key:
        return "keys are model names: 'provider/model', 'provider/*', 'model' or '*'"
    return None


class LLMConfigSchema(BaseSchema):
    enabled = Bool(load_default=False)
    # No default: without one the environment decides (MDB_LLM_BASE_URL, OPENAI_API_KEY, Azure).
    provider = Str(choices=PROVIDER_TYPES)
    providers = MapOf(Obj(LLMProviderSchema), key=_provider_key, max_items=20)
    prices = MapOf(
        OneOfTypes(
            ((int, float), Num(minimum=0, maximum=100_000)),
            (dict, Obj(PriceSchema)),
            what="a number or {input, output}",
        ),
        key=_price_key,
        max_items=200,
    )
    monthly_budget_usd = Num(minimum=0, exclusive_minimum=True, maximum=1e9)
    default_chat_model = Str(max_len=256)
    default_embedding_model = Str(max_len=256)
    base_url = url()
    api_version = Str(max_len=64)
    max_retries = Int(minimum=0, maximum=100, load_default=3)
    timeout_seconds = Num(minimum=0, exclusive_minimum=True, maximum=3600, load_default=60)
    temperature = Num(minimum=0, maximum=2)
    max_tokens = Int(minimum=1, maximum=10_000_000)
    embedding_dimensions = Int(minimum=1, maximum=65_536)
    embedding_batch_size = Int(minimum=1, maximum=100_000)


class EmbeddingConfigSchema(BaseSchema):
    """``default_max_tokens``/``default_tokenizer_model`` (the seeds' spelling) are read as
    ``max_tokens_per_chunk``/``tokenizer_model``."""

    # No default: a present embedding_config block is on unless it says otherwise.
    enabled = Bool()
    # At least 4: one character can take four byte-level BPE tokens.
    max_tokens_per_chunk = Int(minimum=4, maximum=1_000_000)
    default_max_tokens = Int(minimum=4, maximum=1_000_000)
    tokenizer_model = Str(max_len=256)
    default_tokenizer_model = Str(max_len=256)
    chunk_overlap_tokens = Int(minimum=0, maximum=1_000_000, load_default=0)
    default_embedding_model = Str(max_len=256)

    @validates_schema
    def _aliases(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors = {}
        for alias, key in (
            ("default_max_tokens", "max_tokens_per_chunk"),
            ("default_tokenizer_model", "tokenizer_model"),
        ):
            if alias in data and key in data and data[alias] != data[key]:
                errors[alias] = [f"conflicts with {key}"]
        limit = data.get("max_tokens_per_chunk", data.get("default_max_tokens", 1000))
        if data.get("chunk_overlap_tokens", 0) >= limit:
            errors["chunk_overlap_tokens"] = [f"must be less than max_tokens_per_chunk ({limit})"]
        if errors:
            raise ValidationError(errors)

    def normalize(self, data: dict[str, Any]) -> dict[str, Any]:
        data["max_tokens_per_chunk"] = data.pop(
            "default_max_tokens", data.get("max_tokens_per_chunk", 1000)
        )
        data["tokenizer_model"] = data.pop(
            "default_tokenizer_model", data.get("tokenizer_model", "gpt-3.5-turbo")
        )
        return data


class MemoryConfigSchema(BaseSchema):
    # No default: a present memory_config block is on unless it says otherwise.
    enabled = Bool()
    collection_name = collection_name(load_default="memories")
    infer = Bool(load_default=True)
    enable_graph = Bool(load_default=False)
    async_mode = Bool(load_default=False)
    embedding_model = Str(max_len=256)
    chat_model = Str(max_len=256)
    similarity_threshold = Num(minimum=0, maximum=1)
    embedding_model_dims = Int(minimum=1, maximum=65_536)
    temperature = Num(minimum=0, maximum=2)


def _origin(value: str) -> str | None:
    if value == "*":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an origin like 'https://app.example.com' or '*'"
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return "must be an origin (scheme://host[:port]) without path, query or credentials"
    return None


def _method(value: str) -> str | None:
    return None if value in (*HTTP_METHODS, "*") else f"must be one of: {', '.join(HTTP_METHODS)}"


class CorsSchema(BaseSchema):
    enabled = Bool(load_default=True)
    allow_origins = ListOf(Str(max_len=2048, check=_origin), unique=True)
    allow_methods = ListOf(
        Str(max_len=16, check=_method), unique=True, load_default=lambda: list(DEFAULT_CORS_METHODS)
    )
    allow_headers = strings()
    expose_headers = strings()
    allow_credentials = Bool(load_default=False)
    max_age = Int(minimum=0, maximum=86_400 * 7, load_default=600)

    @validates_schema
    def _wildcards(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("allow_credentials"):
            errors = {
                key: ["'*' is not allowed together with allow_credentials"]
                for key in ("allow_origins", "allow_methods", "allow_headers")
                if "*" in (data.get(key) or [])
            }
            if errors:
                raise ValidationError(errors)


def _slug(value: str) -> str | None:
    if value == "*":
        return "'*' is not allowed: name each app explicitly"
    return None if SLUG_RE.fullmatch(value) else "must be an app slug"


class DataAccessSchema(BaseSchema):
    read_scopes = ListOf(Str(max_len=64, check=_slug), unique=True, min_items=1)
    write_scope = Str(max_len=64, check=_slug)
    cross_app_policy = Str(choices=("explicit", "deny_all"), load_default="explicit")


class HealthChecksSchema(BaseSchema):
    enabled = Bool(load_default=True)
    endpoint = route(load_default="/health")
    interval_seconds = Int(minimum=1, maximum=86_400, load_default=30)


class MetricsSchema(BaseSchema):
    enabled = Bool(load_default=True)
    collect_operation_metrics = Bool(load_default=True)
    collect_performance_metrics = Bool(load_default=True)
    custom_metrics = strings()


class LoggingSchema(BaseSchema):
    level = Str(choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), load_default="INFO")
    format = Str(choices=("json", "text"), load_default="text")
    include_request_id = Bool(load_default=True)
    log_sensitive_data = Bool(load_default=False)


class ObservabilitySchema(BaseSchema):
    health_checks = Obj(HealthChecksSchema)
    metrics = Obj(MetricsSchema)
    logging = Obj(LoggingSchema)


class AutoIndexSchema(BaseSchema):
    enabled = Bool(load_default=True)
    threshold = Int(minimum=1, maximum=1_000_000)
    max_indexes_per_collection = Int(minimum=0, maximum=60)


def auto_index_field() -> OneOfTypes:
    """``auto_index``: ``true``/``false`` or ``{"enabled", "threshold",
    "max_indexes_per_collection"}``."""
    return OneOfTypes((bool, Bool()), (dict, Obj(AutoIndexSchema)), what="true, false or an object")


__all__ = [
    "DEFAULT_CORS_METHODS",
    "CorsSchema",
    "DataAccessSchema",
    "EmbeddingConfigSchema",
    "LLMConfigSchema",
    "MemoryConfigSchema",
    "ObservabilitySchema",
    "WebsocketsField",
    "auto_index_field",
]
