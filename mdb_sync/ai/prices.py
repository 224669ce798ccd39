"""What a call costs: list prices per million tokens, and the overrides that replace them.

The built-in table (:data:`LIST_PRICES`) is small on purpose: the common models of the
providers mdb-sync routes to, at the vendors' published pay-as-you-go list prices in US
dollars per million tokens (standard tier: no batch, cached-input or regional discounts).
**Written 2026-12-05** from the vendors' price pages as last seen (OpenAI's figures checked
against public price listings of mid-2026); prices change, and your contract may differ —
override them rather than trusting this table:

- per app, in the manifest: ``"llm_config": {"prices": {"openai/gpt-4o": {"input": 2.5,
  "output": 10}, "ollama/*": 0}}``;
- for every app of a deployment: ``MDB_LLM_PRICES``, the path of a JSON file of the same
  shape (the manifest wins over it, it wins over the table).

Keys are ``provider/model``, ``provider/*``, a bare ``model`` (any provider) or ``*``. A
dated snapshot (``gpt-4o-mini-2024-07-18``, ``claude-3-5-haiku-20241022``) or ``-latest``
alias costs what its base model costs. OpenAI's prices apply to the ``azure`` provider too
(Azure's global deployments list the same prices). The ``local`` provider and self-hosted
presets (``ollama``) cost nothing.

A model without a price costs 0: the first such call of each app and model logs a warning
and every one counts in ``llm.cost.unpriced``. An app with a monthly budget refuses to call
an unpriced model (its spending could not be bounded); give it a price — 0 if it is free.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError
from .config import read_prices

log = logging.getLogger(__name__)

PRICES_ENV = "MDB_LLM_PRICES"
#: The date the built-in table was written (its figures are list prices as of then).
LIST_PRICES_DATE = "2026-12-05"
#: Bytes read from ``MDB_LLM_PRICES`` at most.
MAX_PRICE_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Price:
    """USD per million tokens, read (``input``) and written (``output``)."""

    input: float
    output: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int = 0) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)

#: ``model -> (input, output)`` USD per million tokens, with the providers they apply to.
_OPENAI = ("openai", "azure")
LIST_PRICES: dict[str, tuple[tuple[str, ...], Price]] = {
    # OpenAI (platform.openai.com/docs/pricing)
    "gpt-4o": (_OPENAI, Price(2.50, 10.00)),
    "gpt-4o-mini": (_OPENAI, Price(0.15, 0.60)),
    "gpt-4.1": (_OPENAI, Price(2.00, 8.00)),
    "gpt-4.1-mini": (_OPENAI, Price(0.40, 1.60)),
    "gpt-4.1-nano": (_OPENAI, Price(0.10, 0.40)),
    "gpt-3.5-turbo": (_OPENAI, Price(0.50, 1.50)),
    "text-embedding-3-small": (_OPENAI, Price(0.02)),
    "text-embedding-3-large": (_OPENAI, Price(0.13)),
    "text-embedding-ada-002": (_OPENAI, Price(0.10)),
    # Anthropic (anthropic.com/pricing), through its OpenAI-compatible endpoint
    "claude-sonnet-4": (("anthropic",), Price(3.00, 15.00)),
    "claude-3-7-sonnet": (("anthropic",), Price(3.00, 15.00)),
    "claude-3-5-haiku": (("anthropic",), Price(0.80, 4.00)),
    # Voyage AI (docs.voyageai.com/docs/pricing)
    "voyage-2": (("voyage",), Price(0.10)),
    "voyage-3": (("voyage",), Price(0.06)),
    "voyage-3-lite": (("voyage",), Price(0.02)),
}

#: A snapshot suffix: ``-2024-08-06``, ``-20241022``, ``-0125``, ``-latest``.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


def base_model(model: str) -> str:
    """``model`` without a snapshot suffix (``gpt-4o-2024-08-06`` -> ``gpt-4o``)."""
    return _SNAPSHOT.sub("", model)


class PriceTable:
    """Prices of one app: its overrides, then the deployment's file, then the list prices.

    :param overrides: ``llm_config.prices`` as read by :class:`~mdb_sync.ai.config.LLMConfig`
        (key -> ``{"input", "output"}``).
    :param environ: where ``MDB_LLM_PRICES`` is read (default ``os.environ``).
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._overrides = _as_prices(overrides or {})
        self._file = env.get(PRICES_ENV) or None
        load_price_file(self._file)  # a broken file is reported when the service is built

    @property
    def _layers(self) -> list[dict[str, Price]]:
        return [self._overrides, load_price_file(self._file)]

    def lookup(self, provider: str, model: str, *, free: bool = False) -> Price | None:
        """The price of ``model`` served by provider ``provider`` (None: unknown).

        ``free`` (a local or self-hosted provider) answers 0 unless an override prices it.
        """
        candidates = [model]
        stripped = base_model(model)
        if stripped != model:
            candidates.append(stripped)
        for layer in self._layers:
            for name in candidates:
                for key in (f"{provider}/{name}", name):
                    if key in layer:
                        return layer[key]
            for key in (f"{provider}/*", "*"):
                if key in layer:
                    return layer[key]
        if free:
            return FREE
        for name in candidates:
            listed = LIST_PRICES.get(name)
            if listed is not None and provider in listed[0]:
                return listed[1]
        return None


def _as_prices(raw: Mapping[str, Any]) -> dict[str, Price]:
    return {
        key: Price(float(value.get("input") or 0.0), float(value.get("output") or 0.0))
        for key, value in raw.items()
    }


_file_lock = threading.Lock()
_file_cache: dict[str, tuple[float, int, dict[str, Price]]] = {}


def load_price_file(path: str | None) -> dict[str, Price]:
    """The prices of the JSON file at ``path`` (``MDB_LLM_PRICES``), re-read when it changes.

    A missing, oversized or malformed file is a :class:`ConfigurationError` naming it: a
    deployment that set the variable meant those prices to apply.
    """
    if not path:
        return {}
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ConfigurationError(f"{PRICES_ENV}: cannot read {path!r}: {exc}") from exc
    with _file_lock:
        cached = _file_cache.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime, stat.st_size):
            return cached[2]
    if stat.st_size > MAX_PRICE_FILE_BYTES:
        raise ConfigurationError(
            f"{PRICES_ENV}: {path!r} has {stat.st_size} bytes; at most {MAX_PRICE_FILE_BYTES}"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{PRICES_ENV}: {path!r} is not a JSON object: {exc}") from exc
    prices = _as_prices(read_prices(raw, None, where=f"{PRICES_ENV} ({path})"))
    with _file_lock:
        _file_cache[path] = (stat.st_mtime, stat.st_size, prices)
    return prices
