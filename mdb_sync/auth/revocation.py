"""Revoked credentials reach the long-lived connections that rest on them, in every process.

A websocket is authenticated once, at its handshake, and may stay open for hours; the login
it rests on may end meanwhile (logout, a password change, a deactivation, an expiry, a role
change). Two mechanisms keep such a connection from outliving its login:

* **Control events.** Whenever this package revokes credentials it publishes a control event
  (:meth:`~mdb_sync.realtime.EventBus.publish_control`) for the app(s) concerned; the
  connection managers of every process (``flask_mdb.websockets``) close the matching
  connections. The event names what was revoked:

  ``user``     every credential of a user older than ``min_version`` (a password change or
               reset, a deactivation; for a shared ``global_users`` account, in every app it
               belongs to)
  ``session``  one login session (logout, or evicted by ``max_sessions_per_user``)
  ``family``   one token login (token logout, refresh-token reuse, an evicted family)
  ``access``   the user's roles changed and the app's access policy now refuses them
               (the revoking process runs the policy once; the connections close with
               the policy's reason)

  A role change the policy still admits publishes ``{"op": "roles", "user_id", "roles"}``
  instead: nothing is revoked, but the user's connections authorize their channels again
  (``flask_mdb.websockets``: a channel the new roles may not join is left).

  Control events travel in the same stream as messages, so a message published after a
  revocation never reaches a process before the revocation does. Publishing never fails a
  revocation (the revocation is already stored; a failure is logged and counted) — the
  re-check below still catches it.

* **Re-checking.** :func:`recheck` validates an identity against the database the way an
  HTTP request is authenticated, in one round trip (the session or the token's deny-list
  entries, read together with the user's ``auth_version`` and active flag; then the app's
  access policy) and says until when it holds
  (:attr:`Standing.expires_at`). A connection calls it before acting for its client, and
  when that time comes, so an expired login closes by itself and no handler runs for a
  revoked identity between the revocation and the event's arrival.

What an identity rests on is part of the identity (``flask_mdb.identity``)::

    {"user_id": "...", "app": "my_app", "auth_version": 3, "roles": [...],
     "session": {"id": "<sha-256 of the session id>", "expires_at": datetime},   # or:
     "token": {"jti": "...", "family": "...", "exp": 1767225600}}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .users import public_view

if TYPE_CHECKING:
    from ..engine import MongoDBEngine
    from .service import AuthService

log = logging.getLogger("mdb_sync.auth")

#: ``op`` of a control event: close the matching connections.
REVOKE = "revoke"
#: ``op`` of a control event: a user's roles changed (nothing revoked).
ROLES = "roles"
#: What a control event is about (its ``scope``).
SCOPES = ("user", "session", "family", "access")

#: Reasons a re-check gives (sent to the client as the close reason).
REVOKED = "credentials revoked"
SESSION_EXPIRED = "session expired"
TOKEN_EXPIRED = "token expired"
ACCESS_REVOKED = "access revoked"


# --- publishing -----------------------------------------------------------------------------------


def user_revoked(
    engine: MongoDBEngine, slugs: Iterable[str], user_id: Any, min_version: int
) -> None:
    """Every credential of ``user_id`` issued before ``auth_version`` ``min_version`` is
    void (in each app of ``slugs``)."""
    for slug in dict.fromkeys(slugs):
        _publish(
            engine,
            slug,
            {"op": REVOKE, "scope": "user", "user_id": str(user_id), "min_version": min_version},
            user_id,
        )


def session_ended(engine: MongoDBEngine, slug: str, session_ids: Iterable[str]) -> None:
    """The sessions stored as ``session_ids`` (the digests, never the ids) are over."""
    for session_id in session_ids:
        _publish(engine, slug, {"op": REVOKE, "scope": "session", "session": session_id}, None)


def family_revoked(engine: MongoDBEngine, slug: str, family: str, user_id: Any = None) -> None:
    """Every token of the refresh family ``family`` (one token login) is void."""
    control = {"op": REVOKE, "scope": "family", "family": family}
    _publish(engine, slug, control, user_id)


def roles_changed(auth: AuthService, user: Mapping[str, Any]) -> None:
    """``user``'s roles changed in ``auth``'s app: if its access policy now refuses them,
    their connections close (with the policy's reason)."""
    problem = auth.access_problem(user) if auth.config.policy_present else None
    user_id = str(user["user_id"])
    control: dict[str, Any]
    if problem:
        control = {"op": REVOKE, "scope": "access", "user_id": user_id, "reason": problem}
    else:  # still admitted: what it may do (its channels) is decided again
        roles = [str(r) for r in user.get("roles") or ()]
        control = {"op": ROLES, "user_id": user_id, "roles": roles}
    _publish(auth.engine, auth.slug, control, user_id)


def _publish(engine: MongoDBEngine, slug: str, control: dict[str, Any], user_id: Any) -> None:
    try:
        engine.events.publish_control(
            slug, control, user_id=None if user_id is None else str(user_id)
        )
    except Exception as exc:  # the revocation is stored: never undo or fail it here
        engine.metrics.increment("auth.revocation_publish_errors", slug=slug)
        log.warning(
            "app %r: could not announce a revocation (%s) to other processes: %s; open "
            "connections close at their next re-check",
            slug,
            control.get("scope"),
            exc,
        )


# --- receiving ------------------------------------------------------------------------------------


def parse_control(text: str) -> dict[str, Any] | None:
    """The control event's instruction, or None when it is not one this module wrote."""
    try:
        control = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(control, dict)
        or control.get("op") != REVOKE
        or control.get("scope") not in SCOPES
    ):
        return None
    return control


