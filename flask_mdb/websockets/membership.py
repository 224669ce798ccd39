"""Which connections of an app are in which of its channels, in this process — bounded.

Kept by the app's :class:`~.manager.WebSocketManager`, always under the manager's lock
(together with its table of connections, so a connection that leaves is never left behind
in a channel). Both directions are kept — channel -> connections for delivering a channel
message, connection -> channels for leaving them all when it closes — and both are bounded:
at most ``max_per_connection`` channels per connection and ``max_channels`` channels with
members per app and process (channel names are client input).
"""

from __future__ import annotations

from mdb_sync.exceptions import ChannelLimitExceeded


class ChannelTable:
    """The channel memberships of one app's connections in this process (not thread-safe:
    the manager's lock guards it)."""

    def __init__(self, max_per_connection: int | None, max_channels: int | None) -> None:
        self.max_per_connection = max_per_connection
        self.max_channels = max_channels
        self._members: dict[str, set[str]] = {}  # channel -> connection ids
        self._channels: dict[str, set[str]] = {}  # connection id -> channels

    def join(self, connection_id: str, channel: str) -> bool:
        """Add the membership; False if it existed. Raises
        :class:`~mdb_sync.exceptions.ChannelLimitExceeded` over a bound."""
        mine = self._channels.get(connection_id)
        if mine is not None and channel in mine:
            return False
        if self.max_per_connection is not None and len(mine or ()) >= self.max_per_connection:
            raise ChannelLimitExceeded(
                f"a connection may be in at most {self.max_per_connection} channels"
            )
        members = self._members.get(channel)
        if members is None:
            if self.max_channels is not None and len(self._members) >= self.max_channels:
                raise ChannelLimitExceeded("too many channels on this server, try again later")
            members = self._members[channel] = set()
        members.add(connection_id)
        self._channels.setdefault(connection_id, set()).add(channel)
        return True

    def leave(self, connection_id: str, channel: str) -> bool:
        """Remove the membership; False if there was none."""
        mine = self._channels.get(connection_id)
        if mine is None or channel not in mine:
            return False
        mine.discard(channel)
        if not mine:
            del self._channels[connection_id]
        members = self._members.get(channel)
        if members is not None:
            members.discard(connection_id)
            if not members:
                del self._members[channel]
        return True

    def drop(self, connection_id: str) -> list[str]:
        """Remove every membership of a connection (it closed); return its channels."""
        channels = sorted(self._channels.get(connection_id, ()))
        for channel in channels:
            self.leave(connection_id, channel)
        return channels

    def channels_of(self, connection_id: str) -> frozenset[str]:
        return frozenset(self._channels.get(connection_id, ()))

    def members(self, channel: str) -> list[str]:
        return list(self._members.get(channel, ()))

    def counts(self) -> dict[str, int]:
        """Members per channel."""
        return {channel: len(ids) for channel, ids in self._members.items()}

    def __len__(self) -> int:
        return len(self._members)
