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

DEFAULT_PING_INTERVAL = 30
DEFAULT_MAX_MESSAGE_SIZE = 65_536


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
    def from_manifest(cls, slug: str, name: str, block: Mapping[str, Any]) -> Endpoint:
        auth = block.get("auth") or {}
        return cls(
            app_slug=slug,
            name=name,
            path=block["path"],
            description=block.get("description", ""),
            auth_required=bool(auth.get("required", False)),
            allow_anonymous=bool(auth.get("allow_anonymous", True)),
            ping_interval=int(block.get("ping_interval", DEFAULT_PING_INTERVAL)),
            max_message_size=int(block.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
        )


def endpoints_of(manifest: Mapping[str, Any]) -> dict[str, Endpoint]:
    """The endpoints of a (validated) manifest, by name."""
    slug = manifest["slug"]
    return {
        name: Endpoint.from_manifest(slug, name, block)
        for name, block in (manifest.get("websockets") or {}).items()
    }
