"""``auth`` and ``token_management``: who may use an app and how its sessions and tokens work.

The shapes follow the seeds and the predecessor; :mod:`mdb_sync.auth` (and ``flask_mdb``)
act on them, through the typed sections (:mod:`mdb_sync.manifest.model_auth`) each schema
names. Defaults are filled for the keys of objects that are present; absent objects stay
absent in the document, so a feature can tell "not configured" from "configured with
defaults" (their typed value is None, or the defaults where absence means "as usual").
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, post_load, validates_schema

from ..scoping.names import SLUG_RE
from .fields import (
    EMAIL_RE,
    IDENT_HELP,
    IDENT_RE,
    UNMODELLED,
    AnyObj,
    BaseSchema,
    Bool,
    Int,
    ListOf,
    MapOf,
    Obj,
    OneOfTypes,
    Str,
    Switch,
    route,
    strings,
    url,
)
from .model_auth import (
    AccountLockoutSection,
    AnonymousSection,
    AuditSection,
    AuthorizationSection,
    AuthSection,
    AuthSecuritySection,
    BindingSwitchSection,
    CsrfSection,
    HstsSection,
    JwtSection,
    PasswordPolicySection,
    PasswordResetSection,
    PolicySection,
    RateLimitSection,
    SessionBindingSection,
    TokenManagementSection,
    TokenSecuritySection,
    TwoFactorSection,
    UsersSection,
    VerificationSection,
)
from .schema_indexes import collection_key
from .schema_oauth import OAuthSchema

COOKIE_RE = r"[A-Za-z0-9_-]{1,64}"
#: Passwords longer than this are refused before hashing (a megabyte password is a DoS); a
#: ``password_policy.max_length`` above it reads as it.
MAX_PASSWORD_CHARS = 1024
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
    typed_as = RateLimitSection

    max_attempts = Int(
        minimum=1,
        maximum=1_000_000,
        load_default=5,
        metadata={"description": "Attempts allowed within the window."},
    )
    window_seconds = Int(
        minimum=1,
        maximum=86_400 * 30,
        load_default=300,
        metadata={"description": "The window's length, in seconds."},
    )


class AuthorizationSchema(BaseSchema):
    typed_as = AuthorizationSection
    defaults_when_absent = True

    model = Str(
        max_len=1024,
        check=_casbin_model,
        load_default="rbac",
        metadata={
            "description": (
                "The casbin model: rbac (RBAC with domains, the app's slug as domain), acl, "
                "or the path of a model file (.conf)."
            )
        },
    )
    policies_collection = collection_name(
        load_default="casbin_policies",
        metadata={"description": "The app's collection holding casbin rules."},
    )
    link_users_roles = Bool(
        load_default=True,
        metadata={"description": "Mirror users' roles into casbin (subject: the email)."},
    )
    default_roles = strings(metadata={"description": "Roles a new account gets in this app."})
    initial_policies = ListOf(
        OneOfTypes(
            (list, ListOf(Str(), min_items=2, max_items=4)),
            (dict, AnyObj()),
            what="a [subject, object, action] array or an object",
        ),
        metadata={
            "description": (
                "Rules added once: [subject, object, action] (objects match with keyMatch2: "
                "/tasks/:id, /docs/*, or *), [user, role], or objects with sub/obj/act."
            )
        },
    )
    initial_roles = ListOf(
        AnyObj(),
        metadata={"description": 'Role assignments added once: {"user": email, "role": role}.'},
    )
    api_key = Str(
        max_len=4096,
        allow_none=True,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    url = Str(
        max_len=2048,
        allow_none=True,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )


class PolicySchema(BaseSchema):
    typed_as = PolicySection

    provider = Str(
        choices=("casbin", "oso", "custom"),
        load_default="casbin",
        metadata={
            "description": (
                "The authorization provider: casbin, oso (the oso extra) or custom "
                "(MDB_AUTH_PROVIDER)."
            )
        },
    )
    required = Bool(
        load_default=True,
        metadata={
            "description": (
                "Every route but the auth routes, static files, public_routes and @public "
                "views needs a signed-in user (401; browsers go to the sign-in page)."
            )
        },
    )
    allow_anonymous = Bool(
        load_default=False,
        metadata={
            "description": (
                "Let anonymous requests through, and let visitors get an anonymous identity "
                "(see auth.anonymous)."
            )
        },
    )
    authorization = Obj(
        AuthorizationSchema, metadata={"description": "The casbin model and its initial rules."}
    )
    allowed_roles = strings(
        metadata={
            "description": "Only users with one of these roles may use the app (403 otherwise)."
        }
    )
    allowed_users = strings(metadata={"description": "Only these users (emails) may use the app."})
    denied_users = strings(metadata={"description": "These users (emails) are refused."})
    required_permissions = ListOf(
        Str(pattern=r"[^:\s]+:[^:\s]+", pattern_help="must be 'resource:action'"),
        unique=True,
        metadata={
            "description": "Permissions ('resource:action') a user needs for every protected route."
        },
    )
    owner_can_access = Bool(
        load_default=True,
        metadata={
            "description": (
                "The account whose proven email is the manifest's developer_id passes the "
                "access policy."
            )
        },
    )
    custom_resource = Str(
        max_len=256,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    custom_actions = strings(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )


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

    email = Str(
        required=True,
        pattern=EMAIL_RE,
        pattern_help="must be an email address",
        metadata={"description": "The account's email."},
    )
    password = Str(
        max_len=1024,
        metadata={
            "description": (
                "A clear password, checked against the password policy and replaced by its "
                "hash at registration (never stored or exported in clear)."
            )
        },
    )
    password_hash = Str(
        max_len=1024,
        check=_password_hash,
        metadata={
            "description": (
                "A password hash (PasswordHasher().hash(...), or a Werkzeug scrypt:/pbkdf2: hash)."
            )
        },
    )
    role = Str(
        max_len=128,
        load_default="user",
        metadata={"description": "Its role (when roles is absent)."},
    )
    roles = strings(metadata={"description": "Its roles."})
    auto_create = Bool(
        load_default=True, metadata={"description": "Create it when the app's auth starts."}
    )
    link_to_platform = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )
    extra_data = AnyObj(metadata={"description": "Profile fields stored with the user."})

    @validates_schema
    def _one_password(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "password" in data and "password_hash" in data:
            raise ValidationError({"password": ["give password or password_hash, not both"]})


class PasswordResetSchema(BaseSchema):
    """``auth.users.password_reset``: "forgot password" links (single use, expiring)."""

    typed_as = PasswordResetSection

    enabled = Bool(
        load_default=True,
        metadata={
            "description": (
                "Serve /auth/forgot and /auth/reset (needs MDB_EXTERNAL_URL and "
                "MDB_PASSWORD_RESET_SENDER)."
            )
        },
    )
    token_ttl_seconds = Int(
        minimum=300,
        maximum=86_400,
        load_default=3600,
        metadata={"description": "How long a reset link stays valid."},
    )


class VerificationSchema(BaseSchema):
    """``auth.users.require_verification`` as an object: e-mail addresses are confirmed by a
    single-use link; what an account may do before (``unverified``)."""

    typed_as = VerificationSection

    enabled = Bool(
        load_default=True,
        metadata={
            "description": (
                "Mail a link that proves the address at registration (needs "
                "MDB_EMAIL_VERIFICATION_SENDER, MDB_EMAIL_CHANGE_NOTICE_SENDER and "
                "MDB_EXTERNAL_URL)."
            )
        },
    )
    unverified = Str(
        choices=("refuse", "read_only"),
        load_default="refuse",
        metadata={
            "description": (
                "What an unverified account may do: refuse (no sign-in) or read_only (signed "
                "in, unsafe requests refused)."
            )
        },
    )
    token_ttl_seconds = Int(
        minimum=300,
        maximum=86_400 * 7,
        load_default=86_400,
        metadata={"description": "How long a verification link stays valid."},
    )


class TwoFactorSchema(BaseSchema):
    """``auth.users.two_factor``: TOTP codes as a second sign-in step, for accounts that
    enrol (recovery codes, rate-limited checks, optionally remembered devices)."""

    typed_as = TwoFactorSection

    enabled = Bool(
        load_default=True,
        metadata={"description": "Let accounts enrol in TOTP two-factor sign-in."},
    )
    issuer_name = Str(
        max_len=64,
        metadata={
            "description": "The issuer shown by authenticator apps (default: the app's name)."
        },
    )
    remember_device_days = Int(
        minimum=0,
        maximum=365,
        load_default=0,
        metadata={"description": "Days a device may skip the code after a sign-in (0: never)."},
    )
    max_failed_attempts = Int(
        minimum=1,
        maximum=100,
        load_default=5,
        metadata={"description": "Wrong codes checked per account and lockout period."},
    )
    lockout_duration_seconds = Int(
        minimum=60,
        maximum=86_400,
        load_default=900,
        metadata={"description": "The lockout period of code checks."},
    )


class UsersSchema(BaseSchema):
    typed_as = UsersSection

    enabled = Bool(
        load_default=False,
        metadata={"description": "The app has accounts (sign-in, sessions, tokens)."},
    )
    strategy = Str(
        choices=("app_users", "global_users"),
        load_default="app_users",
        metadata={
            "description": (
                "app_users: accounts of this app alone (its users collection); global_users: "
                "one account per email shared by the apps that choose it."
            )
        },
    )
    collection_name = collection_name(
        load_default="users", metadata={"description": "The app's collection of app_users."}
    )
    session_cookie_name = Str(
        pattern=COOKIE_RE,
        pattern_help="must be 1-64 letters, digits, '_' or '-'",
        metadata={
            "description": (
                "The session cookie's name (default <slug>_session; __Host- prefixed over HTTPS)."
            )
        },
    )
    session_ttl_seconds = Int(
        minimum=60,
        maximum=86_400 * 400,
        load_default=86_400,
        metadata={"description": "A session's lifetime, and a 'remember me' cookie's."},
    )
    allow_registration = Bool(
        load_default=False, metadata={"description": "Serve /auth/register (self-registration)."}
    )
    password_reset = Obj(PasswordResetSchema, metadata={"description": "Forgot-password links."})
    demo_users = ListOf(
        Obj(DemoUserSchema),
        metadata={"description": "Accounts created when the app's auth starts."},
    )
    link_platform_users = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )
    user_id_field = Str(
        max_len=128,
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    allow_demo_access = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )
    demo_user_seed_strategy = Str(
        choices=("auto", "manual", "disabled"),
        load_default="auto",
        metadata={
            "description": (
                "auto creates demo_users when the app's auth starts; manual and disabled do not."
            )
        },
    )
    require_verification = Switch(
        VerificationSchema,
        metadata={"description": "Require a proven email address: true, or settings."},
    )
    fresh_login_seconds = Int(
        minimum=30,
        maximum=86_400 * 7,
        load_default=900,
        metadata={"description": "How recent a sign-in @fresh_login_required accepts."},
    )
    two_factor = Obj(TwoFactorSchema, metadata={"description": "TOTP two-factor sign-in."})


class CsrfSchema(BaseSchema):
    typed_as = CsrfSection

    enabled = Bool(
        load_default=True,
        metadata={
            "description": (
                "Check CSRF tokens on unsafe requests whose identity could come from a cookie."
            )
        },
    )
    exempt_routes = ListOf(
        route(), unique=True, metadata={"description": "Paths exempt from the check."}
    )
    rotate_tokens = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        },
    )
    token_ttl = Int(
        minimum=60,
        maximum=86_400 * 30,
        load_default=3600,
        metadata={"description": "Seconds a CSRF token stays valid."},
    )


class HstsSchema(BaseSchema):
    typed_as = HstsSection

    enabled = Bool(
        load_default=True, metadata={"description": "Send Strict-Transport-Security over HTTPS."}
    )
    max_age = Int(
        minimum=0,
        maximum=2 * 31_536_000,
        load_default=31_536_000,
        metadata={"description": "Its max-age, in seconds."},
    )
    include_subdomains = Bool(load_default=True, metadata={"description": "Add includeSubDomains."})
    preload = Bool(
        load_default=False,
        metadata={"description": "Add preload (needs include_subdomains and max_age >= 31536000)."},
    )

    @validates_schema
    def _preload_rules(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("preload") and (
            not data.get("include_subdomains") or data.get("max_age", 0) < 31_536_000
        ):
            raise ValidationError(
                {"preload": ["preload requires include_subdomains and max_age >= 31536000"]}
            )


class AuthSecuritySchema(BaseSchema):
    typed_as = AuthSecuritySection

    hsts = Obj(HstsSchema, metadata={"description": "HTTP Strict Transport Security."})


class JwtSchema(BaseSchema):
    typed_as = JwtSection
    defaults_when_absent = True

    algorithm = Str(
        choices=JWT_ALGORITHMS,
        load_default="HS256",
        metadata={
            "description": (
                "The signing algorithm of tokens; RS*/ES*/EdDSA need MDB_JWT_PRIVATE_KEY."
            )
        },
    )
    token_expiry_hours = Int(
        minimum=1,
        maximum=24 * 365,
        metadata={
            "inert": True,
            "description": (
                "Accepted for manifests written for the predecessor; no effect yet. Token "
                "lifetimes are token_management's access_token_ttl and refresh_token_ttl."
            ),
        },
    )
    issuer = Str(
        max_len=256, load_default="mdb-sync", metadata={"description": "The iss claim of tokens."}
    )
    audience = Str(
        max_len=256,
        metadata={
            "description": (
                "The aud claim: may only repeat the app's slug (a token is valid at its own "
                "app only)."
            )
        },
    )
    leeway_seconds = Int(
        minimum=0,
        maximum=300,
        load_default=5,
        metadata={"description": "Clock skew tolerated when checking exp, iat and nbf."},
    )
    secret_env = Str(
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        pattern_help="must be an environment variable name",
        metadata={
            "description": "The environment variable holding the secret (default MDB_JWT_SECRET)."
        },
    )


class PasswordPolicySchema(BaseSchema):
    typed_as = PasswordPolicySection

    min_length = Int(
        minimum=6,
        maximum=1024,
        load_default=12,
        metadata={"description": "Shortest password accepted."},
    )
    max_length = Int(
        minimum=6,
        maximum=4096,
        load_default=MAX_PASSWORD_CHARS,
        metadata={
            "description": (
                f"Longest password accepted (above {MAX_PASSWORD_CHARS}: {MAX_PASSWORD_CHARS},"
                " the most any password may have)."
            )
        },
    )
    min_entropy_bits = Int(
        minimum=0,
        maximum=512,
        load_default=0,
        metadata={"description": "Least estimated entropy, in bits."},
    )
    require_uppercase = Bool(
        load_default=True, metadata={"description": "Needs an upper-case letter."}
    )
    require_lowercase = Bool(
        load_default=True, metadata={"description": "Needs a lower-case letter."}
    )
    require_numbers = Bool(load_default=True, metadata={"description": "Needs a digit."})
    require_special = Bool(
        load_default=False,
        metadata={"description": "Needs a character other than a letter or digit."},
    )
    check_common_passwords = Bool(
        load_default=True, metadata={"description": "Refuse common passwords."}
    )
    check_breaches = Bool(
        load_default=False,
        metadata={
            "description": (
                "Accepted; no effect (it needs a breach-lookup service): a warning names it."
            )
        },
    )
    allow_plain_text = Bool(
        metadata={
            UNMODELLED: True,
            "description": "Refused when true: passwords are never stored in clear.",
        }
    )

    @validates_schema
    def _lengths(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["max_length"] < data["min_length"]:
            raise ValidationError({"max_length": ["must be at least min_length"]})
        if data.get("allow_plain_text"):
            raise ValidationError({"allow_plain_text": ["plain-text passwords are never stored"]})

    @post_load
    def _cap(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["max_length"] = min(data["max_length"], MAX_PASSWORD_CHARS)
        return data


class AuditSchema(BaseSchema):
    typed_as = AuditSection

    enabled = Bool(
        load_default=True, metadata={"description": "Record auth events in a scoped collection."}
    )
    retention_days = Int(
        minimum=1,
        maximum=3650,
        load_default=90,
        metadata={"description": "Days events are kept (a TTL index)."},
    )
    collection_name = collection_name(
        load_default="auth_audit", metadata={"description": "The app's collection of audit events."}
    )
    events = strings(metadata={"description": "The events to record (default: all)."})


class SessionBindingSchema(BaseSchema):
    typed_as = SessionBindingSection
    defaults_when_absent = True

    bind_ip = Bool(
        metadata={"description": "A session is valid only from the address that signed in."}
    )
    bind_fingerprint = Bool(
        metadata={
            "description": "A session is valid only from the same browser fingerprint (user agent)."
        }
    )
    allow_ip_change_with_reauth = Bool(
        metadata={"description": "Accepted; no effect: a warning names it."}
    )


class AnonymousSchema(BaseSchema):
    """``auth.anonymous``: the server-side identities of anonymous visitors (with
    ``auth.policy.allow_anonymous``)."""

    typed_as = AnonymousSection
    defaults_when_absent = True

    ttl_seconds = Int(
        minimum=60,
        maximum=86_400 * 90,
        load_default=604_800,
        metadata={"description": "How long an anonymous identity lives."},
    )
    max_new_per_address = Obj(
        RateLimitSchema,
        metadata={"description": "New anonymous identities per client address and window."},
    )


class AuthSchema(BaseSchema):
    """``auth``: ``policy`` (authorization), ``users`` (app users) and the security knobs."""

    typed_as = AuthSection

    mode = Str(
        choices=("app", "shared"),
        load_default="app",
        metadata={
            "description": (
                "app, or shared: platform sign-on between a hub and its related apps (needs "
                "users with strategy global_users)."
            )
        },
    )
    roles = strings(
        metadata={
            "description": "The app's roles (default_role and require_role must be among them)."
        }
    )
    default_role = Str(
        max_len=128,
        metadata={
            "description": "The role of new accounts (when authorization.default_roles is absent)."
        },
    )
    require_role = Str(
        max_len=128, metadata={"description": "A role every user needs to use the app."}
    )
    public_routes = ListOf(
        route(),
        unique=True,
        metadata={"description": "Paths open without sign-in when policy.required (* wildcards)."},
    )
    auth_hub_url = url(
        metadata={
            "description": "With mode shared: the hub's auth URL this related app signs in through."
        }
    )
    related_apps = MapOf(
        url(),
        key=lambda k: None if SLUG_RE.fullmatch(k) else "keys must be app slugs",
        metadata={
            "description": (
                "With mode shared: app slug -> the URL where that app's auth routes are served."
            )
        },
    )
    policy = Obj(
        PolicySchema,
        metadata={"description": "Who may use the app: sign-in required, roles, users, casbin."},
    )
    users = Obj(UsersSchema, metadata={"description": "Accounts of the app."})
    rate_limits = MapOf(
        Obj(RateLimitSchema),
        key=_route_key,
        metadata={"description": "Rate limits per route path."},
    )
    audit = Obj(AuditSchema, metadata={"description": "An audit log of auth events."})
    csrf_protection = OneOfTypes(
        (bool, Bool()),
        (dict, Obj(CsrfSchema)),
        what="true, false or an object",
        metadata={
            "description": "CSRF checks: true, false or settings (on with users by default)."
        },
    )
    security = Obj(AuthSecuritySchema, metadata={"description": "Security headers."})
    jwt = Obj(JwtSchema, metadata={"description": "How tokens are signed and checked."})
    password_policy = Obj(
        PasswordPolicySchema,
        metadata={
            "description": "Rules for new passwords (absent: 8+ characters, not a common password)."
        },
    )
    session_binding = Obj(
        SessionBindingSchema,
        metadata={"description": "Bind sessions to the client's address or browser."},
    )
    oauth = Obj(
        OAuthSchema,
        metadata={
            "description": "Sign-in through OAuth 2.0 / OpenID Connect providers (the oauth extra)."
        },
    )
    anonymous = Obj(
        AnonymousSchema, metadata={"description": "Server-side identities of anonymous visitors."}
    )

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

    @post_load
    def _oauth_signup(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Whether a first OAuth sign-in creates an account: the provider's
        ``allow_signup``, else ``oauth.allow_signup``, else ``users.allow_registration``."""
        oauth = data.get("oauth")
        if oauth is not None:
            registration = bool((data.get("users") or {}).get("allow_registration", False))
            signup = oauth.setdefault("allow_signup", registration)
            for provider in (oauth.get("providers") or {}).values():
                provider.setdefault("allow_signup", signup)
        return data

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

    typed_as = AccountLockoutSection

    enabled = Bool(
        load_default=True,
        metadata={
            "description": (
                "Lock an email's sign-in after repeated wrong passwords, from every client."
            )
        },
    )
    max_failed_attempts = Int(
        minimum=1,
        maximum=1000,
        load_default=5,
        metadata={"description": "Wrong passwords checked per email within the lockout period."},
    )
    lockout_duration_seconds = Int(
        minimum=1,
        maximum=86_400 * 30,
        load_default=900,
        metadata={"description": "The lockout period."},
    )
    reset_on_success = Bool(
        load_default=True, metadata={"description": "A successful sign-in clears the count."}
    )


