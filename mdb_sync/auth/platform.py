"""Platform sign-on: one sign-in at a hub app serves the related apps of the same engine.

``auth.mode: "shared"`` joins apps that share their accounts (``global_users``) into a
platform. The *hub* lists its related apps (``related_apps``: slug -> the URL of the app's
auth routes); each *related app* names the hub alone in its own ``related_apps`` and says
where its users sign in (``auth_hub_url``, the same URL). Both sides must say so: a hub
cannot claim an app that does not name it, nor an app a hub that does not list it — every
hand-off checks the pair in the registry (:func:`check_pair`).

A related app never trusts the hub's session or tokens. It sends the browser to the hub's
``/platform/authorize`` with its own callback URL and a ``state``; the hub, once its user is
signed in there, issues a **hand-off**: a random code (256 bits) stored only as its hash in
``mdb_auth_handoffs``, bound to the target app, the exact callback URL the hub registered for
it (``related_apps[target]`` + ``/platform/callback``), the user and the hub session it came
from, expiring after :data:`HANDOFF_TTL` seconds. The related app exchanges the code
server-side (the same database: no call between the apps) with one atomic
``find_one_and_delete`` filtered by its own slug and callback URL, then starts its own
session — its own cookie, its own audience-bound tokens. So a code is good once, at one
app, for one callback, for a minute; presented twice or at another app it finds nothing.

Each session born from a hand-off remembers the hub session (``platform_session``, its
digest) and when the user really authenticated (``authenticated_at``, the hub's): logout
*everywhere* ends the hub session and every session derived from it in every app of the
platform (and closes their websockets); a plain logout ends one app's session only.
"Hybrid" accounts come free: the platform identity is the shared account, and each app keeps
its own roles and profile fields on top (``apps.<slug>``; :meth:`AuthService.set_app_profile`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError
from . import revocation, store
from .config import AuthConfig
from .users import public_view

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from .service import AuthService

#: Seconds a hand-off code lives (the browser needs one redirect to use it).
HANDOFF_TTL = 60
#: Length bounds of a code accepted from a request (``token_urlsafe(32)`` is 43 characters).
MIN_CODE, MAX_CODE = 20, 128
#: The path of a related app's callback below its auth URL.
CALLBACK_PATH = "/platform/callback"
AUTHORIZE_PATH = "/platform/authorize"


class HandOffError(Exception):
    """A hand-off refused: ``reason`` (a stable code) and ``status`` (HTTP)."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


def callback_url(auth_url: str) -> str:
    """The callback URL of an app whose auth routes are at ``auth_url``."""
    return auth_url.rstrip("/") + CALLBACK_PATH


def authorize_url(hub_url: str) -> str:
    return hub_url.rstrip("/") + AUTHORIZE_PATH


def _config_of(auth: AuthService, slug: str) -> AuthConfig | None:
    if slug == auth.slug:
        return auth.config
    manifest = auth.engine.get_app(slug)
    return AuthConfig.from_manifest(manifest) if manifest else None


def check_pair(auth: AuthService, hub: str, app: str) -> str:
    """The callback URL the hub ``hub`` registered for ``app``, when the two form a
    platform — the hub lists ``app``, ``app`` names the hub, both shared, both active — else
    :class:`HandOffError` (403) saying which side does not agree."""
    hub_cfg, app_cfg = _config_of(auth, hub), _config_of(auth, app)
    if hub_cfg is None or not hub_cfg.shared or hub_cfg.hub_url is not None:
        raise HandOffError(f"{hub!r} is not a sign-on hub", "not_a_hub", 403)
    registered = hub_cfg.related_apps.get(app)
    if registered is None:
        raise HandOffError(f"{app!r} is not a related app of {hub!r}", "not_related", 403)
    if app_cfg is None or not app_cfg.shared or app_cfg.hub_slug != hub:
        raise HandOffError(f"{app!r} does not name {hub!r} as its hub", "not_related", 403)
    return callback_url(registered)


def check_manifests(manifests: Sequence[Mapping[str, Any]]) -> None:
    """Refuse (``ConfigurationError``) shared apps among ``manifests`` that do not agree with
    each other: a hub listing an app that names another hub (or none), a related app naming a
    hub that does not list it. Apps whose partner is not among ``manifests`` are checked at
    each hand-off instead."""
    configs = {c.slug: c for c in (AuthConfig.from_manifest(m) for m in manifests) if c.shared}
    for cfg in configs.values():
        if cfg.hub_url is None:  # a hub
            for slug in cfg.related_apps:
                other = configs.get(slug)
                if other is not None and other.hub_slug != cfg.slug:
                    raise ConfigurationError(
                        f"app {cfg.slug!r} lists {slug!r} in auth.related_apps, but {slug!r} "
                        "does not name it as its hub (its auth.related_apps and auth_hub_url)",
                        context={"app": cfg.slug, "path": "auth.related_apps"},
                    )
        else:
            hub = configs.get(cfg.hub_slug or "")
            if hub is not None and (hub.hub_url is not None or cfg.slug not in hub.related_apps):
                raise ConfigurationError(
                    f"app {cfg.slug!r} names {cfg.hub_slug!r} as its sign-on hub, but "
                    f"{cfg.hub_slug!r} does not list it in auth.related_apps",
                    context={"app": cfg.slug, "path": "auth.related_apps"},
                )


@dataclass(frozen=True)
class HandOff:
    """A redeemed hand-off: the account and what its hub session said."""

    user_id: str
    hub: str
    platform_session: str
    authenticated_at: dt.datetime | None
    auth_version: int = 0