def parse_roles(text: str) -> list[str] | None:
    """The user's new roles, when the control event is a role change (see
    :func:`roles_changed`), else None."""
    try:
        control = json.loads(text)
    except ValueError:
        return None
    if not isinstance(control, dict) or control.get("op") != ROLES:
        return None
    roles = control.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        return None
    return roles


def verdict(control: Mapping[str, Any], identity: Mapping[str, Any] | None) -> Standing | None:
    """What ``control`` means for a connection holding ``identity``: a refused
    :class:`Standing` (close it, with that reason), or None (it is not concerned).
    Anonymous connections never are."""
    if not identity or identity.get("user_id") is None:
        return None
    scope = control.get("scope")
    user_id = str(identity["user_id"])
    if scope == "user":
        if str(control.get("user_id")) != user_id:
            return None
        version = identity.get("auth_version")
        minimum = control.get("min_version")
        # An identity that does not say its version (another resolver's) rests on nothing
        # this revocation spares: close it too.
        if version is None or not isinstance(minimum, int) or int(version) < minimum:
            return Standing(REVOKED)
        return None
    if scope == "session":
        session = identity.get("session")
        if isinstance(session, Mapping) and session.get("id") == control.get("session"):
            return Standing(REVOKED)
        return None
    if scope == "family":
        token = identity.get("token")
        if isinstance(token, Mapping) and token.get("family") == control.get("family"):
            return Standing(REVOKED)
        return None
    if scope == "access" and str(control.get("user_id")) == user_id:
        reason = control.get("reason")
        return Standing(str(reason)[:200] if reason else ACCESS_REVOKED, forbidden=True)
    return None


