"""The auth settings of one app, read from its validated manifest.

The manifest schemas (:mod:`mdb_sync.manifest.schema_auth`) validate ``auth`` and
``token_management``; :class:`AuthConfig` turns them into one typed object with every
default decided here, so the rest of :mod:`mdb_sync.auth` (and ``flask_mdb``) never digs
through nested dicts. Absent blocks mean "off": no ``auth.users`` -> no user store, no
``token_management`` -> no tokens, no ``auth.policy`` -> no route protection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..manifest.model import Manifest, manifest_dict
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
DEFAULT_POLICY_COLLECTION = "casbin_policies"


@dataclass(frozen=True)
class RateLimit:
    max_attempts: int
    window_seconds: int


@dataclass(frozen=True)
class Verification:
    """``auth.users.require_verification``."""

    unverified: str = "refuse"  # "refuse": no sign-in until verified; "read_only"
    token_ttl: int = 86_400


@dataclass(frozen=True)
class TwoFactor:
    """``auth.users.two_factor``."""

    issuer_name: str | None = None
    remember_device_days: int = 0
    max_failed_attempts: int = 5
    lockout_seconds: int = 900


@dataclass(frozen=True)
class AuthConfig:
    """Everything :mod:`mdb_sync.auth` needs to know about one app's auth."""

    slug: str
    manifest_present: bool = False
    # --- users
    users_enabled: bool = False
    strategy: str = "app_users"
    users_collection: str = "users"
    session_cookie_name: str = ""
    session_ttl: int = 86_400
    session_inactivity_timeout: int | None = None
    max_sessions_per_user: int | None = None
    allow_registration: bool = False
    #: Seconds a password-reset token lives; None: password reset is off.
    password_reset_ttl: int | None = None
    demo_users: tuple[dict[str, Any], ...] = ()
    roles: tuple[str, ...] = ()
    default_roles: tuple[str, ...] = ()
    require_role: str | None = None
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    bind_ip: bool = False
    bind_fingerprint: bool = False
    lockout: LockoutPolicy | None = None
    # --- authorization
    policy_present: bool = False
    policy_required: bool = False
    allow_anonymous: bool = True
    provider: str = "casbin"
    model: str = "rbac"
    policies_collection: str = DEFAULT_POLICY_COLLECTION
    link_users_roles: bool = True
    initial_policies: tuple[Any, ...] = ()
    initial_roles: tuple[Any, ...] = ()
    allowed_roles: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    denied_users: tuple[str, ...] = ()
    required_permissions: tuple[tuple[str, str], ...] = ()
    owner_can_access: bool = True
    owner: str | None = None
    public_routes: tuple[str, ...] = ()
    # --- tokens
    tokens_enabled: bool = False
    access_ttl: int = 900
    refresh_ttl: int = 604_800
    token_rotation: bool = True
    algorithm: str = "HS256"
    issuer: str = "mdb-sync"
    audience: str | None = None
    leeway: int = 5
    secret_env: str | None = None
    # --- transport security
    require_https: bool = False
    cookie_secure: str = "auto"  # "auto" | "true" | "false"
    cookie_samesite: str = "Lax"
    cookie_httponly: bool = True
    csrf_enabled: bool = False
    csrf_exempt_routes: tuple[str, ...] = ()
    csrf_token_ttl: int = 3600
    hsts: dict[str, Any] = field(default_factory=dict)
    # --- rate limits: by name (login, register, refresh, ...) and by route path
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    route_limits: dict[str, RateLimit] = field(default_factory=dict)
    # --- audit
    audit_collection: str | None = None
    audit_retention_days: int = 90
    audit_events: tuple[str, ...] = ()
    # --- OAuth / OpenID Connect providers (auth.oauth); None: none
    oauth: OAuthSettings | None = None
    # --- platform sign-on (auth.mode "shared")
    mode: str = "app"
    #: The related apps of a hub, or the hub of a related app: {slug: its auth URL}.
    related_apps: dict[str, str] = field(default_factory=dict)
    #: Where a related app's users sign in (the hub's auth URL); None for a hub.
    hub_url: str | None = None
    # --- e-mail verification, re-authentication, two-factor
    verification: Verification | None = None
    fresh_login_seconds: int = 900
    two_factor: TwoFactor | None = None
    # --- anonymous identities (auth.policy.allow_anonymous + auth.anonymous)
    anonymous_identities: bool = False
    anonymous_ttl: int = 604_800

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
        """The config of a *validated* manifest (defaults already filled by the schemas): a
        :class:`~mdb_sync.manifest.model.Manifest` or its document."""
        manifest = manifest_dict(manifest)
        slug = str(manifest.get("slug", ""))
        auth: Mapping[str, Any] = manifest.get("auth") or {}
        users: Mapping[str, Any] = auth.get("users") or {}
        policy: Mapping[str, Any] | None = auth.get("policy")
        authz: Mapping[str, Any] = (policy or {}).get("authorization") or {}
        tm: Mapping[str, Any] | None = manifest.get("token_management")
        sec: Mapping[str, Any] = (tm or {}).get("security") or {}
        jwt: Mapping[str, Any] = auth.get("jwt") or {}
        binding: Mapping[str, Any] = auth.get("session_binding") or {}
        reset: Mapping[str, Any] = users.get("password_reset") or {}

        csrf = auth.get("csrf_protection")
        csrf_block: Mapping[str, Any] = csrf if isinstance(csrf, Mapping) else {}
        if isinstance(csrf, Mapping):
            csrf_on = bool(csrf.get("enabled", True))
        elif isinstance(csrf, bool):
            csrf_on = csrf
        else:  # not said in auth: token_management.security decides, else on with users
            csrf_on = bool(sec.get("csrf_protection", True)) if tm is not None else True
        users_on = bool(users.get("enabled", False))
        lockout_block = sec.get("account_lockout")

        limits = {n: RateLimit(*v) for n, v in DEFAULT_RATE_LIMITS.items()}
        for name, value in (sec.get("rate_limiting") or {}).items():
            limits[name] = RateLimit(value["max_attempts"], value["window_seconds"])
        routes = {
            path: RateLimit(v["max_attempts"], v["window_seconds"])
            for path, v in (auth.get("rate_limits") or {}).items()
        }
        roles = tuple(auth.get("roles") or ())
        default_roles = tuple(authz.get("default_roles") or ())
        if not default_roles and auth.get("default_role"):
            default_roles = (auth["default_role"],)
        permissions = tuple(
            tuple(p.split(":", 1)) for p in (policy or {}).get("required_permissions") or ()
        )
        pw_block = auth.get("password_policy") or sec.get("password_policy")
        audit = auth.get("audit") or {}
        samesite = str(sec.get("cookie_samesite") or "lax").capitalize()
        secure = sec.get("cookie_secure", "auto")
        tokens_on = tm is not None and bool(tm.get("enabled", True))
        verification = users.get("require_verification")
        if isinstance(verification, Mapping) and verification.get("enabled", True):
            verify: Verification | None = Verification(
                str(verification.get("unverified", "refuse")),
                int(verification.get("token_ttl_seconds", 86_400)),
            )
        else:
            verify = Verification() if verification is True else None
        tf_block: Mapping[str, Any] = users.get("two_factor") or {}
        two_factor = (
            TwoFactor(
                issuer_name=tf_block.get("issuer_name"),
                remember_device_days=int(tf_block.get("remember_device_days", 0)),
                max_failed_attempts=int(tf_block.get("max_failed_attempts", 5)),
                lockout_seconds=int(tf_block.get("lockout_duration_seconds", 900)),
            )
            if _switch(users.get("two_factor"))
            else None
        )
        anonymous: Mapping[str, Any] = auth.get("anonymous") or {}
        new_anon = anonymous.get("max_new_per_address")
        if new_anon:
            limits["anonymous"] = RateLimit(new_anon["max_attempts"], new_anon["window_seconds"])
        shared = auth.get("mode") == "shared"
        return cls(
            slug=slug,
            manifest_present=bool(auth) or tm is not None,
            users_enabled=users_on,
            strategy=users.get("strategy", "app_users"),
            users_collection=users.get("collection_name") or "users",
            session_cookie_name=users.get("session_cookie_name") or f"{slug}_session",
            session_ttl=int(users.get("session_ttl_seconds", 86_400)),
            session_inactivity_timeout=(tm or {}).get("session_inactivity_timeout"),
            max_sessions_per_user=(tm or {}).get("max_sessions_per_user"),
            allow_registration=bool(users.get("allow_registration", False)),
            password_reset_ttl=(
                int(reset.get("token_ttl_seconds", 3600)) if _switch(reset) else None
            ),
            demo_users=tuple(
                dict(u)
                for u in users.get("demo_users") or ()
                if users.get("demo_user_seed_strategy", "auto") == "auto"
                and u.get("auto_create", True)
            ),
            roles=roles,
            default_roles=default_roles,
            require_role=auth.get("require_role"),
            password_policy=PasswordPolicy.from_manifest(pw_block),
            bind_ip=bool(binding.get("bind_ip", _switch(sec.get("ip_validation")))),
            bind_fingerprint=bool(
                binding.get("bind_fingerprint", _switch(sec.get("session_fingerprinting")))
            ),
            lockout=(
                LockoutPolicy.for_shared_accounts(LockoutPolicy.from_manifest(lockout_block))
                if users_on and users.get("strategy") == "global_users"
                else LockoutPolicy.from_manifest(lockout_block)
            ),
            policy_present=policy is not None,
            policy_required=bool((policy or {}).get("required", False)),
            allow_anonymous=bool((policy or {}).get("allow_anonymous", policy is None)),
            provider=(policy or {}).get("provider", "casbin"),
            model=authz.get("model", "rbac"),
            policies_collection=authz.get("policies_collection") or DEFAULT_POLICY_COLLECTION,
            link_users_roles=bool(authz.get("link_users_roles", True)),
            initial_policies=tuple(authz.get("initial_policies") or ()),
            initial_roles=tuple(authz.get("initial_roles") or ()),
            allowed_roles=tuple((policy or {}).get("allowed_roles") or ()),
            allowed_users=tuple((policy or {}).get("allowed_users") or ()),
            denied_users=tuple((policy or {}).get("denied_users") or ()),
            required_permissions=permissions,
            owner_can_access=bool((policy or {}).get("owner_can_access", True)),
            owner=manifest.get("developer_id"),
            public_routes=tuple(auth.get("public_routes") or ()),
            tokens_enabled=tokens_on,
            access_ttl=int((tm or {}).get("access_token_ttl", 900)),
            refresh_ttl=int((tm or {}).get("refresh_token_ttl", 604_800)),
            token_rotation=bool((tm or {}).get("token_rotation", True)),
            algorithm=jwt.get("algorithm", "HS256"),
            issuer=jwt.get("issuer") or "mdb-sync",
            audience=jwt.get("audience"),
            leeway=int(jwt.get("leeway_seconds", 5)),
            secret_env=jwt.get("secret_env"),
            require_https=bool(sec.get("require_https", False)),
            cookie_secure=str(secure).lower(),
            cookie_samesite=samesite,
            cookie_httponly=bool(sec.get("cookie_httponly", True)),
            csrf_enabled=csrf_on and (users_on or bool(csrf_block)),
            csrf_exempt_routes=tuple(csrf_block.get("exempt_routes") or ()),
            csrf_token_ttl=int(csrf_block.get("token_ttl", 3600)),
            hsts=dict((auth.get("security") or {}).get("hsts") or {}),
            rate_limits=limits,
            route_limits=routes,
            audit_collection=(
                (audit.get("collection_name") or "auth_audit")
                if audit and audit.get("enabled", True)
                else None
            ),
            audit_retention_days=int(audit.get("retention_days", 90)),
            audit_events=tuple(audit.get("events") or ()),
            oauth=OAuthSettings.from_manifest(
                auth.get("oauth"), allow_registration=bool(users.get("allow_registration", False))
            ),
            mode="shared" if shared else "app",
            related_apps=dict(auth.get("related_apps") or {}) if shared else {},
            hub_url=auth.get("auth_hub_url") if shared else None,
            verification=verify if users_on else None,
            fresh_login_seconds=int(users.get("fresh_login_seconds", 900)),
            two_factor=two_factor if users_on else None,
            anonymous_identities=bool(
                users_on and policy is not None and policy.get("allow_anonymous") is True
            ),
            anonymous_ttl=int(anonymous.get("ttl_seconds", 604_800)),
        )


