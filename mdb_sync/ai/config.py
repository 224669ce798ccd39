"""The AI sections of a manifest (``llm_config``, ``embedding_config``, ``memory_config``),
checked and completed from the environment.

Secrets never live in a manifest (manifests are stored in the database and exported): API
keys come from the environment only — ``OPENAI_API_KEY``, ``AZURE_OPENAI_API_KEY``, and for
the providers of ``llm_config.providers`` ``<NAME>_API_KEY`` or the variable their
``api_key_env`` names — as do ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_VERSION``,
``MDB_LLM_BASE_URL`` and ``MDB_LLM_<NAME>_BASE_URL`` when the manifest does not say. Every
error names the manifest path (``llm_config.temperature``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload
from urllib.parse import urlsplit

from ..deprecation import renamed_parameters
from ..exceptions import ConfigurationError
from .chunking import DEFAULT_MAX_TOKENS, MIN_MAX_TOKENS
from .routing import (
    DEFAULT_AZURE_API_VERSION,
    ENV_NAME_HELP,
    ENV_NAME_RE,
    MAX_DECLARED_PROVIDERS,
    PROVIDER_NAME_RE,
    PROVIDER_TYPES,
    known_providers,
    model_problem,
    split_model,
)
from .tokens import DEFAULT_TOKENIZER_MODEL

PROVIDERS = PROVIDER_TYPES
#: Bounds of a price (USD per million tokens) and of the price table's size.
MAX_PRICE = 100_000.0
MAX_PRICE_ENTRIES = 200
MAX_BUDGET_USD = 1e9
BASE_URL_ENV = "MDB_LLM_BASE_URL"
DEFAULT_CHAT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
#: Secret-looking keys refused in a manifest section.
_SECRET_KEYS = ("api_key", "apikey", "key", "secret", "token", "password")


def _fail(path: str, message: str, app: str | None = None) -> ConfigurationError:
    where = f" of app {app!r}" if app else ""
    return ConfigurationError(f"{path}{where}: {message}", context={"path": path, "app": app})


class _Reader:
    """Reads one manifest section, type-checking each key and naming its path."""

    def __init__(self, section: str, raw: Any, app: str | None, known: set[str]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise _fail(section, f"must be an object, not {type(raw).__name__}", app)
        self.section, self.raw, self.app = section, dict(raw), app
        for key in self.raw:
            if key.lower() in _SECRET_KEYS or key.lower().endswith("_api_key"):
                raise _fail(
                    f"{section}.{key}",
                    "secrets do not belong in a manifest (it is stored and exported); set "
                    "OPENAI_API_KEY or AZURE_OPENAI_API_KEY in the environment",
                    app,
                )
        unknown = sorted(set(self.raw) - known)
        if unknown:
            raise _fail(
                f"{section}.{unknown[0]}",
                f"unknown key; known keys: {', '.join(sorted(known))}",
                app,
            )

    def path(self, key: str) -> str:
        return f"{self.section}.{key}"

    def get(self, *keys: str) -> Any:
        for key in keys:
            if key in self.raw and self.raw[key] is not None:
                return self.raw[key]
        return None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _fail(self.path(key), "must be true or false", self.app)
        return value

    @overload
    def string(self, *keys: str, default: str) -> str: ...
    @overload
    def string(self, *keys: str, default: None = None) -> str | None: ...
    def string(self, *keys: str, default: str | None = None) -> str | None:
        value = self.get(*keys)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            raise _fail(self.path(keys[0]), "must be a non-empty string", self.app)
        return value.strip()

    @overload
    def integer(self, *keys: str, default: int, minimum: int) -> int: ...
    @overload
    def integer(self, *keys: str, default: None, minimum: int) -> int | None: ...
    def integer(self, *keys: str, default: int | None, minimum: int) -> int | None:
        value = self.get(*keys)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _fail(self.path(keys[0]), f"must be an integer >= {minimum}", self.app)
        return value

    @overload
    def number(
        self, key: str, *, default: float, low: float, high: float, open_low: bool = False
    ) -> float: ...
    @overload
    def number(
        self, key: str, *, default: None, low: float, high: float, open_low: bool = False
    ) -> float | None: ...
    def number(
        self, key: str, *, default: float | None, low: float, high: float, open_low: bool = False
    ) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if not bad:
            bad = value <= low if open_low else value < low
            bad = bad or value > high
        if bad:
            bracket = "(" if open_low else "["
            bound = "" if high == float("inf") else f", {high:g}"
            rng = f"{bracket}{low:g}{bound}{']' if bound else ')'}"
            raise _fail(self.path(key), f"must be a number in {rng}", self.app)
        return float(value)


def _check_url(url: str, path: str, app: str | None) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(path, f"must be an http(s) URL, got {url!r}", app)
    return url.rstrip("/")


@dataclass(frozen=True)
class LLMConfig:
    """Provider, models and limits of an app's language-model and embedding calls."""

    enabled: bool = True
    provider: str = "openai"
    default_chat_model: str = DEFAULT_CHAT_MODEL
    default_embedding_model: str = DEFAULT_EMBEDDING_MODEL
    base_url: str | None = None
    api_version: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_retries: int = 3
    timeout_seconds: float = 60.0
    temperature: float | None = None
    max_tokens: int | None = None
    embedding_dimensions: int | None = None
    embedding_batch_size: int = 256
    #: ``llm_config.providers``: name -> {type, base_url, api_version, api_key_env,
    #: timeout_seconds} (see :mod:`mdb_sync.ai.routing`).
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: ``llm_config.prices``: price overrides, USD per million tokens (see
    #: :mod:`mdb_sync.ai.prices`).
    prices: Mapping[str, Any] = field(default_factory=dict)
    #: ``llm_config.monthly_budget_usd``: calls past it are refused (see :mod:`.spend`).
    monthly_budget_usd: float | None = None

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise _fail("llm_config.provider", f"must be one of {', '.join(PROVIDERS)}")

    @classmethod
    @renamed_parameters(app="slug")
    def from_manifest(
        cls,
        section: Any,
        *,
        slug: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> LLMConfig:
        """Read ``llm_config`` and fill in what the environment provides."""
        env = os.environ if environ is None else environ
        known = {
            "enabled", "provider", "default_chat_model", "default_embedding_model", "base_url",
            "api_version", "max_retries", "timeout_seconds", "temperature", "max_tokens",
            "embedding_dimensions", "embedding_batch_size", "providers", "prices",
            "monthly_budget_usd",
        }  # fmt: skip
        r = _Reader("llm_config", section, slug, known)
        providers = _read_providers(r.get("providers"), slug)
        prices = read_prices(r.get("prices"), slug)
        names = known_providers({"providers": providers})
        for key in ("default_chat_model", "default_embedding_model"):
            problem = model_problem(r.get(key), names)
            if problem:
                raise _fail(r.path(key), problem, slug)
        for key in prices:
            prefix, _ = split_model(key)
            if prefix is not None and prefix not in names:
                raise _fail(f"llm_config.prices.{key}", model_problem(key, names) or "", slug)
        explicit = r.string("provider")
        if explicit is not None and explicit not in PROVIDERS:
            raise _fail("llm_config.provider", f"must be one of {', '.join(PROVIDERS)}", slug)
        provider = explicit or _detect_provider(env)
        base_url = r.string("base_url")
        if base_url is not None:
            base_url = _check_url(base_url, "llm_config.base_url", slug)
        local = provider == "local"
        config = cls(
            enabled=r.boolean("enabled", False),
            provider=provider,
            default_chat_model=r.string("default_chat_model", default=DEFAULT_CHAT_MODEL),
            default_embedding_model=r.string(
                "default_embedding_model",
                default=LOCAL_EMBEDDING_MODEL if local else DEFAULT_EMBEDDING_MODEL,
            ),
            base_url=base_url,
            api_version=r.string("api_version"),
            max_retries=r.integer("max_retries", default=3, minimum=0),
            timeout_seconds=r.number(
                "timeout_seconds", default=60.0, low=0, high=float("inf"), open_low=True
            ),
            temperature=r.number("temperature", default=None, low=0, high=2),
            max_tokens=r.integer("max_tokens", default=None, minimum=1),
            embedding_dimensions=r.integer("embedding_dimensions", default=None, minimum=1),
            embedding_batch_size=r.integer("embedding_batch_size", default=256, minimum=1),
            providers=providers,
            prices=prices,
            monthly_budget_usd=r.number(
                "monthly_budget_usd", default=None, low=0, high=MAX_BUDGET_USD, open_low=True
            ),
        )
        own = providers.get(provider) or {}
        for key in ("base_url", "api_version"):
            top = getattr(config, key)
            if top is not None and own.get(key) is not None and own[key] != top:
                raise _fail(
                    f"llm_config.providers.{provider}.{key}",
                    f"conflicts with llm_config.{key} (both configure the default provider "
                    f"{provider!r}); give it in one place",
                    slug,
                )
        return config.with_environment(env, slug=slug)

    @renamed_parameters(app="slug")
    def with_environment(self, environ: Mapping[str, str], *, slug: str | None = None) -> LLMConfig:
        """Fill the endpoint, API version and key from the environment where unset."""
        env = environ
        base_url = self.base_url
        api_key = self.api_key
        api_version = self.api_version
        if self.provider == "azure":
            if base_url is None and env.get("AZURE_OPENAI_ENDPOINT"):
                base_url = _check_url(env["AZURE_OPENAI_ENDPOINT"], "AZURE_OPENAI_ENDPOINT", slug)
            api_key = api_key or env.get("AZURE_OPENAI_API_KEY") or None
            api_version = (
                api_version or env.get("AZURE_OPENAI_API_VERSION") or DEFAULT_AZURE_API_VERSION
            )
        else:
            if base_url is None and env.get(BASE_URL_ENV):
                base_url = _check_url(env[BASE_URL_ENV], BASE_URL_ENV, slug)
            api_key = api_key or env.get("OPENAI_API_KEY") or None
        return replace(self, base_url=base_url, api_key=api_key, api_version=api_version)

    @renamed_parameters(app="slug")
    def require_ready(self, slug: str | None = None) -> None:
        """Raise :class:`ConfigurationError` if calls could not work (no key, no endpoint)."""
        if self.provider == "openai" and not self.api_key:
            raise _fail(
                "llm_config.provider",
                "the OpenAI provider needs an API key: set OPENAI_API_KEY (or choose "
                "provider 'local', or 'openai_compatible' with a base_url)",
                slug,
            )
        if self.provider == "azure":
            if not self.base_url:
                raise _fail(
                    "llm_config.base_url",
                    "the Azure provider needs an endpoint: set AZURE_OPENAI_ENDPOINT or "
                    "llm_config.base_url (https://<resource>.openai.azure.com)",
                    slug,
                )
            if not self.api_key:
                raise _fail(
                    "llm_config.provider", "the Azure provider needs AZURE_OPENAI_API_KEY", slug
                )
        if self.provider == "openai_compatible" and not self.base_url:
            raise _fail(
                "llm_config.base_url",
                f"the openai_compatible provider needs a base_url (or {BASE_URL_ENV}), e.g. "
                "http://localhost:11434/v1 for Ollama",
                slug,
            )


def _read_providers(raw: Any, app: str | None) -> dict[str, dict[str, Any]]:
    """``llm_config.providers``, checked: name -> {type, base_url, api_version, api_key_env,
    timeout_seconds}; never a key itself."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail("llm_config.providers", "must be an object of provider name -> settings", app)
    if len(raw) > MAX_DECLARED_PROVIDERS:
        raise _fail(
            "llm_config.providers", f"must have at most {MAX_DECLARED_PROVIDERS} entries", app
        )
    out: dict[str, dict[str, Any]] = {}
    known = {"type", "base_url", "api_version", "api_key_env", "timeout_seconds"}
    for name, entry in raw.items():
        path = f"llm_config.providers.{name}"
        if not isinstance(name, str) or not PROVIDER_NAME_RE.fullmatch(name):
            raise _fail(
                f"llm_config.providers.{name}",
                "provider names must be 1-32 lower-case letters, digits, '_' or '-', "
                "starting with a letter",
                app,
            )
        r = _Reader(path, entry, app, known)
        kind = r.string("type")
        if kind is not None and kind not in PROVIDER_TYPES:
            raise _fail(r.path("type"), f"must be one of {', '.join(PROVIDER_TYPES)}", app)
        key_env = r.string("api_key_env")
        if key_env is not None and not ENV_NAME_RE.fullmatch(key_env):
            raise _fail(r.path("api_key_env"), ENV_NAME_HELP, app)
        base_url = r.string("base_url")
        settings = {
            "type": kind,
            "base_url": _check_url(base_url, r.path("base_url"), app) if base_url else None,
            "api_version": r.string("api_version"),
            "api_key_env": key_env,
            "timeout_seconds": r.number(
                "timeout_seconds", default=None, low=0, high=3600, open_low=True
            ),
        }
        out[name] = {k: v for k, v in settings.items() if v is not None}
    return out


@renamed_parameters(app="slug")
def read_prices(
    raw: Any, slug: str | None, *, where: str = "llm_config.prices"
) -> dict[str, dict[str, float]]:
    """``llm_config.prices`` (or the ``MDB_LLM_PRICES`` file): key -> ``{"input": usd,
    "output": usd}`` per million tokens (a number stands for both)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be an object of model -> price", slug)
    if len(raw) > MAX_PRICE_ENTRIES:
        raise _fail(where, f"must have at most {MAX_PRICE_ENTRIES} entries", slug)
    out: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        path = f"{where}.{key}"
        if not isinstance(key, str) or not key.strip() or len(key) > 256:
            raise _fail(
                path, "keys are model names: 'provider/model', 'provider/*', 'model' or '*'", slug
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"input": value, "output": value}
        r = _Reader(path, value, slug, {"input", "output"})
        price_in = r.number("input", default=None, low=0, high=MAX_PRICE)
        price_out = r.number("output", default=None, low=0, high=MAX_PRICE)
        if price_in is None and price_out is None:
            raise _fail(path, "give input and/or output (USD per million tokens)", slug)
        out[key] = {"input": price_in or 0.0, "output": price_out or 0.0}
    return out


def _detect_provider(env: Mapping[str, str]) -> str:
    """The seeds' rule: a provider that was not named is the one the environment sets up
    (an explicit endpoint first, then an OpenAI key, then an Azure key and endpoint)."""
    if env.get(BASE_URL_ENV):
        return "openai_compatible"
    if env.get("OPENAI_API_KEY"):
        return "openai"
    if env.get("AZURE_OPENAI_API_KEY") and env.get("AZURE_OPENAI_ENDPOINT"):
        return "azure"
    return "openai"


@dataclass(frozen=True)
class EmbeddingConfig:
    """Chunking and embedding settings (``embedding_config``)."""

    enabled: bool = True
    max_tokens_per_chunk: int = DEFAULT_MAX_TOKENS
    tokenizer_model: str = DEFAULT_TOKENIZER_MODEL
    chunk_overlap_tokens: int = 0
    default_embedding_model: str | None = None

    @classmethod
    @renamed_parameters(app="slug")
    def from_manifest(cls, section: Any, *, slug: str | None = None) -> EmbeddingConfig:
        known = {
            "enabled", "max_tokens_per_chunk", "default_max_tokens", "tokenizer_model",
            "default_tokenizer_model", "chunk_overlap_tokens", "default_embedding_model",
        }  # fmt: skip
        r = _Reader("embedding_config", section, slug, known)
        max_tokens = r.integer(
            "max_tokens_per_chunk",
            "default_max_tokens",
            default=DEFAULT_MAX_TOKENS,
            minimum=MIN_MAX_TOKENS,
        )
        overlap = r.integer("chunk_overlap_tokens", default=0, minimum=0)
        assert max_tokens is not None and overlap is not None
        if overlap >= max_tokens:
            raise _fail(
                "embedding_config.chunk_overlap_tokens",
                f"must be smaller than max_tokens_per_chunk ({max_tokens})",
                slug,
            )
        return cls(
            enabled=r.boolean("enabled", True),
            max_tokens_per_chunk=max_tokens,
            tokenizer_model=r.string(
                "tokenizer_model", "default_tokenizer_model", default=DEFAULT_TOKENIZER_MODEL
            )
            or DEFAULT_TOKENIZER_MODEL,
            chunk_overlap_tokens=overlap,
            default_embedding_model=r.string("default_embedding_model"),
        )


@dataclass(frozen=True)
class MemoryConfig:
    """Per-user memory settings (``memory_config``)."""

    enabled: bool = True
    collection_name: str = "memories"
    infer: bool = True
    enable_graph: bool = False
    async_mode: bool = False
    embedding_model: str | None = None
    chat_model: str | None = None
    similarity_threshold: float | None = None

    @classmethod
    @renamed_parameters(app="slug")
    def from_manifest(cls, section: Any, *, slug: str | None = None) -> MemoryConfig:
        known = {
            "enabled", "collection_name", "infer", "enable_graph", "async_mode",
            "embedding_model", "chat_model", "similarity_threshold",
        }  # fmt: skip
        r = _Reader("memory_config", section, slug, known)
        return cls(
            enabled=r.boolean("enabled", True),
            collection_name=r.string("collection_name", default="memories") or "memories",
            infer=r.boolean("infer", True),
            enable_graph=r.boolean("enable_graph", False),
            async_mode=r.boolean("async_mode", False),
            embedding_model=r.string("embedding_model"),
            chat_model=r.string("chat_model"),
            similarity_threshold=r.number("similarity_threshold", default=None, low=0, high=1),
        )
