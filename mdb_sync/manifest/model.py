"""The typed manifest: what the schemas validated, as frozen objects subsystems read.

The marshmallow schemas (:mod:`mdb_sync.manifest.schema`) decide what is valid, fill the
defaults and name the dataclass each object is typed as; :class:`Manifest` holds the
validated document and types each section on first use, through the same schema
(:func:`mdb_sync.manifest.sections.load_section`). Readers say
``manifest.data_access.cross_app_policy`` or ``manifest.auth.users.session_ttl_seconds``
instead of digging through nested dicts with a default repeated at every site (and possibly
a different one). The core sections are typed in :mod:`mdb_sync.manifest.model_core`
(re-exported here), ``auth``/``token_management`` in :mod:`mdb_sync.manifest.model_auth`,
the AI sections in :mod:`mdb_sync.manifest.model_ai`: leaf modules below the schemas that
build them, so that this module can import the schemas.
``managed_indexes``, ``collection_settings`` and ``initial_data`` are read by the index
manager and registration from :meth:`Manifest.section`.

A section is typed when it is first read, so a stored record that a newer release finds
invalid (written by another tool or an older version) fails in that section only, naming
its path (:class:`~mdb_sync.exceptions.ConfigurationError`), and gets the defaults a newer
schema added. The validated dict stays available — :meth:`Manifest.to_dict` (a copy) is
what is stored in the registry and exported — so ``Manifest.from_dict(m.to_dict()) == m``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from .model_ai import EmbeddingSection, LLMSection, MemorySection
from .model_auth import AuthSection, TokenManagementSection
from .model_core import (
    AutoIndex,
    CorsSection,
    DataAccess,
    HealthChecks,
    MetricsSettings,
    Observability,
    WebsocketAuth,
    WebsocketSettings,
)
from .schema import CURRENT_SCHEMA_VERSION
from .sections import load_section
from .validator import validate_manifest


@dataclass(frozen=True)
class Manifest:
    """One app's validated manifest. Build it with :meth:`from_dict`."""

    slug: str
    name: str
    status: str = "active"
    schema_version: str = CURRENT_SCHEMA_VERSION
    description: str | None = None
    developer_id: str | None = None
    #: The validated document (read-only at the top; never mutate what it holds): what
    #: :meth:`to_dict` copies and the sections are typed from.
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    def __hash__(self) -> int:
        # A subset of the compared fields (the document is not hashable): equal manifests
        # hash alike, so a frozen record holding one can be a dict key or a set member.
        return hash((self.slug, self.name, self.status, self.schema_version))

    # --- typed sections (each read through its schema on first use) ---------------------------

    def _typed(self, name: str) -> Any:
        return load_section(name, self.raw.get(name), slug=self.slug)

    @functools.cached_property
    def data_access(self) -> DataAccess:
        """``data_access`` (absent: read and write the app's own data only)."""
        return cast("DataAccess", self._typed("data_access"))

    @functools.cached_property
    def observability(self) -> Observability:
        """``observability`` (absent: monitored, operations recorded)."""
        return cast("Observability", self._typed("observability"))

    @functools.cached_property
    def auto_index(self) -> AutoIndex:
        """``auto_index`` (absent: on, with the engine's thresholds)."""
        return cast("AutoIndex", self._typed("auto_index"))

    @functools.cached_property
    def websockets(self) -> Mapping[str, WebsocketSettings]:
        """``websockets``, by endpoint name (absent: none)."""
        return cast("Mapping[str, WebsocketSettings]", self._typed("websockets"))

    @functools.cached_property
    def cors(self) -> CorsSection | None:
        """``cors`` (None: absent, same-origin only)."""
        return cast("CorsSection | None", self._typed("cors"))

    @functools.cached_property
    def auth(self) -> AuthSection | None:
        """``auth`` (None: absent)."""
        return cast("AuthSection | None", self._typed("auth"))

    @functools.cached_property
    def token_management(self) -> TokenManagementSection | None:
        """``token_management`` (None: absent, no tokens)."""
        return cast("TokenManagementSection | None", self._typed("token_management"))

    @functools.cached_property
    def llm_config(self) -> LLMSection:
        """``llm_config`` (absent: its defaults, not enabled)."""
        return cast("LLMSection", self._typed("llm_config"))

    @functools.cached_property
    def embedding_config(self) -> EmbeddingSection | None:
        """``embedding_config`` (None: absent)."""
        return cast("EmbeddingSection | None", self._typed("embedding_config"))

    @functools.cached_property
    def memory_config(self) -> MemorySection | None:
        """``memory_config`` (None: absent)."""
        return cast("MemorySection | None", self._typed("memory_config"))

    # --- the document -------------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    def section(self, name: str) -> Mapping[str, Any] | None:
        """The validated top-level section ``name`` as a mapping (``"managed_indexes"``...)."""
        value = self.raw.get(name)
        return value if isinstance(value, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        """The validated manifest as a new dict (what is stored and exported)."""
        return copy.deepcopy(dict(self.raw))

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, validate: bool = True, copy_document: bool = True
    ) -> Manifest:
        """The manifest of ``data``: validated and normalized first (raises
        :class:`~mdb_sync.exceptions.ManifestValidationError` naming every bad path),
        unless ``validate=False`` says it already was (a stored registry record: each
        section is then checked when it is first read). An unvalidated ``data`` is copied
        unless ``copy_document=False`` (a reader that types what it needs at once)."""
        if isinstance(data, Manifest):
            return data
        if validate:
            document: Mapping[str, Any] = validate_manifest(data)
        elif copy_document:
            document = copy.deepcopy(dict(data))
        else:
            document = data
        slug = str(document.get("slug", ""))
        return cls(
            slug=slug,
            name=str(document.get("name") or slug),
            status=str(document.get("status", "active")),
            schema_version=str(document.get("schema_version", CURRENT_SCHEMA_VERSION)),
            description=document.get("description"),
            developer_id=document.get("developer_id"),
            raw=MappingProxyType(document),
        )


def as_manifest(value: Manifest | Mapping[str, Any] | None) -> Manifest:
    """``value`` as a :class:`Manifest` (a validated dict is neither validated again nor
    copied; None: an empty manifest) — for readers that accept both and read it at once."""
    if isinstance(value, Manifest):
        return value
    return Manifest.from_dict(value or {}, validate=False, copy_document=False)


def manifest_dict(value: Manifest | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The validated document of ``value`` (a :class:`Manifest` or already a dict)."""
    if isinstance(value, Manifest):
        return value.raw
    return value or {}


__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "AutoIndex",
    "CorsSection",
    "DataAccess",
    "HealthChecks",
    "Manifest",
    "MetricsSettings",
    "Observability",
    "WebsocketAuth",
    "WebsocketSettings",
    "as_manifest",
    "manifest_dict",
]
