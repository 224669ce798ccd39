"""Security headers of the extension's responses (no auth dependencies, so the health and
metrics endpoints use them too).

``X-Content-Type-Options: nosniff``, ``X-Frame-Options``, ``Referrer-Policy``, a
Content-Security-Policy when one is configured, and HSTS over HTTPS only (RFC 6797: a
browser ignores it over HTTP). Headers a view set itself are left alone.
"""

from __future__ import annotations

from flask import Response, request

REFERRER_POLICY = "strict-origin-when-cross-origin"


def hsts_value(
    max_age: int = 31_536_000, include_subdomains: bool = True, preload: bool = False
) -> str:
    value = f"max-age={int(max_age)}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value


def apply_headers(
    response: Response,
    *,
    hsts: str | None,
    csp: str | None,
    frame_options: str | None = "DENY",
    referrer_policy: str | None = REFERRER_POLICY,
) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if frame_options:
        headers.setdefault("X-Frame-Options", frame_options)
    if referrer_policy:
        headers.setdefault("Referrer-Policy", referrer_policy)
    if csp:
        headers.setdefault("Content-Security-Policy", csp)
    if hsts and request.is_secure:
        headers.setdefault("Strict-Transport-Security", hsts)
    return response


def no_store(response: Response) -> Response:
    """``Cache-Control: no-store``: the response is one user's (a token, a CSRF token, who
    is signed in) and no cache — the browser's, a proxy's — may keep it."""
    response.headers["Cache-Control"] = "no-store"
    return response
