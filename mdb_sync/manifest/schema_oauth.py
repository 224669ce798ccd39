"""``auth.oauth``: sign-in through OAuth 2.0 / OpenID Connect providers.

::

    "oauth": {
      "providers": {
        "google":    {"preset": "google", "client_id": "...", "client_secret_env": "GOOGLE_SECRET"},
        "github":    {"preset": "github", "client_id": "...", "client_secret_env": "GITHUB_SECRET"},
        "microsoft": {"preset": "microsoft", "tenant": "contoso.onmicrosoft.com", ...},
        "corp":      {"issuer": "https://id.corp.example", "label": "Corp SSO", ...}
      }
    }

Client secrets never go in a manifest (manifests are committed, exported, shown by the CLI):
a provider names the environment variable holding its secret. Every URL is ``https`` (plain
``http`` only to a loopback address, for a provider on the same machine), so no discovery
document, key set or token crosses a network in the clear.

A preset's defaults are filled in as any default is: its ``base_url`` (and GitHub's
``api_url``), ``label``, ``scopes``, ``trust_email`` (Google's and GitHub's verified addresses
are trusted, Microsoft's and any other provider's are not), ``link_by_email`` and
Microsoft's ``tenant``. :mod:`mdb_sync.auth.oauth.settings` derives the endpoints from them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, post_load, validates_schema

from .fields import BaseSchema, Bool, Int, ListOf, MapOf, Obj, Refused, Str
from .model_auth import OAuthProviderSection, OAuthSection

PRESETS = ("google", "github", "microsoft")
GOOGLE = "https://accounts.google.com"
GITHUB = "https://github.com"
GITHUB_API = "https://api.github.com"
MICROSOFT = "https://login.microsoftonline.com"
OIDC_SCOPES = ("openid", "email", "profile")
GITHUB_SCOPES = ("read:user", "user:email")
#: What a preset's provider has unless the manifest says otherwise.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "google": {"base_url": GOOGLE, "label": "Google", "trust_email": True},
    "github": {"base_url": GITHUB, "label": "GitHub", "trust_email": True},
    "microsoft": {
        "base_url": MICROSOFT,
        "label": "Microsoft",
        # Entra ID does not verify its email claim: trusted only when the manifest says so.
        "trust_email": False,
        "tenant": "common",
    },
}
PROVIDER_NAME_RE = r"[a-z][a-z0-9_-]{0,31}"
ENV_NAME_RE = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
#: An OAuth scope token (RFC 6749 §3.3: printable ASCII but space, ``"`` and ``\``).
SCOPE_RE = r"[\x21\x23-\x5B\x5D-\x7E]{1,256}"
GUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: A Microsoft Entra tenant: a GUID, a verified domain, or common/organizations/consumers.
TENANT_RE = r"[A-Za-z0-9][A-Za-z0-9.-]{0,127}"
MAX_PROVIDERS = 20


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secure_url_problem(value: str) -> str | None:
    """Why ``value`` is not a URL an identity provider may have, or None: ``https`` with a
    host (``http`` only for a loopback host), no credentials, no fragment."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "must be a valid URL"
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in value):
        return "must not contain spaces, control characters or backslashes"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute https URL"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must use https (plain http only for a loopback address such as 127.0.0.1)"
    if "@" in parts.netloc:
        return "must not carry credentials"
    if parts.fragment or "#" in value:
        return "must not have a fragment"
    return None


def _secure_url(**kwargs: Any) -> Str:
    return Str(max_len=2048, check=secure_url_problem, **kwargs)


def _provider_key(key: str) -> str | None:
    if re.fullmatch(PROVIDER_NAME_RE, key):
        return None
    return (
        "provider names must be 1-32 lower-case letters, digits, '_' or '-', starting with a letter"
    )


def _strip_slash(value: str) -> str:
    return value.rstrip("/")


