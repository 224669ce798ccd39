"""Registry events counted in the sending engine's metrics.

The registry announces registrations through :mod:`mdb_sync.signals` (sent with the engine as
sender); these receivers count them (``apps.registered``, ``apps.unregistered``). An app's
``observability`` settings are re-read through :mod:`mdb_sync.app_services`, keyed by its
record's version. (Index creations are counted
by the index managers themselves, as ``index.*`` counters.) Connected once, when
:mod:`mdb_sync.observability` is imported.
"""

from __future__ import annotations

from typing import Any

from ..signals import app_registered, app_unregistered

_connected = False


def _metrics_of(sender: Any) -> Any:
    return getattr(sender, "metrics", None)


def _on_app_registered(sender: Any, slug: str | None = None, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("apps.registered", slug=slug)


def _on_app_unregistered(sender: Any, slug: str | None = None, **_: Any) -> None:
    metrics = _metrics_of(sender)
    if metrics is not None:
        metrics.increment("apps.unregistered", slug=slug)


def connect_event_metrics() -> None:
    """Connect the receivers (idempotent; strong references, they live as long as the
    process)."""
    global _connected
    if _connected:
        return
    app_registered.connect(_on_app_registered, weak=False)
    app_unregistered.connect(_on_app_unregistered, weak=False)
    _connected = True
