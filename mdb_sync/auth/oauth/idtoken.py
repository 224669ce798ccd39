"""Checking an OpenID Connect ID token: signature, issuer, audience, expiry, nonce.

The ID token is the provider's signed statement "this is user ``sub``, for client ``aud``,
in answer to sign-in ``nonce``". Each check stops one attack: the signature (against the
issuer's published keys, with an allow-list of asymmetric algorithms — never ``none``, never
one chosen by the token) stops forged tokens; ``iss`` a token from another provider; ``aud``
(and ``azp``) a token issued to another app; ``exp`` an old, stolen token; ``nonce`` a token
captured from another sign-in and injected into this one. authlib's :class:`CodeIDToken`
then checks the rest (``iat``, ``nbf``, ``azp``, ``at_hash``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from .errors import OAuthError

#: Signature algorithms accepted in ID tokens: asymmetric only (a token signed with the
#: client secret, or unsigned, is refused).
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Longest ID token read (real ones are 1-2 KiB).
MAX_TOKEN_LENGTH = 16_384
#: Seconds of clock difference tolerated between us and the provider.
LEEWAY = 60
MAX_SUBJECT = 255
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _refused(what: str, reason: str) -> OAuthError:
    return OAuthError(f"the provider's ID token was refused: {what}", reason=reason, status=401)


def verify_id_token(
    token: Any,
    *,
    keys: Callable[[str | None], KeySet],
    issuer_ok: Callable[[Any, dict[str, Any]], bool],
    client_id: str,
    nonce: str,
    access_token: str | None = None,
    algorithms: Collection[str] | None = None,
    leeway: int = LEEWAY,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` once every check passed, else :class:`OAuthError` (401)
    with ``reason``: ``malformed``, ``bad_algorithm``, ``bad_signature``, ``wrong_issuer``,
    ``wrong_audience``, ``expired``, ``wrong_nonce``, ``invalid_claims``.

    :param keys: the issuer's key set for a key id (refreshed when the id is unknown).
    :param issuer_ok: ``(iss, claims) -> bool``: is this the expected issuer?
    :param algorithms: what the provider says it signs with (intersected with
        :data:`ALGORITHMS`).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _COMPACT.fullmatch(token):
        raise _refused("it is not a signed JWT", "malformed")
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, TypeError) as exc:
        raise _refused("its header cannot be read", "malformed") from exc
    allowed = [a for a in ALGORITHMS if algorithms is None or a in algorithms]
    alg = header.get("alg")
    if alg not in allowed:
        raise _refused(
            f"it is signed with {str(alg)[:16]!r}, not an allowed algorithm", "bad_algorithm"
        )
    kid = header.get("kid")
    key_set = keys(kid if isinstance(kid, str) else None)
    try:
        decoded = jwt.decode(token, key_set, algorithms=[alg])
    except BadSignatureError as exc:
        raise _refused("its signature does not verify", "bad_signature") from exc
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        # No key with this kid (after a refresh), a key of the wrong type, bad JSON...
        raise _refused("it is not signed by a key of the issuer", "bad_signature") from exc
    claims = dict(decoded.claims)
    current = int(now if now is not None else time.time())

    iss = claims.get("iss")
    if not isinstance(iss, str) or not issuer_ok(iss, claims):
        raise _refused("it was issued by another issuer", "wrong_issuer")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if client_id not in audiences:
        raise _refused("it was issued to another client", "wrong_audience")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise _refused("it has several audiences and this client is not its azp", "wrong_audience")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise _refused("it has no expiry", "invalid_claims")
    if exp + leeway < current:
        raise _refused("it has expired", "expired")
    if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
        raise _refused("it answers another sign-in (nonce)", "wrong_nonce")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT:
        raise _refused("its subject is missing or too long", "invalid_claims")

    params: dict[str, Any] = {"nonce": nonce, "client_id": client_id}
    if access_token:
        params["access_token"] = access_token
    checked = CodeIDToken(claims, decoded.header, {"iss": {"essential": True}}, params)
    try:
        checked.validate(now=current, leeway=leeway)
    except ExpiredTokenError as exc:
        raise _refused("it has expired", "expired") from exc
    except JoseError as exc:
        raise _refused(f"{exc.description or exc.error}", "invalid_claims") from exc
    return claims
