"""Observability: operation metrics, structured logs with context, health checks.

* Metrics: every engine has a :class:`MetricsCollector` (``engine.metrics``) fed by the scoped
  API (per app and operation: count, errors, latency percentiles; or, with the engine's
  ``command_metrics``, by pymongo command listeners), by library events (registrations,
  index creations) and by :func:`record_operation` for custom work. ``engine.get_metrics()``
  and ``engine.metrics_text()`` (Prometheus) read it; connection pool gauges are read from
  the client when they do (:mod:`.pool`).
* Logs: :func:`get_logger`, :func:`log_context`, :func:`set_app_context`,
  :func:`set_correlation_id`, :class:`JSONFormatter`, :func:`configure_logging`.
* Health: ``engine.get_health_status()`` (:func:`mdb_sync.observability.health.check_health`).
"""

from __future__ import annotations

import threading
from typing import Any

from ..context import find_current_engine
from ..deprecation import renamed_parameters
from .events import connect_event_metrics
from .logging import (
    ContextFilter,
    ContextFormatter,
    ContextLoggerAdapter,
    JSONFormatter,
    accept_correlation_id,
    clear_app_context,
    clear_correlation_id,
    configure_logging,
    get_app_context,
    get_correlation_id,
    get_log_context,
    get_logger,
    log_context,
    new_correlation_id,
    set_app_context,
    set_correlation_id,
)
from .metrics import MetricsCollector

connect_event_metrics()

_fallback_lock = threading.Lock()
_fallback: MetricsCollector | None = None


def get_metrics_collector() -> MetricsCollector:
    """The collector that module-level :func:`record_operation` writes to.

    The current engine's ``engine.metrics`` (:func:`mdb_sync.context.current_engine`: the
    engine of the request or task being served, else the process's one initialized engine),
    so custom operations appear in ``engine.get_metrics()`` next to the database's. With
    none, a process-wide collector of its own (use ``engine.record_operation`` to pick an
    engine explicitly).
    """
    engine = find_current_engine()
    if engine is not None:
        return engine.metrics
    global _fallback
    with _fallback_lock:
        if _fallback is None:
            _fallback = MetricsCollector()
        return _fallback


@renamed_parameters(app="slug")
def record_operation(
    name: str, duration_ms: float, success: bool = True, slug: str | None = None
) -> None:
    """Record custom operation ``name`` (``"report.build"``); ``slug`` defaults to the app of
    the current context (the request's or task's, or :func:`set_app_context`'s)."""
    get_metrics_collector().record_operation(
        name, duration_ms, success, slug if slug is not None else get_app_context()
    )


@renamed_parameters(app="slug")
def timed(name: str, slug: str | None = None) -> Any:
    """Context manager recording its block as operation ``name`` (errors count as failures)."""
    return get_metrics_collector().timed(name, slug if slug is not None else get_app_context())


__all__ = [
    "ContextFilter",
    "ContextFormatter",
    "ContextLoggerAdapter",
    "JSONFormatter",
    "MetricsCollector",
    "accept_correlation_id",
    "clear_app_context",
    "clear_correlation_id",
    "configure_logging",
    "get_app_context",
    "get_correlation_id",
    "get_log_context",
    "get_logger",
    "get_metrics_collector",
    "log_context",
    "new_correlation_id",
    "record_operation",
    "set_app_context",
    "set_correlation_id",
    "timed",
]
