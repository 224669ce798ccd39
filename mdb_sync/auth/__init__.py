"""Authentication and authorization, framework-free (scripts, notebooks, Celery, Flask).

- :class:`AuthService` / :func:`get_auth_service`: an app's users (``app_users`` in its
  scoped ``users`` collection, or ``global_users`` shared by apps), server-side sessions,
  JWT access and refresh tokens, authorization and rate limits, all from its manifest.
- :class:`PasswordHasher` (scrypt, versioned, re-hashed when the cost rises),
  :class:`PasswordPolicy`.
- :class:`TokenManager` and :class:`KeySet` (HS*/RS*/ES*/EdDSA with ``kid`` rotation; refresh
  families; a deny-list).
- :class:`AuthorizationProvider` (the protocol), :class:`CasbinProvider` (policies in the
  app's scoped collection through :class:`MongoPolicyAdapter`), :class:`OsoProvider`.
- :class:`RateLimiter` (counters in MongoDB: limits hold across processes), CSRF helpers
  in :mod:`mdb_sync.auth.csrf`.
- :mod:`mdb_sync.auth.platform` (one sign-in at a hub app for its related apps),
  :mod:`~mdb_sync.auth.anonymous` (anonymous visitors' identities and their upgrade),
  :mod:`~mdb_sync.auth.verification` (e-mail links), :mod:`~mdb_sync.auth.twofactor` (TOTP).
- :mod:`mdb_sync.auth.oauth`: sign-in through OAuth 2.0 / OpenID Connect providers
  (``auth.oauth``; needs the ``oauth`` extra).

``flask_mdb.auth`` wires all of it into Flask (Flask-Login, blueprint, decorators, CSRF,
security headers).
"""

from .anonymous import AnonymousIdentities
from .config import AuthConfig, RateLimit
from .keys import KeySet, resolve_keyset
from .passwords import PasswordHasher, PasswordPolicy
from .platform import HandOffs
from .provider import AuthorizationProvider, CasbinProvider, OsoProvider
from .ratelimit import Attempt, RateLimiter
from .service import INVALID_CREDENTIALS, AuthService, EmailNotVerified, get_auth_service
from .sessions import SessionStore
from .tokens import TokenManager
from .twofactor import SecondFactor
from .users import AppUserStore, GlobalUserStore, normalize_email
from .verification import EmailLinks


def __getattr__(name: str) -> object:
    if name == "MongoPolicyAdapter":  # imports casbin: only when asked for
        from .casbin_adapter import MongoPolicyAdapter

        return MongoPolicyAdapter
    raise AttributeError(name)


__all__ = [
    "INVALID_CREDENTIALS",
    "AnonymousIdentities",
    "AppUserStore",
    "Attempt",
    "AuthConfig",
    "AuthService",
    "AuthorizationProvider",
    "CasbinProvider",
    "EmailLinks",
    "EmailNotVerified",
    "GlobalUserStore",
    "HandOffs",
    "KeySet",
    "MongoPolicyAdapter",
    "OsoProvider",
    "PasswordHasher",
    "PasswordPolicy",
    "RateLimit",
    "RateLimiter",
    "SecondFactor",
    "SessionStore",
    "TokenManager",
    "get_auth_service",
    "normalize_email",
    "resolve_keyset",
]
