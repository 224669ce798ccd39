"""``provider/model`` names: which configured provider serves a model.

A model name may start with a provider: ``azure/gpt-4o``, ``openai/gpt-4o-mini``,
``voyage/voyage-2``, ``anthropic/claude-3-5-haiku-latest``, ``ollama/llama3``,
``local/all-MiniLM-L6-v2``. The part before the first ``/`` names the provider, the rest is
the model as that provider knows it (``vllm/meta-llama/Llama-3.1-8B`` sends
``meta-llama/Llama-3.1-8B`` to ``vllm``). A name without a prefix goes to the app's default
provider (``llm_config.provider``, or what the environment sets up), as before.

The providers an app can name are the built-in ones (:data:`PRESETS`: ``openai``, ``azure``,
``openai_compatible``, ``local`` and a few vendors with OpenAI-compatible endpoints) plus
those its manifest declares under ``llm_config.providers``. A manifest naming any other
provider is refused at validation, with the list of the configured ones — a typo must not
turn into a request sent somewhere unexpected. Everything but secrets comes from the
manifest or the environment (``MDB_LLM_<NAME>_BASE_URL``); API keys come from the
environment only (``<NAME>_API_KEY`` by default, or the variable ``api_key_env`` names).

The naming rules and the built-in providers are the manifest's
(:mod:`mdb_sync.manifest.llm_providers`, re-exported here): the schema checks a manifest's
names with them, this module resolves where each name goes with them; the provider objects
are built by :class:`mdb_sync.ai.providers.ProviderRouter`, a layer above (providers read
the configuration, which reads the defaults here).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..manifest.llm_providers import (
    ENV_NAME_HELP,
    ENV_NAME_RE,
    MAX_DECLARED_PROVIDERS,
    PRESETS,
    PROVIDER_NAME_RE,
    PROVIDER_TYPES,
    Preset,
    known_providers,
    model_problem,
    split_model,
    unknown_provider_message,
)
from ..manifest.model_ai import LLMProviderSection

if TYPE_CHECKING:
    from .config import LLMConfig

#: The Azure OpenAI API version used when neither the manifest nor the environment says.
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def base_url_env(name: str) -> str:
    """The variable that sets provider ``name``'s endpoint: ``MDB_LLM_OLLAMA_BASE_URL``."""
    return f"MDB_LLM_{_env_part(name)}_BASE_URL"


def default_key_env(name: str) -> str:
    """The variable holding provider ``name``'s key unless it says: ``VOYAGE_API_KEY``."""
    preset = PRESETS.get(name)
    if preset is not None and preset.api_key_env:
        return preset.api_key_env
    return f"{_env_part(name)}_API_KEY"


def _env_part(name: str) -> str:
    return name.upper().replace("-", "_")


# --- resolved providers --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as the calls see it: where, how, and with which key (from the environment)."""

    name: str
    type: str
    base_url: str | None = None
    api_version: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    key_required: bool = False
    timeout_seconds: float = 60.0
    free: bool = False
    #: Where its settings live, for error messages (``llm_config.providers.voyage``).
    path: str = "llm_config"

    def problem(self) -> str | None:
        """Why calls to this provider cannot work, or None."""
        if self.type == "local":
            return None
        if self.type == "azure" and not self.base_url:
            return (
                f"provider {self.name!r} (Azure) needs an endpoint: set AZURE_OPENAI_ENDPOINT, "
                f"{base_url_env(self.name)} or {self.path}.base_url"
            )
        if self.type == "openai_compatible" and not self.base_url:
            return (
                f"provider {self.name!r} needs a base_url: set {self.path}.base_url or "
                f"{base_url_env(self.name)}"
            )
        if (self.key_required or self.type in ("openai", "azure")) and not self.api_key:
            return f"provider {self.name!r} needs an API key: set {self.api_key_env}"
        if self.api_key and self.base_url and not _safe_for_keys(self.base_url):
            return (
                f"provider {self.name!r}: its API key would cross the network in the clear "
                f"to {self.base_url}; use an https URL (plain http only to a loopback address)"
            )
        return None

    def llm_config(self, base: LLMConfig) -> LLMConfig:
        """``base`` with this provider's connection settings (what a provider object reads)."""
        return replace(
            base,
            provider=self.type,
            base_url=self.base_url,
            api_version=self.api_version,
            api_key=self.api_key,
            timeout_seconds=self.timeout_seconds,
        )


