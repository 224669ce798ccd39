"""Operation metrics: counts, errors and latency percentiles per app and operation.

Recording is cheap and thread-safe: a short lock around a dict lookup, two integer
increments and a ``deque.append`` into a bounded window; percentiles are computed only when
someone reads the metrics. Metrics hold names, counts and durations — never document
contents, filters or credentials.

Database operations are recorded by the scoped API itself (:class:`OperationMeter`: one
clock read pair per operation, named like the command it sends — ``find``, ``getMore``,
``insert``, ``update``, ``delete``, ``aggregate``, ``findAndModify``, ``distinct``,
``bulkWrite``...). An engine built with ``command_metrics=True`` records every command its
client sends instead, engine-internal ones included, through pymongo's event listeners
(:mod:`.listeners`), which cost every operation more.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from ..deprecation import renamed_parameters

#: Latencies kept per (app, operation) for the percentiles.
DEFAULT_WINDOW = 1024
#: Label used for operations that belong to no app (engine-internal, registry, admin).
NO_APP = "-"
#: Distinct label sets kept per (app, counter); further ones are counted under ``_other``.
MAX_LABEL_SETS = 100
#: Labels a counter may carry (beyond ``app``).
MAX_LABELS = 4
OTHER = "_other"

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Series:
    count: int = 0
    errors: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    window: deque[float] = field(default_factory=lambda: deque(maxlen=DEFAULT_WINDOW))


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


class MetricsCollector:
    """Thread-safe operation statistics and counters of one engine."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._counters: dict[tuple[str, str], float] = {}
        #: (app, name) -> labels -> value (``increment(..., labels={"model": ...})``)
        self._labelled: dict[tuple[str, str], dict[Labels, float]] = {}
        self._gauge_sources: dict[str, Callable[[], dict[str, float]]] = {}
        self._started = time.time()

    def after_fork_in_child(self) -> None:
        """A forked child starts with empty metrics: it reports its own work only (the
        parent's history would otherwise be counted once per worker), and the parent's pool
        gauges describe a pool the child does not have."""
        self._lock = threading.Lock()
        self._series = {}
        self._counters = {}
        self._labelled = {}
        self._gauge_sources = {}
        self._started = time.time()

    @renamed_parameters(app="slug")
    def record_operation(
        self, name: str, duration_ms: float, success: bool = True, slug: str | None = None
    ) -> None:
        """Record one operation ``name`` (``find``, ``insert``, ``llm.chat``...) of ``slug``."""
        self.record_series((slug or NO_APP, name), duration_ms, success)

    def record_series(self, key: tuple[str, str], duration_ms: float, success: bool) -> None:
        """Record one sample of series ``key`` — ``(app, operation name)``, built once by
        the caller (:class:`OperationMeter` keeps one per operation name)."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(window=deque(maxlen=self._window))
            series.count += 1
            if not success:
                series.errors += 1
            series.total_ms += duration_ms
            if duration_ms > series.max_ms:
                series.max_ms = duration_ms
            series.window.append(duration_ms)

    @renamed_parameters(app="slug")
    @contextlib.contextmanager
    def timed(self, name: str, slug: str | None = None) -> Iterator[None]:
        """Record the block as operation ``name``; an exception counts as an error (and
        propagates)::

            with engine.metrics.timed("report.build", slug="shop"):
                build_report()
        """
        started = time.perf_counter()
        success = False
        try:
            yield
            success = True
        finally:
            self.record_operation(name, (time.perf_counter() - started) * 1000.0, success, slug)

    @renamed_parameters(app="slug")
    def increment(
        self,
        name: str,
        value: float = 1,
        slug: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Add ``value`` to counter ``name`` (``index.auto_created``, ``llm.tokens.prompt``...).

        ``labels`` split the counter further (``{"model": "openai/gpt-4o-mini"}``): the
        snapshot lists each label set under ``labelled`` and adds them up in ``counters``;
        Prometheus gets one sample per label set. At most :data:`MAX_LABEL_SETS` label sets
        are kept per app and counter (a caller naming unbounded values cannot grow the
        metrics without limit); the rest are counted under ``_other``.
        """
        key = (slug or NO_APP, name)
        if not labels:
            with self._lock:
                self._counters[key] = self._counters.get(key, 0) + value
            return
        if len(labels) > MAX_LABELS:
            raise ValueError(f"a counter takes at most {MAX_LABELS} labels")
        label_key = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        with self._lock:
            sets = self._labelled.setdefault(key, {})
            if label_key not in sets and len(sets) >= MAX_LABEL_SETS:
                label_key = tuple((k, OTHER) for k, _ in label_key)
            sets[label_key] = sets.get(label_key, 0) + value

    def set_gauge_source(self, name: str, source: Callable[[], dict[str, float]] | None) -> None:
        """Have ``source()`` report gauges ``<name>.<key>`` each time the metrics are read
        (the connection pool registers its sizes this way). ``None`` removes it."""
        with self._lock:
            if source is None:
                self._gauge_sources.pop(name, None)
            else:
                self._gauge_sources[name] = source

    def gauges(self) -> dict[str, float]:
        """Current values of the registered gauge sources, as ``{"pool.in_use": 3, ...}``."""
        with self._lock:
            sources = list(self._gauge_sources.items())
        values: dict[str, float] = {}
        for prefix, source in sources:
            try:
                reported = source()
            except Exception:  # a broken source must not break a scrape
                continue
            for key, value in reported.items():
                values[f"{prefix}.{key}"] = value
        return values

    def reset(self) -> None:
        with self._lock:
            self._series.clear()
            self._counters.clear()
            self._labelled.clear()
            self._started = time.time()

    def _copy(self) -> tuple[list[tuple[tuple[str, str], _Series, list[float]]], dict[Any, float]]:
        with self._lock:
            series = [(k, s, list(s.window)) for k, s in self._series.items()]
            snapshot = [
                (k, _Series(s.count, s.errors, s.total_ms, s.max_ms), w) for k, s, w in series
            ]
            return snapshot, dict(self._counters)

    def _copy_labelled(self) -> dict[tuple[str, str], dict[Labels, float]]:
        with self._lock:
            return {key: dict(sets) for key, sets in self._labelled.items()}

    def snapshot(self) -> dict[str, Any]:
        """Everything recorded so far: per app, per operation, plus a summary."""
        series, counters = self._copy()
        apps: dict[str, dict[str, Any]] = {}
        total = errors = 0
        for (app, name), s, window in series:
            ordered = sorted(window)
            apps.setdefault(app, {}).setdefault("operations", {})[name] = {
                "count": s.count,
                "errors": s.errors,
                "error_rate": round(s.errors / s.count, 6) if s.count else 0.0,
                "avg_ms": round(s.total_ms / s.count, 3) if s.count else 0.0,
                "p50_ms": round(_percentile(ordered, 0.50), 3),
                "p95_ms": round(_percentile(ordered, 0.95), 3),
                "p99_ms": round(_percentile(ordered, 0.99), 3),
                "max_ms": round(s.max_ms, 3),
            }
            total += s.count
            errors += s.errors
        for (app, name), value in counters.items():
            apps.setdefault(app, {}).setdefault("counters", {})[name] = value
        for (app, name), sets in sorted(self._copy_labelled().items()):
            entry = apps.setdefault(app, {})
            totals = entry.setdefault("counters", {})
            totals[name] = totals.get(name, 0) + sum(sets.values())
            entry.setdefault("labelled", {})[name] = [
                {"labels": dict(labels), "value": value} for labels, value in sorted(sets.items())
            ]
        return {
            "summary": {
                "operations": total,
                "errors": errors,
                "error_rate": round(errors / total, 6) if total else 0.0,
                "apps": sorted(a for a in apps if a != NO_APP),
                "uptime_seconds": round(time.time() - self._started, 3),
            },
            "apps": apps,
            "gauges": self.gauges(),
        }

    def prometheus_text(self, prefix: str = "mdb") -> str:
        """The metrics in the Prometheus text exposition format (version 0.0.4)."""
        series, counters = self._copy()
        lines: list[str] = []

        def family(name: str, kind: str, doc: str, samples: Iterable[str]) -> None:
            samples = list(samples)
            if samples:
                lines.append(f"# HELP {prefix}_{name} {doc}")
                lines.append(f"# TYPE {prefix}_{name} {kind}")
                lines.extend(samples)

        def labels(app: str, op: str, extra: str = "") -> str:
            return f'{{app="{_escape(app)}",operation="{_escape(op)}"{extra}}}'

        family(
            "operations_total",
            "counter",
            "Operations recorded, by app and operation.",
            (f"{prefix}_operations_total{labels(a, o)} {s.count}" for (a, o), s, _ in series),
        )
        family(
            "operation_errors_total",
            "counter",
            "Operations that failed, by app and operation.",
            (
                f"{prefix}_operation_errors_total{labels(a, o)} {s.errors}"
                for (a, o), s, _ in series
            ),
        )
        quantiles = []
        for (a, o), s, window in series:
            ordered = sorted(window)
            for q in (0.5, 0.95, 0.99):
                value = _percentile(ordered, q) / 1000.0
                quantile = f',quantile="{q}"'
                quantiles.append(
                    f"{prefix}_operation_duration_seconds{labels(a, o, quantile)} {value:.6f}"
                )
            quantiles.append(
                f"{prefix}_operation_duration_seconds_sum{labels(a, o)} {s.total_ms / 1000.0:.6f}"
            )
            quantiles.append(f"{prefix}_operation_duration_seconds_count{labels(a, o)} {s.count}")
        family(
            "operation_duration_seconds",
            "summary",
            "Operation latency over the recent window, by app and operation.",
            quantiles,
        )
        by_name: dict[str, list[str]] = {}
        for (app, name), value in sorted(counters.items()):
            metric = _metric_name(name)
            by_name.setdefault(metric, []).append(
                f'{prefix}_{metric}_total{{app="{_escape(app)}"}} {_number(value)}'
            )
        for (app, name), sets in sorted(self._copy_labelled().items()):
            metric = _metric_name(name)
            for label_set, value in sorted(sets.items()):
                extra = "".join(f',{_label_name(k)}="{_escape(v)}"' for k, v in label_set)
                by_name.setdefault(metric, []).append(
                    f'{prefix}_{metric}_total{{app="{_escape(app)}"{extra}}} {_number(value)}'
                )
        for metric, samples in sorted(by_name.items()):
            family(f"{metric}_total", "counter", f"Counter {metric}.", samples)
        for name, value in sorted(self.gauges().items()):
            metric = _metric_name(name)
            family(metric, "gauge", f"Gauge {name}.", [f"{prefix}_{metric} {_number(value)}"])
        family(
            "uptime_seconds",
            "gauge",
            "Seconds since the metrics were started or reset.",
            [f"{prefix}_uptime_seconds {time.time() - self._started:.3f}"],
        )
        return "\n".join(lines) + "\n"


