"""pymongo event listeners that feed an engine's metrics — with ``command_metrics=True`` only.

By default an engine installs no command or pool listener (pymongo then publishes no event
objects: each operation costs what it costs without us): the scoped API records its own
operations and pool gauges are read on demand (:mod:`.pool`). An engine built with
``command_metrics=True`` installs these two, for users who want every command the client
sends — engine-internal ones included, timed by the driver — and the pool's check-out
failure counters.

:class:`CommandMetricsListener` turns every command the engine's client sends into one
operation sample ``(app, command name, duration, success)``. The app is the owner of the
command's collection (``my_app_tasks`` -> ``my_app``, via the registry); a ``getMore`` belongs
to its cursor's collection; commands on no app's collection (the registry, ``ping``, admin
commands) are recorded under ``"-"``; an app whose manifest sets ``observability.metrics``
``enabled`` or ``collect_operation_metrics`` to false is not recorded. The duration is the
driver's own measurement (``duration_micros``), so the listener does no timing of its own.

pymongo calls listeners on the thread that runs the operation, so both listeners only touch
dictionaries and integers: no I/O, no allocation beyond a tuple, and the only lock is the
collector's, held for a few increments. Nothing from a command's body except its name and
collection name is looked at or kept: no filters, no documents, no credentials.

:class:`PoolMonitor` counts the connection pool's events into gauges (open connections, in
use, waiting, check-out failures) that health checks and the Prometheus exposition read.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from pymongo import monitoring

from .metrics import NO_APP, MetricsCollector

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

#: In-flight commands kept at most (a safety net: pymongo always pairs started with
#: succeeded/failed, but a listener must never grow without bound).
MAX_IN_FLIGHT = 10_000
#: Marks the commands of an app whose manifest turns operation metrics off.
_MUTED = "\x00muted"
#: pymongo's default ``maxPoolSize``.
DEFAULT_MAX_POOL_SIZE = 100


class CommandMetricsListener(monitoring.CommandListener):
    """Records each command as an operation of the app owning its collection."""

    def __init__(self, engine: MongoDBEngine) -> None:
        # A weak reference: the engine owns the client that owns this listener.
        self._catalog = weakref.ref(engine.catalog)
        self._services = weakref.ref(engine.app_services)
        self._metrics: MetricsCollector = engine.metrics
        self._db_name = engine.db_name
        self._in_flight: dict[int, tuple[str, str]] = {}

    def _app_of(self, event: monitoring.CommandStartedEvent) -> str:
        if event.database_name != self._db_name:
            return NO_APP
        name = event.command_name
        command = event.command
        if name == "getMore":
            target = command.get("collection")
        elif name == "explain":
            inner = command.get("explain")
            target = next(iter(inner.values()), None) if isinstance(inner, dict) and inner else None
        else:
            target = command.get(name)
        catalog, services = self._catalog(), self._services()
        if type(target) is not str or catalog is None or services is None:
            return NO_APP
        app = catalog.slug_for_physical(target)
        if app is None:
            return NO_APP
        # The catalog's cache only (never a query from inside a listener): slug_for_physical
        # has just found the app there. Keyed by the record's version: a change made by any
        # process is honoured once the catalog has read the record again.
        if not services.metrics_enabled(app, cached_only=True):
            return _MUTED
        return app

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        app = self._app_of(event)
        if app is _MUTED:
            return
        in_flight = self._in_flight
        if len(in_flight) >= MAX_IN_FLIGHT:
            in_flight.clear()
        in_flight[event.request_id] = (app, event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        entry = self._in_flight.pop(event.request_id, None)
        if entry is None:
            return
        reply = event.reply
        # Write commands report per-document failures (duplicate keys, validation) in an
        # ok:1 reply; for the caller those operations failed.
        ok = "writeErrors" not in reply and "writeConcernError" not in reply
        self._metrics.record_operation(entry[1], event.duration_micros / 1000.0, ok, entry[0])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        entry = self._in_flight.pop(event.request_id, None)
        if entry is None:
            return
        self._metrics.record_operation(entry[1], event.duration_micros / 1000.0, False, entry[0])


class PoolMonitor(monitoring.ConnectionPoolListener):
    """Connection pool sizes per server, from the pool's events (thread-safe counters)."""

    def __init__(self) -> None:
        self.max_pool_size: int | None = DEFAULT_MAX_POOL_SIZE
        self._lock = threading.Lock()
        # address -> [open, in use, waiting for a connection]
        self._pools: dict[Any, list[int]] = {}
        self._checkout_failures = 0
        self._checkout_timeouts = 0
        self._cleared = 0

    def _pool(self, address: Any) -> list[int]:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = [0, 0, 0]
        return pool

    def _add(self, address: Any, index: int, delta: int) -> None:
        with self._lock:
            pool = self._pool(address)
            pool[index] = max(0, pool[index] + delta)

    # --- pymongo's ConnectionPoolListener interface ----------------------------------------------

    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        with self._lock:
            self._pool(event.address)
            # The event lists non-default options only; 0 or None means "no limit".
            self.max_pool_size = event.options.get("maxPoolSize", DEFAULT_MAX_POOL_SIZE) or None

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        pass

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        with self._lock:
            self._cleared += 1

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        with self._lock:
            self._pools.pop(event.address, None)

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        self._add(event.address, 0, 1)

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        pass

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        self._add(event.address, 0, -1)

    def connection_check_out_started(
        self, event: monitoring.ConnectionCheckOutStartedEvent
    ) -> None:
        self._add(event.address, 2, 1)

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        with self._lock:
            pool = self._pool(event.address)
            pool[2] = max(0, pool[2] - 1)
            self._checkout_failures += 1
            if event.reason == monitoring.ConnectionCheckOutFailedReason.TIMEOUT:
                self._checkout_timeouts += 1

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        with self._lock:
            pool = self._pool(event.address)
            pool[2] = max(0, pool[2] - 1)
            pool[1] += 1

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        self._add(event.address, 1, -1)

    # --- reading ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Totals over every server, plus the busiest server's utilization (in use / max)."""
        with self._lock:
            pools = {address: list(counts) for address, counts in self._pools.items()}
            failures, timeouts, cleared = (
                self._checkout_failures,
                self._checkout_timeouts,
                self._cleared,
            )
        busiest = max((counts[1] for counts in pools.values()), default=0)
        maximum = self.max_pool_size
        return {
            "servers": len(pools),
            "open_connections": sum(counts[0] for counts in pools.values()),
            "in_use": sum(counts[1] for counts in pools.values()),
            "waiting": sum(counts[2] for counts in pools.values()),
            "max_pool_size": maximum,
            "utilization": round(busiest / maximum, 4) if maximum else 0.0,
            "checkout_failures": failures,
            "checkout_timeouts": timeouts,
            "cleared": cleared,
        }

    def gauges(self) -> dict[str, float]:
        """The numeric stats, as gauges for :meth:`MetricsCollector.set_gauge_source`."""
        return {k: v for k, v in self.stats().items() if isinstance(v, (int, float))}
