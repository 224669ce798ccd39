"""The cost of each LLM call: priced, counted in the metrics, and held against the budget.

:class:`CostMeter` sits around every call of an :class:`~mdb_sync.ai.llm.LLMService`:
:meth:`~CostMeter.begin` prices the route (:mod:`.prices`) and, when the app has a monthly
budget, reserves the call's worst case in the ledger (:mod:`.spend`); :meth:`~CostMeter.finish`
turns the provider's token counts into dollars, adds them to the metrics
(``llm.cost.usd`` labelled ``model="provider/model"``) and settles the reservation (or, with
no budget, records the spending); :meth:`~CostMeter.abort` releases a failed call's hold.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import AIBudgetExceededError, ConfigurationError
from .prices import FREE, Price, PriceTable
from .routing import Route
from .spend import Reservation, SpendLedger

log = logging.getLogger(__name__)

#: ``max_tokens`` of a chat call of a budgeted app that gave none (its worst case must be
#: bounded to be reserved).
BUDGET_DEFAULT_MAX_TOKENS = 4096
#: The prompt estimate's margin over our own count (providers' tokenizers differ).
PROMPT_MARGIN = 1.25
#: Tokens the chat format adds per message, and per reply.
PER_MESSAGE_TOKENS = 4
PER_REPLY_TOKENS = 3
#: Tokens assumed for a non-text message part (an image).
NON_TEXT_PART_TOKENS = 1500

_warned_lock = threading.Lock()
_warned: set[tuple[str | None, str]] = set()
_MAX_WARNED = 1000


@dataclass
class Hold:
    """What :meth:`CostMeter.begin` knows about a call in progress. ``estimate()`` is the
    call's worst case in tokens (input, output), computed once and only when needed."""

    route: Route
    price: Price | None
    estimator: Callable[[], tuple[int, int]]
    reservation: Reservation | None = None
    _estimate: tuple[int, int] | None = None

    @property
    def priced(self) -> bool:
        """Whether the call costs anything (a price above 0)."""
        return self.price is not None and self.price != FREE

    def estimate(self) -> tuple[int, int]:
        if self._estimate is None:
            self._estimate = self.estimator()
        return self._estimate


