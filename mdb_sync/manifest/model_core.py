"""The typed core sections of a manifest: ``data_access``, ``observability``, ``auto_index``,
``websockets``, ``cors``.

What the schemas (:mod:`mdb_sync.manifest.schema_services`) validated, as frozen objects —
defaults included, none written here. They sit below the schemas, which build them, and
below :class:`~mdb_sync.manifest.model.Manifest`, which types its sections through the
schemas (and re-exports these classes): a leaf module, so that neither needs the other to be
half-imported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DataAccess:
    """``data_access``: whose data the app reads, and whether others may read its own."""

    #: The app itself first, then the other apps it reads (empty: the section is absent).
    read_scopes: tuple[str, ...]
    #: None: the section is absent (the app writes its own data, as always).
    write_scope: str | None
    cross_app_policy: str

    @property
    def denies_all(self) -> bool:
        """No other app may read this one (``cross_app_policy: deny_all``)."""
        return self.cross_app_policy == "deny_all"


@dataclass(frozen=True, kw_only=True)
class HealthChecks:
    """``observability.health_checks``."""

    #: Listed in the health verdict (false: listed as unmonitored only).
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    """``observability.metrics``."""

    enabled: bool
    collect_operation_metrics: bool


@dataclass(frozen=True, kw_only=True)
class Observability:
    """``observability``: the app's metrics and its part in the health verdict."""

    health_checks: HealthChecks
    metrics: MetricsSettings

    @property
    def monitored(self) -> bool:
        """Listed in the health verdict (``health_checks.enabled``)."""
        return self.health_checks.enabled

    @property
    def operation_metrics(self) -> bool:
        """Its operations are recorded (``metrics.enabled`` and
        ``metrics.collect_operation_metrics``)."""
        return self.metrics.enabled and self.metrics.collect_operation_metrics


@dataclass(frozen=True, kw_only=True)
class AutoIndex:
    """``auto_index`` (``true``/``false``: ``enabled``); None thresholds mean "the engine's"."""

    enabled: bool
    threshold: int | None
    max_indexes_per_collection: int | None


@dataclass(frozen=True, kw_only=True)
class WebsocketAuth:
    """``websockets.<name>.auth``."""

    required: bool
    allow_anonymous: bool


@dataclass(frozen=True, kw_only=True)
class WebsocketSettings:
    """``websockets.<name>``: one endpoint flask_mdb serves."""

    path: str
    description: str | None
    auth: WebsocketAuth
    #: Seconds between server pings; 0: none.
    ping_interval: int
    max_message_size: int


@dataclass(frozen=True, kw_only=True)
class CorsSection:
    """``cors`` (None when absent: same-origin only). Origins are normalized
    (``scheme://host[:port]``, lower case, no default port)."""

    enabled: bool
    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    allow_credentials: bool
    max_age: int


__all__ = [
    "AutoIndex",
    "CorsSection",
    "DataAccess",
    "HealthChecks",
    "MetricsSettings",
    "Observability",
    "WebsocketAuth",
    "WebsocketSettings",
]
