"""Helpers of the realtime tests: collecting events, waiting with a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mdb_sync.realtime import Event


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Inbox:
    """A subscriber that keeps every event it is given (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return [e.message for e in self.events]

    def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        wait_for(lambda: len(self.events) >= count, timeout, f"{count} event(s)")
        return self.messages