class HandOffs:
    """Hand-off codes, issued by a hub and redeemed by a related app."""

    def __init__(self, auth: AuthService) -> None:
        self.auth = auth

    @property
    def coll(self) -> Collection[dict[str, Any]]:
        return store.collection(self.auth.engine, store.HANDOFFS)

    @staticmethod
    def _id(target: str, code: str) -> str:
        return store.digest("handoff", target, code)

    def issue(
        self,
        target: str,
        return_url: str,
        user: Mapping[str, Any],
        *,
        platform_session: str,
        authenticated_at: dt.datetime | None,
    ) -> str:
        """At the hub: a code for ``user`` to sign in at ``target`` (a related app), to be sent
        to ``return_url`` only — which must be the callback the hub registered for it."""
        expected = check_pair(self.auth, self.auth.slug, target)
        if return_url != expected:
            raise HandOffError(
                f"the return URL is not the one registered for {target!r}", "bad_return_url"
            )
        code = secrets.token_urlsafe(32)
        now = store.now()
        self.coll.insert_one(
            {
                "_id": self._id(target, code),
                "app_id": target,
                "hub": self.auth.slug,
                "return_url": return_url,
                "user_id": str(user["user_id"]),
                "auth_version": int(user.get("auth_version", 0)),
                "platform_session": platform_session,
                "authenticated_at": authenticated_at,
                "created_at": now,
                "expires_at": now + dt.timedelta(seconds=HANDOFF_TTL),
            }
        )
        self.auth.audit("platform_handoff_issued", user_id=str(user["user_id"]), target=target)
        return code

    def redeem(self, code: Any, return_url: str) -> HandOff:
        """At the related app: the hand-off of ``code`` — spent now — when it was issued for
        this app and this callback URL, by this app's hub, and has not expired; else
        :class:`HandOffError` (401, one message for every failure)."""
        refused = HandOffError(
            "this sign-on is unknown, expired or already used: sign in again", "invalid_code", 401
        )
        hub = self.auth.config.hub_slug
        if hub is None or not isinstance(code, str) or not MIN_CODE <= len(code) <= MAX_CODE:
            raise refused
        doc = self.coll.find_one_and_delete(
            {"_id": self._id(self.auth.slug, code), "app_id": self.auth.slug, "hub": hub}
        )
        expires = store.aware((doc or {}).get("expires_at"))
        if doc is None or expires is None or expires <= store.now():
            raise refused
        if doc.get("return_url") != return_url:
            raise refused
        check_pair(self.auth, hub, self.auth.slug)  # both still agree (manifests change)
        return HandOff(
            user_id=str(doc["user_id"]),
            hub=hub,
            platform_session=str(doc["platform_session"]),
            authenticated_at=store.aware(doc.get("authenticated_at")),
            auth_version=int(doc.get("auth_version", 0)),
        )

    def account(self, handoff: HandOff) -> dict[str, Any]:
        """The user a redeemed hand-off signs in here: the shared account, joining this app
        (its default roles: this app's own, on top of the platform identity) on its first
        visit. :class:`HandOffError` (403) for an account disabled (everywhere or here),
        changed since (a new password) or not allowed to sign in yet (unverified)."""
        auth = self.auth
        users = auth.require_users()
        doc = users.get(handoff.user_id)
        if doc is None or not bool(doc.get("active", True)):
            raise HandOffError("this account is disabled", "inactive", 403)
        if int(doc.get("auth_version", 0)) != handoff.auth_version:
            raise HandOffError(
                "this sign-on is unknown, expired or already used: sign in again",
                "invalid_code",
                401,
            )
        if not users.is_member(doc):
            roles = list(auth.config.default_roles)
            doc = users.join(doc, roles)
            if roles:
                auth.set_roles(doc["_id"], roles)
        if not users.is_active(doc):
            raise HandOffError("this account is disabled in this app", "inactive", 403)
        user = public_view(users, users.get(doc["_id"]) or doc)
        if auth.refuses_unverified(user):
            raise HandOffError(
                "this account's e-mail address is not verified yet", "unverified", 403
            )
        auth.audit("platform_sign_on", user_id=user["user_id"], hub=handoff.hub)
        return user


def platform_apps(auth: AuthService) -> list[str]:
    """The apps of ``auth``'s platform: the hub and its related apps (as the hub lists them)."""
    cfg = auth.config
    if not cfg.shared:
        return [auth.slug]
    hub = cfg.hub_slug or auth.slug
    hub_cfg = _config_of(auth, hub)
    related = list(hub_cfg.related_apps) if hub_cfg is not None else []
    return list(dict.fromkeys([hub, *related, auth.slug]))


def end_platform_session(auth: AuthService, platform_session: str) -> int:
    """Logout everywhere: end the hub session ``platform_session`` (its digest) and every
    session derived from it in every app of the platform; their websockets close. Returns
    how many sessions ended."""
    coll = store.collection(auth.engine, store.SESSIONS)
    apps = platform_apps(auth)
    hub = auth.config.hub_slug or auth.slug
    query = {
        "app_id": {"$in": apps},
        "$or": [{"_id": platform_session, "app_id": hub}, {"platform_session": platform_session}],
    }
    ended = [(d["_id"], d["app_id"]) for d in coll.find(query, {"_id": 1, "app_id": 1})]
    if ended:
        coll.delete_many({"_id": {"$in": [key for key, _ in ended]}})
    for slug in apps:
        keys = [key for key, app in ended if app == slug]
        if keys:
            revocation.session_ended(auth.engine, slug, keys)
    auth.audit("platform_logout", sessions=len(ended))
    return len(ended)
