"""The service sections of a manifest: websockets, AI (LLM, embeddings, memory), CORS, data
access, observability and auto-indexing. The shapes are the ones agreed between the
features that act on them; this module validates them, fills their defaults and names the
typed model of each (:mod:`mdb_sync.manifest.model_core`, :mod:`mdb_sync.manifest.model_ai`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, post_load, validates_schema

from ..scoping.names import SLUG_RE
from .fields import (
    IDENT_HELP,
    IDENT_RE,
    UNMODELLED,
    BaseSchema,
    Bool,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    OneOfTypes,
    Refused,
    Str,
    Switch,
    is_extension_key,
    route,
    strings,
    url,
)
from .llm_providers import (
    ENV_NAME_HELP,
    ENV_NAME_RE,
    MAX_DECLARED_PROVIDERS,
    PROVIDER_NAME_HELP,
    PROVIDER_NAME_RE,
    PROVIDER_TYPES,
    llm_config_errors,
)
from .model_ai import EmbeddingSection, LLMProviderSection, LLMSection, MemorySection, PriceSection
from .model_core import (
    AutoIndex,
    CorsSection,
    DataAccess,
    HealthChecks,
    MetricsSettings,
    Observability,
    WebsocketAuth,
    WebsocketSettings,
)
from .origins import TOKEN_RE, normalize_origin
from .schema_auth import collection_name

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: Request headers allowed when a ``cors`` block lists none: what a JSON API with tokens
#: and CSRF needs.
DEFAULT_CORS_HEADERS = ["Content-Type", "Authorization", "X-Requested-With", "X-CSRF-Token"]
#: ``llm_config.default_chat_model`` unless the manifest names one.
DEFAULT_CHAT_MODEL = "gpt-4o-mini"


def _ident_key(key: str) -> str | None:
    return None if re.fullmatch(IDENT_RE, key) else "endpoint names " + IDENT_HELP


class WebsocketAuthSchema(BaseSchema):
    typed_as = WebsocketAuth
    defaults_when_absent = True

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
    typed_as = WebsocketSettings

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


def _provider_key(key: str) -> str | None:
    return None if PROVIDER_NAME_RE.fullmatch(key) else PROVIDER_NAME_HELP


_API_KEY_REFUSED = (
    "API keys never go in the manifest: put the key in an environment variable "
    "(<NAME>_API_KEY, or the one api_key_env names)"
)
#: Keys of the AI sections that would hold a secret (refused even in lenient mode, and as
#: ``x-`` extension keys: manifests are stored, exported and shown).
_SECRET_KEYS = ("api_key", "apikey", "key", "secret", "token", "password")


def _strip_slash(url: str) -> str:
    return url.rstrip("/")


class _NoSecretsSchema(BaseSchema):
    """An AI section: no key of it may look like a secret, whatever the mode."""

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _no_secrets(self, data: Any, original_data: Any, **kwargs: Any) -> None:
        if not isinstance(original_data, Mapping):
            return
        known = set(self._known_keys())
        errors = {}
        for key in original_data:
            if not isinstance(key, str) or key in known:
                continue
            bare = key[2:] if is_extension_key(key) else key
            if bare.lower() in _SECRET_KEYS or bare.lower().endswith("_api_key"):
                errors[key] = [_API_KEY_REFUSED]
        if errors:
            raise ValidationError(errors)


class LLMProviderSchema(_NoSecretsSchema):
    """One entry of ``llm_config.providers``: how a named provider is reached. Its key comes
    from the environment (``api_key_env``, default ``<NAME>_API_KEY``)."""

    typed_as = LLMProviderSection

    type = Str(
        choices=PROVIDER_TYPES,
        metadata={
            "description": (
                "How the provider is spoken to: openai_compatible (default), openai, azure or"
                " local."
            )
        },
    )
    base_url = url(normalize=_strip_slash, metadata={"description": "Its endpoint."})
    api_version = Str(max_len=64, strip=True, metadata={"description": "Azure's API version."})
    api_key_env = Str(
        pattern=ENV_NAME_RE.pattern,
        pattern_help=ENV_NAME_HELP,
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
    api_key = Refused(
        _API_KEY_REFUSED,
        metadata={"description": "Refused: keys never go in a manifest (use api_key_env)."},
    )


class PriceSchema(BaseSchema):
    """USD per million tokens."""

    typed_as = PriceSection

    input = Num(
        minimum=0,
        maximum=100_000,
        load_default=0,
        metadata={"description": "USD per million prompt tokens."},
    )
    output = Num(
        minimum=0,
        maximum=100_000,
        load_default=0,
        metadata={"description": "USD per million completion tokens."},
    )

    @validates_schema(pass_original=True)
    def _one(self, data: dict[str, Any], original_data: Any, **kwargs: Any) -> None:
        if "input" not in original_data and "output" not in original_data:
            raise ValidationError("give input and/or output (USD per million tokens)")


class PriceField(OneOfTypes):
    """A price: a number (input and output alike) or ``{input, output}``; typed as a
    :class:`~mdb_sync.manifest.model_ai.PriceSection` either way."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            ((int, float), Num(minimum=0, maximum=100_000)),
            (dict, Obj(PriceSchema)),
            what="a number or {input, output}",
            **kwargs,
        )

    def typed(self, value: Any) -> Any:
        if isinstance(value, int | float):
            return PriceSection(input=value, output=value)
        return super().typed(value)


