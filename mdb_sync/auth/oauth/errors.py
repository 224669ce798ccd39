"""What a failed sign-in through a provider raises.

Each error carries ``reason`` (a short, stable code: ``invalid_state``, ``expired``,
``wrong_audience``, ...) for logs, audit events and JSON clients, and ``status``, the HTTP
status a web layer answers with. Messages say what failed without echoing anything the
provider or the browser sent.
"""

from __future__ import annotations

from typing import Any

from ...exceptions import AuthenticationError, ConfigurationError


class OAuthError(AuthenticationError):
    """A sign-in, link or unlink through an OAuth / OpenID Connect provider was refused."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status: int = 400,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, context={**(context or {}), "reason": reason})
        self.reason = reason
        self.status = status


class ProviderUnavailable(OAuthError):
    """The provider could not be reached, took too long, or answered something unusable."""

    def __init__(self, message: str, *, context: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason="provider_unavailable", status=502, context=context)


class IdentityConflict(OAuthError):
    """The identity, or its e-mail address, belongs to another account (409)."""

    def __init__(self, message: str, *, reason: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason=reason, status=409, context=context)


def no_providers(slug: str) -> ConfigurationError:
    """The error of asking app ``slug``, whose manifest has no ``auth.oauth``, for OAuth."""
    return ConfigurationError(
        f"app {slug!r} has no OAuth providers: add auth.oauth to its manifest",
        context={"app": slug, "path": "auth.oauth"},
    )
