"""Security headers and HTTPS enforcement.

Responses of apps with an ``auth`` block — and responses no app is bound for (unknown apps,
health, metrics) — get them automatically (``MDB_SECURITY_HEADERS``, on by default; see
``finish`` in :mod:`.setup`); :class:`SecurityMiddleware` applies them to every response of
a Flask app.
Headers a view set itself are left alone. (The header helpers live in
:mod:`flask_mdb.headers`, which the health and metrics endpoints share.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, request

from ..binding import current_binding
from ..config import csp_value
from ..headers import REFERRER_POLICY, apply_headers, hsts_value
from .current import cookie_identity, csrf_problem, current_service
from .decorators import CSRF_EXEMPT_ATTR, https_refusal
from .responses import refusal


class SecurityMiddleware:
    """Security headers (and optionally HTTPS and CSRF enforcement) on every response::

        SecurityMiddleware(app, require_https=True, content_security_policy="default-src 'self'")

    :param require_https: redirect GET/HEAD to HTTPS, refuse other methods with 403.
    :param csrf_protection: check CSRF tokens on cookie-authenticated unsafe requests of
        apps with users, even where the manifest leaves it off.
    :param security_headers: ``X-Content-Type-Options``, ``X-Frame-Options``,
        ``Referrer-Policy``, HSTS (over HTTPS), and ``content_security_policy`` if given.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        require_https: bool = False,
        csrf_protection: bool = False,
        security_headers: bool = True,
        content_security_policy: str | Mapping[str, Any] | None = None,
        hsts: bool = True,
        hsts_max_age: int = 31_536_000,
        hsts_include_subdomains: bool = True,
        hsts_preload: bool = False,
        frame_options: str | None = "DENY",
        referrer_policy: str | None = REFERRER_POLICY,
    ) -> None:
        self.require_https = require_https
        self.csrf_protection = csrf_protection
        self.security_headers = security_headers
        self.csp = csp_value(content_security_policy)
        self.hsts = (
            hsts_value(hsts_max_age, hsts_include_subdomains, hsts_preload) if hsts else None
        )
        self.frame_options = frame_options
        self.referrer_policy = referrer_policy
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.before_request(self._before)
        app.after_request(self._after)

    def _before(self) -> Any:
        if self.require_https and not request.is_secure:
            https_refusal()
        if self.csrf_protection and request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            auth = current_service() if current_binding() is not None else None
            view = _view()
            if (
                auth is not None
                and auth.users is not None
                and "Authorization" not in request.headers
                and not getattr(view, CSRF_EXEMPT_ATTR, False)
                and cookie_identity(auth)
            ):
                problem = csrf_problem(auth)
                if problem is not None:
                    raise refusal(*problem)
        return None

    def _after(self, response: Response) -> Response:
        if self.security_headers:
            apply_headers(
                response,
                hsts=self.hsts,
                csp=self.csp,
                frame_options=self.frame_options,
                referrer_policy=self.referrer_policy,
            )
        return response


def _view() -> Any:
    return current_app.view_functions.get(request.endpoint or "")


__all__ = ["REFERRER_POLICY", "SecurityMiddleware", "apply_headers", "hsts_value"]
