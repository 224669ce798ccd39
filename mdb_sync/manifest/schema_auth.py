"""``auth`` and ``token_management``: who may use an app and how its sessions and tokens work.

The shapes follow the seeds and the predecessor; :mod:`mdb_sync.auth` (and ``flask_mdb``)
act on them. Defaults are filled for the keys of objects that are present; absent objects
stay absent, so a feature can tell "not configured" from "configured with defaults".
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, validates_schema

from ..scoping.names import SLUG_RE
from .fields import (
    EMAIL_RE,
    IDENT_HELP,
    IDENT_RE,
    AnyObj,
    BaseSchema,
    Bool,
    Int,
    ListOf,
    MapOf,
    Obj,
    OneOfTypes,
    Str,
    route,
    strings,
    url,
)
from .schema_indexes import collection_key
from .schema_oauth import OAuthSchema

COOKIE_RE = r"[A-Za-z0-9_-]{1,64}"
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")


def _route_key(key: str) -> str | None:
    if not key.startswith("/") or any(ch.isspace() for ch in key):
        return "keys must be paths starting with '/'"
    return None


def _ident_key(key: str) -> str | None:
    return None if re.fullmatch(IDENT_RE, key) else "keys " + IDENT_HELP


def _casbin_model(value: str) -> str | None:
    if value in ("rbac", "acl") or value.endswith(".conf") or "/" in value:
        return None
    return "must be 'rbac', 'acl' or the path of a Casbin model file (.conf)"


def collection_name(**kwargs: Any) -> Str:
    """A logical collection name, validated like the sandbox validates them."""
    return Str(max_len=120, check=collection_key, **kwargs)


class RateLimitSchema(BaseSchema):
    max_attempts = Int(minimum=1, maximum=1_000_000, load_default=5)
    window_seconds = Int(minimum=1, maximum=86_400 * 30, load_default=300)


class AuthorizationSchema(BaseSchema):
    model = Str(max_len=1024, check=_casbin_model, load_default="rbac")
    policies_collection = collection_name()
    link_users_roles = Bool(load_default=True)
    default_roles = strings()
    initial_policies = ListOf(
        OneOfTypes(
            (list, ListOf(Str(), min_items=2, max_items=4)),
            (dict, AnyObj()),
            what="a [subject, object, action] array or an object",
        )
    )
    initial_roles = ListOf(AnyObj())
    api_key = Str(max_len=4096, allow_none=True)
    url = Str(max_len=2048, allow_none=True)


class PolicySchema(BaseSchema):
    provider = Str(choices=("casbin", "oso", "custom"), load_default="casbin")
    required = Bool(load_default=True)
    allow_anonymous = Bool(load_default=False)
    authorization = Obj(AuthorizationSchema)
    allowed_roles = strings()
    allowed_users = strings()
    denied_users = strings()
    required_permissions = ListOf(
        Str(pattern=r"[^:\s]+:[^:\s]+", pattern_help="must be 'resource:action'"), unique=True
    )
    owner_can_access = Bool(load_default=True)
    custom_resource = Str(max_len=256)
    custom_actions = strings()


def _password_hash(value: str) -> str | None:
    if value.startswith(PASSWORD_HASH_PREFIXES):
        return None
    return "must be a password hash (mdb-scrypt$..., scrypt:... or pbkdf2:...)"


#: The hash formats a demo user's ``password_hash`` may have (those the hasher verifies).
PASSWORD_HASH_PREFIXES = ("mdb-scrypt$", "scrypt:", "pbkdf2:")


class DemoUserSchema(BaseSchema):
    """A user created when the app's auth starts. Give ``password_hash`` (e.g. from
    ``PasswordHasher().hash(...)``), or ``password``: the registry stores only its hash
    (hashed at registration), never the clear password."""

    email = Str(required=True, pattern=EMAIL_RE, pattern_help="must be an email address")
    password = Str(max_len=1024)
    password_hash = Str(max_len=1024, check=_password_hash)
    role = Str(max_len=128, load_default="user")
    roles = strings()
    auto_create = Bool(load_default=True)
    link_to_platform = Bool()
    extra_data = AnyObj()

    @validates_schema
    def _one_password(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "password" in data and "password_hash" in data:
            raise ValidationError({"password": ["give password or password_hash, not both"]})


class PasswordResetSchema(BaseSchema):
    """``auth.users.password_reset``: "forgot password" links (single use, expiring)."""

    enabled = Bool(load_default=True)
    token_ttl_seconds = Int(minimum=300, maximum=86_400, load_default=3600)


class VerificationSchema(BaseSchema):
    """``auth.users.require_verification`` as an object: e-mail addresses are confirmed by a
    single-use link; what an account may do before (``unverified``)."""

    enabled = Bool(load_default=True)
    unverified = Str(choices=("refuse", "read_only"), load_default="refuse")
    token_ttl_seconds = Int(minimum=300, maximum=86_400 * 7, load_default=86_400)


class TwoFactorSchema(BaseSchema):
    """``auth.users.two_factor``: TOTP codes as a second sign-in step, for accounts that
    enrol (recovery codes, rate-limited checks, optionally remembered devices)."""

    enabled = Bool(load_default=True)
    issuer_name = Str(max_len=64)
    remember_device_days = Int(minimum=0, maximum=365, load_default=0)
    max_failed_attempts = Int(minimum=1, maximum=100, load_default=5)
    lockout_duration_seconds = Int(minimum=60, maximum=86_400, load_default=900)


class UsersSchema(BaseSchema):
    enabled = Bool(load_default=False)
    strategy = Str(choices=("app_users", "global_users"), load_default="app_users")
    collection_name = collection_name()
    session_cookie_name = Str(
        pattern=COOKIE_RE, pattern_help="must be 1-64 letters, digits, '_' or '-'"
    )
    session_ttl_seconds = Int(minimum=60, maximum=86_400 * 400, load_default=86_400)
    allow_registration = Bool(load_default=False)
    password_reset = Obj(PasswordResetSchema)
    demo_users = ListOf(Obj(DemoUserSchema))
    link_platform_users = Bool()
    user_id_field = Str(max_len=128)
    allow_demo_access = Bool()
    demo_user_seed_strategy = Str(choices=("auto", "manual", "disabled"))
    require_verification = OneOfTypes(
        (bool, Bool()), (dict, Obj(VerificationSchema)), what="true, false or an object"
    )
    fresh_login_seconds = Int(minimum=30, maximum=86_400 * 7)
    two_factor = Obj(TwoFactorSchema)


class CsrfSchema(BaseSchema):
    enabled = Bool(load_default=True)
    exempt_routes = ListOf(route(), unique=True)
    rotate_tokens = Bool(load_default=False)
    token_ttl = Int(minimum=60, maximum=86_400 * 30, load_default=3600)


class HstsSchema(BaseSchema):
    enabled = Bool(load_default=True)
    max_age = Int(minimum=0, maximum=2 * 31_536_000, load_default=31_536_000)
    include_subdomains = Bool(load_default=True)
    preload = Bool(load_default=False)

    @validates_schema
    def _preload_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("preload") and (
            not data.get("include_subdomains") or data.get("max_age", 0) < 31_536_000
        ):
            raise ValidationError(
                {"preload": ["preload requires include_subdomains and max_age >= 31536000"]}
            )


class AuthSecuritySchema(BaseSchema):
    hsts = Obj(HstsSchema)


class JwtSchema(BaseSchema):
    algorithm = Str(choices=JWT_ALGORITHMS, load_default="HS256")
    token_expiry_hours = Int(minimum=1, maximum=24 * 365, load_default=24)
    issuer = Str(max_len=256)
    audience = Str(max_len=256)
    leeway_seconds = Int(minimum=0, maximum=300)
    secret_env = Str(
        pattern=r"[A-Za-z_][A-Za-z0-9_]*", pattern_help="must be an environment variable name"
    )


class PasswordPolicySchema(BaseSchema):
    min_length = Int(minimum=6, maximum=1024, load_default=12)
    max_length = Int(minimum=6, maximum=4096)
    min_entropy_bits = Int(minimum=0, maximum=512)
    require_uppercase = Bool(load_default=True)
    require_lowercase = Bool(load_default=True)
    require_numbers = Bool(load_default=True)
    require_special = Bool(load_default=False)
    check_common_passwords = Bool(load_default=True)
    check_breaches = Bool(load_default=False)
    allow_plain_text = Bool()

    @validates_schema
    def _lengths(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "max_length" in data and data["max_length"] < data.get("min_length", 12):
            raise ValidationError({"max_length": ["must be at least min_length"]})
        if data.get("allow_plain_text"):
            raise ValidationError({"allow_plain_text": ["plain-text passwords are never stored"]})


class AuditSchema(BaseSchema):
    enabled = Bool(load_default=True)
    retention_days = Int(minimum=1, maximum=3650, load_default=90)
    collection_name = collection_name()
    events = strings()


class SessionBindingSchema(BaseSchema):
    bind_ip = Bool()
    bind_fingerprint = Bool()
    allow_ip_change_with_reauth = Bool()


class AnonymousSchema(BaseSchema):
    """``auth.anonymous``: the server-side identities of anonymous visitors (with
    ``auth.policy.allow_anonymous``)."""

    ttl_seconds = Int(minimum=60, maximum=86_400 * 90, load_default=604_800)
    max_new_per_address = Obj(RateLimitSchema)


class AuthSchema(BaseSchema):
    """``auth``: ``policy`` (authorization), ``users`` (app users) and the security knobs."""

    mode = Str(choices=("app", "shared"), load_default="app")
    roles = strings()
    default_role = Str(max_len=128)
    require_role = Str(max_len=128)
    public_routes = ListOf(route(), unique=True)
    auth_hub_url = url()
    related_apps = MapOf(
        url(), key=lambda k: None if SLUG_RE.fullmatch(k) else "keys must be app slugs"
    )
    policy = Obj(PolicySchema)
    users = Obj(UsersSchema)
    rate_limits = MapOf(Obj(RateLimitSchema), key=_route_key)
    audit = Obj(AuditSchema)
    csrf_protection = OneOfTypes(
        (bool, Bool()), (dict, Obj(CsrfSchema)), what="true, false or an object"
    )
    security = Obj(AuthSecuritySchema)
    jwt = Obj(JwtSchema)
    password_policy = Obj(PasswordPolicySchema)
    session_binding = Obj(SessionBindingSchema)
    oauth = Obj(OAuthSchema)
    anonymous = Obj(AnonymousSchema)

    @validates_schema
    def _shared_sign_on(self, data: dict[str, Any], **kwargs: Any) -> None:
        """``mode: "shared"``: a hub lists its ``related_apps``; a related app names its hub
        in ``related_apps`` (one entry) and where it signs in, ``auth_hub_url``."""
        hub_url, related = data.get("auth_hub_url"), data.get("related_apps")
        if data.get("mode") != "shared":
            return  # without it both are inert (logged when the app's auth starts)
        users = data.get("users") or {}
        if not users.get("enabled") or users.get("strategy") != "global_users":
            message = '"shared" needs auth.users with strategy "global_users"'
            raise ValidationError({"mode": [message]})
        if not related:
            raise ValidationError(
                {"related_apps": ["a shared app lists its related apps (a hub) or its hub"]}
            )
        hub_named = next(iter(related.values())).rstrip("/")
        if hub_url is not None and (len(related) != 1 or hub_named != hub_url.rstrip("/")):
            raise ValidationError(
                {"related_apps": ["a related app names its hub alone, with auth_hub_url"]}
            )

    @validates_schema
    def _oauth_needs_users(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "oauth" in data and not (data.get("users") or {}).get("enabled"):
            raise ValidationError(
                {"oauth": ["OAuth sign-in needs accounts: set auth.users.enabled to true"]}
            )

    @validates_schema
    def _roles(self, data: dict[str, Any], **kwargs: Any) -> None:
        roles = data.get("roles")
        errors = {}
        for key in ("default_role", "require_role"):
            if key in data and roles is not None and data[key] not in roles:
                errors[key] = [f"must be one of roles ({', '.join(roles) or 'none defined'})"]
        if errors:
            raise ValidationError(errors)


class AccountLockoutSchema(BaseSchema):
    """Lock an account's sign-in after repeated wrong passwords, whichever client sends them
    (the per-address rate limits do not stop a distributed guesser)."""

    enabled = Bool(load_default=True)
    max_failed_attempts = Int(minimum=1, maximum=1000, load_default=5)
    lockout_duration_seconds = Int(minimum=1, maximum=86_400 * 30, load_default=900)
    reset_on_success = Bool(load_default=True)


class BindingSwitchSchema(BaseSchema):
    """``session_fingerprinting`` / ``ip_validation``: the older spelling of
    ``auth.session_binding``'s ``bind_fingerprint`` / ``bind_ip``."""

    enabled = Bool(load_default=True)