class OperationMeter:
    """Records one app's scoped operations in its engine's metrics.

    The scoped API calls it once per operation with the operation's name, the
    ``time.perf_counter()`` read just before the driver was called, and whether the call
    succeeded: one clock read pair per operation, then :meth:`MetricsCollector.record_operation`
    (a short lock) — unless the app's manifest turns operation metrics off.

    ``enabled`` answers whether the app's operations are recorded: the engine passes
    :meth:`mdb_sync.app_services.AppServices.metrics_enabled` for the app with
    ``cached_only`` — never a registry query on an operation's path (an app's operations send
    commands to its own collections only) — keyed by the catalog record's version. The
    catalog re-reads the record when the app's scoped database is asked for again
    (``get_scoped_db``, every ``registry_refresh_seconds``) or at ``reload_apps()``, so a
    change of ``observability.metrics`` made by any process is honoured then.
    """

    __slots__ = ("_app", "_enabled", "_record")

    def __init__(self, metrics: MetricsCollector, app: str, enabled: Callable[[], bool]) -> None:
        self._record = metrics.record_series
        self._app = app
        self._enabled = enabled

    def __call__(self, name: str, started: float, success: bool) -> None:
        duration_ms = (perf_counter() - started) * 1000.0
        if self._enabled():
            self._record((self._app, name), duration_ms, success)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value without losing precision: ``:g`` would print a counter of 1,234,567
    tokens as ``1.23457e+06``, and a cost of $12.3456789 as ``12.3457``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _label_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return cleaned if cleaned and not cleaned[0].isdigit() and cleaned != "app" else f"l_{cleaned}"


def _metric_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return cleaned or "counter"
