"""The auth blueprint's name, URLs to its endpoints, and the check of redirect targets.

Every module of the blueprint (:mod:`.views`, :mod:`.oauth_views`, :mod:`.platform_views`,
:mod:`.twofactor_views`, :mod:`.verify_views`, :mod:`.fresh`) and its installer
(:mod:`.setup`) use these; they live below all of them so that none imports another just
for a URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, request, url_for

#: Name of the auth blueprint (``/auth/...``): every response of it is ``no-store``.
AUTH_BLUEPRINT = "mdb_auth"


def auth_url(name: str, **values: Any) -> str:
    """``url_for`` of an auth endpoint (``login``, ``logout``, ...) keeping the request's
    URL variables (for prefixes such as ``/<space>/auth``)."""
    endpoint = f"{AUTH_BLUEPRINT}.{name}"
    wanted: set[str] = set()
    for rule in current_app.url_map.iter_rules(endpoint):
        wanted |= rule.arguments
    kept = {k: v for k, v in (request.view_args or {}).items() if k in wanted}
    return url_for(endpoint, **{**kept, **values})


def safe_next(target: Any, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default`` (no open redirects:
    ``//evil.example``, ``https://evil.example``, ``/\\evil.example``, control characters
    and schemes are refused)."""
    if not isinstance(target, str) or not target or len(target) > 2048:
        return default
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(ch) < 32 or ch == "\\" for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
