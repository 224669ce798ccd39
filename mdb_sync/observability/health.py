"""Health of an engine: is it up, does the server answer, is the pool healthy, are the apps
fully set up.

``check_health(engine)`` returns::

    {"status": "healthy" | "degraded" | "unhealthy",
     "checks": [{"name": "engine", ...}, {"name": "mongodb", "latency_ms": ...},
                {"name": "pool", ...}, {"name": "apps", ...}, {"name": "indexes", ...},
                {"name": "realtime", ...}],
     "engine": {...}, "mongodb": {...}, "pool": {...}, "apps": {...}, "indexes": {...},
     "checked_at": "...", "duration_ms": ...}

The overall status is the worst check's. ``unhealthy`` means the engine cannot serve (not
initialized, server unreachable); ``degraded`` means it serves but something needs attention
(an index the server could not build, a pool near its limit, a realtime listener that cannot
read other processes' events) — a load balancer should keep
sending traffic to a degraded instance and stop sending it to an unhealthy one.

A health check never hangs and never raises. Its bound: it answers within its ``timeout``
(default: the client's server-selection timeout, at most :data:`DEFAULT_TIMEOUT` = 3 s; the
server waits get the timeout less :data:`LOCAL_RESERVE` for the local checks) in every
outage shape — server down (connection refused),
stalled (SIGSTOP: connections accepted, nothing answered), restarting, or an embedded server
being recovered. Only two things wait on the server, both under ``pymongo.timeout`` (which
bounds server selection, connection and socket reads): the ping, and the fresh registry read
for the ``apps`` check within what is left of the timeout, only when the ping answered.
Otherwise the apps check uses the engine's cached registry, without I/O. A stopped server
makes the status ``unhealthy`` within that timeout, and the next check after the server is
back reports ``healthy`` again, with the same client (pymongo reconnects on its own).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import AutoReconnect, PyMongoError

from ..manifest.model import as_manifest

if TYPE_CHECKING:
    from ..engine import MongoDBEngine

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
_ORDER = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}

#: Longest a health check waits for the server (seconds); never more than the client's own
#: server-selection timeout.
DEFAULT_TIMEOUT = 3.0
#: Part of the timeout kept for the checks that need no server (seconds, at most 10 %).
LOCAL_RESERVE = 0.1
#: Pool utilization (connections in use / maxPoolSize on the busiest server) from which the
#: pool is reported degraded.
POOL_DEGRADED_UTILIZATION = 0.9
#: Index outcomes (see the registry's ``index_outcomes``) that make an app degraded.
PROBLEM_INDEX_STATUSES = frozenset({"conflict", "not_supported", "failed"})


def worst(statuses: Any) -> str:
    """The worst of ``statuses`` (healthy < degraded < unhealthy); healthy when empty."""
    return max(statuses, key=_ORDER.__getitem__, default=HEALTHY)


def _error(exc: BaseException) -> dict[str, str]:
    # The exception type and a short message: pymongo's messages name hosts, never passwords.
    return {"error": type(exc).__name__, "detail": str(exc)[:300]}


def _timeout_for(engine: MongoDBEngine, timeout: float | None) -> float:
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("the health check timeout must be a positive number of seconds")
        return float(timeout)
    try:
        selection = float(engine.client.options.server_selection_timeout)
    except Exception:  # an invalid URI: the ping reports it
        selection = DEFAULT_TIMEOUT
    return min(DEFAULT_TIMEOUT, selection) if selection > 0 else DEFAULT_TIMEOUT


def check_engine(engine: MongoDBEngine) -> dict[str, Any]:
    initialized = engine.is_initialized
    return {
        "name": "engine",
        "status": HEALTHY if initialized else UNHEALTHY,
        "initialized": initialized,
        "database": engine.db_name,
        "server": engine.describe_server(),
        "embedded": engine.uses_embedded_server,
    }


def check_mongodb(engine: MongoDBEngine, timeout: float) -> dict[str, Any]:
    """Ping the server within ``timeout`` seconds; one retry on a connection that the server
    closed while it was away (the pool then reconnects), if time is left."""
    check: dict[str, Any] = {"name": "mongodb", "server": engine.describe_server()}
    watch = engine.embedded_state
    if watch is not None:
        check["embedded"] = watch
    started = time.perf_counter()
    deadline = started + timeout
    for attempt in (1, 2):
        attempt_started = time.perf_counter()
        try:
            with pymongo.timeout(max(deadline - attempt_started, 0.001)):
                engine.client.admin.command("ping")
        except AutoReconnect as exc:
            # A connection the server dropped while it was away fails once, fast; a
            # timeout means there is no time left for another try.
            if attempt == 1 and not exc.timeout and time.perf_counter() < deadline:
                continue
            check.update(status=UNHEALTHY, **_error(exc))
        except PyMongoError as exc:
            check.update(status=UNHEALTHY, **_error(exc))
        else:
            latency = (time.perf_counter() - attempt_started) * 1000.0
            check.update(status=HEALTHY, latency_ms=round(latency, 3))
            return check
        break
    check["waited_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    return check


def check_pool(engine: MongoDBEngine) -> dict[str, Any]:
    """The connection pool's gauges, read now (no I/O)."""
    check: dict[str, Any] = {"name": "pool", "status": HEALTHY}
    stats = engine.pool_stats()
    check.update(stats)
    if stats.get("monitored") is False:
        return check
    if stats["max_pool_size"] and stats["utilization"] >= POOL_DEGRADED_UTILIZATION:
        check["status"] = DEGRADED
        check["reason"] = (
            f"{stats['utilization']:.0%} of maxPoolSize in use: raise maxPoolSize or "
            "reduce concurrent operations"
        )
    return check