class BindingSwitchSchema(BaseSchema):
    """``session_fingerprinting`` / ``ip_validation``: the older spelling of
    ``auth.session_binding``'s ``bind_fingerprint`` / ``bind_ip``."""

    typed_as = BindingSwitchSection

    enabled = Bool(load_default=True, metadata={"description": "Turn the binding on."})


class TokenSecuritySchema(BaseSchema):
    typed_as = TokenSecuritySection
    defaults_when_absent = True

    require_https = Bool(
        load_default=False,
        metadata={"description": "Redirect GETs to HTTPS and refuse other methods over HTTP."},
    )
    cookie_secure = OneOfTypes(
        (bool, Bool()),
        (str, Str(choices=("auto", "true", "false"))),
        what="'auto', true or false",
        load_default="auto",
        metadata={"description": "Secure cookies: auto (over HTTPS), true or false."},
    )
    cookie_samesite = Str(
        choices=("strict", "lax", "none"),
        load_default="lax",
        metadata={
            "description": (
                "The SameSite attribute of the session cookie (none needs secure cookies)."
            )
        },
    )
    cookie_httponly = Bool(
        load_default=True,
        metadata={"description": "The HttpOnly attribute of the session cookie."},
    )
    csrf_protection = Bool(
        load_default=True,
        metadata={"description": "CSRF checks (auth.csrf_protection says the same)."},
    )
    rate_limiting = MapOf(
        Obj(RateLimitSchema),
        key=_ident_key,
        metadata={
            "description": (
                "Rate limits by name (login, register, refresh, reset, verify, oauth...) per "
                "client address."
            )
        },
    )
    password_policy = Obj(
        PasswordPolicySchema,
        metadata={"description": "Rules for new passwords (as auth.password_policy)."},
    )
    session_fingerprinting = Obj(
        BindingSwitchSchema,
        metadata={"description": "The older spelling of auth.session_binding.bind_fingerprint."},
    )
    account_lockout = Obj(
        AccountLockoutSchema,
        metadata={"description": "Lock an account's sign-in after repeated wrong passwords."},
    )
    ip_validation = Obj(
        BindingSwitchSchema,
        metadata={"description": "The older spelling of auth.session_binding.bind_ip."},
    )
    token_fingerprinting = AnyObj(
        metadata={"description": "Accepted; no effect: a warning names it."}
    )

    @validates_schema
    def _samesite(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("cookie_samesite") == "none" and data.get("cookie_secure") in (False, "false"):
            raise ValidationError(
                {"cookie_samesite": ["'none' requires secure cookies (cookie_secure not false)"]}
            )


class TokenManagementSchema(BaseSchema):
    typed_as = TokenManagementSection

    enabled = Bool(
        load_default=True,
        metadata={
            "description": "Issue tokens (/auth/token, /auth/refresh); needs MDB_JWT_SECRET."
        },
    )
    access_token_ttl = Int(
        minimum=60,
        maximum=86_400,
        load_default=900,
        metadata={"description": "An access token's lifetime, in seconds."},
    )
    refresh_token_ttl = Int(
        minimum=60,
        maximum=86_400 * 400,
        load_default=604_800,
        metadata={"description": "A refresh token's lifetime (longer than the access token's)."},
    )
    token_rotation = Bool(
        load_default=True,
        metadata={
            "description": "A refresh gives a new refresh token; a spent one revokes its family."
        },
    )
    max_sessions_per_user = Int(
        minimum=1,
        maximum=10_000,
        metadata={"description": "Sessions a user may hold; beyond, the oldest ends."},
    )
    session_inactivity_timeout = Int(
        minimum=60,
        maximum=86_400 * 30,
        metadata={"description": "Seconds of inactivity that end a session."},
    )
    auto_setup = Bool(
        metadata={
            "inert": True,
            "description": "Accepted for manifests written for the predecessor; no effect yet.",
        }
    )
    security = Obj(
        TokenSecuritySchema, metadata={"description": "Cookies, HTTPS, rate limits, lockout."}
    )

    @validates_schema
    def _ttls(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("refresh_token_ttl", 604_800) <= data.get("access_token_ttl", 900):
            raise ValidationError({"refresh_token_ttl": ["must be longer than access_token_ttl"]})