class OAuthProviderSchema(BaseSchema):
    """One provider: a ``preset`` (google, github, microsoft) or any OpenID Connect issuer
    (``issuer`` or ``discovery_url``)."""

    typed_as = OAuthProviderSection

    preset = Str(
        choices=PRESETS,
        metadata={"description": "google, github or microsoft (else issuer or discovery_url)."},
    )
    issuer = _secure_url(
        metadata={
            "description": (
                "Any OpenID Connect provider: its issuer (discovery at <issuer>/.well-"
                "known/openid-configuration)."
            )
        }
    )
    discovery_url = _secure_url(metadata={"description": "The provider's discovery document."})
    #: Where a preset's endpoints live instead of the public service: a sovereign cloud
    #: (login.microsoftonline.us), GitHub Enterprise Server, a test provider.
    base_url = _secure_url(
        normalize=_strip_slash,
        metadata={
            "description": (
                "Where a preset's endpoints live instead of the public service (a sovereign "
                "cloud, GitHub Enterprise Server, a test provider)."
            )
        },
    )
    #: GitHub's API base (default https://api.github.com; GitHub Enterprise: <base>/api/v3).
    api_url = _secure_url(
        normalize=_strip_slash,
        metadata={
            "description": (
                "GitHub's API base (default https://api.github.com, <base_url>/api/v3 for "
                "GitHub Enterprise Server)."
            )
        },
    )
    client_id = Str(
        max_len=512,
        required=True,
        metadata={"description": "The client id registered with the provider."},
    )
    client_secret_env = Str(
        required=True,
        pattern=ENV_NAME_RE,
        pattern_help="must be an environment variable name",
        metadata={"description": "The environment variable holding the client secret."},
    )
    client_secret = Refused(
        "client secrets never go in the manifest: put the secret in an environment variable "
        "and name that variable in client_secret_env",
        metadata={
            "description": "Refused: secrets never go in a manifest (use client_secret_env)."
        },
    )
    scopes = ListOf(
        Str(pattern=SCOPE_RE, pattern_help="must be an OAuth scope (no spaces or quotes)"),
        unique=True,
        min_items=1,
        max_items=50,
        metadata={
            "description": (
                "The scopes asked for (default openid email profile; GitHub read:user user:email)."
            )
        },
    )
    label = Str(
        max_len=64,
        metadata={
            "description": (
                "The sign-in button's text: Sign in with <label> (default: the preset's name, "
                "else the provider's)."
            )
        },
    )
    trust_email = Bool(
        metadata={
            "description": (
                "The provider's verified email addresses are trusted (google and github by "
                "default)."
            )
        }
    )
    link_by_email = Bool(
        load_default=True,
        metadata={
            "description": (
                "A trusted verified address signs in to the existing account that has it."
            )
        },
    )
    allow_signup = Bool(
        metadata={
            "description": (
                "A first sign-in with an unknown identity creates an account (default: "
                "auth.oauth.allow_signup)."
            )
        }
    )
    tenant = Str(
        pattern=TENANT_RE,
        pattern_help="must be a tenant id, a domain or 'common'",
        metadata={
            "description": (
                "Microsoft: the tenant (an id, a verified domain, organizations, consumers or"
                " common)."
            )
        },
    )
    allowed_tenants = ListOf(
        Str(pattern=GUID_RE, pattern_help="must be a tenant id (a GUID)", normalize=str.lower),
        unique=True,
        min_items=1,
        max_items=100,
        metadata={"description": "Microsoft with common/organizations: the tenant ids allowed."},
    )

    @validates_schema
    def _shape(self, data: dict[str, Any], **kwargs: Any) -> None:
        preset = data.get("preset")
        errors: dict[str, list[str]] = {}
        if preset is None:
            # Both may be given: the discovery document must then name this issuer.
            if "issuer" not in data and "discovery_url" not in data:
                errors["preset"] = [
                    "a provider needs a preset (google, github, microsoft), or an issuer "
                    "or discovery_url (any OpenID Connect provider)"
                ]
            for key in ("base_url", "api_url", "tenant", "allowed_tenants"):
                if key in data:
                    errors[key] = ["only with a preset"]
        else:
            for key in ("issuer", "discovery_url"):
                if key in data:
                    errors[key] = [f"not with preset {preset!r} (use base_url to move it)"]
            if preset != "microsoft":
                for key in ("tenant", "allowed_tenants"):
                    if key in data:
                        errors[key] = ["only with preset 'microsoft'"]
            if preset != "github" and "api_url" in data:
                errors["api_url"] = ["only with preset 'github'"]
        tenant = str(data.get("tenant") or "common").lower()
        if "allowed_tenants" in data and tenant not in ("common", "organizations"):
            errors["allowed_tenants"] = ["only with tenant 'common' or 'organizations'"]
        scopes = data.get("scopes")
        if scopes is not None and preset != "github" and "openid" not in scopes:
            errors["scopes"] = ["an OpenID Connect provider needs the 'openid' scope"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _preset_defaults(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        preset = data.get("preset")
        for key, value in PRESET_DEFAULTS.get(preset or "", {}).items():
            data.setdefault(key, value)
        if preset == "github":
            base = data["base_url"]
            data.setdefault("api_url", GITHUB_API if base == GITHUB else base + "/api/v3")
        data.setdefault("scopes", list(GITHUB_SCOPES if preset == "github" else OIDC_SCOPES))
        data.setdefault("trust_email", False)
        return data


class OAuthSchema(BaseSchema):
    """``auth.oauth``: the providers, and what a first sign-in may do."""

    typed_as = OAuthSection

    providers = MapOf(
        Obj(OAuthProviderSchema),
        key=_provider_key,
        max_items=MAX_PROVIDERS,
        required=True,
        metadata={"description": "The providers, by name (the name is in their URLs)."},
    )
    #: A first sign-in with an unknown identity creates an account (default: as
    #: ``auth.users.allow_registration``). Each provider may say otherwise.
    allow_signup = Bool(
        metadata={
            "description": (
                "A first sign-in with an unknown identity creates an account (default: "
                "auth.users.allow_registration)."
            )
        }
    )
    #: Seconds between the redirect to the provider and the callback (the state's life).
    state_ttl_seconds = Int(
        minimum=60,
        maximum=3600,
        load_default=600,
        metadata={
            "description": "Seconds a sign-in may take between the redirect and the callback."
        },
    )
    #: Seconds any one call to a provider (discovery, keys, token, user info) may take.
    http_timeout_seconds = Int(
        minimum=1,
        maximum=60,
        load_default=10,
        metadata={"description": "Seconds any call to a provider may take."},
    )

    @validates_schema
    def _some(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "providers" in data and not data["providers"]:
            raise ValidationError({"providers": ["must name at least one provider"]})

    @post_load
    def _labels(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for name, provider in data["providers"].items():
            provider.setdefault("label", name)  # a provider without a preset
        return data
