"""Keeping a connection no longer than its login: what the manifest endpoints re-check.

A connection's identity is resolved once, at the handshake; the login it rests on can end
while the socket stays open. :class:`Credentials` re-checks that login through
``flask_mdb.identity`` (for the app's own sessions and tokens:
:func:`mdb_sync.auth.revocation.recheck`, what an HTTP request's authentication reads):

* right after the connection is registered (a revocation between the handshake and the
  registration would otherwise be missed by the revocation events) — without a second
  read when no revocation event arrived since the handshake read the login: then that
  read stands, and only the app's access policy is applied to what it read;
* before each message is handled — or, with ``MDB_WEBSOCKET_RECHECK_INTERVAL`` > 0, before
  the first message after that many seconds — so no handler runs for a login revoked in
  another process whose revocation event has not arrived yet;
* when the login lapses (:attr:`Credentials.expires_at`: the session's expiry, the token's
  ``exp``): the connection's own thread wakes then and closes it unless the session was
  renewed meanwhile.

Revocations themselves arrive as control events (the connection manager closes the
connections at once); these checks cover what no event announces (an expiry, a session
swept from the database) and the time an event takes to reach another process.

A refusal closes the connection with :data:`~.connection.CREDENTIALS_REVOKED` (4401) or,
when the login holds but the app's access policy now refuses the user,
:data:`~.connection.ACCESS_REVOKED` (4403).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from mdb_sync.auth import revocation
from mdb_sync.auth.revocation import Standing

from ..identity import Identity, check_identity
from .connection import ACCESS_REVOKED, CREDENTIALS_REVOKED


def close_code(standing: Standing) -> int:
    """The close code of a refused :class:`Standing`."""
    return ACCESS_REVOKED if standing.forbidden else CREDENTIALS_REVOKED


class Credentials:
    """The login a connection rests on, re-checked in ``app``'s context.

    :param interval: seconds a successful check holds for the following messages (0: check
        before every message).
    """

    def __init__(self, app: Flask, identity: Identity, interval: float = 0.0) -> None:
        self._app = app
        self.identity = identity
        self.interval = interval
        #: When (epoch seconds) the login lapses unless renewed; None: no expiry known.
        self.expires_at: float | None = revocation.expires_at(identity)
        self._checked_at: float | None = None  # time.monotonic() of the last good check
        #: False once no checker knew the identity: nothing to re-check.
        self.checkable = True

    def check(self, *, activity: bool = False) -> Standing | None:
        """The login's standing now (None: no checker knows this identity — one of the
        app's own resolvers — so nothing can be re-checked). Database errors propagate."""
        with self._app.app_context():
            standing = check_identity(self.identity, activity=activity)
        if standing is None:
            self.checkable = False
        else:
            self.accept(standing)
        return standing

    def accept(self, standing: Standing) -> None:
        """Take ``standing`` as the login's latest check (a good one holds for
        :attr:`interval`; its expiry and roles replace the connection's)."""
        if standing.ok:
            self._checked_at = time.monotonic()
            if standing.expires_at is not None:
                self.expires_at = standing.expires_at
            if standing.roles is not None:  # handlers read the roles of now, not of the login
                self.identity["roles"] = list(standing.roles)

    def due(self) -> bool:
        """Whether a message must wait for a check (the last one is older than
        :attr:`interval`)."""
        checked = self._checked_at
        if not self.checkable:
            return False
        return checked is None or time.monotonic() - checked >= self.interval

    def seconds_left(self) -> float | None:
        """Seconds until the login lapses (<= 0: it has), or None."""
        expires = self.expires_at
        return None if expires is None else expires - time.time()


def lapsed_reason(credentials: Any) -> str:
    """The close reason when a login lapsed and no check could say otherwise."""
    token = credentials.identity.get("token")
    if isinstance(token, dict) and (revocation.expires_at({"token": token}) or 0) <= time.time():
        return revocation.TOKEN_EXPIRED
    return revocation.SESSION_EXPIRED