def _price_key(key: str) -> str | None:
    if not key.strip() or len(key) > 256 or "\x00" in key:
        return "keys are model names: 'provider/model', 'provider/*', 'model' or '*'"
    return None


class LLMConfigSchema(_NoSecretsSchema):
    typed_as = LLMSection
    defaults_when_absent = True

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
        max_items=MAX_DECLARED_PROVIDERS,
        metadata={"description": "Other providers, or other endpoints of built-in ones, by name."},
    )
    prices = MapOf(
        PriceField(),
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
        max_len=256,
        strip=True,
        load_default=DEFAULT_CHAT_MODEL,
        metadata={"description": "The chat model (provider/model or model)."},
    )
    default_embedding_model = Str(
        max_len=256,
        strip=True,
        metadata={
            "description": (
                "The embedding model (provider/model or model; default text-embedding-3-small,"
                " all-MiniLM-L6-v2 with the local provider)."
            )
        },
    )
    base_url = url(
        normalize=_strip_slash,
        metadata={"description": "The endpoint of an openai_compatible provider."},
    )
    api_version = Str(max_len=64, strip=True, metadata={"description": "Azure's API version."})
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
        minimum=1,
        maximum=100_000,
        load_default=256,
        metadata={"description": "Texts per embedding request."},
    )
    api_key = Refused(
        _API_KEY_REFUSED,
        metadata={
            "description": (
                "Refused: keys never go in a manifest (OPENAI_API_KEY, AZURE_OPENAI_API_KEY)."
            )
        },
    )

    @validates_schema
    def _model_providers(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A ``provider/model`` name (a default model, a price key) must name a configured
        provider (built-in or declared in ``providers``): a typo is refused here, with the
        list, rather than sent somewhere at the first call."""
        errors = llm_config_errors(data)
        if errors:
            raise ValidationError(errors)


class EmbeddingConfigSchema(_NoSecretsSchema):
    """``default_max_tokens``/``default_tokenizer_model`` (the seeds' spelling) are read as
    ``max_tokens_per_chunk``/``tokenizer_model``."""

    typed_as = EmbeddingSection

    # A present embedding_config block is on unless it says otherwise.
    enabled = Bool(
        load_default=True, metadata={"description": "The app's embedding service may be used."}
    )
    # At least 4: one character can take four byte-level BPE tokens.
    max_tokens_per_chunk = Int(
        minimum=4,
        maximum=1_000_000,
        load_default=1000,
        metadata={"description": "The largest chunk, in tokens."},
    )
    default_max_tokens = Int(
        minimum=4,
        maximum=1_000_000,
        metadata={
            UNMODELLED: True,
            "description": "The seeds' spelling of max_tokens_per_chunk.",
        },
    )
    tokenizer_model = Str(
        max_len=256,
        strip=True,
        load_default="gpt-3.5-turbo",
        metadata={"description": "The model whose tiktoken encoding counts tokens."},
    )
    default_tokenizer_model = Str(
        max_len=256,
        strip=True,
        metadata={UNMODELLED: True, "description": "The seeds' spelling of tokenizer_model."},
    )
    chunk_overlap_tokens = Int(
        minimum=0,
        maximum=1_000_000,
        load_default=0,
        metadata={"description": "Tokens repeated between consecutive chunks."},
    )
    default_embedding_model = Str(
        max_len=256,
        strip=True,
        metadata={"description": "The embedding model (default: llm_config's)."},
    )

    #: The seeds' spellings, and the keys they are read as.
    ALIASES = (
        ("default_max_tokens", "max_tokens_per_chunk"),
        ("default_tokenizer_model", "tokenizer_model"),
    )

    @validates_schema(pass_original=True)
    def _aliases(self, data: dict[str, Any], original_data: Any, **kwargs: Any) -> None:
        errors = {}
        for alias, key in self.ALIASES:
            if alias in original_data and key in original_data and data[alias] != data[key]:
                errors[alias] = [f"conflicts with {key}"]
        limit = data.get("default_max_tokens", data["max_tokens_per_chunk"])
        if data["chunk_overlap_tokens"] >= limit:
            errors["chunk_overlap_tokens"] = [f"must be less than max_tokens_per_chunk ({limit})"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _read_aliases(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for alias, key in self.ALIASES:
            if alias in data:
                data[key] = data.pop(alias)
        return data


class MemoryConfigSchema(_NoSecretsSchema):
    typed_as = MemorySection

    # A present memory_config block is on unless it says otherwise.
    enabled = Bool(
        load_default=True, metadata={"description": "The app's memory service may be used."}
    )
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
        strip=True,
        metadata={"description": "The embedding model of memories (default: llm_config's)."},
    )
    chat_model = Str(
        max_len=256,
        strip=True,
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
        return f"{value[:100]!r} is not an origin: use one like 'https://app.example.com', or '*'"
    if (
        parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or normalize_origin(value) is None
    ):
        return (
            f"{value[:100]!r} is not an origin: use scheme://host[:port] without path, query "
            "or credentials"
        )
    return None


def _normalized_origin(value: str) -> str:
    return value if value == "*" else normalize_origin(value) or value


def _method(value: str) -> str | None:
    if value in (*HTTP_METHODS, "*"):
        return None
    return f"{value[:20]!r} is not a method: must be one of: {', '.join(HTTP_METHODS)} or '*'"


def _header(value: str) -> str | None:
    if value == "*" or TOKEN_RE.fullmatch(value):
        return None
    return f"{value[:100]!r} is not a valid header name (letters, digits, !#$%&'*+-.^_`|~) or '*'"


class CorsSchema(BaseSchema):
    typed_as = CorsSection

    enabled = Bool(
        load_default=True, metadata={"description": "Answer cross-origin requests as below."}
    )
    allow_origins = ListOf(
        Str(max_len=2048, check=_origin, normalize=_normalized_origin),
        unique=True,
        metadata={
            "description": (
                "Origins allowed, exactly (scheme://host[:port], kept in lower case without a"
                " default port), or *."
            )
        },
    )
    allow_methods = ListOf(
        Str(max_len=16, check=_method),
        unique=True,
        load_default=lambda: list(DEFAULT_CORS_METHODS),
        metadata={"description": "Methods allowed in preflights."},
    )
    allow_headers = ListOf(
        Str(max_len=256, check=_header),
        unique=True,
        load_default=lambda: list(DEFAULT_CORS_HEADERS),
        metadata={"description": "Request headers allowed (* : any)."},
    )
    expose_headers = ListOf(
        Str(max_len=256, check=_header),
        unique=True,
        metadata={"description": "Response headers the browser may read."},
    )
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
                key: ["'*' is not allowed together with allow_credentials: list the values"]
                for key in ("allow_origins", "allow_methods", "allow_headers", "expose_headers")
                if "*" in (data.get(key) or [])
            }
            if errors:
                raise ValidationError(errors)


def _slug(value: str) -> str | None:
    if value == "*":
        return "'*' is not allowed: name each app explicitly"
    return None if SLUG_RE.fullmatch(value) else "must be an app slug"


class DataAccessSchema(BaseSchema):
    typed_as = DataAccess
    defaults_when_absent = True

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
    typed_as = HealthChecks
    defaults_when_absent = True

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
    typed_as = MetricsSettings
    defaults_when_absent = True

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
    typed_as = Observability
    defaults_when_absent = True

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
    typed_as = AutoIndex

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


def auto_index_field(**kwargs: Any) -> Switch:
    """``auto_index``: ``true``/``false`` or ``{"enabled", "threshold",
    "max_indexes_per_collection"}`` (absent: on)."""
    return Switch(AutoIndexSchema, absent=True, **kwargs)


__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_CORS_HEADERS",
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
