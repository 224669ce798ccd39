"""Security headers of the extension's responses (no auth dependencies, so the health and
metrics endpoints use them too).

``X-Content-Type-Options: nosniff``, ``X-Frame-Options``, ``Referrer-Policy``, a
Content-Security-Policy when one is configured, and HSTS over HTTPS only (RFC 6797: a
browser ignores it over HTTP). Headers a view set itself are left alone.

The headers a response gets depend only on configuration (and on whether the request came
over HTTPS), so they are worked out once — :func:`header_set`, kept per app by the callers —
and each response only adds the ones it lacks (:func:`add_missing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flask import Response, request

REFERRER_POLICY = "strict-origin-when-cross-origin"

#: ``(name, lower-case name, value)`` of a header to add.
Header = tuple[str, str, str]


def hsts_value(
    max_age: int = 31_536_000, include_subdomains: bool = True, preload: bool = False
) -> str:
    value = f"max-age={int(max_age)}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value


@dataclass(frozen=True)
class HeaderSet:
    """The security headers of a response, over HTTP and over HTTPS (HSTS added)."""

    plain: tuple[Header, ...]
    secure: tuple[Header, ...]

    def for_request(self, is_secure: bool) -> tuple[Header, ...]:
        return self.secure if is_secure else self.plain


def header_set(
    *,
    hsts: str | None,
    csp: str | None,
    frame_options: str | None = "DENY",
    referrer_policy: str | None = REFERRER_POLICY,
) -> HeaderSet:
    """The :class:`HeaderSet` of these settings (None or empty: that header is not sent)."""
    pairs = [("X-Content-Type-Options", "nosniff")]
    if frame_options:
        pairs.append(("X-Frame-Options", frame_options))
    if referrer_policy:
        pairs.append(("Referrer-Policy", referrer_policy))
    if csp:
        pairs.append(("Content-Security-Policy", csp))
    plain = tuple((name, name.lower(), value) for name, value in pairs)
    if not hsts:
        return HeaderSet(plain, plain)
    return HeaderSet(
        plain, (*plain, ("Strict-Transport-Security", "strict-transport-security", hsts))
    )


def header_names(response: Response) -> set[str]:
    """The lower-case names of the headers ``response`` has (one pass over them: asking
    werkzeug's ``Headers`` for an absent name costs an exception each time)."""
    return {name.lower() for name, _ in response.headers}


def add_missing(
    response: Response, headers: Sequence[Header], present: set[str] | None = None
) -> Response:
    """Add each of ``headers`` that ``response`` does not have yet (``present``: its
    :func:`header_names`, when the caller has them)."""
    if present is None:
        present = header_names(response)
    target = response.headers
    for name, lower, value in headers:
        if lower not in present:
            target.add(name, value)
    return response


def apply_headers(
    response: Response,
    *,
    hsts: str | None,
    csp: str | None,
    frame_options: str | None = "DENY",
    referrer_policy: str | None = REFERRER_POLICY,
) -> Response:
    headers = header_set(
        hsts=hsts, csp=csp, frame_options=frame_options, referrer_policy=referrer_policy
    )
    return add_missing(response, headers.for_request(bool(hsts) and request.is_secure))


def no_store(response: Response) -> Response:
    """``Cache-Control: no-store``: the response is one user's (a token, a CSRF token, who
    is signed in) and no cache — the browser's, a proxy's — may keep it."""
    response.headers["Cache-Control"] = "no-store"
    return response
