"""The AI settings of an app: its typed manifest sections, completed from the environment.

The manifest schemas validate ``llm_config``, ``embedding_config`` and ``memory_config``,
fill their defaults and type them (:mod:`mdb_sync.manifest.model_ai`); the classes here are
what the AI services read: the same values, plus what only the environment can say.

Secrets never live in a manifest (manifests are stored in the database and exported): API
keys come from the environment only — ``OPENAI_API_KEY``, ``AZURE_OPENAI_API_KEY``, and for
the providers of ``llm_config.providers`` ``<NAME>_API_KEY`` or the variable their
``api_key_env`` names — as do ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_API_VERSION``,
``MDB_LLM_BASE_URL`` and ``MDB_LLM_<NAME>_BASE_URL`` when the manifest does not say, and the
provider when ``llm_config.provider`` names none. A mapping given instead of a typed section
(``LLMService(config={...})``) is checked by the manifest's schema; every error names the
manifest path (``llm_config.temperature``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..deprecation import deprecated, renamed_parameters
from ..exceptions import ConfigurationError
from ..manifest.fields import field_default
from ..manifest.llm_providers import PROVIDER_TYPES
from ..manifest.model_ai import (
    EmbeddingSection,
    LLMProviderSection,
    LLMSection,
    MemorySection,
    PriceSection,
)
from ..manifest.schema_services import (
    DEFAULT_CHAT_MODEL,
    EmbeddingConfigSchema,
    LLMConfigSchema,
    MemoryConfigSchema,
)
from ..manifest.sections import from_typed, typed_section
from .routing import DEFAULT_AZURE_API_VERSION

PROVIDERS = PROVIDER_TYPES
BASE_URL_ENV = "MDB_LLM_BASE_URL"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def _fail(path: str, message: str, app: str | None = None) -> ConfigurationError:
    where = f" of app {app!r}" if app else ""
    return ConfigurationError(f"{path}{where}: {message}", context={"path": path, "app": app})


def _check_url(url: str, path: str, app: str | None) -> str:
    """An endpoint from the environment (manifest URLs are checked by the schema)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(path, f"must be an http(s) URL, got {url!r}", app)
    return url.rstrip("/")


