"""Channel names: the rooms of an app's realtime connections.

A channel belongs to one app: ``rooms/42`` of app ``chat`` and ``rooms/42`` of app ``shop``
are unrelated, since every event carries its ``app_id`` and reaches only that app's
connections. Names are client input (a client asks to join one), so they are checked
before they reach anything — a stored event, a query, a metric label, an authorization
rule:

* 1-:data:`MAX_CHANNEL_LENGTH` characters;
* one or more segments of ASCII letters, digits, ``_`` and ``-``, separated by single
  ``/`` (``news``, ``rooms/42``, ``users/ada/inbox``).

The app's authorization sees a channel as the resource ``channel/<name>`` (action
``subscribe``), so the casbin policies' ``keyMatch2`` patterns apply per segment:
``channel/rooms/*`` grants every room, ``channel/rooms/:id`` one level of them. No
character of a name has a meaning in those patterns (``:``, ``*``, ``.``, ``(`` are not
allowed), so a rule written for one channel never matches another by accident.
"""

from __future__ import annotations

import re

from ..exceptions import InvalidChannelError

#: Longest channel name.
MAX_CHANNEL_LENGTH = 128
CHANNEL_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
#: The prefix of a channel's resource name in the app's authorization rules.
RESOURCE_PREFIX = "channel/"
#: The action a connection needs on ``channel/<name>`` to join it.
SUBSCRIBE_ACTION = "subscribe"


def validate_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise
    :class:`~mdb_sync.exceptions.InvalidChannelError` saying why."""
    if not isinstance(name, str):
        raise InvalidChannelError(
            f"a channel name must be a string, not {type(name).__name__}",
            context={"channel": type(name).__name__},
        )
    if not 1 <= len(name) <= MAX_CHANNEL_LENGTH:
        raise InvalidChannelError(
            f"a channel name must be 1-{MAX_CHANNEL_LENGTH} characters long",
            context={"length": len(name)},
        )
    if not CHANNEL_RE.fullmatch(name):
        raise InvalidChannelError(
            "a channel name is made of letters, digits, '_' and '-', in segments separated "
            "by single '/' (e.g. 'rooms/42')",
        )
    return name


def is_channel(name: object) -> bool:
    """Whether ``name`` is a valid channel name (no exception)."""
    return (
        isinstance(name, str)
        and 1 <= len(name) <= MAX_CHANNEL_LENGTH
        and CHANNEL_RE.fullmatch(name) is not None
    )


def channel_resource(name: str) -> str:
    """The resource the app's authorization rules name channel ``name`` by."""
    return RESOURCE_PREFIX + validate_channel(name)
