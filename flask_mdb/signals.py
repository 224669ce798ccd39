"""Signals of the Flask extension (blinker), plus the core library's, re-exported.

``app_bound`` is sent with the Flask app (the real object, never the proxy) as sender once a
request's app is bound::

    from flask_mdb.signals import app_bound

    @app_bound.connect
    def on_bound(app, slug, source):   # source: "resolver", "blueprint" or "default"
        ...
"""

from __future__ import annotations

from blinker import Namespace

from mdb_sync.signals import (
    app_registered,
    app_unregistered,
    index_created,
    index_failed,
    security_violation,
)

_signals = Namespace()

#: A request's app was resolved and bound: ``slug``, ``source``.
app_bound = _signals.signal("app-bound")

__all__ = [
    "app_bound",
    "app_registered",
    "app_unregistered",
    "index_created",
    "index_failed",
    "security_violation",
]