@dataclass(frozen=True)
class LLMConfig:
    """Provider, models and limits of an app's language-model and embedding calls.

    Built from a manifest with :meth:`from_section`; constructed directly (a script without
    a manifest), it is enabled and speaks to OpenAI unless told otherwise, with the
    manifest's defaults for the rest.
    """

    enabled: bool = True
    provider: str = "openai"
    default_chat_model: str = DEFAULT_CHAT_MODEL
    default_embedding_model: str = DEFAULT_EMBEDDING_MODEL
    base_url: str | None = None
    api_version: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_retries: int = field_default(LLMConfigSchema, "max_retries")
    timeout_seconds: float = field_default(LLMConfigSchema, "timeout_seconds")
    temperature: float | None = None
    max_tokens: int | None = None
    embedding_dimensions: int | None = None
    embedding_batch_size: int = field_default(LLMConfigSchema, "embedding_batch_size")
    #: ``llm_config.providers``: the declared providers, by name (see
    #: :mod:`mdb_sync.ai.routing`).
    providers: Mapping[str, LLMProviderSection] = field(default_factory=dict)
    #: ``llm_config.prices``: price overrides, USD per million tokens (see
    #: :mod:`mdb_sync.ai.prices`).
    prices: Mapping[str, PriceSection] = field(default_factory=dict)
    #: ``llm_config.monthly_budget_usd``: calls past it are refused (see :mod:`.spend`).
    monthly_budget_usd: float | None = None

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise _fail("llm_config.provider", f"must be one of {', '.join(PROVIDERS)}")

    @classmethod
    def from_section(
        cls,
        section: LLMSection | Mapping[str, Any] | None,
        *,
        slug: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> LLMConfig:
        """The configuration of a typed ``llm_config`` (``manifest.llm_config``), or of a
        mapping shaped like one (checked by the manifest's schema: a
        :class:`ConfigurationError` names each bad path), completed from ``environ``
        (default ``os.environ``): the provider when the section names none, endpoints, API
        version and key where unset."""
        typed = typed_section("llm_config", section or {}, LLMSection, slug=slug)
        env = os.environ if environ is None else environ
        provider = typed.provider or _detect_provider(env)
        config = from_typed(
            cls,
            typed,
            provider=provider,
            default_embedding_model=typed.default_embedding_model
            or (LOCAL_EMBEDDING_MODEL if provider == "local" else DEFAULT_EMBEDDING_MODEL),
        )
        own = typed.providers.get(provider)
        if own is not None:
            for key in ("base_url", "api_version"):
                top, theirs = getattr(config, key), getattr(own, key)
                if top is not None and theirs is not None and theirs != top:
                    raise _fail(
                        f"llm_config.providers.{provider}.{key}",
                        f"conflicts with llm_config.{key} (both configure the default provider "
                        f"{provider!r}); give it in one place",
                        slug,
                    )
        return config.with_environment(env, slug=slug)

    @classmethod
    @deprecated("LLMConfig.from_section(manifest.llm_config, slug=..., environ=...)")
    @renamed_parameters(app="slug")
    def from_manifest(
        cls,
        section: Any,
        *,
        slug: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> LLMConfig:
        """:meth:`from_section` of an ``llm_config`` mapping."""
        return cls.from_section(section, slug=slug, environ=environ)

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
    """Chunking and embedding settings (``embedding_config``; constructed directly: the
    manifest's defaults)."""

    enabled: bool = True
    max_tokens_per_chunk: int = field_default(EmbeddingConfigSchema, "max_tokens_per_chunk")
    tokenizer_model: str = field_default(EmbeddingConfigSchema, "tokenizer_model")
    chunk_overlap_tokens: int = field_default(EmbeddingConfigSchema, "chunk_overlap_tokens")
    default_embedding_model: str | None = None

    @classmethod
    def from_section(
        cls, section: EmbeddingSection | Mapping[str, Any] | None, *, slug: str | None = None
    ) -> EmbeddingConfig:
        """The settings of a typed ``embedding_config`` or of a mapping shaped like one
        (checked by the manifest's schema); None: the defaults."""
        return from_typed(
            cls, typed_section("embedding_config", section or {}, EmbeddingSection, slug=slug)
        )

    @classmethod
    @deprecated("EmbeddingConfig.from_section(manifest.embedding_config, slug=...)")
    @renamed_parameters(app="slug")
    def from_manifest(cls, section: Any, *, slug: str | None = None) -> EmbeddingConfig:
        """:meth:`from_section` of an ``embedding_config`` mapping."""
        return cls.from_section(section, slug=slug)


@dataclass(frozen=True)
class MemoryConfig:
    """Per-user memory settings (``memory_config``; constructed directly: the manifest's
    defaults)."""

    enabled: bool = True
    collection_name: str = field_default(MemoryConfigSchema, "collection_name")
    infer: bool = field_default(MemoryConfigSchema, "infer")
    enable_graph: bool = field_default(MemoryConfigSchema, "enable_graph")
    async_mode: bool = field_default(MemoryConfigSchema, "async_mode")
    embedding_model: str | None = None
    chat_model: str | None = None
    similarity_threshold: float | None = None
    #: The sampling temperature of inference (None: the chat model's configuration).
    temperature: float | None = None

    @classmethod
    def from_section(
        cls, section: MemorySection | Mapping[str, Any] | None, *, slug: str | None = None
    ) -> MemoryConfig:
        """The settings of a typed ``memory_config`` or of a mapping shaped like one
        (checked by the manifest's schema); None: the defaults."""
        return from_typed(
            cls, typed_section("memory_config", section or {}, MemorySection, slug=slug)
        )

    @classmethod
    @deprecated("MemoryConfig.from_section(manifest.memory_config, slug=...)")
    @renamed_parameters(app="slug")
    def from_manifest(cls, section: Any, *, slug: str | None = None) -> MemoryConfig:
        """:meth:`from_section` of a ``memory_config`` mapping."""
        return cls.from_section(section, slug=slug)
