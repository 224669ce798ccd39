"""The library's own blinker signals (``blinker.Namespace``), for apps to observe events.

Each signal is sent with the engine as sender and keyword arguments describing the event::

    from mdb_sync.signals import app_registered

    @app_registered.connect
    def on_registered(engine, slug, manifest, result):
        ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: An app was registered or re-registered: ``slug``, ``manifest``, ``result``.
app_registered = _signals.signal("app-registered")
#: An app was removed from the registry: ``slug``.
app_unregistered = _signals.signal("app-unregistered")
#: An index was created: ``slug``, ``collection``, ``name``, ``keys``, ``auto`` (query-driven).
index_created = _signals.signal("index-created")
#: An index could not be created: ``slug``, ``collection``, ``name``, ``error``.
index_failed = _signals.signal("index-failed")
#: The sandbox refused an operation: ``slug``, ``reason``.
security_violation = _signals.signal("security-violation")

__all__ = [
    "app_registered",
    "app_unregistered",
    "index_created",
    "index_failed",
    "security_violation",
]
