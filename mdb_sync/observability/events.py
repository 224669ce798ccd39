"""Library events counted in the sending engine's metrics.

The registry and the index managers announce what they do through :mod:`mdb_sync.signals`
(sent with the engine as sender); these receivers turn the announcements into counters, so
registrations, declared and query-driven (auto) index creations and index failures show in
``engine.get_metrics()`` and the Prometheus text without the emitting code knowing about
metrics. Connected once, when :mod:`mdb_sync.observability` is imported.
"""

from __future__ import annotations

from typing import Any

from ..signals import app_registered, app_unregistered, index_created, index_failed

_connected = False


def _metrics_of(sender: Any) -> Any:
    return getattr(sender, "metrics", None)


def _on_app_registered(sender: Any, slug: str | None = None, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("apps.registered", app=slug)


def _on_app_unregistered(sender: Any, slug: str | None = None, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("apps.unregistered", app=slug)


def _on_index_created(sender: Any, slug: str | None = None, auto: bool = False, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("indexes.auto_created" if auto else "indexes.created", app=slug)


def _on_index_failed(sender: Any, slug: str | None = None, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("indexes.failed", app=slug)


def connect_event_metrics() -> None:
    """Connect the receivers (idempotent; strong references, they live as long as the
    process)."""
    global _connected
    if _connected:
        return
    app_registered.connect(_on_app_registered, weak=False)
    app_unregistered.connect(_on_app_unregistered, weak=False)
    index_created.connect(_on_index_created, weak=False)
    index_failed.connect(_on_index_failed, weak=False)
    _connected = True
