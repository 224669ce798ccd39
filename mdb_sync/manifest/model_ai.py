"""The typed AI sections of a manifest: ``llm_config``, ``embedding_config``,
``memory_config``.

What the schemas (:mod:`mdb_sync.manifest.schema_services`) validated, as frozen objects —
defaults included, none written here. :mod:`mdb_sync.ai.config` completes them from the
environment (the provider when none is named, endpoints, API keys), which a manifest never
holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LLMProviderSection:
    """``llm_config.providers.<name>``: how a declared provider is reached (None: the
    preset's, or the environment's)."""

    type: str | None
    base_url: str | None
    api_version: str | None
    api_key_env: str | None
    timeout_seconds: float | None


@dataclass(frozen=True, kw_only=True)
class PriceSection:
    """``llm_config.prices.<model>``: USD per million tokens (a number: both)."""

    input: float
    output: float


@dataclass(frozen=True, kw_only=True)
class LLMSection:
    """``llm_config`` (absent: every default, ``enabled`` false)."""

    enabled: bool
    #: None: the environment decides (see :func:`mdb_sync.ai.config.LLMConfig.from_section`).
    provider: str | None
    providers: Mapping[str, LLMProviderSection]
    prices: Mapping[str, PriceSection]
    monthly_budget_usd: float | None
    default_chat_model: str
    #: None: the provider's (the local model with the local provider).
    default_embedding_model: str | None
    base_url: str | None
    api_version: str | None
    max_retries: int
    timeout_seconds: float
    temperature: float | None
    max_tokens: int | None
    embedding_dimensions: int | None
    embedding_batch_size: int


@dataclass(frozen=True, kw_only=True)
class EmbeddingSection:
    """``embedding_config`` (the seeds' ``default_max_tokens``/``default_tokenizer_model``
    read as ``max_tokens_per_chunk``/``tokenizer_model``)."""

    enabled: bool
    max_tokens_per_chunk: int
    tokenizer_model: str
    chunk_overlap_tokens: int
    default_embedding_model: str | None


@dataclass(frozen=True, kw_only=True)
class MemorySection:
    """``memory_config``."""

    enabled: bool
    collection_name: str
    infer: bool
    enable_graph: bool
    async_mode: bool
    embedding_model: str | None
    chat_model: str | None
    similarity_threshold: float | None
    temperature: float | None


__all__ = ["EmbeddingSection", "LLMProviderSection", "LLMSection", "MemorySection", "PriceSection"]
