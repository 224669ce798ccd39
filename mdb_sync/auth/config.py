"""The auth settings of one app, read from its typed manifest.

The manifest schemas (:mod:`mdb_sync.manifest.schema_auth`) validate ``auth`` and
``token_management``, fill their defaults and type them
(:mod:`mdb_sync.manifest.model_auth`); :class:`AuthConfig` flattens those sections into the
one object the rest of :mod:`mdb_sync.auth` (and ``flask_mdb``) reads, deciding only what
spans several keys — where a setting may be given in two places (``auth.csrf_protection``
or ``token_management.security.csrf_protection``), what an absent block means. Absent blocks
mean "off": no ``auth.users`` -> no user store, no ``token_management`` -> no tokens, no
``auth.policy`` -> no route protection; the values of an absent block that still apply (the
token lifetimes, ``auth.jwt``...) are its schema defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..manifest.fields import typed_defaults
from ..manifest.frozen import thaw
from ..manifest.model import Manifest, as_manifest
from ..manifest.model_auth import AuthSection, BindingSwitchSection, CsrfSection
from ..manifest.schema_auth import (
    AuditSchema,
    AuthSchema,
    CsrfSchema,
    PolicySchema,
    TokenManagementSchema,
    UsersSchema,
)
from .lockout import LockoutPolicy
from .oauth.settings import OAuthSettings
from .passwords import PasswordPolicy

#: Login/register limits applied when the manifest sets none: brute force must cost time
#: even in an app that forgot to configure it (per client address).
DEFAULT_RATE_LIMITS = {
    "login": (10, 300),
    "register": (10, 3600),
    "reset": (5, 3600),
    "oauth": (30, 300),  # OAuth redirects and callbacks (a sign-in is two)
    "platform": (60, 300),  # platform sign-on redirects and hand-offs (a sign-on is two)
    "verify": (10, 3600),  # verification links asked for again, per client address
    "two_factor": (30, 300),  # second-step codes, per client address (per account: below)
    "anonymous": (20, 3600),  # new anonymous identities per client address
}


@dataclass(frozen=True)
class RateLimit:
    max_attempts: int
    window_seconds: int


@dataclass(frozen=True)
class Verification:
    """``auth.users.require_verification``."""

    unverified: str  # "refuse": no sign-in until verified; "read_only"
    token_ttl: int


@dataclass(frozen=True)
class TwoFactor:
    """``auth.users.two_factor``."""

    issuer_name: str | None
    remember_device_days: int
    max_failed_attempts: int
    lockout_seconds: int


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """Everything :mod:`mdb_sync.auth` needs to know about one app's auth (build it with
    :meth:`from_manifest`)."""

    slug: str
    manifest_present: bool
    # --- users
    users_enabled: bool
    strategy: str
    users_collection: str
    session_cookie_name: str
    session_ttl: int
    session_inactivity_timeout: int | None
    max_sessions_per_user: int | None
    allow_registration: bool
    #: Seconds a password-reset token lives; None: password reset is off.
    password_reset_ttl: int | None
    demo_users: tuple[dict[str, Any], ...]
    roles: tuple[str, ...]
    default_roles: tuple[str, ...]
    require_role: str | None
    password_policy: PasswordPolicy
    bind_ip: bool
    bind_fingerprint: bool
    lockout: LockoutPolicy | None
    # --- authorization
    policy_present: bool
    policy_required: bool
    allow_anonymous: bool
    provider: str
    model: str
    policies_collection: str
    link_users_roles: bool
    initial_policies: tuple[Any, ...]
    initial_roles: tuple[Any, ...]
    allowed_roles: tuple[str, ...]
    allowed_users: tuple[str, ...]
    denied_users: tuple[str, ...]
    required_permissions: tuple[tuple[str, str], ...]
    owner_can_access: bool
    owner: str | None
    public_routes: tuple[str, ...]
    # --- tokens
    tokens_enabled: bool
    access_ttl: int
    refresh_ttl: int
    token_rotation: bool
    algorithm: str
    issuer: str
    audience: str | None
    leeway: int
    secret_env: str | None
    # --- transport security
    require_https: bool
    cookie_secure: str  # "auto" | "true" | "false"
    cookie_samesite: str  # "Strict" | "Lax" | "None"
    cookie_httponly: bool
    csrf_enabled: bool
    csrf_exempt_routes: tuple[str, ...]
    csrf_token_ttl: int
    #: ``auth.security.hsts`` as a dict (empty: not configured).
    hsts: dict[str, Any]
    # --- rate limits: by name (login, register, refresh, ...) and by route path
    rate_limits: dict[str, RateLimit]
    route_limits: dict[str, RateLimit]
    # --- audit
    audit_collection: str | None
    audit_retention_days: int
    audit_events: tuple[str, ...]
    # --- OAuth / OpenID Connect providers (auth.oauth); None: none
    oauth: OAuthSettings | None
    # --- platform sign-on (auth.mode "shared")
    mode: str
    #: The related apps of a hub, or the hub of a related app: {slug: its auth URL}.
    related_apps: dict[str, str]
    #: Where a related app's users sign in (the hub's auth URL); None for a hub.
    hub_url: str | None
    # --- e-mail verification, re-authentication, two-factor
    verification: Verification | None
    fresh_login_seconds: int
    two_factor: TwoFactor | None
    # --- anonymous identities (auth.policy.allow_anonymous + auth.anonymous)
    anonymous_identities: bool
    anonymous_ttl: int

    @property
    def shared(self) -> bool:
        """Part of a platform sign-on (``auth.mode: "shared"``)."""
        return self.mode == "shared"

    @property
    def hub_slug(self) -> str | None:
        """A related app's hub (None for a hub or an app of its own)."""
        if not self.shared or self.hub_url is None:
            return None
        return next(iter(self.related_apps), None)

    @property
    def enabled(self) -> bool:
        """True when the app uses any auth feature (users, tokens or a policy)."""
        return self.users_enabled or self.tokens_enabled or self.policy_present

    @property
    def protects_routes(self) -> bool:
        return self.policy_present and self.policy_required and not self.allow_anonymous

    def limit(self, name: str) -> RateLimit | None:
        return self.rate_limits.get(name)

    @classmethod
    def from_manifest(cls, manifest: Manifest | Mapping[str, Any] | None) -> AuthConfig:
        """The config of a manifest's typed ``auth`` and ``token_management`` sections: a
        :class:`~mdb_sync.manifest.model.Manifest`, or a validated document (read through
        the schemas, which raise :class:`~mdb_sync.exceptions.ConfigurationError` naming a
        bad path)."""
        m = as_manifest(manifest)
        slug = m.slug
        given_auth, tm = m.auth, m.token_management
        auth: AuthSection = given_auth or typed_defaults(AuthSchema)
        tokens = tm or typed_defaults(TokenManagementSchema)
        sec = tokens.security
        users = auth.users or typed_defaults(UsersSchema)
        users_on = users.enabled
        policy = auth.policy
        rules = policy or typed_defaults(PolicySchema)
        authz = rules.authorization
        jwt = auth.jwt

        csrf = auth.csrf_protection
        if isinstance(csrf, CsrfSection):
            csrf_on = csrf.enabled
        elif isinstance(csrf, bool):
            csrf_on = csrf
        else:  # not said in auth: token_management.security decides (on by default)
            csrf_on = sec.csrf_protection
        csrf_block = csrf if isinstance(csrf, CsrfSection) else typed_defaults(CsrfSchema)

        limits = {n: RateLimit(*v) for n, v in DEFAULT_RATE_LIMITS.items()}
        for name, value in sec.rate_limiting.items():
            limits[name] = RateLimit(value.max_attempts, value.window_seconds)
        new_anonymous = auth.anonymous.max_new_per_address
        if new_anonymous is not None:
            limits["anonymous"] = RateLimit(
                new_anonymous.max_attempts, new_anonymous.window_seconds
            )
        default_roles = authz.default_roles
        if not default_roles and auth.default_role:
            default_roles = (auth.default_role,)
        audit = auth.audit
        verify = users.require_verification
        two_factor = users.two_factor
        reset = users.password_reset
        lockout = LockoutPolicy.from_section(sec.account_lockout)
        if users_on and users.strategy == "global_users":
            lockout = LockoutPolicy.for_shared_accounts(lockout)
        binding = auth.session_binding
        hsts = auth.security.hsts if auth.security is not None else None
        shared = auth.mode == "shared"
        return cls(
            slug=slug,
            manifest_present=given_auth is not None or tm is not None,
            users_enabled=users_on,
            strategy=users.strategy,
            users_collection=users.collection_name,
            session_cookie_name=users.session_cookie_name or f"{slug}_session",
            session_ttl=users.session_ttl_seconds,
            session_inactivity_timeout=tokens.session_inactivity_timeout,
            max_sessions_per_user=tokens.max_sessions_per_user,
            allow_registration=users.allow_registration,
            password_reset_ttl=reset.token_ttl_seconds if reset and reset.enabled else None,
            demo_users=tuple(
                thaw(user)
                for user in users.demo_users
                if users.demo_user_seed_strategy == "auto" and user["auto_create"]
            ),
            roles=auth.roles,
            default_roles=default_roles,
            require_role=auth.require_role,
            password_policy=PasswordPolicy.from_section(
                auth.password_policy or sec.password_policy
            ),
            bind_ip=_bound(binding.bind_ip, sec.ip_validation),
            bind_fingerprint=_bound(binding.bind_fingerprint, sec.session_fingerprinting),
            lockout=lockout,
            policy_present=policy is not None,
            policy_required=policy is not None and policy.required,
            allow_anonymous=policy is None or policy.allow_anonymous,
            provider=rules.provider,
            model=authz.model,
            policies_collection=authz.policies_collection,
            link_users_roles=authz.link_users_roles,
            initial_policies=tuple(thaw(rule) for rule in authz.initial_policies),
            initial_roles=tuple(thaw(role) for role in authz.initial_roles),
            allowed_roles=rules.allowed_roles,
            allowed_users=rules.allowed_users,
            denied_users=rules.denied_users,
            required_permissions=tuple(
                (resource, action)
                for resource, _, action in (p.partition(":") for p in rules.required_permissions)
            ),
            owner_can_access=rules.owner_can_access,
            owner=m.developer_id,
            public_routes=auth.public_routes,
            tokens_enabled=tm is not None and tm.enabled,
            access_ttl=tokens.access_token_ttl,
            refresh_ttl=tokens.refresh_token_ttl,
            token_rotation=tokens.token_rotation,
            algorithm=jwt.algorithm,
            issuer=jwt.issuer,
            audience=jwt.audience,
            leeway=jwt.leeway_seconds,
            secret_env=jwt.secret_env,
            require_https=sec.require_https,
            cookie_secure=str(sec.cookie_secure).lower(),
            cookie_samesite=sec.cookie_samesite.capitalize(),
            cookie_httponly=sec.cookie_httponly,
            csrf_enabled=csrf_on and (users_on or isinstance(csrf, CsrfSection)),
            csrf_exempt_routes=csrf_block.exempt_routes,
            csrf_token_ttl=csrf_block.token_ttl,
            hsts=dict(vars(hsts)) if hsts is not None else {},
            rate_limits=limits,
            route_limits={
                path: RateLimit(v.max_attempts, v.window_seconds)
                for path, v in auth.rate_limits.items()
            },
            audit_collection=audit.collection_name if audit and audit.enabled else None,
            audit_retention_days=(audit or typed_defaults(AuditSchema)).retention_days,
            audit_events=(audit or typed_defaults(AuditSchema)).events,
            oauth=OAuthSettings.from_section(auth.oauth),
            mode="shared" if shared else "app",
            related_apps=dict(auth.related_apps) if shared else {},
            hub_url=auth.auth_hub_url if shared else None,
            verification=(
                Verification(verify.unverified, verify.token_ttl_seconds)
                if users_on and verify is not None and verify.enabled
                else None
            ),
            fresh_login_seconds=users.fresh_login_seconds,
            two_factor=(
                TwoFactor(
                    issuer_name=two_factor.issuer_name,
                    remember_device_days=two_factor.remember_device_days,
                    max_failed_attempts=two_factor.max_failed_attempts,
                    lockout_seconds=two_factor.lockout_duration_seconds,
                )
                if users_on and two_factor is not None and two_factor.enabled
                else None
            ),
            anonymous_identities=users_on and policy is not None and policy.allow_anonymous,
            anonymous_ttl=auth.anonymous.ttl_seconds,
        )


