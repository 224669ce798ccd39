"""What a request needs from its app's auth settings, worked out once per app state.

Every request of an app with auth asks the same questions of the app's settings: the names
of its cookies (``__Host-`` prefixed over HTTPS), the security headers of its responses,
whether unsafe requests need a CSRF token, whether any route is rate-limited or protected.
The answers depend on the app's manifest and the extension's config only, so an
:class:`AuthPlan` holds them next to the app's :class:`~mdb_sync.auth.AuthService`, in the
engine's per-app cache: built again when the app's registry record changes (any process,
within ``registry_refresh_seconds``, or at once after ``reload_apps()``).

A plan holds nothing about a user, a session or a token: those are read from the database
by every request, so a logout, a password change or a deactivation refuses the very next
request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..headers import HeaderSet, header_set, hsts_value

if TYPE_CHECKING:
    from mdb_sync.auth import AuthService
    from mdb_sync.auth.config import RateLimit

    from ..state import MDBState

#: Prefix of cookie names over HTTPS: the browser keeps such a cookie only when it is Secure,
#: has ``Path=/`` and no ``Domain``, so no sibling subdomain or plain-HTTP page can plant one.
HOST_PREFIX = "__Host-"


def cookie_names(base: str, cookie_secure: str) -> tuple[str, str]:
    """``(over HTTP, over HTTPS)`` names of a cookie named ``base`` in the manifest: with the
    ``__Host-`` prefix whenever the cookie is Secure (``cookie_secure`` ``"true"``, or
    ``"auto"`` over HTTPS), unless the name has a prefix of its own already."""
    prefixed = base if base.startswith((HOST_PREFIX, "__Secure-")) else HOST_PREFIX + base
    if cookie_secure == "true":
        return prefixed, prefixed
    if cookie_secure == "auto":
        return base, prefixed
    return base, base


@dataclass(frozen=True)
class AuthPlan:
    """One app's auth as its requests use it (see the module docstring)."""

    auth: AuthService
    #: The session cookie's and the CSRF seed cookie's names, over HTTP and over HTTPS.
    session_cookie: tuple[str, str]
    csrf_cookie: tuple[str, str]
    #: The security headers of the app's responses (None: ``MDB_SECURITY_HEADERS`` is off).
    headers: HeaderSet | None
    #: Unsafe requests identified by a cookie need a CSRF token.
    csrf: bool
    #: Route patterns with their rate limits.
    route_limits: tuple[tuple[str, RateLimit], ...]
    #: Unverified users may only read (``require_verification`` with ``read_only``).
    unverified_read_only: bool
    #: Sessions are bound to the client's address or browser.
    fingerprinted: bool

    @classmethod
    def build(cls, state: MDBState, auth: AuthService) -> AuthPlan:
        cfg = auth.config
        headers = None
        if state.config["MDB_SECURITY_HEADERS"]:
            hsts = cfg.hsts
            headers = header_set(
                hsts=(
                    hsts_value(
                        hsts.get("max_age", 31_536_000),
                        hsts.get("include_subdomains", True),
                        hsts.get("preload", False),
                    )
                    if hsts.get("enabled", True)
                    else None
                ),
                csp=state.config["MDB_CONTENT_SECURITY_POLICY"],
            )
        return cls(
            auth=auth,
            session_cookie=cookie_names(cfg.session_cookie_name, cfg.cookie_secure),
            csrf_cookie=cookie_names(f"{cfg.session_cookie_name}_csrf", cfg.cookie_secure),
            headers=headers,
            csrf=cfg.csrf_enabled and auth.users is not None,
            route_limits=tuple(cfg.route_limits.items()),
            unverified_read_only=(
                cfg.verification is not None and cfg.verification.unverified == "read_only"
            ),
            fingerprinted=cfg.bind_ip or cfg.bind_fingerprint,
        )

    def secure_cookies(self, is_secure: bool) -> bool:
        """Whether the app's cookies are Secure in a request over HTTPS (``is_secure``) or
        not."""
        setting = self.auth.config.cookie_secure
        return is_secure if setting == "auto" else setting == "true"
