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

from mdb_sync.manifest.model import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL,
    Manifest,
    WebsocketSettings,
    as_manifest,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_PING_INTERVAL", "Endpoint", "endpoints_of"]


@dataclass(frozen=True)
class Endpoint:
    """One declared endpoint of an app (the manifest has validated the values)."""

    app_slug: str
    name: str
    path: str
    description: str = ""
    auth_required: bool = False
    allow_anonymous: bool = True
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
    def from_settings(cls, slug: str, settings: WebsocketSettings) -> Endpoint:
        """The endpoint of app ``slug`` that the typed manifest's ``settings`` declare."""
        return cls(
            app_slug=slug,
            name=settings.name,
            path=settings.path,
            description=settings.description,
            auth_required=settings.auth_required,
            allow_anonymous=settings.allow_anonymous,
            ping_interval=settings.ping_interval,
            max_message_size=settings.max_message_size,
        )

    @classmethod
    def from_manifest(cls, slug: str, name: str, block: Mapping[str, Any]) -> Endpoint:
        """The endpoint of a validated ``websockets.<name>`` block (see :meth:`from_settings`)."""
        return cls.from_settings(slug, WebsocketSettings.from_dict(name, block))


def endpoints_of(manifest: Manifest | Mapping[str, Any]) -> dict[str, Endpoint]:
    """The endpoints of a (validated) manifest, by name."""
    typed = as_manifest(manifest)
    return {name: Endpoint.from_settings(typed.slug, s) for name, s in typed.websockets.items()}