def _bound(given: bool | None, older: BindingSwitchSection | None) -> bool:
    """A session binding: ``auth.session_binding``'s key, else its older spelling in
    ``token_management.security`` (an ``{"enabled": ...}`` block)."""
    if given is not None:
        return given
    return older is not None and older.enabled


def inert_settings(manifest: Manifest | Mapping[str, Any] | None) -> list[str]:
    """The auth settings of ``manifest`` that are accepted (manifests written for other
    deployments stay valid) but have no effect here — each is logged when the app's auth
    starts, so nobody believes they are protected by them."""
    m = as_manifest(manifest)
    auth = m.auth
    sec = (m.token_management or typed_defaults(TokenManagementSchema)).security
    found: list[str] = []
    if auth is not None and auth.mode != "shared":  # they mean something in a shared app only
        if auth.auth_hub_url is not None:
            found.append("auth.auth_hub_url (without mode 'shared')")
        if auth.related_apps:
            found.append("auth.related_apps (without mode 'shared')")
    if auth is not None and auth.session_binding.allow_ip_change_with_reauth:
        found.append("auth.session_binding.allow_ip_change_with_reauth")
    fingerprinting = sec.token_fingerprinting
    if fingerprinting and fingerprinting.get("enabled", True):  # an untyped object
        found.append("token_management.security.token_fingerprinting")
    for where, block in (
        ("auth", auth.password_policy if auth else None),
        ("token_management.security", sec.password_policy),
    ):
        if block is not None and block.check_breaches:
            found.append(f"{where}.password_policy.check_breaches (needs a breach service)")
    return found


def route_matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """``path`` is one of ``patterns``: exact, or a prefix when the pattern ends with ``*``."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern or (pattern.endswith("/") is False and path == pattern + "/"):
            return True
    return False
