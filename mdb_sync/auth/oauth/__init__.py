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

from typing import TYPE_CHECKING, Any

from ..extras import OAUTH_EXTRA, missing_oauth_modules, require_oauth_extra
from .errors import IdentityConflict, OAuthError, ProviderUnavailable, no_providers
from .settings import OAuthSettings, ProviderSettings

if TYPE_CHECKING:
    from ..service import AuthService
    from .signin import OAuthSignIn


def oauth_for(auth: AuthService) -> OAuthSignIn:
    """The :class:`OAuthSignIn` of an app's :class:`AuthService` (built once per service,
    so per manifest version); :class:`ConfigurationError` when the app has no
    ``auth.oauth``, or when the ``oauth`` extra is not installed (naming the app, its
    providers and the extra — as ``init_app`` does — not an ``ImportError``)."""
    settings = auth.config.oauth
    if settings is None:
        raise no_providers(auth.slug)
    require_oauth_extra(auth.slug, settings)
    from . import signin

    return signin.oauth_for(auth)


def __getattr__(name: str) -> Any:
    # The sign-in machinery imports the auth service, which imports this package's settings:
    # loaded on first use, not with the package. It needs the oauth extra.
    if name in ("OAuthSignIn", "SignInResult", "Authorization", "ProviderCache", "DEFAULT_CACHE"):
        missing = missing_oauth_modules()
        if missing:
            raise ImportError(
                f"mdb_sync.auth.oauth.{name} needs the {OAUTH_EXTRA} extra, and "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                f'installed: pip install "mdb-sync[{OAUTH_EXTRA}]"',
                name=missing[0],
            )
    if name in ("OAuthSignIn", "SignInResult", "Authorization"):
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
