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
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .config import LLMConfig

#: The Azure OpenAI API version used when neither the manifest nor the environment says.
DEFAULT_AZURE_API_VERSION = "2024-10-21"
#: How a provider is spoken to (``type`` of a declared provider).
PROVIDER_TYPES = ("openai", "azure", "openai_compatible", "local")
PROVIDER_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
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


#: The manifest's model names, by section: checked against the configured providers.
MODEL_FIELDS = (
    ("llm_config", "default_chat_model"),
    ("llm_config", "default_embedding_model"),
    ("embedding_config", "default_embedding_model"),
    ("memory_config", "embedding_model"),
    ("memory_config", "chat_model"),
)


def manifest_model_errors(manifest: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Errors (``{section: {key: [message]}}``) for model names naming unknown providers,
    and price keys naming unknown providers, anywhere in a manifest's AI sections."""
    llm = manifest.get("llm_config")
    known = known_providers(llm if isinstance(llm, Mapping) else None)
    errors: dict[str, dict[str, list[str]]] = {}
    for section, key in MODEL_FIELDS:
        values = manifest.get(section)
        if not isinstance(values, Mapping):
            continue
        problem = model_problem(values.get(key), known)
        if problem:
            errors.setdefault(section, {})[key] = [problem]
    prices = llm.get("prices") if isinstance(llm, Mapping) else None
    if isinstance(prices, Mapping):
        for key in prices:
            prefix, _ = split_model(key) if isinstance(key, str) else (None, "")
            if prefix is not None and prefix not in known:
                errors.setdefault("llm_config", {}).setdefault("prices", []).append(
                    f"{key}: " + unknown_provider_message(key, prefix, known)
                )
    return errors


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
        from dataclasses import replace

        return replace(
            base,
            provider=self.type,
            base_url=self.base_url,
            api_version=self.api_version,
            api_key=self.api_key,
            timeout_seconds=self.timeout_seconds,
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
    declared: Mapping[str, Mapping[str, Any]] = config.providers or {}
    names = set(PRESETS) | set(declared)
    specs = {}
    for name in sorted(names):
        preset = PRESETS.get(name)
        entry = dict(declared.get(name) or {})
        kind = entry.get("type") or (preset.type if preset else "openai_compatible")
        path = f"llm_config.providers.{name}" if name in declared else "llm_config"
        key_env = entry.get("api_key_env") or default_key_env(name)
        base_url = entry.get("base_url") or env.get(base_url_env(name)) or None
        if base_url is None and preset is not None and (preset.type == kind):
            for var in preset.base_url_env:
                if env.get(var):
                    base_url = env[var]
                    break
            base_url = base_url or preset.base_url
        api_version = entry.get("api_version")
        if kind == "azure":
            api_version = (
                api_version
                or env.get("AZURE_OPENAI_API_VERSION")
                or (config.api_version if config.provider == "azure" else None)
                or DEFAULT_AZURE_API_VERSION
            )
        timeout = float(entry.get("timeout_seconds") or config.timeout_seconds)
        api_key = (env.get(key_env) or None) if kind != "local" else None
        if name == config.provider:
            # The default provider: what LLMConfig resolved (top-level keys, legacy variables).
            base_url = config.base_url or base_url
            api_key = config.api_key or api_key
            if kind == "azure":
                api_version = config.api_version or api_version
        key_required = bool(preset.key_required) if preset else False
        if "api_key_env" in entry:
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
    declared = config.providers or {}
    names = {"AZURE_OPENAI_API_VERSION", "MDB_LLM_PRICES"}
    for name in set(PRESETS) | set(declared):
        entry = declared.get(name) or {}
        names.add(base_url_env(name))
        names.add(entry.get("api_key_env") or default_key_env(name))
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


class ProviderRouter:
    """Provider objects by name, built on first use (one per name and process, thread-safe).

    :param default: a provider object for the default provider (``LLMService(provider=...)``);
        otherwise it is built from the configuration like the others.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        default: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.default_name = config.provider
        self.specs = resolve_specs(config, environ)
        self._lock = threading.Lock()
        self._providers: dict[str, Any] = {}
        if default is not None:
            self._providers[self.default_name] = default

    @property
    def names(self) -> list[str]:
        return sorted(self.specs)

    def provider(self, name: str) -> Any:
        """The provider object of ``name`` (ConfigurationError if it cannot be called)."""
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        spec = self.specs.get(name)
        if spec is None:
            raise ConfigurationError(
                f"unknown provider {name!r}; configured providers: {', '.join(self.names)}",
                context={"provider": name},
            )
        problem = spec.problem()
        if problem and name != self.default_name:
            raise ConfigurationError(f"{spec.path}: {problem}", context={"provider": name})
        with self._lock:
            provider = self._providers.get(name)
            if provider is None:
                from .providers import make_provider

                provider = make_provider(
                    spec.llm_config(self.config), name=name, key_env=spec.api_key_env
                )
                self._providers[name] = provider
        return provider

    def resolve(self, model: str) -> Route:
        """The route of ``model`` (``provider/model`` or a bare name for the default)."""
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        prefix, rest = split_model(model)
        if prefix is None:
            name, rest = self.default_name, model
        elif prefix not in self.specs:
            raise ConfigurationError(
                unknown_provider_message(model, prefix, self.names),
                context={"model": model, "provider": prefix},
            )
        else:
            name = prefix
        return Route(name, rest, self.provider(name), self.specs[name])

    def close(self) -> None:
        """Close every provider's HTTP connections (reopened on their next call)."""
        with self._lock:
            providers = list(self._providers.values())
        for provider in providers:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
