"""Retries of provider calls: exponential backoff with jitter, honouring ``Retry-After``.

The openai client can retry by itself, but the services do it here (with the client's own
retries off) so that every retry is counted in the app's metrics, the timings are
configurable (tests use millisecond delays), and the same policy covers every provider.

Retried: HTTP 408, 409, 429 and 5xx answers, timeouts and connection errors. Not retried:
other 4xx (a bad request, a wrong key or an unknown model does not get better by waiting).
A ``Retry-After`` (or ``retry-after-ms``) header sets the wait; one longer than
``max_retry_after`` is not waited for — the error is raised at once with ``retry_after`` set,
so a web request is not held for minutes.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..exceptions import ConfigurationError

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed provider call.

    :param max_retries: retries after the first attempt (``llm_config.max_retries``).
    :param base_delay: seconds before the first retry; doubled at each further one.
    :param max_delay: ceiling of the backoff delay.
    :param max_retry_after: the longest ``Retry-After`` that is waited for.
    :param jitter: fraction of each backoff delay that is randomised (spreads out clients).
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ConfigurationError("RetryPolicy.max_retries must be an integer")
        if self.max_retries < 0:
            raise ConfigurationError("RetryPolicy.max_retries must be >= 0")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"RetryPolicy.{name} must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("RetryPolicy.jitter must be between 0 and 1")

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (0-based) when the server did not say."""
        delay: float = min(self.max_delay, self.base_delay * (2**retry))
        return delay * (1 - self.jitter * random.random())


class RetryableError(Exception):
    """Raised by a provider call to ask for a retry; carries what the server said."""

    def __init__(self, cause: BaseException, *, status: int | None, retry_after: float | None):
        super().__init__(str(cause))
        self.cause = cause
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
            continue
        return max(0.0, seconds)
    return None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[RetryableError, float], None] | None = None,
    give_up: Callable[[RetryableError], BaseException],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on :class:`RetryableError` wait and call again, up to the policy's
    budget. ``give_up`` turns the last error into the exception to raise."""
    retry = 0
    while True:
        try:
            return fn()
        except RetryableError as exc:
            if retry >= policy.max_retries:
                raise give_up(exc) from exc.cause
            if exc.retry_after is not None:
                if exc.retry_after > policy.max_retry_after:
                    raise give_up(exc) from exc.cause
                delay = exc.retry_after
            else:
                delay = policy.backoff(retry)
            log.info(
                "provider call failed (%s); retry %d of %d in %.2fs",
                exc.status or type(exc.cause).__name__,
                retry + 1,
                policy.max_retries,
                delay,
            )
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
            retry += 1
