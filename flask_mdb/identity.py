"""Who is making the current request: the seam between authentication and other features.

Authentication (sessions, bearer tokens) registers *resolvers*, *token verifiers* and
*checkers* here; features that need the caller's identity (websocket connections, audit
logs, per-user data) ask here, without depending on how the identity was established. An
identity is a dict with at least ``user_id`` and ``app`` (the slug it belongs to), and
usually ``email`` and ``roles``.

An identity that outlives its request (a websocket's) also says what it rests on, so it can
be re-checked and revoked later (:mod:`mdb_sync.auth.revocation`): ``auth_version`` (the
user's, at sign-in), and ``session`` (``{"id": <digest of the session id>, "expires_at"}``)
or ``token`` (``{"jti", "family", "exp"}``). :func:`check_identity` asks the checkers
whether it still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_request_context

from mdb_sync.auth.revocation import Standing
from mdb_sync.deprecation import renamed_parameters

from .request_state import current_state, ensure_state

Identity = dict[str, Any]
Resolver = Callable[[], Identity | None]
TokenVerifier = Callable[[str, str], Identity | None]
Checker = Callable[[Identity, bool], Standing | None]
Reset = Callable[[], None]

_RESOLVERS = "mdb_identity_resolvers"
_VERIFIERS = "mdb_token_verifiers"
_CHECKERS = "mdb_identity_checkers"
_RESETS = "mdb_identity_resets"


def register_identity_resolver(app: Flask, resolver: Resolver) -> None:
    """Add ``resolver`` (called in a request context, returns an identity or None)."""
    app.extensions.setdefault(_RESOLVERS, []).append(resolver)


def register_token_verifier(app: Flask, verifier: TokenVerifier) -> None:
    """Add ``verifier(token, app_slug)`` returning the token's identity, or None when the
    token is not valid for that app (bad signature, expired, revoked, another app's)."""
    app.extensions.setdefault(_VERIFIERS, []).append(verifier)


def register_identity_checker(app: Flask, checker: Checker) -> None:
    """Add ``checker(identity, activity)`` (called in an app context): the identity's
    :class:`~mdb_sync.auth.revocation.Standing` now, or None when it did not issue that
    identity. ``activity``: the client is acting (a session's inactivity timer restarts)."""
    app.extensions.setdefault(_CHECKERS, []).append(checker)


def register_identity_reset(app: Flask, reset: Reset) -> None:
    """Add ``reset()``: forget what was resolved for the current request, because the
    request now serves another app (a websocket endpoint binds its own)."""
    app.extensions.setdefault(_RESETS, []).append(reset)


def current_identity() -> Identity | None:
    """The identity of the current request, from the first resolver that knows it."""
    for resolver in current_app.extensions.get(_RESOLVERS, ()):
        identity: Identity | None = resolver()
        if identity is not None:
            return identity
    return None


@renamed_parameters(app_slug="slug")
def verify_token(token: str, slug: str) -> Identity | None:
    """The identity a bearer token carries for ``slug``, or None if no verifier accepts it
    (for transports that cannot send an ``Authorization`` header, e.g. websockets)."""
    for verifier in current_app.extensions.get(_VERIFIERS, ()):
        identity: Identity | None = verifier(token, slug)
        if identity is not None:
            return identity
    return None


def check_identity(identity: Identity, *, activity: bool = False) -> Standing | None:
    """Whether ``identity`` still holds (revoked, expired, refused by its app's policy
    since?), from the checker that issued it; None when no checker knows it (an identity
    of your own resolver, which nothing here can re-check)."""
    for checker in current_app.extensions.get(_CHECKERS, ()):
        standing: Standing | None = checker(identity, activity)
        if standing is not None:
            return standing
    return None


def reset_identity() -> None:
    """Forget the identity resolved so far for this request (the bound app changed)."""
    state = current_state()
    if state is not None:
        state.resolved.clear()
    for reset in current_app.extensions.get(_RESETS, ()):
        reset()


# --- what this request has read ------------------------------------------------------------------


def note_resolved(identity: Identity, standing: Callable[[], Standing]) -> None:
    """A resolver has just read ``identity`` from the database for this request;
    ``standing()`` says whether it holds without reading again (the app's access policy on
    what was read). A check that follows at once — a websocket's admission, when no
    revocation was announced meanwhile — uses it instead of a second round trip (kept in
    the request's state: nothing outlives the request)."""
    if has_request_context():
        ensure_state().resolved[_identity_key(identity)] = standing


def resolved_standing(identity: Identity) -> Standing | None:
    """The standing noted for ``identity`` by its resolver in this request, else None."""
    state = current_state()
    noted = state.resolved.get(_identity_key(identity)) if state is not None else None
    return noted() if noted is not None else None


def _identity_key(identity: Identity) -> tuple[Any, ...]:
    session, token = identity.get("session"), identity.get("token")
    return (
        identity.get("app"),
        identity.get("user_id"),
        identity.get("auth_version"),
        session.get("id") if isinstance(session, dict) else None,
        token.get("jti") if isinstance(token, dict) else None,
    )
