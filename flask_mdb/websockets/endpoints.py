"""The websocket endpoints a manifest declares::

"websockets": {
    "realtime": {"path": "/ws", "description": "Live updates",
                 "auth": {"required": true, "allow_anonymous": false},
                 "ping_interval": 30, "max_message_size": 65536}
}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mdb_sync.deprecation import deprecated
from mdb_sync.manifest.fields import field_default
from mdb_sync.manifest.model import Manifest, WebsocketSettings, as_manifest
from mdb_sync.manifest.schema_services import WebsocketAuthSchema, WebsocketSchema
from mdb_sync.manifest.sections import load_section

#: ``websockets.<name>`` defaults: the manifest schema's.
DEFAULT_PING_INTERVAL: int = field_default(WebsocketSchema, "ping_interval")
DEFAULT_MAX_MESSAGE_SIZE: int = field_default(WebsocketSchema, "max_message_size")

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_PING_INTERVAL", "Endpoint", "endpoints_of"]


@dataclass(frozen=True)
class Endpoint:
    """One declared endpoint of an app (the manifest has validated the values; built with
    :meth:`from_settings`, a directly constructed one has the manifest's defaults)."""

    app_slug: str
    name: str
    path: str
    description: str | None = None
    auth_required: bool = field_default(WebsocketAuthSchema, "required")
    allow_anonymous: bool = field_default(WebsocketAuthSchema, "allow_anonymous")
    #: Seconds between server pings; 0: no pings (and no dead-peer detection).
    ping_interval: int = DEFAULT_PING_INTERVAL
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    @property
    def anonymous_ok(self) -> bool:
        """Whether a client without identity may connect: only when authentication is not
        required *and* anonymous clients are allowed."""
        return not self.auth_required and self.allow_anonymous

    @property
    def flask_endpoint(self) -> str:
        return f"mdb_ws.{self.app_slug}.{self.name}"

    def server_options(self) -> dict[str, Any]:
        """simple-websocket server options of this endpoint."""
        return {
            "ping_interval": self.ping_interval or None,
            "max_message_size": self.max_message_size,
        }

    @classmethod
    def from_settings(cls, slug: str, name: str, settings: WebsocketSettings) -> Endpoint:
        """Endpoint ``name`` of app ``slug``, as the typed manifest's ``settings`` declare
        it (``manifest.websockets[name]``)."""
        return cls(
            app_slug=slug,
            name=name,
            path=settings.path,
            description=settings.description,
            auth_required=settings.auth.required,
            allow_anonymous=settings.auth.allow_anonymous,
            ping_interval=settings.ping_interval,
            max_message_size=settings.max_message_size,
        )

    @classmethod
    @deprecated("Endpoint.from_settings(slug, name, manifest.websockets[name])")
    def from_manifest(cls, slug: str, name: str, block: Mapping[str, Any]) -> Endpoint:
        """The endpoint of a ``websockets.<name>`` block (checked by the manifest's
        schema)."""
        settings = load_section(f"websockets.{name}", block, slug=slug, lenient=False)
        return cls.from_settings(slug, name, settings)


def endpoints_of(manifest: Manifest | Mapping[str, Any]) -> dict[str, Endpoint]:
    """The endpoints of a (validated) manifest, by name."""
    typed = as_manifest(manifest)
    return {
        name: Endpoint.from_settings(typed.slug, name, settings)
        for name, settings in typed.websockets.items()
    }