def inert_settings(manifest: Manifest | Mapping[str, Any] | None) -> list[str]:
    """The auth settings of ``manifest`` that are accepted (manifests written for other
    deployments stay valid) but have no effect here — each is logged when the app's auth
    starts, so nobody believes they are protected by them."""
    manifest = manifest_dict(manifest)
    auth: Mapping[str, Any] = manifest.get("auth") or {}
    sec: Mapping[str, Any] = (manifest.get("token_management") or {}).get("security") or {}
    found: list[str] = []
    if auth.get("mode") != "shared":  # they mean something in a shared app only
        found.extend(
            f"auth.{key} (without mode 'shared')"
            for key in ("auth_hub_url", "related_apps")
            if key in auth
        )
    if (auth.get("session_binding") or {}).get("allow_ip_change_with_reauth"):
        found.append("auth.session_binding.allow_ip_change_with_reauth")
    if _switch(sec.get("token_fingerprinting")):
        found.append("token_management.security.token_fingerprinting")
    for where, block in (("auth", auth), ("token_management.security", sec)):
        if (block.get("password_policy") or {}).get("check_breaches"):
            found.append(f"{where}.password_policy.check_breaches (needs a breach service)")
    return found


def _switch(block: Any) -> bool:
    """An ``{"enabled": ...}`` block (enabled when present, unless it says otherwise)."""
    return bool(block) and bool(block.get("enabled", True))


def route_matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """``path`` is one of ``patterns``: exact, or a prefix when the pattern ends with ``*``."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern or (pattern.endswith("/") is False and path == pattern + "/"):
            return True
    return False
