"""The typed manifest: what the schemas validated, as frozen objects subsystems read.

The marshmallow schemas (:mod:`mdb_sync.manifest.schema`) decide what is valid and fill the
defaults; :class:`Manifest` is that result as an immutable object, so readers say
``manifest.data_access.cross_app_policy`` instead of digging through nested dicts with a
default repeated at every site (and possibly a different one). Sections owned by a service
are typed there, from the same validated data: ``auth``/``token_management`` by
:class:`mdb_sync.auth.config.AuthConfig`, the AI sections by :mod:`mdb_sync.ai.config`
(whose types also read the environment), ``managed_indexes`` and ``collection_settings`` by
:mod:`mdb_sync.indexes` and registration. All of them accept a :class:`Manifest`.

The validated dict stays available — :meth:`Manifest.to_dict` (a copy) is what is stored in
the registry and exported — so ``Manifest.from_dict(m.to_dict()) == m``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: :data:`mdb_sync.manifest.schema.CURRENT_SCHEMA_VERSION` (not imported: the schemas import
#: the index specs, whose package reads this module; a test keeps the two equal).
CURRENT_SCHEMA_VERSION = "2.0"
#: ``websockets.<name>`` defaults (the schema's, for manifests stored before they existed).
DEFAULT_PING_INTERVAL = 30
DEFAULT_MAX_MESSAGE_SIZE = 65_536
DEFAULT_CORS_MAX_AGE = 600


@dataclass(frozen=True)
class DataAccess:
    """``data_access``: whose data the app reads, and whether others may read its own."""

    #: The app itself first, then the other apps it reads (empty: the section is absent).
    read_scopes: tuple[str, ...] = ()
    write_scope: str | None = None
    cross_app_policy: str = "explicit"

    @property
    def denies_all(self) -> bool:
        """No other app may read this one (``cross_app_policy: deny_all``)."""
        return self.cross_app_policy == "deny_all"

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None) -> DataAccess:
        block = block or {}
        return cls(
            read_scopes=tuple(block.get("read_scopes") or ()),
            write_scope=block.get("write_scope"),
            cross_app_policy=str(block.get("cross_app_policy", "explicit")),
        )


@dataclass(frozen=True)
class Observability:
    """``observability``: the app's metrics and its part in the health verdict."""

    #: Listed in the health verdict (``health_checks.enabled``).
    health_checks: bool = True
    #: Its operations recorded (``metrics.enabled`` and ``metrics.collect_operation_metrics``).
    operation_metrics: bool = True

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None) -> Observability:
        block = block or {}
        health = block.get("health_checks") or {}
        metrics = block.get("metrics") or {}
        return cls(
            health_checks=health.get("enabled", True) is not False,
            operation_metrics=bool(metrics.get("enabled", True))
            and bool(metrics.get("collect_operation_metrics", True)),
        )


@dataclass(frozen=True)
class AutoIndex:
    """``auto_index``: query-driven indexes; None thresholds mean "the engine's"."""

    enabled: bool = True
    threshold: int | None = None
    max_indexes_per_collection: int | None = None

    @classmethod
    def from_value(cls, value: Any) -> AutoIndex:
        """From ``true``/``false``/an object (absent: on with the engine's settings)."""
        if value is None or value is True:
            return cls()
        if not value:
            return cls(enabled=False)
        return cls(
            enabled=bool(value.get("enabled", True)),
            threshold=value.get("threshold"),
            max_indexes_per_collection=value.get("max_indexes_per_collection"),
        )


@dataclass(frozen=True)
class WebsocketSettings:
    """``websockets.<name>``: one endpoint flask_mdb serves."""

    name: str
    path: str
    description: str = ""
    auth_required: bool = False
    allow_anonymous: bool = True
    #: Seconds between server pings; 0: none.
    ping_interval: int = DEFAULT_PING_INTERVAL
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @classmethod
    def from_dict(cls, name: str, block: Mapping[str, Any]) -> WebsocketSettings:
        auth = block.get("auth") or {}
        return cls(
            name=name,
            path=str(block["path"]),
            description=str(block.get("description", "")),
            auth_required=bool(auth.get("required", False)),
            allow_anonymous=bool(auth.get("allow_anonymous", True)),
            ping_interval=int(block.get("ping_interval", DEFAULT_PING_INTERVAL)),
            max_message_size=int(block.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
        )


@dataclass(frozen=True)
class Manifest:
    """One app's validated manifest. Build it with :meth:`from_dict`."""

    slug: str
    name: str
    status: str = "active"
    schema_version: str = CURRENT_SCHEMA_VERSION
    description: str | None = None
    developer_id: str | None = None
    data_access: DataAccess = field(default_factory=DataAccess)
    observability: Observability = field(default_factory=Observability)
    auto_index: AutoIndex = field(default_factory=AutoIndex)
    websockets: Mapping[str, WebsocketSettings] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: The ``cors`` block as validated (None: absent); flask_mdb's ``CorsPolicy`` reads it.
    cors: Mapping[str, Any] | None = None
    #: The validated document (read-only at the top; never mutate what it holds): what
    #: services typing their own sections read, and what :meth:`to_dict` copies.
    raw: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __hash__(self) -> int:
        # A subset of the compared fields (the mappings are not hashable): equal manifests
        # hash alike, so a frozen record holding one can be a dict key or a set member.
        return hash((self.slug, self.name, self.status, self.data_access, self.auto_index))

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    def section(self, name: str) -> Mapping[str, Any] | None:
        """The validated top-level section ``name`` (``"auth"``, ``"llm_config"``...)."""
        value = self.raw.get(name)
        return value if isinstance(value, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        """The validated manifest as a new dict (what is stored and exported)."""
        return copy.deepcopy(dict(self.raw))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, validate: bool = True) -> Manifest:
        """The manifest of ``data``: validated and normalized first (raises
        :class:`~mdb_sync.exceptions.ManifestValidationError`), unless ``validate=False``
        says it already was (a stored registry record)."""
        if isinstance(data, Manifest):
            return data
        if validate:
            from .validator import validate_manifest

            document = validate_manifest(data)
        else:
            document = copy.deepcopy(dict(data))
        slug = str(document.get("slug", ""))
        return cls(
            slug=slug,
            name=str(document.get("name") or slug),
            status=str(document.get("status", "active")),
            schema_version=str(document.get("schema_version", CURRENT_SCHEMA_VERSION)),
            description=document.get("description"),
            developer_id=document.get("developer_id"),
            data_access=DataAccess.from_dict(document.get("data_access")),
            observability=Observability.from_dict(document.get("observability")),
            auto_index=AutoIndex.from_value(document.get("auto_index")),
            websockets=MappingProxyType(
                {
                    name: WebsocketSettings.from_dict(name, block)
                    for name, block in (document.get("websockets") or {}).items()
                }
            ),
            cors=document.get("cors"),
            raw=MappingProxyType(document),
        )


def as_manifest(value: Manifest | Mapping[str, Any] | None) -> Manifest:
    """``value`` as a :class:`Manifest` (a validated dict is not validated again; None:
    an empty manifest) — for readers that accept both during the move to typed records."""
    if isinstance(value, Manifest):
        return value
    return Manifest.from_dict(value or {}, validate=False)


def manifest_dict(value: Manifest | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The validated document of ``value`` (a :class:`Manifest` or already a dict)."""
    if isinstance(value, Manifest):
        return value.raw
    return value or {}
