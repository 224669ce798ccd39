"""Sign-in through OAuth 2.0 / OpenID Connect providers (``auth.oauth`` in a manifest).

- :class:`OAuthSettings` / :class:`ProviderSettings`: the providers and their presets
  (Google, GitHub, Microsoft Entra ID, any OpenID Connect issuer).
- :func:`oauth_for` -> :class:`OAuthSignIn`: ``begin`` (the authorization URL, with PKCE,
  ``state`` and ``nonce``), ``complete`` (the callback: code exchange, ID token or GitHub
  API, the account), ``identities_of`` and ``unlink``.
- :class:`ProviderCache`: discovery documents and signing keys, bounded and refreshed.

``flask_mdb.auth`` serves it under ``/auth/oauth/<provider>/login`` and ``/callback``.
"""

from __future__ import annotations

from typing import Any

from .errors import IdentityConflict, OAuthError, ProviderUnavailable
from .settings import OAuthSettings, ProviderSettings


def __getattr__(name: str) -> Any:
    # The sign-in machinery imports the auth service, which imports this package's settings:
    # loaded on first use, not with the package.
    if name in ("OAuthSignIn", "SignInResult", "Authorization", "oauth_for"):
        from . import signin

        return getattr(signin, name)
    if name in ("ProviderCache", "DEFAULT_CACHE"):
        from . import metadata

        return getattr(metadata, name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_CACHE",
    "Authorization",
    "IdentityConflict",
    "OAuthError",
    "OAuthSettings",
    "OAuthSignIn",
    "ProviderCache",
    "ProviderSettings",
    "ProviderUnavailable",
    "SignInResult",
    "oauth_for",
]
