"""Connection pool gauges, read from the client when someone asks (health, ``/metrics``).

A pymongo ``ConnectionPoolListener`` would keep these counts up to date, at a price paid by
every operation: with any pool listener installed pymongo builds and publishes three event
objects per operation (check-out started, checked out, checked in). Gauges are read far less
often than operations run, so by default nothing listens and :func:`pool_stats` reads the
pool's own counters — open, in-use and waiting connections, the size limit and how often the
pool was cleared — at the moment they are asked for. The check-out failure counters exist only
with the engine's ``command_metrics`` on (the :class:`~.listeners.PoolMonitor` counts them
from the events).

pymongo exposes no public API for these numbers, so they are read from its pool objects
through :func:`mdb_sync._pymongo_seam.pool_counters`; a pymongo that stores them differently
yields ``{"monitored": False}``, never an error.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo import MongoClient

from .._pymongo_seam import pool_counters

log = logging.getLogger(__name__)


def pool_stats(client: MongoClient[Any]) -> dict[str, Any]:
    """Totals over every server of ``client``, plus the busiest server's utilization
    (in use / max), read now. No I/O, no lock held."""
    try:
        pools = pool_counters(client)
        maximum = pools[0].max_size if pools else _client_max_pool_size(client)
    except (AttributeError, TypeError) as exc:  # another pymongo: no gauges, no failure
        log.debug("pool gauges unavailable: %s", exc)
        return {"monitored": False}
    maximum = maximum or None  # 0 or None: no limit
    busiest = max((pool.in_use for pool in pools), default=0)
    return {
        "servers": len(pools),
        "open_connections": sum(pool.idle + pool.in_use for pool in pools),
        "in_use": sum(pool.in_use for pool in pools),
        "waiting": sum(max(0, pool.operations - pool.in_use) for pool in pools),
        "max_pool_size": maximum,
        "utilization": round(busiest / maximum, 4) if maximum else 0.0,
        "cleared": sum(pool.generation for pool in pools),
    }


def _client_max_pool_size(client: MongoClient[Any]) -> float | None:
    """The client's ``maxPoolSize`` before any pool exists (an ``int``; pymongo annotates
    it ``float``)."""
    return client.options.pool_options.max_pool_size


def gauges(stats: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of ``stats``, as gauges."""
    return {
        k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
