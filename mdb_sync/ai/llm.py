"""LLMService: chat (plain, streamed, structured) and embeddings for one app.

Built by :meth:`MongoDBEngine.get_llm_service` from the app's ``llm_config`` (or directly:
``LLMService({"provider": "openai_compatible", "base_url": ...})``). A model name picks its
provider (``azure/gpt-4o``, ``voyage/voyage-2``: :mod:`mdb_sync.ai.routing`); a bare name goes
to the default provider. Every call goes through the retry policy, is priced
(:mod:`.costs`) and, when the app has a monthly budget, held against it; its latency,
outcome, retries, tokens and cost are recorded in the engine's metrics under the app
(``llm.chat``, ``llm.embed``, ``llm.tokens.prompt``, ``llm.tokens.completion``,
``llm.tokens.embedding``, ``llm.retries``, ``llm.cost.usd`` by model).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..exceptions import AIProviderError, AIRateLimitError, AIServiceError, StructuredOutputError
from .config import LLMConfig
from .costs import (
    BUDGET_DEFAULT_MAX_TOKENS,
    CostMeter,
    Hold,
    estimate_embedding_tokens,
    estimate_prompt_tokens,
)
from .prices import PriceTable
from .providers import ChatResult, LocalProvider, ProviderRouter, normalize_messages
from .retry import RetryableError, RetryPolicy, call_with_retries
from .routing import Route
from .structured import ResponseSchema, SchemaValidationError, extract_json
from .tokens import get_counter

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Tokens per embeddings request (OpenAI accepts 300k; leave room for counting differences).
EMBEDDING_TOKENS_PER_REQUEST = 250_000


class Telemetry:
    """Records operations and token counts of one app in an engine's metrics (or nowhere)."""

    def __init__(self, metrics: Any = None, app: str | None = None) -> None:
        self.metrics = metrics
        self.app = app

    @contextlib.contextmanager
    def operation(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        except GeneratorExit:  # a stream the caller stopped reading early
            ok = True
            raise
        finally:
            if self.metrics is not None:
                elapsed = (time.perf_counter() - started) * 1000
                self.metrics.record_operation(name, elapsed, ok, slug=self.app)

    def count(self, name: str, value: float) -> None:
        if self.metrics is not None and value:
            self.metrics.increment(name, value, slug=self.app)


def _coerce_config(config: LLMConfig | Mapping[str, Any] | None) -> LLMConfig:
    if isinstance(config, LLMConfig):
        return config
    return LLMConfig.from_section(config)


class LLMService:
    """Chat and embeddings through one provider, with retries and metrics.

    :param config: an :class:`~mdb_sync.ai.config.LLMConfig`, or a mapping shaped like a
        manifest's ``llm_config`` (completed from the environment).
    :param provider: a provider object to use instead of the one ``config`` names (for
        model names without a ``provider/`` prefix).
    :param metrics: an engine's ``MetricsCollector`` (``engine.metrics``), with ``app``.
    :param retry: the :class:`~mdb_sync.ai.retry.RetryPolicy` (default: ``max_retries`` from
        the configuration, 0.5 s doubling backoff, ``Retry-After`` up to 60 s).
    :param ledger: the app's :class:`~mdb_sync.ai.spend.SpendLedger` (the engine passes it):
        the month's spending across processes, required by ``monthly_budget_usd``.
    :param prices: a :class:`~mdb_sync.ai.prices.PriceTable` (default: ``config.prices``,
        ``MDB_LLM_PRICES``, then the list prices).
    """

    def __init__(
        self,
        config: LLMConfig | Mapping[str, Any] | None = None,
        *,
        provider: Any = None,
        metrics: Any = None,
        app: str | None = None,
        retry: RetryPolicy | None = None,
        ledger: Any = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.config = _coerce_config(config)
        self.app = app
        self.router = ProviderRouter(self.config, default=provider)
        #: The default provider (model names without a ``provider/`` prefix).
        self.provider = self.router.provider(self.router.default_name)
        self.retry = retry or RetryPolicy(max_retries=self.config.max_retries)
        self.telemetry = Telemetry(metrics, app)
        self.costs = CostMeter(
            prices or PriceTable(self.config.prices),
            self.telemetry,
            ledger=ledger,
            budget_usd=self.config.monthly_budget_usd,
        )
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return (
            f"LLMService(app={self.app!r}, provider={self.config.provider!r}, "
            f"chat_model={self.config.default_chat_model!r})"
        )

    def close(self) -> None:
        """Close the providers' HTTP connections (they are reopened on the next call)."""
        self.router.close()

    def route(self, model: str | None = None, *, embedding: bool = False) -> Route:
        """Where ``model`` (default: the default chat, or embedding, model) goes: its
        provider's name and object and the model name that provider is sent. Raises
        :class:`ConfigurationError` for an unknown ``provider/`` prefix or a provider
        that is not set up (its key or endpoint missing from the environment)."""
        default = (
            self.config.default_embedding_model if embedding else self.config.default_chat_model
        )
        return self.router.resolve(model or default)

    def spending(self) -> dict[str, Any]:
        """This month's spending of the app, across every process: ``spent_usd``,
        ``reserved_usd`` (calls in flight), ``calls``, ``budget_usd`` (None: no budget)."""
        return self.costs.spending()

    # --- plumbing -----------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T], what: str, route: Route | None = None) -> T:
        provider = (
            route.provider_name
            if route is not None
            else getattr(self.provider, "name", self.config.provider)
        )

        def give_up(exc: RetryableError) -> Exception:
            attempts = self.retry.max_retries + 1
            reason = f"HTTP {exc.status}" if exc.status else type(exc.cause).__name__
            detail = str(exc.cause)[:300]
            context = {"provider": provider, "app": self.app, "status": exc.status}
            if exc.status == 429:
                return AIRateLimitError(
                    f"{provider} {what}: rate limited ({reason}) after {attempts} attempt(s)"
                    + (f"; retry after {exc.retry_after:g}s" if exc.retry_after else ""),
                    status=429,
                    retry_after=exc.retry_after,
                    context=context,
                )
            return AIProviderError(
                f"{provider} {what} failed after {attempts} attempt(s): {reason}: {detail}",
                status=exc.status,
                retry_after=exc.retry_after,
                context=context,
            )

        return call_with_retries(
            fn,
            self.retry,
            on_retry=lambda exc, delay: self.telemetry.count("llm.retries", 1),
            give_up=give_up,
            sleep=self._sleep,
        )

    def _chat_params(
        self,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
        params: dict[str, Any],
    ) -> tuple[str, dict[str, Any]]:
        model = model or self.config.default_chat_model
        temperature = self.config.temperature if temperature is None else temperature
        max_tokens = self.config.max_tokens if max_tokens is None else max_tokens
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        elif self.costs.budget_usd is not None and params.get("max_completion_tokens") is None:
            # A budgeted call's worst case must be bounded to be reserved.
            params["max_tokens"] = BUDGET_DEFAULT_MAX_TOKENS
        return model, params

    def _begin_chat(
        self, route: Route, conversation: list[dict[str, Any]], params: dict[str, Any]
    ) -> Hold:
        def estimate() -> tuple[int, int]:
            counter = _estimate_counter()
            limit = params.get("max_tokens") or params.get("max_completion_tokens") or 0
            return estimate_prompt_tokens(counter, conversation, params), int(limit)

        return self.costs.begin(route, estimate)

    def _record_chat(self, result: ChatResult, hold: Hold) -> None:
        prompt, completion = result.prompt_tokens, result.completion_tokens
        if not prompt and not completion and result.content and hold.priced:
            # The provider reported no usage: charge our estimate rather than nothing.
            prompt = hold.estimate()[0]
            completion = _estimate_counter().count(result.content)
        self.telemetry.count("llm.tokens.prompt", result.prompt_tokens)
        self.telemetry.count("llm.tokens.completion", result.completion_tokens)
        self.costs.finish(hold, prompt, completion)

    # --- chat ---------------------------------------------------------------------------------

    def chat_completion(
        self,
        messages: Any,
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **params: Any,
    ) -> ChatResult:
        """One chat completion with its metadata (reply, finish reason, token usage).

        ``messages`` is a list of ``{"role", "content"}`` dicts or a single user string;
        other keyword arguments (``response_format``, ``tools``, ``seed``...) go to the API.
        """
        conversation = normalize_messages(messages)
        model, params = self._chat_params(model, temperature, max_tokens, params)
        route = self.router.resolve(model)
        hold = self._begin_chat(route, conversation, params)
        with self.telemetry.operation("llm.chat"):
            try:
                result: ChatResult = self._call(
                    lambda: route.provider.chat(conversation, model=route.model, **params),
                    "chat",
                    route,
                )
            except BaseException:
                self.costs.abort(hold)
                raise
        self._record_chat(result, hold)
        return result

    def chat(
        self,
        messages: Any,
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        **params: Any,
    ) -> Any:
        """The assistant's reply as a string, or with ``stream=True`` an iterator of text
        pieces (see :meth:`stream_chat`)."""
        if stream:
            return self.stream_chat(
                messages, model=model, temperature=temperature, max_tokens=max_tokens, **params
            )
        return self.chat_completion(
            messages, model=model, temperature=temperature, max_tokens=max_tokens, **params
        ).content

    def stream_chat(
        self,
        messages: Any,
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        **params: Any,
    ) -> Iterator[str]:
        """Yield the reply as it is generated. Opening the stream is retried like any call;
        a stream that breaks off midway raises :class:`AIProviderError` (what was already
        yielded cannot be taken back). Usage is recorded when the stream ends."""
        conversation = normalize_messages(messages)
        model, params = self._chat_params(model, temperature, max_tokens, params)
        route = self.router.resolve(model)  # an unknown provider fails here, not mid-loop
        return self._stream(conversation, route, params)

    def _stream(
        self, conversation: list[dict[str, Any]], route: Route, params: dict[str, Any]
    ) -> Iterator[str]:
        # Reserved when iteration starts: a stream never read holds no budget.
        hold = self._begin_chat(route, conversation, params)
        settled = False
        with self.telemetry.operation("llm.chat"):
            try:
                stream = self._call(
                    lambda: route.provider.open_stream(conversation, model=route.model, **params),
                    "chat",
                    route,
                )
            except BaseException:
                self.costs.abort(hold)
                raise
            try:
                for item in route.provider.read_stream(stream, model=route.model):
                    if isinstance(item, ChatResult):
                        settled = True
                        self._record_chat(item, hold)
                    else:
                        yield item
            finally:
                if not settled:
                    # Broken off or abandoned: the provider may have billed it all.
                    self.costs.finish_unknown(hold)

    def ask_structured(
        self,
        instructions: str,
        content: Any,
        response_model: Any,
        *,
        model: str | None = None,
        temperature: float | None = None,
    ) -> Any:
        """:meth:`chat_structured` for one task: ``instructions`` as the system message and
        ``content`` (text, or anything JSON can carry) as the user's."""
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        messages = [{"role": "system", "content": instructions}, {"role": "user", "content": text}]
        params: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        return self.chat_structured(messages, response_model, model=model, **params)

    def chat_structured(
        self,
        messages: Any,
        response_model: Any,
        *,
        model: str | None = None,
        max_attempts: int = 3,
        json_mode: bool = True,
        **params: Any,
    ) -> Any:
        """A reply validated against ``response_model`` (a marshmallow ``Schema``, a pydantic
        model class or a JSON Schema dict), re-asking with the validation errors up to
        ``max_attempts`` times in all.

        Returns what the schema produces (``Schema.load``'s result, the pydantic instance,
        or the validated JSON). Raises :class:`StructuredOutputError` with the last errors
        and reply when no attempt validates. ``json_mode`` asks the provider for a JSON
        object reply (``response_format={"type": "json_object"}``); turn it off for servers
        that do not support it.
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError("max_attempts must be a positive integer")
        schema = ResponseSchema(response_model)
        conversation = [
            {"role": "system", "content": schema.instructions()},
            *normalize_messages(messages),
        ]
        if json_mode:
            params.setdefault("response_format", {"type": "json_object"})
        reply = ""
        errors: Any = None
        for attempt in range(1, max_attempts + 1):
            reply = self.chat_completion(conversation, model=model, **params).content
            try:
                return schema.validate(extract_json(reply))
            except SchemaValidationError as exc:
                errors = exc.errors
                log.info("structured reply %d of %d invalid: %s", attempt, max_attempts, exc)
                self.telemetry.count("llm.structured.invalid", 1)
            conversation += [
                {"role": "assistant", "content": reply},
                {
                    "role": "user",
                    "content": f"That reply does not validate: {_short(errors)}. Reply again "
                    "with only the corrected JSON.",
                },
            ]
        raise StructuredOutputError(
            f"the model's reply did not validate against {schema.name} after {max_attempts} "
            f"attempt(s): {_short(errors)}",
            errors=errors,
            reply=reply,
            context={"app": self.app, "schema": schema.name},
        )

    # --- embeddings ---------------------------------------------------------------------------

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimensions: int | None = None,
        batch_size: int | None = None,
    ) -> list[list[float]]:
        """One vector per text (a single string gives a one-element list), in order.

        Inputs are sent in batches no larger than ``batch_size`` (``embedding_batch_size``,
        capped at the provider's limit) and ~250k tokens per request.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, not {type(text).__name__}")
            if not text:
                raise ValueError(f"texts[{i}] is empty: providers refuse empty inputs")
        if not items:
            return []
        model = model or self.config.default_embedding_model
        route = self.router.resolve(model)
        dimensions = dimensions if dimensions is not None else self.config.embedding_dimensions
        limit = getattr(route.provider, "max_batch", 2048)
        size = min(batch_size or self.config.embedding_batch_size, limit)
        vectors: list[list[float]] = []
        for batch in self._batches(items, size, route):
            hold = self.costs.begin(
                route, functools.partial(self._embedding_estimate, route, batch)
            )
            with self.telemetry.operation("llm.embed"):
                try:
                    result = self._call(
                        functools.partial(
                            route.provider.embed, batch, model=route.model, dimensions=dimensions
                        ),
                        "embeddings",
                        route,
                    )
                except BaseException:
                    self.costs.abort(hold)
                    raise
            self.telemetry.count("llm.tokens.embedding", result.prompt_tokens)
            tokens = result.prompt_tokens
            if not tokens and hold.priced:  # no usage reported: charge our estimate
                tokens = hold.estimate()[0]
            self.costs.finish(hold, tokens)
            vectors.extend(result.vectors)
        lengths = {len(v) for v in vectors}
        if len(lengths) > 1 or (dimensions is not None and lengths != {dimensions}):
            raise AIServiceError(
                f"the provider returned vectors of {sorted(lengths)} dimensions"
                + (f" where {dimensions} were asked for" if dimensions else ""),
                context={"model": model, "app": self.app},
            )
        return vectors

    @staticmethod
    def _embedding_estimate(route: Route, texts: list[str]) -> tuple[int, int]:
        return estimate_embedding_tokens(_estimate_counter(), texts), 0

    def _batches(self, items: list[str], size: int, route: Route) -> Iterator[list[str]]:
        if isinstance(route.provider, LocalProvider):
            for start in range(0, len(items), size):
                yield items[start : start + size]
            return
        counter = get_counter(route.model)
        batch: list[str] = []
        tokens = 0
        for text in items:
            n = counter.count(text)
            if batch and (len(batch) >= size or tokens + n > EMBEDDING_TOKENS_PER_REQUEST):
                yield batch
                batch, tokens = [], 0
            batch.append(text)
            tokens += n
        if batch:
            yield batch


def _estimate_counter() -> Any:
    """The tokenizer of cost estimates: ``cl100k_base``, bundled (never a download on the
    call path) and usually no lower than the newer ``o200k_base`` counts; the
    estimate's margin covers other vendors' tokenizers."""
    return get_counter()


def _short(errors: Any, limit: int = 800) -> str:
    text = errors if isinstance(errors, str) else repr(errors)
    return text if len(text) <= limit else text[:limit] + "..."