def check_realtime(engine: MongoDBEngine) -> dict[str, Any] | None:
    """The realtime listener of this process, if it has an event bus (never creates one):
    degraded while it has subscribers and cannot read other processes' events — this
    process's own broadcasts still reach its clients meanwhile."""
    bus = engine.events_if_started
    if bus is None:
        return None
    status = bus.status()
    check: dict[str, Any] = {"name": "realtime", "status": HEALTHY, **status}
    if status["state"] in ("retrying", "failed", "stopped"):
        check["status"] = DEGRADED
        check["reason"] = "events published by other processes are not being received" + (
            f": {status['error']}" if status["error"] else " (the listener is stopped)"
        )
    return check


def _registry_records(engine: MongoDBEngine, timeout: float, fresh: bool) -> list[dict[str, Any]]:
    """The registry documents (status, index outcomes), fresh from the server when it
    answers (other processes may have registered apps), else this engine's cache. Not fresh
    while an embedded server is being recovered (an operation would wait for that)."""
    embedded_state = engine.embedded_state
    if embedded_state is not None and embedded_state["state"] != "running":
        fresh = False
    if fresh:
        try:
            with pymongo.timeout(timeout):
                return list(
                    engine.registry.collection.find(
                        {},
                        {
                            "status": 1,
                            "index_outcomes": 1,
                            "implicit": 1,
                            "manifest.observability": 1,
                        },
                    )
                )
        except PyMongoError:
            pass
    return engine.registry.cached_records()


def check_apps(
    engine: MongoDBEngine, timeout: float, fresh: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``apps`` check (registered apps, which are degraded) and the ``indexes`` check
    (index outcomes of every app's registration; a failed, conflicting or unsupported index
    makes its app degraded, not the engine unhealthy). Apps whose manifest sets
    ``observability.health_checks.enabled`` to false are listed as ``unmonitored`` only."""
    records = _registry_records(engine, timeout, fresh)
    by_status: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    problems: list[dict[str, Any]] = []
    degraded: dict[str, list[dict[str, Any]]] = {}
    unmonitored = []
    building: set[str] = set()
    for record in sorted(records, key=lambda r: str(r.get("_id"))):
        slug = str(record.get("_id"))
        by_status[str(record.get("status", "active"))] += 1
        if not as_manifest(record.get("manifest")).observability.monitored:
            unmonitored.append(slug)
            continue
        for outcome in record.get("index_outcomes") or []:
            status = str(outcome.get("status", "unknown"))
            outcomes[status] += 1
            if status == "pending":
                building.add(slug)
            if status in PROBLEM_INDEX_STATUSES:
                problem = {
                    "app": slug,
                    "collection": outcome.get("collection"),
                    "name": outcome.get("name"),
                    "type": outcome.get("type", "regular"),
                    "status": status,
                }
                if outcome.get("error"):
                    problem["error"] = str(outcome["error"])[:300]
                problems.append(problem)
                degraded.setdefault(slug, []).append(problem)
    apps = {
        "name": "apps",
        "status": DEGRADED if degraded else HEALTHY,
        "registered": len(records),
        "by_status": dict(by_status),
        "degraded": sorted(degraded),
        "unmonitored": unmonitored,
    }
    indexes = {
        "name": "indexes",
        "status": DEGRADED if problems else HEALTHY,
        "outcomes": dict(outcomes),
        "problems": problems,
        "pending": sorted(building),
    }
    return apps, indexes


def check_health(engine: MongoDBEngine, timeout: float | None = None) -> dict[str, Any]:
    """Run every check (see the module docstring) and combine them."""
    started = time.perf_counter()
    seconds = _timeout_for(engine, timeout)
    # The server waits get the timeout less a share kept for the local checks, so the whole
    # report is ready within ``seconds``.
    seconds = max(seconds - min(LOCAL_RESERVE, seconds * 0.1), 0.001)
    checks = [check_engine(engine)]
    if engine.is_initialized:
        # Each check is guarded: health must answer even when something unexpected breaks
        # (an engine shut down meanwhile, a malformed registry record).
        try:
            mongodb = check_mongodb(engine, seconds)
        except Exception as exc:
            mongodb = {"name": "mongodb", "status": UNHEALTHY, **_error(exc)}
        checks.append(mongodb)
        try:
            checks.append(check_pool(engine))
        except Exception as exc:
            checks.append({"name": "pool", "status": DEGRADED, **_error(exc)})
        try:
            remaining = max(seconds - (time.perf_counter() - started), 0.1)
            checks.extend(check_apps(engine, remaining, fresh=mongodb["status"] == HEALTHY))
        except Exception as exc:
            checks.append({"name": "apps", "status": DEGRADED, **_error(exc)})
        try:
            realtime = check_realtime(engine)
        except Exception as exc:
            realtime = {"name": "realtime", "status": DEGRADED, **_error(exc)}
        if realtime is not None:
            checks.append(realtime)
    report: dict[str, Any] = {
        "status": worst(c["status"] for c in checks),
        "checks": checks,
        "checked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }
    for check in checks:
        report.setdefault(check["name"], check)
    return report