class TokenSecuritySchema(BaseSchema):
    require_https = Bool(load_default=False)
    cookie_secure = OneOfTypes(
        (bool, Bool()), (str, Str(choices=("auto", "true", "false"))), what="'auto', true or false"
    )
    cookie_samesite = Str(choices=("strict", "lax", "none"))
    cookie_httponly = Bool()
    csrf_protection = Bool(load_default=True)
    rate_limiting = MapOf(Obj(RateLimitSchema), key=_ident_key)
    password_policy = Obj(PasswordPolicySchema)
    session_fingerprinting = Obj(BindingSwitchSchema)
    account_lockout = Obj(AccountLockoutSchema)
    ip_validation = Obj(BindingSwitchSchema)
    token_fingerprinting = AnyObj()

    @validates_schema
    def _samesite(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("cookie_samesite") == "none" and data.get("cookie_secure") in (False, "false"):
            raise ValidationError(
                {"cookie_samesite": ["'none' requires secure cookies (cookie_secure not false)"]}
            )


class TokenManagementSchema(BaseSchema):
    enabled = Bool(load_default=True)
    access_token_ttl = Int(minimum=60, maximum=86_400, load_default=900)
    refresh_token_ttl = Int(minimum=60, maximum=86_400 * 400, load_default=604_800)
    token_rotation = Bool(load_default=True)
    max_sessions_per_user = Int(minimum=1, maximum=10_000)
    session_inactivity_timeout = Int(minimum=60, maximum=86_400 * 30)
    auto_setup = Bool()
    security = Obj(TokenSecuritySchema)

    @validates_schema
    def _ttls(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("refresh_token_ttl", 604_800) <= data.get("access_token_ttl", 900):
            raise ValidationError({"refresh_token_ttl": ["must be longer than access_token_ttl"]})
