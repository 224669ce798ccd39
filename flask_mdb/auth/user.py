"""The user object Flask-Login hands out (``current_user``) for mdb-sync apps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

from flask_login import AnonymousUserMixin, UserMixin

#: Fields of the user document that are never sent to clients.
_PRIVATE = frozenset({"_id", "auth_version", "password_hash"})


class AuthUser(UserMixin):
    """A signed-in user of the bound app (what ``get_current_user()`` returns).

    Attributes: ``id`` (the user id, a string), ``email``, ``roles`` (this app's), ``app``
    (the app slug), ``is_active``, ``via`` — how the request proved it (``"session"`` cookie
    or bearer ``"token"``) — and ``data``, the user document as the auth API returns it (no
    password hash; datetimes are timezone-aware UTC). ``session`` (the server-side session)
    or ``claims`` and ``token`` (the verified access token) are set according to ``via``.
    Reads like the user document too (``user["email"]``, ``user.get("name")``);
    :meth:`to_json` is the JSON-ready form.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        via: str,
        *,
        session: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        self.data = dict(data)
        self.via = via
        self.session = session
        self.claims = claims
        self.token = token

    @property
    def id(self) -> str:
        """The user id (the user document's ``_id`` as a string)."""
        return str(self.data["user_id"])

    @property
    def email(self) -> str | None:
        """The normalised (lower-case) email address."""
        return self.data.get("email")

    @property
    def roles(self) -> list[str]:
        """The user's roles in this app (shared users have roles per app)."""
        return list(self.data.get("roles") or ())

    @property
    def app(self) -> str:
        """The slug of the app the user signed in to."""
        return str(self.data.get("app", ""))

    @property
    def is_active(self) -> bool:
        """False once the account is deactivated (in this app, or everywhere)."""
        return bool(self.data.get("active", True))

    def get_id(self) -> str:
        # Flask-Login's alternative id: a password change (new auth_version) invalidates it.
        return f"{self.id}.{int(self.data.get('auth_version', 0))}"

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def identity(self) -> dict[str, Any]:
        """The identity for :mod:`flask_mdb.identity` (websockets, audit, ...), with what it
        rests on — the session (the digest of its id, its expiry) or the token (``jti``,
        family, ``exp``) and the ``auth_version`` — so a connection can be re-checked and
        revoked later (:mod:`mdb_sync.auth.revocation`)."""
        identity: dict[str, Any] = {
            "user_id": self.id,
            "app": self.app,
            "email": self.email,
            "roles": self.roles,
            "via": self.via,
            "auth_version": int(self.data.get("auth_version", 0)),
        }
        if self.via == "session" and self.session is not None:
            identity["auth_version"] = int(self.session.get("auth_version", 0))
            identity["session"] = {
                "id": self.session["_id"],
                "expires_at": self.session.get("expires_at"),
            }
        elif self.via == "token" and self.claims is not None:
            identity["auth_version"] = int(self.claims.get("ver", 0))
            identity["token"] = {
                "jti": self.claims["jti"],
                "family": self.claims["fam"],
                "exp": self.claims["exp"],
            }
        return identity

    def to_json(self) -> dict[str, Any]:
        """The user as a JSON-ready dict (no password hash, no internal counters)."""
        out: dict[str, Any] = {}
        for key, value in self.data.items():
            if key in _PRIVATE:
                continue
            out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out

    def __repr__(self) -> str:
        return f"<AuthUser {self.id} of {self.app!r} via {self.via}>"


class AnonymousUser(AnonymousUserMixin):
    """No one is signed in; ``roles`` is empty so role checks simply fail."""

    roles: list[str] = []
    email = None
    via = None

    def get(self, key: str, default: Any = None) -> Any:
        return default
