"""Channels (rooms): who may join which channel of an app, and the built-in ``subscribe`` /
``unsubscribe`` messages.

A client joins a channel of its connection's app with ::

    {"type": "subscribe", "channel": "rooms/42", "id": 1}
    -> {"type": "subscribed", "channel": "rooms/42", "id": 1}
    {"type": "unsubscribe", "channel": "rooms/42"} -> {"type": "unsubscribed", "channel": ...}

and then receives what ``broadcast_to_channel(app, "rooms/42", message)`` sends, from any
process. Server code joins connections itself with ``connection.join(channel)`` (no
authorization: the server decides).

**Who may join.** A channel's authorizer decides; the most specific one registered with
:func:`register_channel_authorizer` — for that exact channel, else the longest matching
prefix pattern (``"rooms/*"``), else the app's own (no ``channel``) — else the default:

* an app with an authorization policy (``auth.policy``): its RBAC, i.e.
  ``is_allowed(identity, "channel/<name>", "subscribe")`` — e.g. the casbin rule
  ``["member", "channel/rooms/*", "subscribe"]``; anonymous connections hold no subject and
  are refused;
* an app without one: every connection of the app may join (there are no rules to consult:
  whoever may open the app's websocket may hear its broadcasts; register an authorizer to
  restrict channels).

A refusal is the same error frame (``forbidden``) whether or not the channel exists or has
members, and a client never hears of channels it did not join: names are not listed, and an
``unsubscribe`` of a channel it is not in is answered like any other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mdb_sync.deprecation import renamed_parameters
from mdb_sync.exceptions import (
    ChannelLimitExceeded,
    ChannelRefused,
    ConfigurationError,
    InvalidChannelError,
)
from mdb_sync.realtime.channels import (
    SUBSCRIBE_ACTION,
    channel_resource,
    is_channel,
    validate_channel,
)
from mdb_sync.scoping import validate_slug

from ..auth.current import service_for_slug
from .errors import MessageError

if TYPE_CHECKING:
    from .connection import Connection

#: ``authorizer(connection, channel) -> bool``: True lets the connection join.
ChannelAuthorizer = Callable[["Connection", str], Any]

#: What a client is told when it may not join a channel (the same for every channel).
REFUSED = "you may not subscribe to this channel"


class AuthorizerRegistry:
    """Channel authorizers per app slug: app-wide, per channel, per prefix (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: slug -> pattern (None: app-wide; "name" or "prefix/*") -> authorizer
        self._authorizers: dict[str, dict[str | None, ChannelAuthorizer]] = {}

    def add(self, slug: str, authorizer: ChannelAuthorizer, channel: str | None) -> None:
        validate_slug(slug)
        if not callable(authorizer):
            raise ConfigurationError(f"a channel authorizer must be callable, not {authorizer!r}")
        if channel is not None:
            name = channel[:-2] if channel.endswith("/*") else channel
            if not is_channel(name):
                raise ConfigurationError(
                    f"channel {channel!r}: give a channel name, or a prefix ending in '/*' "
                    "(e.g. 'rooms/*')"
                )
        with self._lock:
            authorizers = self._authorizers.setdefault(slug, {})
            current = authorizers.get(channel)
            if current is not None and current is not authorizer:
                what = f"channel {channel!r}" if channel else "its channels"
                raise ConfigurationError(f"app {slug!r} already has an authorizer for {what}")
            authorizers[channel] = authorizer

    def find(self, slug: str, channel: str) -> ChannelAuthorizer | None:
        """The most specific authorizer of ``channel``: exact, longest prefix, app-wide."""
        authorizers = self._authorizers.get(slug)
        if not authorizers:
            return None
        exact = authorizers.get(channel)
        if exact is not None:
            return exact
        segments = channel.split("/")
        for end in range(len(segments) - 1, 0, -1):
            found = authorizers.get("/".join(segments[:end]) + "/*")
            if found is not None:
                return found
        return authorizers.get(None)

    def clear(self, slug: str | None = None) -> None:
        with self._lock:
            if slug is None:
                self._authorizers.clear()
            else:
                self._authorizers.pop(slug, None)


#: The process's channel authorizers (registered at import time, like message handlers).
authorizers = AuthorizerRegistry()


@renamed_parameters(app_slug="slug")
def register_channel_authorizer(
    slug: str, authorizer: ChannelAuthorizer | None = None, channel: str | None = None
) -> Any:
    """Decide who may join the channels of ``slug`` (``channel``: only that channel, or
    those under a prefix: ``"rooms/*"``). ``authorizer(connection, channel)`` runs on the
    connection's thread with the app bound; a true result lets it join, a false one refuses
    (raise :class:`~.handlers.MessageError` to refuse with a message of your own). Also a
    decorator::

        @register_channel_authorizer("chat", channel="rooms/*")
        def members_only(connection, channel):
            room = channel.split("/")[1]
            return db.members.count_documents({"room": room, "user": connection.user_id}) > 0
    """
    if authorizer is None:

        def decorator(func: ChannelAuthorizer) -> ChannelAuthorizer:
            authorizers.add(slug, func, channel)
            return func

        return decorator
    authorizers.add(slug, authorizer, channel)
    return authorizer


def rbac_authorizer(connection: Connection, channel: str) -> bool:
    """The default: the app's RBAC (``channel/<name>``, ``subscribe``) when it has an
    authorization policy; every connection of the app when it has none."""
    auth = service_for_slug(connection.app_slug)
    if auth is None or not auth.config.policy_present:
        return True
    identity = connection.identity or {}
    if identity.get("user_id") is None:
        return False
    return bool(auth.is_allowed(identity, channel_resource(channel), SUBSCRIBE_ACTION))


def authorized(connection: Connection, channel: str) -> bool:
    """Whether ``connection`` may join ``channel`` (a valid name). Raises what the
    authorizer raises (:class:`~.handlers.MessageError` to refuse with its message)."""
    authorizer = authorizers.find(connection.app_slug, channel) or rbac_authorizer
    return bool(authorizer(connection, channel))


# --- the built-in messages ------------------------------------------------------------------------


def _channel_of(message: Any) -> str:
    return validate_channel(message.get("channel"))


def subscribe(connection: Connection, message: Any) -> dict[str, Any]:
    """``{"type": "subscribe", "channel": name}``: join, if the channel's authorizer lets
    the connection; answered with ``subscribed`` (also when already a member)."""
    try:
        name = _channel_of(message)
        connection.manager.subscribe(connection, name)
    except InvalidChannelError as exc:
        raise MessageError(str(exc), code="bad_channel") from None
    except ChannelRefused:
        raise MessageError(REFUSED, code="forbidden") from None
    except ChannelLimitExceeded as exc:
        raise MessageError(str(exc), code="too_many_channels") from None
    return {"type": "subscribed", "channel": name}


def unsubscribe(connection: Connection, message: Any) -> dict[str, Any]:
    """``{"type": "unsubscribe", "channel": name}``: leave (answered ``unsubscribed``
    whether or not the connection was a member: nothing is learnt about the channel)."""
    try:
        name = _channel_of(message)
    except InvalidChannelError as exc:
        raise MessageError(str(exc), code="bad_channel") from None
    connection.manager.leave(connection, name)
    return {"type": "unsubscribed", "channel": name}