class CostMeter:
    """Prices and budget of one app's calls (or of a standalone service: metrics only).

    :param prices: the app's :class:`PriceTable`.
    :param telemetry: the service's telemetry (metrics and app).
    :param ledger: where the month's spending is kept (None: nowhere, and no budget).
    :param budget_usd: ``llm_config.monthly_budget_usd``.
    """

    def __init__(
        self,
        prices: PriceTable,
        telemetry: Any,
        *,
        ledger: SpendLedger | None = None,
        budget_usd: float | None = None,
    ) -> None:
        if budget_usd is not None and ledger is None:
            raise ConfigurationError(
                "llm_config.monthly_budget_usd needs the spending ledger of an engine: get the "
                "service with engine.get_llm_service(slug)"
            )
        self.prices = prices
        self.telemetry = telemetry
        self.ledger = ledger
        self.budget_usd = budget_usd

    @property
    def app(self) -> str | None:
        app: str | None = self.telemetry.app
        return app

    def price(self, route: Route) -> Price | None:
        price = self.prices.lookup(route.provider_name, route.model, free=route.spec.free)
        if price is None and self.budget_usd is not None:
            raise ConfigurationError(
                f"llm_config.prices of app {self.app!r}: the app has a monthly budget, but "
                f"model {route.label!r} has no price, so its spending could not be bounded; "
                f'add one, e.g. "prices": {{"{route.label}": {{"input": 0.5, "output": 1.5}}}} '
                "(USD per million tokens; 0 if it is free)",
                context={"app": self.app, "model": route.label, "path": "llm_config.prices"},
            )
        return price

    def begin(self, route: Route, estimate: Callable[[], tuple[int, int]]) -> Hold:
        """Price the call and, under a budget, reserve its worst case (``estimate()``: input
        and output tokens at most), or raise :class:`AIBudgetExceededError` before anything
        is sent."""
        hold = Hold(route, self.price(route), estimate)
        if self.budget_usd is None or hold.price is None or not hold.priced:
            return hold
        worst = hold.price.cost(*hold.estimate())
        if worst <= 0:
            return hold
        assert self.ledger is not None
        try:
            hold.reservation = self.ledger.reserve(worst, self.budget_usd)
        except AIBudgetExceededError:
            self.telemetry.count("llm.budget.refused", 1)
            raise
        return hold

    def finish(self, hold: Hold, prompt_tokens: int, completion_tokens: int = 0) -> float:
        """Charge the call's actual tokens; returns its cost in USD."""
        cost = 0.0
        if hold.price is None:
            self._unpriced(hold.route)
        else:
            cost = hold.price.cost(prompt_tokens, completion_tokens)
        if cost > 0 and self.telemetry.metrics is not None:
            self.telemetry.metrics.increment(
                "llm.cost.usd", cost, slug=self.app, labels={"model": hold.route.label}
            )
        if hold.reservation is not None:
            assert self.ledger is not None
            self.ledger.settle(hold.reservation, cost)
        elif self.ledger is not None and cost > 0:
            self.ledger.record(cost)
        return cost

    def finish_unknown(self, hold: Hold) -> float:
        """Charge a call whose usage is unknown (a stream abandoned before its totals): the
        full estimate, since the provider may have billed it."""
        return self.finish(hold, *hold.estimate()) if hold.priced else self.finish(hold, 0)

    def abort(self, hold: Hold) -> None:
        """Release a call that failed (the provider does not bill errors)."""
        if hold.reservation is not None:
            assert self.ledger is not None
            self.ledger.release(hold.reservation)

    def _unpriced(self, route: Route) -> None:
        metrics = self.telemetry.metrics
        if metrics is not None:
            metrics.increment("llm.cost.unpriced", 1, slug=self.app, labels={"model": route.label})
        key = (self.app, route.label)
        with _warned_lock:
            if key in _warned or len(_warned) >= _MAX_WARNED:
                return
            _warned.add(key)
        log.warning(
            "no price for model %r (app %r): its calls are counted as costing 0; add it to "
            "llm_config.prices or MDB_LLM_PRICES",
            route.label,
            self.app,
        )

    def spending(self) -> dict[str, Any]:
        """This month's spending of the app across every process (``budget_usd`` too)."""
        if self.ledger is None:
            raise ConfigurationError(
                "spending is kept per app by the engine: get the service with "
                "engine.get_llm_service(slug)"
            )
        return {**self.ledger.month(), "budget_usd": self.budget_usd}


# --- estimates ------------------------------------------------------------------------------------


def estimate_prompt_tokens(
    counter: Any, messages: Sequence[dict[str, Any]], params: dict[str, Any]
) -> int:
    """An upper estimate of a chat request's prompt tokens: our count of every text (with
    :data:`PROMPT_MARGIN`), the chat format's overhead, and tool definitions."""
    tokens = PER_REPLY_TOKENS
    for message in messages:
        tokens += PER_MESSAGE_TOKENS
        for text, extra in _texts(message.get("content")):
            tokens += counter.count(text) + extra
        for key in ("name", "tool_calls", "tool_call_id"):
            if message.get(key) is not None:
                tokens += counter.count(json.dumps(message[key], default=str))
    for key in ("tools", "functions", "response_format"):
        if params.get(key) is not None:
            tokens += counter.count(json.dumps(params[key], default=str))
    return int(tokens * PROMPT_MARGIN) + 1


def _texts(content: Any) -> Iterable[tuple[str, int]]:
    if isinstance(content, str):
        yield content, 0
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"], 0
            else:
                yield "", NON_TEXT_PART_TOKENS


def estimate_embedding_tokens(counter: Any, texts: Sequence[str]) -> int:
    return int(sum(counter.count(t) + 1 for t in texts) * PROMPT_MARGIN) + 1
