"""JSON Web Tokens: short-lived access tokens and rotating refresh tokens.

Verification follows PyJWT's advice and Flask-Security's practice: the algorithm comes from
the app's configuration (never from the token's header), the key from the token's ``kid``
among the app's own keys (derived per app, :mod:`mdb_sync.auth.keys`), and ``exp``,
``iat``, ``nbf``, ``sub``, ``jti``, ``aud``, ``iss`` and ``app`` are required. A token has
one audience, its app's slug, and names the app that issued it in ``app``; both must be
the verifying app, so a token minted for one app never verifies at another — even with a
key the apps share (RS*/ES*/EdDSA) and whatever a manifest says.

Refresh tokens belong to a *family* (one login). Each refresh spends the token and issues
the next one of the family; presenting a spent one again means it was copied, so the whole
family is revoked (the thief's copy and the user's session alike). Revocations — a token's
``jti``, a family, or every token of a user issued before a password change — go to the
``mdb_auth_denylist`` collection (TTL-indexed), checked on every verification in one query —
the same query that loads the token's user (:meth:`TokenManager.user_and_revoked`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jwt
from pymongo import DESCENDING, ReturnDocument

from ..exceptions import ConfigurationError, TokenError
from . import revocation, store
from .keys import KeySet
from .users import parse_user_id

if TYPE_CHECKING:
    from ..engine import MongoDBEngine
    from .users import AppUserStore

ACCESS = "access"
REFRESH = "refresh"
MAX_TOKEN_CHARS = 8192
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "sub", "jti", "aud", "iss", "app"]
#: Field the combined user + deny-list read adds to the user document (removed at once).
_DENIED = "_mdb_denied"

_MESSAGES: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token was not issued for this app"),
    (jwt.InvalidIssuerError, "the token has the wrong issuer"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidSignatureError, "the token's signature is invalid"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
    (jwt.InvalidTokenError, "the token is malformed"),
]


def _new_id() -> str:
    return secrets.token_urlsafe(16)


def _deny_keys(claims: Mapping[str, Any]) -> list[str]:
    """The deny-list entries that may refuse a token: its ``jti``, its family, its user."""
    return [f"jti:{claims['jti']}", f"fam:{claims['fam']}", f"user:{claims['sub']}"]


def _denied(entries: Iterable[Mapping[str, Any]], claims: Mapping[str, Any]) -> bool:
    """Whether one of the deny-list ``entries`` refuses a token with ``claims`` (a user's
    entry refuses only the versions below its ``min_version``)."""
    for entry in entries:
        if str(entry.get("_id", "")).startswith("user:") and int(claims.get("ver", 0)) >= int(
            entry.get("min_version", 0)
        ):
            continue
        return True
    return False


class TokenManager:
    """Issues, verifies, rotates and revokes the tokens of one app."""

    def __init__(
        self,
        engine: MongoDBEngine,
        slug: str,
        keys: KeySet,
        *,
        issuer: str = "mdb-sync",
        audience: str | None = None,
        access_ttl: int = 900,
        refresh_ttl: int = 604_800,
        rotation: bool = True,
        leeway: int = 5,
        max_families_per_user: int | None = None,
    ) -> None:
        self.engine = engine
        self.slug = slug
        self.keys = keys
        self.issuer = issuer
        if audience is not None and audience != slug:
            raise ConfigurationError(
                f"auth.jwt.audience of {slug!r} is {audience!r}: a token's audience is its own "
                "app (leave it out)",
                context={"app": slug, "path": "auth.jwt.audience"},
            )
        self.audience = slug
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.rotation = rotation
        self.leeway = leeway
        self.max_families_per_user = max_families_per_user

    @property
    def families(self) -> Any:
        return store.collection(self.engine, store.REFRESH_FAMILIES)

    @property
    def denylist(self) -> Any:
        return store.collection(self.engine, store.DENYLIST)

    # --- issuing ------------------------------------------------------------------------------

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            self.keys.signing_key,
            algorithm=self.keys.algorithm,
            headers={"kid": self.keys.signing_kid},
        )

    def _claims(
        self, user: dict[str, Any], kind: str, ttl: int, jti: str, fam: str
    ) -> dict[str, Any]:
        now = store.now()
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "app": self.slug,
            "sub": str(user["user_id"]),
            "iat": now,
            "nbf": now,
            "exp": now + dt.timedelta(seconds=ttl),
            "jti": jti,
            "typ": kind,
            "fam": fam,
            "ver": int(user.get("auth_version", 0)),
            # When the user last proved who they are (``fresh_login_required``): the login's
            # time, carried through the family's refreshes.
            "auth_time": int(user.get("auth_time") or now.timestamp()),
        }

    def issue(
        self, user: dict[str, Any], *, family: str | None = None, refresh_jti: str | None = None
    ) -> dict[str, Any]:
        """An access and a refresh token for ``user`` (a public user dict): a new family,
        or the next tokens of ``family`` (``refresh_jti`` reserved by :meth:`rotate`)."""
        if family is None:
            family, refresh_jti = _new_id(), _new_id()
            now = store.now()
            self.families.insert_one(
                {
                    "_id": family,
                    "app_id": self.slug,
                    "user_id": str(user["user_id"]),
                    "current_jti": refresh_jti,
                    "revoked": False,
                    "created_at": now,
                    "last_used": now,
                    "expires_at": now + dt.timedelta(seconds=self.refresh_ttl),
                }
            )
            if self.max_families_per_user:
                self._trim(str(user["user_id"]))
        pair = {
            "access_token": self._encode(
                self._claims(user, ACCESS, self.access_ttl, _new_id(), family)
            ),
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
        }
        if refresh_jti is not None:
            pair["refresh_token"] = self._encode(
                self._claims(user, REFRESH, self.refresh_ttl, refresh_jti, family)
            )
            pair["refresh_expires_in"] = self.refresh_ttl
        return pair

    def _trim(self, user_id: str) -> None:
        old = self.families.find(
            {"app_id": self.slug, "user_id": user_id, "revoked": False},
            {"_id": 1},
            sort=[("created_at", DESCENDING)],
        ).skip(self.max_families_per_user)
        for doc in old:
            self.revoke_family(doc["_id"])

    # --- verifying ----------------------------------------------------------------------------

    def decode(self, token: Any, kind: str = ACCESS) -> dict[str, Any]:
        """The claims of a well-signed, current token of ``kind`` for this app, without the
        revocation check (see :meth:`verify`). Raises TokenError saying what is wrong."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("the token is missing or malformed", context={"app": self.slug})
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.key_for(header.get("kid"))
            if key is None:
                raise TokenError(
                    "the token was not signed by a key of this app", context={"app": self.slug}
                )
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.keys.algorithm],
                audience=self.slug,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            for cls, message in _MESSAGES:
                if isinstance(exc, cls):
                    raise TokenError(message, context={"app": self.slug}) from exc
            raise TokenError("the token is invalid", context={"app": self.slug}) from exc
        # PyJWT accepts a list ``aud`` containing ours: only a token for this app alone
        # (and issued by it) passes.
        if claims.get("aud") != self.slug or claims.get("app") != self.slug:
            raise TokenError("the token was not issued for this app", context={"app": self.slug})
        if claims.get("typ") != kind:
            raise TokenError(f"not an {kind} token", context={"app": self.slug})
        if not isinstance(claims.get("fam"), str) or not isinstance(claims.get("ver", 0), int):
            raise TokenError("the token is malformed", context={"app": self.slug})
        return claims

    def verify(self, token: Any, kind: str = ACCESS) -> dict[str, Any]:
        """:meth:`decode`, then refuse revoked tokens (``jti``, family or user)."""
        claims = self.decode(token, kind)
        if self.is_revoked(claims):
            raise TokenError("the token has been revoked", context={"app": self.slug})
        return claims

    def is_revoked(self, claims: Mapping[str, Any]) -> bool:
        """Whether the deny-list refuses a token with these (verified) claims: its ``jti``,
        its family, or every token of its user below a version (one query)."""
        return _denied(self.denylist.find({"_id": {"$in": _deny_keys(claims)}}), claims)

    def user_and_revoked(
        self, claims: Mapping[str, Any], users: AppUserStore
    ) -> tuple[dict[str, Any] | None, bool]:
        """``(the stored document of the token's user in users' app or None, whether the
        deny-list refuses the token)`` — in one round trip: the user, with a ``$lookup`` of
        the token's deny-list entries. Read fresh every time (no cache between a revocation
        and the next request). A token whose user is gone costs a second query (the
        deny-list alone), so that a revoked token still reads as revoked."""
        oid = parse_user_id(claims["sub"])
        found = []
        if oid is not None:
            pipeline = [
                {"$match": {"_id": oid, **users.scope()}},
                {
                    "$lookup": {
                        "from": store.DENYLIST,
                        "pipeline": [{"$match": {"_id": {"$in": _deny_keys(claims)}}}],
                        "as": _DENIED,
                    }
                },
            ]
            found = self.engine.storage.collection(users.source).aggregate(pipeline).to_list(1)
        if not found:
            return None, self.is_revoked(claims)
        doc = found[0]
        return doc, _denied(doc.pop(_DENIED, None) or (), claims)

    # --- refreshing and revoking --------------------------------------------------------------

    def rotate(self, refresh_token: Any) -> tuple[dict[str, Any], str | None]:
        """Spend ``refresh_token``: ``(its claims, the jti reserved for the next refresh
        token)`` — None when rotation is off. A spent token presented again revokes its
        family and raises TokenError."""
        claims = self.verify(refresh_token, REFRESH)
        fam, jti = claims["fam"], claims["jti"]
        now = store.now()
        live = {"_id": fam, "app_id": self.slug, "revoked": False}
        if not self.rotation:
            if self.families.find_one(live, {"_id": 1}) is None:
                raise TokenError("the refresh token has been revoked", context={"app": self.slug})
            return claims, None
        next_jti = _new_id()
        doc = self.families.find_one_and_update(
            {**live, "current_jti": jti},
            {
                "$set": {
                    "current_jti": next_jti,
                    "last_used": now,
                    "expires_at": now + dt.timedelta(seconds=self.refresh_ttl),
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            if self.families.find_one(live, {"_id": 1}) is not None:
                self.revoke_family(fam)
                raise TokenError(
                    "refresh token reuse detected: this login has been revoked",
                    context={"app": self.slug, "reuse": True},
                )
            raise TokenError("the refresh token has been revoked", context={"app": self.slug})
        return claims, next_jti

    def revoke(self, token: Any) -> dict[str, Any]:
        """Revoke a token (access or refresh) and its whole family (logout)."""
        try:
            claims = self.decode(token, ACCESS)
        except TokenError:
            claims = self.decode(token, REFRESH)
        until = dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc)
        self._deny(f"jti:{claims['jti']}", until + dt.timedelta(seconds=self.leeway))
        self.revoke_family(claims["fam"])
        return claims

    def revoke_family(self, family: str) -> None:
        self.families.update_one({"_id": family, "app_id": self.slug}, {"$set": {"revoked": True}})
        self._deny(f"fam:{family}", self._longest())
        revocation.family_revoked(self.engine, self.slug, family)

    def revoke_user(self, user_id: str, min_version: int) -> None:
        """Refuse every token of ``user_id`` whose ``ver`` is below ``min_version`` (after a
        password change or deactivation), in every app that shares the user."""
        self.denylist.update_one(
            {"_id": f"user:{user_id}"},
            {
                "$max": {"min_version": int(min_version), "expires_at": self._longest()},
                "$setOnInsert": {"app_id": self.slug},
            },
            upsert=True,
        )
        self.families.update_many({"user_id": user_id}, {"$set": {"revoked": True}})

    def revoke_user_in_app(self, user_id: str) -> None:
        """Revoke the refresh tokens of ``user_id`` in this app only (a shared account
        leaving one app keeps its logins elsewhere)."""
        self.families.update_many(
            {"user_id": user_id, "app_id": self.slug}, {"$set": {"revoked": True}}
        )

    def _longest(self) -> dt.datetime:
        return store.now() + dt.timedelta(seconds=self.refresh_ttl + self.leeway)

    def _deny(self, key: str, until: dt.datetime) -> None:
        self.denylist.update_one(
            {"_id": key},
            {"$max": {"expires_at": until}, "$setOnInsert": {"app_id": self.slug}},
            upsert=True,
        )
