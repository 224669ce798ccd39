"""CSRF tokens: ``<timestamp>.<HMAC>`` bound to one browser and one app.

The HMAC covers the app slug, the timestamp and a *binding* value the attacker cannot know:
the login session's own CSRF secret (kept server-side, replaced at every login) or, before
login, a random value in an HttpOnly cookie (the signed double-submit pattern). A token is
valid for ``ttl`` seconds; a token of another session, another app or another browser is
refused. Framework-free: ``flask_mdb`` reads the token from the form or a header.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time

MISSING = "missing"
INVALID = "invalid"
EXPIRED = "expired"


def derive_key(secret: str | bytes, purpose: str = "csrf") -> bytes:
    """A key for CSRF tokens derived from an app secret (never the secret itself)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hmac.new(raw, f"mdb-sync {purpose}".encode(), hashlib.sha256).digest()


#: Most keys whose keyed HMAC is kept (:func:`_keyed`): keys change when secrets rotate.
KEYED_CACHE_SIZE = 16
_KEYED: dict[bytes, hmac.HMAC] = {}


def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 object keyed with ``key`` and fed nothing, to ``copy()``: setting a
    key up (and, with OpenSSL 3, looking the digest up) costs more than the MAC itself."""
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= KEYED_CACHE_SIZE:
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    return keyed


#: Signatures kept (:func:`_sign`): a page or a single-page app sends the same token with
#: each of its requests, so most checks ask for a signature computed before.
SIGNATURE_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SIGNATURE_CACHE_SIZE)
def _sign(key: bytes, app: str, binding: str, timestamp: int) -> str:
    """The signature of a token: a pure function of its inputs (the key, the app, what the
    token is bound to — a session's own secret or a browser's seed — and its time), so the
    last ones computed are kept; a check still compares it in constant time and still
    refuses an expired token."""
    mac = _keyed(key).copy()
    mac.update(f"{app}\x1f{binding}\x1f{timestamp}".encode())
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")


def make_token(key: bytes, app: str, binding: str, now: float | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"{timestamp}.{_sign(key, app, binding, timestamp)}"


def check_token(
    key: bytes, app: str, binding: str | None, token: object, ttl: int, now: float | None = None
) -> str | None:
    """None when ``token`` is valid, else why not (:data:`MISSING`, :data:`INVALID`,
    :data:`EXPIRED`)."""
    if not isinstance(token, str) or not token:
        return MISSING
    if binding is None or len(token) > 200 or "." not in token:
        return INVALID
    stamp, _, signature = token.partition(".")
    if not stamp.isdigit():
        return INVALID
    expected = _sign(key, app, binding, int(stamp))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return INVALID
    current = time.time() if now is None else now
    if int(stamp) + ttl < current or int(stamp) > current + 60:
        return EXPIRED
    return None
