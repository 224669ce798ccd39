"""One realtime event: an app's message and whom it is for, as stored in ``mdb_events``."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from ..exceptions import InvalidMessageError
from ..scoping.names import SLUG_RE
from .channels import is_channel

#: Longest user or connection id an event may name (ids are opaque strings).
MAX_ID_LENGTH = 256
#: Event kinds: an app's ``message`` for its clients, a ``channel`` message for the members
#: of one of its channels, or a server-side ``control`` event (e.g. revoked credentials)
#: that connection managers act on and never send to a client. A channel message has a kind
#: of its own so that a process that does not know channels drops it (its listener skips
#: unknown kinds) instead of handing it to every connection of the app.
MESSAGE = "message"
CHANNEL = "channel"
CONTROL = "control"
KINDS = (MESSAGE, CHANNEL, CONTROL)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def target_id(value: Any, what: str) -> str:
    """A user or connection id as the string events carry (``ObjectId`` and ``int`` ids are
    accepted and stringified, as identities carry them)."""
    if isinstance(value, bool) or not isinstance(value, str | int | ObjectId):
        raise InvalidMessageError(
            f"{what} must be a string (or an ObjectId or int), not {type(value).__name__}"
        )
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise InvalidMessageError(f"{what} must be 1-{MAX_ID_LENGTH} characters long")
    return text


def target_ids(values: Any, what: str) -> tuple[str, ...]:
    """``None``, one id, or several ids -> a tuple of id strings."""
    if values is None:
        return ()
    if isinstance(values, str | int | ObjectId):
        return (target_id(values, what),)
    if not isinstance(values, Iterable):
        raise InvalidMessageError(f"{what} must be an id or a list of ids")
    return tuple(dict.fromkeys(target_id(v, what) for v in values))


@dataclass(frozen=True)
class Event:
    """A message for the live connections of one app.

    ``data`` is the message as JSON text (encoded once, by the publisher). Without
    ``user_id`` or ``connection_id`` the event is for every connection of the app; with one
    of them, only for that user's connections or that connection. Connections listed in
    ``exclude`` never receive it (e.g. the sender of a chat message).

    ``channel`` (with ``kind`` :data:`CHANNEL`) limits it to the connections that joined
    that channel of the app. ``kind`` is :data:`MESSAGE` or :data:`CHANNEL` for clients, or
    :data:`CONTROL` for the server's own instructions to connection managers (published
    only by ``EventBus.publish_control``, handed only to subscribers that ask for them,
    never sent to a client).
    """

    app_id: str
    data: str
    origin: str
    id: ObjectId = field(default_factory=ObjectId)
    user_id: str | None = None
    connection_id: str | None = None
    exclude: tuple[str, ...] = ()
    created_at: _dt.datetime = field(default_factory=_utcnow)
    kind: str = MESSAGE
    channel: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == CHANNEL) != (self.channel is not None):
            raise InvalidMessageError("a channel event names its channel, and only it does")
        if self.channel is not None and (
            not is_channel(self.channel) or self.user_id is not None or self.connection_id
        ):
            raise InvalidMessageError(
                "a channel event is for the members of one valid channel (not a user or a "
                "connection)"
            )

    @property
    def message(self) -> Any:
        """The message, decoded from its JSON text."""
        return json.loads(self.data)

    def reaches(self, connection_id: str, user_id: str | None) -> bool:
        """Whether the connection ``connection_id`` of user ``user_id`` receives this event."""
        if connection_id in self.exclude:
            return False
        if self.connection_id is not None:
            return connection_id == self.connection_id
        if self.user_id is not None:
            return user_id == self.user_id
        return True

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "_id": self.id,
            "app_id": self.app_id,
            "data": self.data,
            "origin": self.origin,
            "created_at": self.created_at,
        }
        if self.user_id is not None:
            doc["user_id"] = self.user_id
        if self.connection_id is not None:
            doc["connection_id"] = self.connection_id
        if self.exclude:
            doc["exclude"] = list(self.exclude)
        if self.kind != MESSAGE:
            doc["kind"] = self.kind
        if self.channel is not None:
            doc["channel"] = self.channel
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Event | None:
        """The event stored as ``doc``, or None when ``doc`` is not a well-formed event (the
        collection's first document, or anything else written there by hand)."""
        app_id, data, origin = doc.get("app_id"), doc.get("data"), doc.get("origin")
        if not isinstance(app_id, str) or not SLUG_RE.fullmatch(app_id):
            return None
        if not isinstance(data, str) or not isinstance(origin, str):
            return None
        user_id, connection_id = doc.get("user_id"), doc.get("connection_id")
        exclude = doc.get("exclude") or []
        if user_id is not None and not isinstance(user_id, str):
            return None
        if connection_id is not None and not isinstance(connection_id, str):
            return None
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            return None
        kind = doc.get("kind", MESSAGE)
        if kind not in KINDS:
            return None
        channel = doc.get("channel")
        if (kind == CHANNEL) != (channel is not None):
            return None
        if channel is not None and (not is_channel(channel) or user_id or connection_id):
            return None
        created = doc.get("created_at")
        return cls(
            app_id=app_id,
            data=data,
            origin=origin,
            id=doc.get("_id") or ObjectId(),
            user_id=user_id,
            connection_id=connection_id,
            exclude=tuple(exclude),
            created_at=created if isinstance(created, _dt.datetime) else _utcnow(),
            kind=kind,
            channel=channel,
        )
