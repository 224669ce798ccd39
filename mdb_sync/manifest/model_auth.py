"""The typed ``auth`` and ``token_management`` sections of a manifest.

What the schemas (:mod:`mdb_sync.manifest.schema_auth`, :mod:`.schema_oauth`) validated, as
frozen objects — defaults included, none written here. An object the manifest leaves out is
None where its absence means "off" (``auth.users``, ``auth.policy``, ``auth.oauth``...) and
holds its defaults where it means "as usual" (``auth.jwt``, ``token_management.security``,
``auth.policy.authorization``...). :class:`mdb_sync.auth.config.AuthConfig` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RateLimitSection:
    max_attempts: int
    window_seconds: int


@dataclass(frozen=True, kw_only=True)
class AuthorizationSection:
    """``auth.policy.authorization``."""

    model: str
    policies_collection: str
    link_users_roles: bool
    default_roles: tuple[str, ...]
    #: ``[subject, object, action]`` / ``[user, role]`` tuples, or read-only objects.
    initial_policies: tuple[Any, ...]
    initial_roles: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, kw_only=True)
class PolicySection:
    """``auth.policy``."""

    provider: str
    required: bool
    allow_anonymous: bool
    authorization: AuthorizationSection
    allowed_roles: tuple[str, ...]
    allowed_users: tuple[str, ...]
    denied_users: tuple[str, ...]
    required_permissions: tuple[str, ...]
    owner_can_access: bool


@dataclass(frozen=True, kw_only=True)
class PasswordResetSection:
    enabled: bool
    token_ttl_seconds: int


@dataclass(frozen=True, kw_only=True)
class VerificationSection:
    """``auth.users.require_verification`` (``true`` reads as this with its defaults)."""

    enabled: bool
    unverified: str
    token_ttl_seconds: int


@dataclass(frozen=True, kw_only=True)
class TwoFactorSection:
    enabled: bool
    issuer_name: str | None
    remember_device_days: int
    max_failed_attempts: int
    lockout_duration_seconds: int


@dataclass(frozen=True, kw_only=True)
class UsersSection:
    """``auth.users``."""

    enabled: bool
    strategy: str
    collection_name: str
    #: None: ``<slug>_session``.
    session_cookie_name: str | None
    session_ttl_seconds: int
    allow_registration: bool
    password_reset: PasswordResetSection | None
    #: Read-only objects as validated (``email``, ``password_hash``, ``role(s)``...).
    demo_users: tuple[Mapping[str, Any], ...]
    demo_user_seed_strategy: str
    require_verification: VerificationSection | None
    fresh_login_seconds: int
    two_factor: TwoFactorSection | None


@dataclass(frozen=True, kw_only=True)
class CsrfSection:
    enabled: bool
    exempt_routes: tuple[str, ...]
    token_ttl: int


@dataclass(frozen=True, kw_only=True)
class HstsSection:
    enabled: bool
    max_age: int
    include_subdomains: bool
    preload: bool


@dataclass(frozen=True, kw_only=True)
class AuthSecuritySection:
    hsts: HstsSection | None


@dataclass(frozen=True, kw_only=True)
class JwtSection:
    """``auth.jwt`` (absent: its defaults)."""

    algorithm: str
    issuer: str
    audience: str | None
    leeway_seconds: int
    secret_env: str | None


@dataclass(frozen=True, kw_only=True)
class PasswordPolicySection:
    min_length: int
    max_length: int
    min_entropy_bits: int
    require_uppercase: bool
    require_lowercase: bool
    require_numbers: bool
    require_special: bool
    check_common_passwords: bool
    check_breaches: bool


@dataclass(frozen=True, kw_only=True)
class AuditSection:
    enabled: bool
    retention_days: int
    collection_name: str
    #: Empty: every event.
    events: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SessionBindingSection:
    """``auth.session_binding`` (None: as ``token_management.security`` says)."""

    bind_ip: bool | None
    bind_fingerprint: bool | None
    allow_ip_change_with_reauth: bool | None


@dataclass(frozen=True, kw_only=True)
class AnonymousSection:
    ttl_seconds: int
    max_new_per_address: RateLimitSection | None


@dataclass(frozen=True, kw_only=True)
class OAuthProviderSection:
    """``auth.oauth.providers.<name>``, its preset's defaults filled in."""

    preset: str | None
    issuer: str | None
    discovery_url: str | None
    base_url: str | None
    api_url: str | None
    client_id: str
    client_secret_env: str
    scopes: tuple[str, ...]
    #: None only for a provider typed on its own (then: its name).
    label: str | None
    trust_email: bool
    link_by_email: bool
    #: None only for a provider typed on its own (then: no sign-up).
    allow_signup: bool | None
    tenant: str | None
    allowed_tenants: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class OAuthSection:
    """``auth.oauth``."""

    providers: Mapping[str, OAuthProviderSection]
    allow_signup: bool | None
    state_ttl_seconds: int
    http_timeout_seconds: int


@dataclass(frozen=True, kw_only=True)
class AuthSection:
    """``auth`` (None when the manifest has none)."""

    mode: str
    roles: tuple[str, ...]
    default_role: str | None
    require_role: str | None
    public_routes: tuple[str, ...]
    auth_hub_url: str | None
    related_apps: Mapping[str, str]
    policy: PolicySection | None
    users: UsersSection | None
    rate_limits: Mapping[str, RateLimitSection]
    audit: AuditSection | None
    #: ``true``/``false``, an object, or None (not said here).
    csrf_protection: bool | CsrfSection | None
    security: AuthSecuritySection | None
    jwt: JwtSection
    password_policy: PasswordPolicySection | None
    session_binding: SessionBindingSection
    oauth: OAuthSection | None
    anonymous: AnonymousSection


@dataclass(frozen=True, kw_only=True)
class AccountLockoutSection:
    enabled: bool
    max_failed_attempts: int
    lockout_duration_seconds: int
    reset_on_success: bool


@dataclass(frozen=True, kw_only=True)
class BindingSwitchSection:
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class TokenSecuritySection:
    """``token_management.security`` (absent: its defaults)."""

    require_https: bool
    #: ``"auto"``, ``"true"``, ``"false"``, or the booleans.
    cookie_secure: bool | str
    cookie_samesite: str
    cookie_httponly: bool
    csrf_protection: bool
    rate_limiting: Mapping[str, RateLimitSection]
    password_policy: PasswordPolicySection | None
    session_fingerprinting: BindingSwitchSection | None
    account_lockout: AccountLockoutSection | None
    ip_validation: BindingSwitchSection | None
    token_fingerprinting: Mapping[str, Any] | None


@dataclass(frozen=True, kw_only=True)
class TokenManagementSection:
    """``token_management`` (None when the manifest has none: no tokens)."""

    enabled: bool
    access_token_ttl: int
    refresh_token_ttl: int
    token_rotation: bool
    max_sessions_per_user: int | None
    session_inactivity_timeout: int | None
    security: TokenSecuritySection


__all__ = [
    "AccountLockoutSection",
    "AnonymousSection",
    "AuditSection",
    "AuthSection",
    "AuthSecuritySection",
    "AuthorizationSection",
    "BindingSwitchSection",
    "CsrfSection",
    "HstsSection",
    "JwtSection",
    "OAuthProviderSection",
    "OAuthSection",
    "PasswordPolicySection",
    "PasswordResetSection",
    "PolicySection",
    "RateLimitSection",
    "SessionBindingSection",
    "TokenManagementSection",
    "TokenSecuritySection",
    "TwoFactorSection",
    "UsersSection",
    "VerificationSection",
]
