"""The AI services of a registered app, built from its manifest and the environment.

:meth:`MongoDBEngine.get_llm_service`, :meth:`~MongoDBEngine.get_embedding_service` and
:meth:`~MongoDBEngine.get_memory_service` land here. Services live in the engine's per-app
cache (:mod:`mdb_sync.app_services`), keyed by the app's registry record version and the
environment variables they read: a manifest changed by any process takes effect within
``registry_refresh_seconds`` (at once after ``reload_apps()``), a rotated key on the next
call, and a forked worker builds its own HTTP clients. Every service of an app shares one spending
ledger (:mod:`mdb_sync.ai.spend`) in the engine's database, which is how its monthly
budget holds across services, threads and processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..deprecation import renamed_parameters
from ..exceptions import ConfigurationError
from ..realtime import engine_for
from .config import EmbeddingConfig, LLMConfig, MemoryConfig
from .embeddings import EmbeddingService
from .llm import LLMService
from .memory import MemoryService
from .routing import environment_names, split_model
from .spend import SpendLedger

if TYPE_CHECKING:
    from ..catalog import AppRecord
    from ..engine import MongoDBEngine

_ENV_KEYS = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_VERSION",
    "MDB_LLM_BASE_URL",
)

_S = TypeVar("_S")


def _record(engine: MongoDBEngine, slug: str) -> AppRecord:
    engine.require_initialized()
    return engine.registration.require_usable(slug)


def _cached(
    engine: MongoDBEngine,
    kind: str,
    record: AppRecord,
    build: Callable[[], _S],
    env_keys: list[str] | tuple[str, ...] = (),
) -> _S:
    env = tuple(os.environ.get(k) for k in sorted({*_ENV_KEYS, *env_keys}))
    return engine.app_services.get(record, f"ai.{kind}", build, env)


def _disabled(slug: str, section: str) -> ConfigurationError:
    return ConfigurationError(
        f"{section}.enabled of app {slug!r}: AI services are off for this app; set "
        f'"{section}": {{"enabled": true, ...}} in its manifest',
        context={"path": f"{section}.enabled", "app": slug},
    )


def _llm_config(slug: str, record: AppRecord) -> LLMConfig:
    config = LLMConfig.from_section(record.typed_manifest.llm_config, slug=slug)
    config.require_ready(slug)
    return config


def _llm_service(engine: MongoDBEngine, slug: str, config: LLMConfig) -> LLMService:
    ledger = SpendLedger(engine, slug)
    return LLMService(config, metrics=engine.metrics, app=slug, ledger=ledger)


def llm_service_for(engine: MongoDBEngine, slug: str) -> LLMService:
    record = _record(engine, slug)
    config = _llm_config(slug, record)
    if not config.enabled:
        raise _disabled(slug, "llm_config")
    return _cached(
        engine,
        "llm",
        record,
        lambda: _llm_service(engine, slug, config),
        environment_names(config),
    )


def embedding_service_for(engine: MongoDBEngine, slug: str) -> EmbeddingService:
    """Enabled by ``embedding_config.enabled`` (true when the section is present), or by
    ``llm_config.enabled`` when there is no ``embedding_config``."""
    record = _record(engine, slug)
    llm_config = _llm_config(slug, record)
    section = record.typed_manifest.embedding_config
    if section is None and not llm_config.enabled:
        raise _disabled(slug, "embedding_config")
    config = EmbeddingConfig.from_section(section, slug=slug)
    if not config.enabled:
        raise _disabled(slug, "embedding_config")

    def build() -> EmbeddingService:
        llm = _llm_service(engine, slug, llm_config)
        return EmbeddingService(config=config, llm=llm, app=slug)

    return _cached(engine, "embedding", record, build, environment_names(llm_config))


def memory_service_for(engine: MongoDBEngine, slug: str) -> MemoryService:
    record = _record(engine, slug)
    section = record.typed_manifest.memory_config
    if section is None:
        raise _disabled(slug, "memory_config")
    config = MemoryConfig.from_section(section, slug=slug)
    if not config.enabled:
        raise _disabled(slug, "memory_config")
    llm_config = _llm_config(slug, record)
    chat_model = config.chat_model or llm_config.default_chat_model
    if config.infer and _local_without_chat(llm_config, chat_model):
        raise ConfigurationError(
            f"memory_config.infer of app {slug!r}: inferring memories needs a chat model; the "
            "local provider has none unless llm_config.base_url (or MDB_LLM_BASE_URL) names "
            "an OpenAI-compatible server (or the chat model names another provider, e.g. "
            '"ollama/llama3"). Set "infer": false to store messages as they are.',
            context={"path": "memory_config.infer", "app": slug},
        )
    db = engine.get_scoped_db(slug)
    collection = db[config.collection_name]
    history = db[config.collection_name + "_history"]

    def build() -> MemoryService:
        embeddings = embedding_service_for_memory(engine, slug, llm_config, record)
        return MemoryService(
            collection,
            history_collection=history,
            llm=embeddings.llm,
            embeddings=embeddings,
            config=config,
            graph_collection=db[config.collection_name + "_graph"] if config.enable_graph else None,
        )

    return _cached(engine, "memory", record, build, environment_names(llm_config))


def _local_without_chat(config: LLMConfig, model: str) -> bool:
    """Whether ``model`` routes to the local provider, which has no chat model of its own
    unless a base_url forwards chat to an OpenAI-compatible server."""
    prefix, _ = split_model(model)
    if (prefix or config.provider) != "local":
        return False
    own = config.providers.get("local")
    return not (config.base_url if config.provider == "local" else None) and not (
        own is not None and own.base_url
    )


def embedding_service_for_memory(
    engine: MongoDBEngine, slug: str, llm_config: LLMConfig, record: AppRecord
) -> EmbeddingService:
    """Memory embeds with the app's embedding settings even when ``embedding_config`` is
    off for documents (memories are short: chunking never applies)."""
    config = EmbeddingConfig.from_section(record.typed_manifest.embedding_config, slug=slug)
    llm = _llm_service(engine, slug, llm_config)
    return EmbeddingService(config=config, llm=llm, app=slug)


@renamed_parameters(app_slug="slug")
def get_embedding_service(
    slug: str | None = None, *, engine: MongoDBEngine | None = None
) -> EmbeddingService:
    """The predecessor's entry point. With ``slug``: that app's service, as
    ``engine.get_embedding_service(slug)`` (the process's engine unless ``engine`` is
    given). Without: a service configured by the environment alone — ``OPENAI_API_KEY``,
    Azure's variables, ``MDB_LLM_BASE_URL``; :class:`ConfigurationError` names them when none
    is set — for a script that embeds or stores chunks (``process_and_store`` into any scoped
    collection) without an app."""
    if slug is None:
        standalone = EmbeddingService()
        standalone.llm.config.require_ready()  # no key, no endpoint: say so now
        return standalone
    service: EmbeddingService = engine_for(slug, engine).get_embedding_service(slug)
    return service
