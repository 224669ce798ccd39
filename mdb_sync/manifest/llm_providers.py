"""The providers an ``llm_config`` can name, and the ``provider/model`` naming rule.

A model name may start with a provider: ``azure/gpt-4o``, ``voyage/voyage-2``,
``ollama/llama3``. The part before the first ``/`` names the provider, the rest is the model
as that provider knows it (``vllm/meta-llama/Llama-3.1-8B`` sends
``meta-llama/Llama-3.1-8B`` to ``vllm``); a name without a prefix goes to the app's default
provider. The providers a manifest can name are the built-in ones (:data:`PRESETS`) plus
those it declares under ``llm_config.providers``; the schemas refuse any other, with the
list, so a typo never becomes a request sent somewhere unexpected.

These are rules of the manifest (the schemas check them when a manifest is validated);
:mod:`mdb_sync.ai.routing` applies them at call time, with the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: How a provider is spoken to (``type`` of a declared provider, ``llm_config.provider``).
PROVIDER_TYPES = ("openai", "azure", "openai_compatible", "local")
PROVIDER_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
PROVIDER_NAME_HELP = (
    "provider names must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter"
)
#: ``api_key_env``: a variable whose name ends in ``_API_KEY``, so a manifest can make the
#: process read API keys and nothing else (not ``MDB_MONGO_URI``, not a signing secret).
ENV_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,119}_API_KEY")
ENV_NAME_HELP = "must be an environment variable name ending in _API_KEY (upper case)"
#: Providers a manifest may declare under ``llm_config.providers``.
MAX_DECLARED_PROVIDERS = 20
#: The local model's full Hugging Face name, read as ``local/<it>`` rather than as provider
#: ``sentence-transformers`` (the seeds and sentence-transformers users write it so).
_LOCAL_FULL_NAMES = {"sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class Preset:
    """A built-in provider: how it is reached when the manifest says nothing more."""

    type: str
    base_url: str | None = None
    #: Variables read for the endpoint / the API version (Azure's own names), in order.
    base_url_env: tuple[str, ...] = ()
    api_key_env: str | None = None
    key_required: bool = True
    #: Self-hosted: calls cost nothing unless a price says otherwise.
    free: bool = False


PRESETS: dict[str, Preset] = {
    "openai": Preset("openai", api_key_env="OPENAI_API_KEY"),
    "azure": Preset(
        "azure", base_url_env=("AZURE_OPENAI_ENDPOINT",), api_key_env="AZURE_OPENAI_API_KEY"
    ),
    "openai_compatible": Preset(
        "openai_compatible",
        base_url_env=("MDB_LLM_BASE_URL",),
        api_key_env="OPENAI_API_KEY",
        key_required=False,
    ),
    "local": Preset("local", key_required=False, free=True),
    "ollama": Preset(
        "openai_compatible",
        base_url="http://localhost:11434/v1",
        api_key_env="OLLAMA_API_KEY",
        key_required=False,
        free=True,
    ),
    "voyage": Preset(
        "openai_compatible", base_url="https://api.voyageai.com/v1", api_key_env="VOYAGE_API_KEY"
    ),
    "anthropic": Preset(
        "openai_compatible",
        base_url="https://api.anthropic.com/v1/",
        api_key_env="ANTHROPIC_API_KEY",
    ),
    "gemini": Preset(
        "openai_compatible",
        base_url="https://generativelanguage.googleapis.com/v1beta/openai/",
        api_key_env="GEMINI_API_KEY",
    ),
    "mistral": Preset(
        "openai_compatible", base_url="https://api.mistral.ai/v1", api_key_env="MISTRAL_API_KEY"
    ),
}


def split_model(name: str) -> tuple[str | None, str]:
    """``"azure/gpt-4o"`` -> ``("azure", "gpt-4o")``; ``"gpt-4o"`` -> ``(None, "gpt-4o")``.

    Only a prefix shaped like a provider name counts (``llama3:8b`` or ``./model`` have none).
    """
    if name in _LOCAL_FULL_NAMES:
        return "local", name
    prefix, sep, rest = name.partition("/")
    if sep and rest and PROVIDER_NAME_RE.fullmatch(prefix):
        return prefix, rest
    return None, name


def known_providers(section: Mapping[str, Any] | None) -> list[str]:
    """The provider names an ``llm_config`` section can use: built-in plus declared."""
    declared = (section or {}).get("providers") or {}
    names = set(PRESETS)
    if isinstance(declared, Mapping):
        names.update(k for k in declared if isinstance(k, str))
    return sorted(names)


def unknown_provider_message(model: str, prefix: str, known: list[str]) -> str:
    return (
        f"unknown provider {prefix!r} in model {model!r}; configured providers: "
        f"{', '.join(known)} (declare others under llm_config.providers, e.g. "
        f'"providers": {{"{prefix}": {{"base_url": "https://..."}}}})'
    )


def model_problem(model: Any, known: list[str]) -> str | None:
    """Why ``model`` cannot be routed (an unknown provider prefix), or None."""
    if not isinstance(model, str):
        return None
    prefix, _ = split_model(model)
    if prefix is not None and prefix not in known:
        return unknown_provider_message(model, prefix, known)
    return None


#: The model names of the sections other than ``llm_config``, checked against the providers
#: ``llm_config`` configures (``llm_config``'s own are checked by its schema).
OTHER_MODEL_FIELDS = (
    ("embedding_config", "default_embedding_model"),
    ("memory_config", "embedding_model"),
    ("memory_config", "chat_model"),
)


def llm_config_errors(section: Mapping[str, Any]) -> dict[str, Any]:
    """Errors (``{key: [message]}``, ``{"prices": {key: [message]}}``) of an ``llm_config``
    whose model names or price keys name providers it does not configure."""
    known = known_providers(section)
    errors: dict[str, Any] = {}
    for key in ("default_chat_model", "default_embedding_model"):
        problem = model_problem(section.get(key), known)
        if problem:
            errors[key] = [problem]
    for key in section.get("prices") or {}:
        prefix, _ = split_model(key) if isinstance(key, str) else (None, "")
        if prefix is not None and prefix not in known:
            errors.setdefault("prices", {})[key] = [unknown_provider_message(key, prefix, known)]
    return errors


def other_model_errors(manifest: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Errors (``{section: {key: [message]}}``) for the model names of ``embedding_config``
    and ``memory_config`` that name providers ``llm_config`` does not configure."""
    llm = manifest.get("llm_config")
    known = known_providers(llm if isinstance(llm, Mapping) else None)
    errors: dict[str, dict[str, list[str]]] = {}
    for section, key in OTHER_MODEL_FIELDS:
        values = manifest.get(section)
        if not isinstance(values, Mapping):
            continue
        problem = model_problem(values.get(key), known)
        if problem:
            errors.setdefault(section, {})[key] = [problem]
    return errors


__all__ = [
    "ENV_NAME_HELP",
    "ENV_NAME_RE",
    "MAX_DECLARED_PROVIDERS",
    "PRESETS",
    "PROVIDER_NAME_HELP",
    "PROVIDER_NAME_RE",
    "PROVIDER_TYPES",
    "Preset",
    "known_providers",
    "llm_config_errors",
    "model_problem",
    "other_model_errors",
    "split_model",
    "unknown_provider_message",
]
