"""Providers: where embeddings and chat completions come from.

- :class:`OpenAIProvider` speaks the OpenAI API through the official ``openai`` client:
  OpenAI itself, Azure OpenAI (deployments as model names, ``api-version``), and any
  OpenAI-compatible server reached by ``base_url`` (Ollama, vLLM, LM Studio).
- :class:`LocalProvider` computes embeddings on this machine with all-MiniLM-L6-v2 (no key,
  no network); it has no chat model of its own, but forwards chat to an OpenAI-compatible
  ``base_url`` when one is configured (a local Ollama, say).

:class:`ProviderRouter` holds an app's provider objects by name (``azure``, ``voyage``...),
built on first use from what :mod:`mdb_sync.ai.routing` resolves for each name.

A provider makes one attempt per call. It raises :class:`~mdb_sync.ai.retry.RetryableError`
for what may succeed later (429, 5xx, timeouts) and a specific error for what will not (an
unknown model, a bad key, a rejected request); the services own retries and metrics. The
HTTP client is created lazily and again in a forked child, so a provider built before
``fork()`` never shares a connection pool with its parent.

Each attempt of :class:`OpenAIProvider` has a total deadline of ``timeout_seconds``: name
lookup, connection, TLS, sending, the answer's headers and body together
(:mod:`mdb_sync.ai.openai_http`; the ``openai`` client's own timeout bounds each phase
only). A streamed chat must deliver its first event within that deadline too (part of the
attempt, so it is retried like any call), then each next event within ``timeout_seconds``
of asking for it, and the whole stream within :data:`STREAM_BOUND_FACTOR` times
``timeout_seconds`` from its start: an idle bound counted in events, which a server dripping
bytes cannot reset, and a ceiling for a server dripping whole (empty) events.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..exceptions import (
    AIProviderError,
    AIServiceError,
    ConfigurationError,
    ModelNotFoundError,
    NetworkTimeout,
)
from ..net_bounds import deadline
from .config import LLMConfig
from .local_model import LOCAL_DIMENSIONS, LOCAL_MODEL_ALIASES, LOCAL_MODEL_NAME, get_encoder
from .retry import RETRYABLE_STATUSES, RetryableError, parse_retry_after
from .routing import Route, resolve_specs, split_model, unknown_provider_message

MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
#: A streamed chat may last this many times ``timeout_seconds`` in all, from its start.
STREAM_BOUND_FACTOR = 10
T = TypeVar("T")


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    model: str
    prompt_tokens: int = 0


@dataclass
class ChatResult:
    """One chat completion: the reply text, why it stopped, and the tokens it cost."""

    content: str
    model: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    raw: Any = field(default=None, repr=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Provider(Protocol):
    name: str

    def embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None
    ) -> EmbeddingResult: ...

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatResult: ...

    def stream_chat(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> Iterator[str | ChatResult]: ...


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Chat messages as a list of ``{"role", "content"}`` dicts; a string is one user
    message. Raises ``ValueError``/``TypeError`` naming the bad message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, dict) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TypeError(f"messages[{i}] must be a dict, not {type(message).__name__}")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            raise ValueError(
                f"messages[{i}].role must be one of {', '.join(sorted(MESSAGE_ROLES))}, "
                f"got {role!r}"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise TypeError(f"messages[{i}].content must be a string or a list of parts")
        out.append(dict(message))
    return out


# --- OpenAI, Azure, OpenAI-compatible ------------------------------------------------------------


class OpenAIProvider:
    """The OpenAI API through the ``openai`` client (``provider`` openai, azure or
    openai_compatible)."""

    #: Inputs per embeddings request the API accepts.
    max_batch = 2048

    def __init__(
        self, config: LLMConfig, *, name: str | None = None, key_env: str | None = None
    ) -> None:
        self.config = config
        self.name = name or (config.provider if config.provider != "local" else "openai_compatible")
        self.key_env = key_env or (
            "AZURE_OPENAI_API_KEY" if config.provider == "azure" else "OPENAI_API_KEY"
        )
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid: int | None = None

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make_client()
                    self._pid = os.getpid()
        return self._client

    def _make_client(self) -> Any:
        try:
            import openai

            from .openai_http import bounded_http_client
        except ImportError as exc:  # pragma: no cover - the ai extra installs it
            raise ConfigurationError(
                'the openai package is missing: pip install "mdb-sync[ai]"'
            ) from exc
        config = self.config
        # Connections opened through a backend that keeps each call's total deadline.
        http_client = bounded_http_client(timeout=config.timeout_seconds)
        if config.provider == "azure":
            if not config.base_url:  # LLMConfig.require_ready refuses this first
                raise ConfigurationError("the Azure provider needs llm_config.base_url")
            return openai.AzureOpenAI(
                azure_endpoint=config.base_url,
                api_key=config.api_key,
                api_version=config.api_version,
                timeout=config.timeout_seconds,
                max_retries=0,
                http_client=http_client,
            )
        return openai.OpenAI(
            # OpenAI-compatible servers often need no key, but the client wants one.
            api_key=config.api_key or "unused",
            base_url=config.base_url,
            timeout=config.timeout_seconds,
            max_retries=0,
            http_client=http_client,
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.close()

    def _translate(self, exc: Exception, what: str, model: str) -> Exception:
        import openai

        where = {"provider": self.name, "model": model}
        if isinstance(exc, openai.APITimeoutError):
            took = NetworkTimeout(
                f"{self.name} {what} took longer than {self.config.timeout_seconds:g}s "
                "(timeout_seconds: the bound of the whole call)",
                context=where,
            )
            took.__cause__ = exc
            return RetryableError(took, status=None, retry_after=None)
        if isinstance(exc, openai.APIConnectionError):
            return RetryableError(exc, status=None, retry_after=None)
        if not isinstance(exc, openai.APIStatusError):
            return exc
        status = exc.status_code
        if status in RETRYABLE_STATUSES or status >= 500:
            headers = exc.response.headers if exc.response is not None else None
            return RetryableError(exc, status=status, retry_after=parse_retry_after(headers))
        message = _error_message(exc)
        if status == 404:
            return ModelNotFoundError(
                f"{self.name}: unknown model or deployment {model!r} for {what} ({message})",
                context=where,
            )
        if status in (401, 403):
            return AIProviderError(
                f"{self.name} refused the credentials ({status}): check {self.key_env}",
                status=status,
                context=where,
            )
        return AIProviderError(
            f"{self.name} rejected the {what} request ({status}): {message}",
            status=status,
            context=where,
        )

    def embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        kwargs: dict[str, Any] = {"model": model, "input": list(texts)}
        if dimensions is not None:
            kwargs["dimensions"] = dimensions
        response = self._within_bound(
            lambda: self.client.embeddings.create(**kwargs), "embeddings", model
        )
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise AIProviderError(
                f"{self.name} returned {len(data)} embeddings for {len(texts)} inputs",
                context={"provider": self.name, "model": model},
            )
        usage = getattr(response, "usage", None)
        return EmbeddingResult(
            vectors=[list(map(float, d.embedding)) for d in data],
            model=model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        )

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatResult:
        response = self._within_bound(
            lambda: self.client.chat.completions.create(model=model, messages=messages, **params),
            "chat",
            model,
        )
        if not response.choices:
            raise AIProviderError(
                f"{self.name} returned no choices", context={"provider": self.name}
            )
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return ChatResult(
            content=choice.message.content or "",
            model=getattr(response, "model", None) or model,
            finish_reason=choice.finish_reason,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            raw=response,
        )

    def _within_bound(self, fn: Callable[[], T], what: str, model: str) -> T:
        """``fn()``, one API call, within ``timeout_seconds`` in all (see the module)."""
        with deadline(self.config.timeout_seconds):
            try:
                return fn()
            except Exception as exc:
                raise self._translate(exc, what, model) from exc

    def open_stream(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> OpenedStream:
        """Start a streamed completion: the retryable part, which ends with its first event
        (all within ``timeout_seconds``: a server that answers its headers and then nothing
        fails the attempt, and is retried like any call)."""
        params.setdefault("stream_options", {"include_usage": True})
        started = time.monotonic()
        stream: Any = None

        def start() -> Any:
            nonlocal stream
            stream = self.client.chat.completions.create(
                model=model, messages=messages, stream=True, **params
            )
            return next(stream, None)

        try:
            first = self._within_bound(start, "chat", model)
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        return OpenedStream(stream, first, started)

    def read_stream(self, stream: OpenedStream, *, model: str) -> Iterator[str | ChatResult]:
        """Text deltas of a started stream (what :meth:`open_stream` returned), then one
        :class:`ChatResult` with the totals. Each event after the first must come within
        ``timeout_seconds`` of asking for it, and the stream must end within
        :data:`STREAM_BOUND_FACTOR` times ``timeout_seconds`` of its start; otherwise, or
        when it breaks off, :class:`AIProviderError` (what was yielded is not taken back)."""
        parts: list[str] = []
        finish = None
        prompt = completion = 0
        chunk = stream.first
        try:
            with stream.events:
                while chunk is not None:
                    usage = getattr(chunk, "usage", None)
                    if usage is not None:
                        prompt = int(usage.prompt_tokens or 0)
                        completion = int(usage.completion_tokens or 0)
                    for choice in chunk.choices or ():
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        text = getattr(choice.delta, "content", None)
                        if text:
                            parts.append(text)
                            yield text
                    # Asked for outside the yield: the bound covers this read only.
                    chunk = self._next_event(stream, model)
        except AIProviderError:
            raise
        except Exception as exc:
            error = self._translate(exc, "chat", model)
            if isinstance(error, RetryableError):
                error = AIProviderError(
                    f"{self.name}: the chat stream broke off: {exc}",
                    status=error.status,
                    context={"provider": self.name, "model": model},
                )
            raise error from exc
        yield ChatResult("".join(parts), model, finish, prompt, completion)

    def _next_event(self, stream: OpenedStream, model: str) -> Any:
        """The stream's next event (None at its end), within the stream's bounds."""
        import openai

        timeout = self.config.timeout_seconds
        ceiling = STREAM_BOUND_FACTOR * timeout
        left = stream.started + ceiling - time.monotonic()
        where = {"provider": self.name, "model": model}
        if left <= 0:
            raise AIProviderError(
                f"{self.name}: the chat stream went on longer than {ceiling:g}s in all "
                f"({STREAM_BOUND_FACTOR} x timeout_seconds)",
                context=where,
            )
        with deadline(min(timeout, left)):
            try:
                return next(stream.events, None)
            except openai.APITimeoutError as exc:
                if left <= timeout:
                    raise AIProviderError(
                        f"{self.name}: the chat stream went on longer than {ceiling:g}s in "
                        f"all ({STREAM_BOUND_FACTOR} x timeout_seconds)",
                        context=where,
                    ) from exc
                raise AIProviderError(
                    f"{self.name}: the chat stream stalled: no event for {timeout:g}s "
                    "(timeout_seconds)",
                    context=where,
                ) from exc

    def stream_chat(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> Iterator[str | ChatResult]:
        return self.read_stream(self.open_stream(messages, model=model, **params), model=model)


@dataclass
class OpenedStream:
    """A streamed completion started by :meth:`OpenAIProvider.open_stream`: the ``openai``
    stream of events, its first event (None: it had none) and when it was started."""

    events: Any
    first: Any
    started: float


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
    return str(getattr(exc, "message", exc))[:500]


# --- local ----------------------------------------------------------------------------------------


class LocalProvider:
    """Embeddings from the bundled all-MiniLM-L6-v2 model; chat forwarded to an
    OpenAI-compatible ``base_url`` if the configuration has one."""

    name = "local"
    max_batch = 64

    def __init__(self, config: LLMConfig | None = None, *, name: str | None = None) -> None:
        self.config = config or LLMConfig(provider="local")
        if name:
            self.name = name
        self._chat: OpenAIProvider | None = None
        if self.config.base_url:
            self._chat = OpenAIProvider(self.config)

    @property
    def encoder(self) -> Any:
        return get_encoder()

    def embed(
        self, texts: Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        if model not in LOCAL_MODEL_ALIASES:
            raise ModelNotFoundError(
                f"the local provider has only the {LOCAL_MODEL_NAME!r} embedding model, "
                f"not {model!r}",
                context={"provider": "local", "model": model},
            )
        if dimensions is not None and dimensions != LOCAL_DIMENSIONS:
            raise ConfigurationError(
                f"{LOCAL_MODEL_NAME} embeddings have {LOCAL_DIMENSIONS} dimensions, "
                f"not {dimensions} (llm_config.embedding_dimensions)"
            )
        encoder = self.encoder
        vectors = encoder.encode(list(texts))
        tokens = sum(encoder.tokenizer.count(text) for text in texts)
        return EmbeddingResult(
            vectors=vectors.tolist(), model=LOCAL_MODEL_NAME, prompt_tokens=tokens
        )

    def _chat_provider(self) -> OpenAIProvider:
        if self._chat is None:
            raise AIServiceError(
                "the local provider computes embeddings only; for chat set llm_config.base_url "
                "(or MDB_LLM_BASE_URL) to an OpenAI-compatible server, e.g. "
                "http://localhost:11434/v1 for Ollama",
                context={"provider": "local"},
            )
        return self._chat

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> ChatResult:
        return self._chat_provider().chat(messages, model=model, **params)

    def open_stream(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Any:
        return self._chat_provider().open_stream(messages, model=model, **params)

    def read_stream(self, stream: Any, *, model: str) -> Iterator[str | ChatResult]:
        return self._chat_provider().read_stream(stream, model=model)

    def stream_chat(
        self, messages: list[dict[str, Any]], *, model: str, **params: Any
    ) -> Iterator[str | ChatResult]:
        return self._chat_provider().stream_chat(messages, model=model, **params)

    def close(self) -> None:
        if self._chat is not None:
            self._chat.close()


def make_provider(
    config: LLMConfig, *, name: str | None = None, key_env: str | None = None
) -> OpenAIProvider | LocalProvider:
    """The provider ``config`` describes (``name``: how errors and metrics call it;
    ``key_env``: the variable its key comes from, named when the key is refused)."""
    if config.provider == "local":
        return LocalProvider(config, name=name)
    return OpenAIProvider(config, name=name, key_env=key_env)


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