# --- re-checking ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """The outcome of :func:`recheck`.

    ``problem``: None while the identity holds, else why not (:data:`REVOKED`,
    :data:`SESSION_EXPIRED`, :data:`TOKEN_EXPIRED`, or the access policy's refusal);
    ``forbidden``: the credentials hold but the app's policy now refuses the user;
    ``expires_at``: when (epoch seconds) the credentials lapse unless renewed — re-check by
    then at the latest (None: no expiry known); ``roles``: the user's roles now (a holder
    refreshes its copy: a role taken away must not linger in a long-lived identity).
    """

    problem: str | None = None
    forbidden: bool = False
    expires_at: float | None = None
    roles: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _epoch(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def expires_at(identity: Mapping[str, Any] | None) -> float | None:
    """When (epoch seconds) the credentials ``identity`` rests on lapse, as far as it says:
    its session's expiry, its token's ``exp`` (the earlier), or None."""
    if not identity:
        return None
    times = []
    session = identity.get("session")
    if isinstance(session, Mapping):
        times.append(_epoch(session.get("expires_at")))
    token = identity.get("token")
    if isinstance(token, Mapping):
        times.append(_epoch(token.get("exp")))
    known = [t for t in times if t is not None]
    return min(known) if known else None


def recheck(auth: AuthService, identity: Mapping[str, Any], *, activity: bool = False) -> Standing:
    """Whether ``identity`` (issued by ``auth``'s app) still holds, read from the database
    as an HTTP request would be authenticated, in one round trip: the session with its user
    (or the user with the token's deny-list entries). ``activity``: the client is acting
    now, which keeps a session with an inactivity timeout alive (as a request does)."""
    now = time.time()
    if identity.get("anonymous"):  # an anonymous identity: live until upgraded or expired
        anonymous = identity.get("session")
        doc = None
        if auth.anonymous is not None and isinstance(anonymous, Mapping):
            key = anonymous.get("id")
            doc = auth.anonymous.get_by_key(key) if isinstance(key, str) else None
        if doc is None:
            return Standing(REVOKED)
        return Standing(None, expires_at=_epoch(doc.get("expires_at")), roles=())
    user_id = str(identity.get("user_id"))
    version = identity.get("auth_version")
    users = auth.users
    expiry: float | None = None
    user_doc: dict[str, Any] | None = None
    user_read = False  # whether user_doc was read along with the session or the token
    session = identity.get("session")
    if isinstance(session, Mapping):
        doc = None
        if auth.sessions is not None and users is not None and isinstance(session.get("id"), str):
            doc, user_doc = auth.sessions.get_with_user(session["id"], users, touch=activity)
            user_read = True
        if doc is None:
            known = _epoch(session.get("expires_at"))
            return Standing(SESSION_EXPIRED if known is not None and known <= now else REVOKED)
        if version is not None and int(doc.get("auth_version", 0)) != int(version):
            return Standing(REVOKED)
        if str(doc.get("user_id")) != user_id:
            return Standing(REVOKED)
        expiry = _epoch(doc.get("expires_at"))
    token = identity.get("token")
    if isinstance(token, Mapping):
        exp = _epoch(token.get("exp"))
        if exp is None or exp <= now:
            return Standing(TOKEN_EXPIRED)
        claims = {
            "jti": token.get("jti"),
            "fam": token.get("family"),
            "sub": user_id,
            "ver": int(version or 0),
        }
        if auth.tokens is None:
            return Standing(REVOKED)
        if users is not None and not user_read:
            user_doc, revoked = auth.tokens.user_and_revoked(claims, users)
            user_read = True
        else:
            revoked = auth.tokens.is_revoked(claims)
        if revoked:
            return Standing(REVOKED)
        expiry = exp if expiry is None else min(expiry, exp)
    if users is not None:
        if not user_read:
            user_doc = users.get(user_id)
        user = (
            public_view(users, user_doc)
            if user_doc is not None and users.is_member(user_doc)
            else None
        )
        if user is None or not user.get("active", True):
            return Standing(REVOKED)
        if version is not None and int(user.get("auth_version", 0)) != int(version):
            return Standing(REVOKED)
    else:  # a token-only app: the token is the user (as user_from_token has it)
        user = {"user_id": user_id, "roles": [], "app": auth.slug, "active": True}
    roles = tuple(user.get("roles") or ())
    if auth.config.policy_present:
        problem = auth.access_problem(user)
        if problem:
            return Standing(problem, forbidden=True, expires_at=expiry, roles=roles)
    return Standing(None, expires_at=expiry, roles=roles)