#: A provider the manifest does not declare: every setting from its preset or the environment.
_UNDECLARED = LLMProviderSection(
    type=None, base_url=None, api_version=None, api_key_env=None, timeout_seconds=None
)


def _safe_for_keys(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_specs(
    config: LLMConfig, environ: Mapping[str, str] | None = None
) -> dict[str, ProviderSpec]:
    """Every provider ``config`` can route to, completed from the environment.

    The default provider (``config.provider``) keeps the settings the configuration already
    resolved (``base_url``, ``api_key``, ``api_version``: the top-level keys and their
    variables, as before routing existed); a ``providers`` entry of the same name adds to
    them. Other providers: ``providers.<name>`` > ``MDB_LLM_<NAME>_BASE_URL`` > the preset's
    variables > the preset's default endpoint; keys from ``api_key_env`` or the preset's
    variable (``<NAME>_API_KEY``).
    """
    env = os.environ if environ is None else environ
    declared: Mapping[str, LLMProviderSection] = config.providers
    names = set(PRESETS) | set(declared)
    specs = {}
    for name in sorted(names):
        preset = PRESETS.get(name)
        entry = declared.get(name, _UNDECLARED)
        kind = entry.type or (preset.type if preset else "openai_compatible")
        path = f"llm_config.providers.{name}" if name in declared else "llm_config"
        key_env = entry.api_key_env or default_key_env(name)
        base_url = entry.base_url or env.get(base_url_env(name)) or None
        if base_url is None and preset is not None and (preset.type == kind):
            for var in preset.base_url_env:
                if env.get(var):
                    base_url = env[var]
                    break
            base_url = base_url or preset.base_url
        api_version = entry.api_version
        if kind == "azure":
            api_version = (
                api_version
                or env.get("AZURE_OPENAI_API_VERSION")
                or (config.api_version if config.provider == "azure" else None)
                or DEFAULT_AZURE_API_VERSION
            )
        timeout = entry.timeout_seconds or config.timeout_seconds
        api_key = (env.get(key_env) or None) if kind != "local" else None
        if name == config.provider:
            # The default provider: what LLMConfig resolved (top-level keys, legacy variables).
            base_url = config.base_url or base_url
            api_key = config.api_key or api_key
            if kind == "azure":
                api_version = config.api_version or api_version
        key_required = bool(preset.key_required) if preset else False
        if entry.api_key_env is not None:
            key_required = True
        specs[name] = ProviderSpec(
            name=name,
            type=kind,
            base_url=base_url.rstrip("/") if isinstance(base_url, str) else None,
            api_version=api_version,
            api_key=api_key,
            api_key_env=key_env,
            key_required=key_required,
            timeout_seconds=timeout,
            free=bool(preset.free) if preset and kind == preset.type else kind == "local",
            path=path,
        )
    return specs


def environment_names(config: LLMConfig) -> list[str]:
    """The variables :func:`resolve_specs` reads for ``config`` (for cache keys)."""
    declared = config.providers
    names = {"AZURE_OPENAI_API_VERSION", "MDB_LLM_PRICES"}
    for name in set(PRESETS) | set(declared):
        entry = declared.get(name, _UNDECLARED)
        names.add(base_url_env(name))
        names.add(entry.api_key_env or default_key_env(name))
        preset = PRESETS.get(name)
        if preset is not None:
            names.update(preset.base_url_env)
    return sorted(names)


@dataclass(frozen=True)
class Route:
    """Where one model name goes: the provider's name and object, and the model it knows."""

    provider_name: str
    model: str
    provider: Any
    spec: ProviderSpec

    @property
    def label(self) -> str:
        """``provider/model``: how metrics and prices name it."""
        return f"{self.provider_name}/{self.model}"


__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "ENV_NAME_HELP",
    "ENV_NAME_RE",
    "MAX_DECLARED_PROVIDERS",
    "PRESETS",
    "PROVIDER_NAME_RE",
    "PROVIDER_TYPES",
    "Preset",
    "ProviderSpec",
    "Route",
    "base_url_env",
    "default_key_env",
    "environment_names",
    "known_providers",
    "model_problem",
    "resolve_specs",
    "split_model",
    "unknown_provider_message",
]
