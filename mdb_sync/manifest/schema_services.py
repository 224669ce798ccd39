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
    required = Bool(
        load_default=False,
        metadata={
            "description": "Only identified clients may connect (others are closed with 1008)."
        },
    )
    allow_anonymous = Bool(
        load_default=True,
        metadata={"description": "Anonymous clients may connect (false: as required)."},
    )


class WebsocketSchema(BaseSchema):
    path = route(
        required=True,
        metadata={
            "description": (
                "The endpoint's URL path; it may hold URL variables (/rooms/<room>/ws), "
                'found in connection.state["path_args"].'
            )
        },
    )
    description = Str(max_len=1000, metadata={"description": "What the endpoint is for."})
    auth = Obj(WebsocketAuthSchema, metadata={"description": "Who may connect."})
    ping_interval = Int(
        minimum=0,
        maximum=3600,
        load_default=30,
        metadata={
            "description": (
                "Seconds between server pings (0: never); a client that misses one is dropped."
            )
        },
    )
    max_message_size = Int(
        minimum=1,
        maximum=64 * 1024 * 1024,
        load_default=65_536,
        metadata={
            "description": (
                "The largest message a client may send, in bytes (beyond: closed with 1009)."
            )
        },
    )


class WebsocketsField(MapOf):
    """``{name: endpoint}``; two endpoints cannot share a path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Obj(WebsocketSchema), key=_ident_key, **kwargs)

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

    type = Str(
        choices=PROVIDER_TYPES,
        metadata={
            "description": (
                "How the provider is spoken to: openai_compatible (default), openai, azure or"
                " local."
            )
        },
    )
    base_url = url(metadata={"description": "Its endpoint."})
    api_version = Str(max_len=64, metadata={"description": "Azure's API version."})
    api_key_env = Str(
        pattern=ENV_NAME_RE,
        pattern_help="must be an environment variable name ending in _API_KEY (upper case)",
        metadata={
            "description": "The environment variable holding its key (default <NAME>_API_KEY)."
        },
    )
    timeout_seconds = Num(
        minimum=0,
        exclusive_minimum=True,
        maximum=3600,
        metadata={"description": "Seconds one call may take."},
    )
    api_key = _NeverInManifest(
        metadata={"description": "Refused: keys never go in a manifest (use api_key_env)."}
    )


class PriceSchema(BaseSchema):
    """USD per million tokens."""

    input = Num(
        minimum=0, maximum=100_000, metadata={"description": "USD per million prompt tokens."}
    )
    output = Num(
        minimum=0, maximum=100_000, metadata={"description": "USD per million completion tokens."}
    )

    @validates_schema
    def _one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "input" not in data and "output" not in data:
            raise ValidationError("give input and/or output (USD per million tokens)")


def _price_key(key: str) -> str | None:
    if not key.strip() or len(key) > 256 or "\x00" in key:
        return "keys are model names: 'provider/model', 'provider/*', 'model' or '*'"
    return None


class LLMConfigSchema(BaseSchema):
    enabled = Bool(
        load_default=False, metadata={"description": "The app's LLM service may be used."}
    )
    # No default: without one the environment decides (MDB_LLM_BASE_URL, OPENAI_API_KEY, Azure).
    provider = Str(
        choices=PROVIDER_TYPES,
        metadata={
            "description": (
                "The default provider of model names without a provider/ prefix (absent: the "
                "environment decides)."
            )
        },
    )
    providers = MapOf(
        Obj(LLMProviderSchema),
        key=_provider_key,
        max_items=20,
        metadata={"description": "Other providers, or other endpoints of built-in ones, by name."},
    )
    prices = MapOf(
        OneOfTypes(
            ((int, float), Num(minimum=0, maximum=100_000)),
            (dict, Obj(PriceSchema)),
            what="a number or {input, output}",
        ),
        key=_price_key,
        max_items=200,
        metadata={
            "description": (
                "Prices by provider/model, provider/*, model or * (a number: input and output"
                " alike)."
            )
        },
    )
    monthly_budget_usd = Num(
        minimum=0,
        exclusive_minimum=True,
        maximum=1e9,
        metadata={
            "description": (
                "Refuse calls once the month's spending would pass this (AIBudgetExceededError)."
            )
        },
    )
    default_chat_model = Str(
        max_len=256, metadata={"description": "The chat model (provider/model or model)."}
    )
    default_embedding_model = Str(
        max_len=256, metadata={"description": "The embedding model (provider/model or model)."}
    )
    base_url = url(metadata={"description": "The endpoint of an openai_compatible provider."})
    api_version = Str(max_len=64, metadata={"description": "Azure's API version."})
    max_retries = Int(
        minimum=0,
        maximum=100,
        load_default=3,
        metadata={"description": "Retries on 429, 5xx and timeouts."},
    )
    timeout_seconds = Num(
        minimum=0,
        exclusive_minimum=True,
        maximum=3600,
        load_default=60,
        metadata={"description": "Seconds one call may take."},
    )
    temperature = Num(
        minimum=0, maximum=2, metadata={"description": "The default sampling temperature."}
    )
    max_tokens = Int(
        minimum=1,
        maximum=10_000_000,
        metadata={
            "description": "The default completion limit (4096 with a budget, unless given)."
        },
    )
    embedding_dimensions = Int(
        minimum=1,
        maximum=65_536,
        metadata={"description": "The size of embeddings, for models that can shorten them."},
    )
    embedding_batch_size = Int(
        minimum=1, maximum=100_000, metadata={"description": "Texts per embedding request."}
    )


class EmbeddingConfigSchema(BaseSchema):
    """``default_max_tokens``/``default_tokenizer_model`` (the seeds' spelling) are read as
    ``max_tokens_per_chunk``/``tokenizer_model``."""

    # No default: a present embedding_config block is on unless it says otherwise.
    enabled = Bool(metadata={"description": "The app's embedding service may be used."})
    # At least 4: one character can take four byte-level BPE tokens.
    max_tokens_per_chunk = Int(
        minimum=4,
        maximum=1_000_000,
        metadata={"description": "The largest chunk, in tokens (default 1000)."},
    )
    default_max_tokens = Int(
        minimum=4,
        maximum=1_000_000,
        metadata={"description": "The seeds' spelling of max_tokens_per_chunk."},
    )
    tokenizer_model = Str(
        max_len=256,
        metadata={
            "description": (
                "The model whose tiktoken encoding counts tokens (default gpt-3.5-turbo)."
            )
        },
    )
    default_tokenizer_model = Str(
        max_len=256, metadata={"description": "The seeds' spelling of tokenizer_model."}
    )
    chunk_overlap_tokens = Int(
        minimum=0,
        maximum=1_000_000,
        load_default=0,
        metadata={"description": "Tokens repeated between consecutive chunks."},
    )
    default_embedding_model = Str(
        max_len=256, metadata={"description": "The embedding model (default: llm_config's)."}
    )

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
    enabled = Bool(metadata={"description": "The app's memory service may be used."})
    collection_name = collection_name(
        load_default="memories", metadata={"description": "The app's collection of memories."}
    )
    infer = Bool(
        load_default=True,
        metadata={
            "description": (
                "The chat model extracts facts and decides to add, update or delete memories."
            )
        },
    )
    enable_graph = Bool(
        load_default=False,
        metadata={
            "description": (
                "Also keep the conversation's entities and relations (<collection_name>_graph)."
            )
        },
    )
    async_mode = Bool(
        load_default=False,
        metadata={"description": "Adds are queued on a background pool (flush() waits)."},
    )
    embedding_model = Str(
        max_len=256,
        metadata={"description": "The embedding model of memories (default: llm_config's)."},
    )
    chat_model = Str(
        max_len=256,
        metadata={"description": "The chat model of inference (default: llm_config's)."},
    )
    similarity_threshold = Num(
        minimum=0,
        maximum=1,
        metadata={"description": "Least similarity of a memory search result."},
    )
    embedding_model_dims = Int(
        minimum=1,
        maximum=65_536,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    temperature = Num(
        minimum=0, maximum=2, metadata={"description": "The sampling temperature of inference."}
    )


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
    enabled = Bool(
        load_default=True, metadata={"description": "Answer cross-origin requests as below."}
    )
    allow_origins = ListOf(
        Str(max_len=2048, check=_origin),
        unique=True,
        metadata={"description": "Origins allowed, exactly (scheme://host[:port]), or *."},
    )
    allow_methods = ListOf(
        Str(max_len=16, check=_method),
        unique=True,
        load_default=lambda: list(DEFAULT_CORS_METHODS),
        metadata={"description": "Methods allowed in preflights."},
    )
    allow_headers = strings(metadata={"description": "Request headers allowed."})
    expose_headers = strings(metadata={"description": "Response headers the browser may read."})
    allow_credentials = Bool(
        load_default=False, metadata={"description": "Cookies may be sent (never with *)."}
    )
    max_age = Int(
        minimum=0,
        maximum=86_400 * 7,
        load_default=600,
        metadata={"description": "Seconds a preflight answer may be cached."},
    )

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
    read_scopes = ListOf(
        Str(max_len=64, check=_slug),
        unique=True,
        min_items=1,
        metadata={
            "description": (
                "Other apps whose data this app reads (the app itself is always included)."
            )
        },
    )
    write_scope = Str(max_len=64, check=_slug, metadata={"description": "Only the app itself."})
    cross_app_policy = Str(
        choices=("explicit", "deny_all"),
        load_default="explicit",
        metadata={
            "description": (
                "explicit: apps that name this one in read_scopes may read it; deny_all: none may."
            )
        },
    )


class HealthChecksSchema(BaseSchema):
    enabled = Bool(
        load_default=True,
        metadata={
            "description": (
                "false: the app is listed as unmonitored and kept out of the health verdict."
            )
        },
    )
    endpoint = route(
        metadata={
            "inert": True,
            "description": (
                "Accepted for manifests written for the predecessor; no effect yet. The "
                "health endpoint is MDB_HEALTH_URL."
            ),
        },
    )
    interval_seconds = Int(
        minimum=1,
        maximum=86_400,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )


class MetricsSchema(BaseSchema):
    enabled = Bool(
        load_default=True,
        metadata={"description": "Record the app's operations in the engine's metrics."},
    )
    collect_operation_metrics = Bool(load_default=True, metadata={"description": "As enabled."})
    collect_performance_metrics = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    custom_metrics = strings(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )


class LoggingSchema(BaseSchema):
    level = Str(
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        metadata={
            "inert": True,
            "description": (
                "Accepted for manifests written for the predecessor; no effect yet. Logging "
                "is configured in code (configure_logging)."
            ),
        },
    )
    format = Str(
        choices=("json", "text"),
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    include_request_id = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    log_sensitive_data = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )


class ObservabilitySchema(BaseSchema):
    health_checks = Obj(
        HealthChecksSchema, metadata={"description": "The app in the health verdict."}
    )
    metrics = Obj(MetricsSchema, metadata={"description": "The app's operation metrics."})
    logging = Obj(
        LoggingSchema,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )


class AutoIndexSchema(BaseSchema):
    enabled = Bool(
        load_default=True,
        metadata={"description": "Build indexes for the app's frequent query shapes."},
    )
    threshold = Int(
        minimum=1,
        maximum=1_000_000,
        metadata={
            "description": "Times a query shape is seen before its index is built (default 3)."
        },
    )
    max_indexes_per_collection = Int(
        minimum=0,
        maximum=60,
        metadata={"description": "Automatic indexes per collection at most (default 10)."},
    )


def auto_index_field(**kwargs: Any) -> OneOfTypes:
    """``auto_index``: ``true``/``false`` or ``{"enabled", "threshold",
    "max_indexes_per_collection"}``."""
    return OneOfTypes(
        (bool, Bool()), (dict, Obj(AutoIndexSchema)), what="true, false or an object", **kwargs
    )


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
