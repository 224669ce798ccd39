"""The providers of ``auth.oauth``, with every preset default decided here.

A preset is a provider whose endpoints and habits are known:

=============  ==============================================================================
``google``     OpenID Connect at ``https://accounts.google.com``; its e-mail is trusted when
               the ID token says ``email_verified: true``.
``github``     OAuth 2 only (no ID token): the user from ``GET /user``, the e-mail from
               ``GET /user/emails`` (the primary one, only if GitHub verified it); trusted.
``microsoft``  Entra ID (v2.0) for ``tenant`` (a tenant id or domain, ``organizations``,
               ``consumers``, or ``common`` by default); the ID token's issuer must be its
               own tenant's (``tid``), and ``allowed_tenants`` may restrict which. Its
               ``email`` claim is not verified by Microsoft, so it is *not* trusted unless the
               manifest says ``trust_email: true`` (a single tenant you administer).
=============  ==============================================================================

Any other OpenID Connect provider is configured by ``issuer`` (its discovery document is
``<issuer>/.well-known/openid-configuration``) or ``discovery_url``; its e-mail is not
trusted unless ``trust_email: true``. ``base_url`` moves a preset's endpoints (a sovereign
cloud, GitHub Enterprise Server, a provider started by a test suite).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...exceptions import ConfigurationError

GOOGLE = "https://accounts.google.com"
GITHUB = "https://github.com"
GITHUB_API = "https://api.github.com"
MICROSOFT = "https://login.microsoftonline.com"
#: The tenant of personal Microsoft accounts (what ``consumers`` tokens carry as ``tid``).
MICROSOFT_CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
WELL_KNOWN = "/.well-known/openid-configuration"
OIDC_SCOPES = ("openid", "email", "profile")
GITHUB_SCOPES = ("read:user", "user:email")


@dataclass(frozen=True)
class ProviderSettings:
    """One provider of one app, as its manifest configures it."""

    name: str
    #: ``"oidc"`` (ID token, discovery, JWKS) or ``"github"`` (OAuth 2 and GitHub's API).
    kind: str
    preset: str | None
    label: str
    client_id: str
    client_secret_env: str
    scopes: tuple[str, ...]
    trust_email: bool
    link_by_email: bool
    allow_signup: bool
    #: The issuer ID tokens must name (OIDC), or that identities are keyed by (GitHub).
    #: None: whatever the discovery document says (``discovery_url`` alone).
    issuer: str | None = None
    #: Other spellings of the issuer that ID tokens may use (Google's bare host name).
    issuer_aliases: tuple[str, ...] = ()
    discovery_url: str | None = None
    # --- GitHub
    authorize_url: str | None = None
    token_url: str | None = None
    api_url: str | None = None
    # --- Microsoft
    tenant: str | None = None
    allowed_tenants: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """Where this provider is in the manifest (for error messages)."""
        return f"auth.oauth.providers.{self.name}"

    def client_secret(self, slug: str = "") -> str:
        """The client secret, from the environment variable the manifest names; a
        :class:`ConfigurationError` naming the key and the variable when it is unset."""
        value = os.environ.get(self.client_secret_env)
        if not value:
            where = f"app {slug!r}: " if slug else ""
            raise ConfigurationError(
                f"{where}{self.path}.client_secret_env names the environment variable "
                f"{self.client_secret_env}, which is not set: put the client secret of "
                f"{self.label} there (it never goes in the manifest)",
                context={"app": slug, "path": f"{self.path}.client_secret_env"},
            )
        return value


@dataclass(frozen=True)
class OAuthSettings:
    """``auth.oauth`` of one app."""

    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    state_ttl: int = 600
    http_timeout: float = 10.0

    @classmethod
    def from_manifest(
        cls, block: Mapping[str, Any] | None, *, allow_registration: bool = False
    ) -> OAuthSettings | None:
        """The settings of a *validated* ``auth.oauth`` block, or None without one."""
        if not block:
            return None
        signup = bool(block.get("allow_signup", allow_registration))
        providers = {
            name: provider_settings(name, dict(value), allow_signup=signup)
            for name, value in (block.get("providers") or {}).items()
        }
        return cls(
            providers=providers,
            state_ttl=int(block.get("state_ttl_seconds", 600)),
            http_timeout=float(block.get("http_timeout_seconds", 10)),
        )


def _base(value: Any, default: str) -> str:
    return str(value or default).rstrip("/")


def provider_settings(
    name: str, block: Mapping[str, Any], *, allow_signup: bool = False
) -> ProviderSettings:
    """One provider's settings: its preset's defaults, then what the manifest says."""
    preset = block.get("preset")
    common: dict[str, Any] = {
        "name": name,
        "preset": preset,
        "client_id": block["client_id"],
        "client_secret_env": block["client_secret_env"],
        "allow_signup": bool(block.get("allow_signup", allow_signup)),
    }
    if preset == "github":
        base = _base(block.get("base_url"), GITHUB)
        api = block.get("api_url") or (GITHUB_API if base == GITHUB else base + "/api/v3")
        trust = bool(block.get("trust_email", True))
        return ProviderSettings(
            kind="github",
            label=block.get("label") or "GitHub",
            scopes=tuple(block.get("scopes") or GITHUB_SCOPES),
            trust_email=trust,
            link_by_email=bool(block.get("link_by_email", True)),
            issuer=base,
            authorize_url=base + "/login/oauth/authorize",
            token_url=base + "/login/oauth/access_token",
            api_url=str(api).rstrip("/"),
            **common,
        )
    if preset == "google":
        base = _base(block.get("base_url"), GOOGLE)
        aliases = ("accounts.google.com",) if base == GOOGLE else ()
        return ProviderSettings(
            kind="oidc",
            label=block.get("label") or "Google",
            scopes=tuple(block.get("scopes") or OIDC_SCOPES),
            trust_email=bool(block.get("trust_email", True)),
            link_by_email=bool(block.get("link_by_email", True)),
            issuer=base,
            issuer_aliases=aliases,
            discovery_url=base + WELL_KNOWN,
            **common,
        )
    if preset == "microsoft":
        base = _base(block.get("base_url"), MICROSOFT)
        tenant = str(block.get("tenant") or "common")
        return ProviderSettings(
            kind="oidc",
            label=block.get("label") or "Microsoft",
            scopes=tuple(block.get("scopes") or OIDC_SCOPES),
            trust_email=bool(block.get("trust_email", False)),
            link_by_email=bool(block.get("link_by_email", True)),
            issuer=None,  # the tenant's, from discovery and the token's tid
            discovery_url=f"{base}/{tenant}/v2.0{WELL_KNOWN}",
            tenant=tenant,
            allowed_tenants=tuple(t.lower() for t in block.get("allowed_tenants") or ()),
            **common,
        )
    issuer = block.get("issuer")
    discovery = block.get("discovery_url") or (str(issuer).rstrip("/") + WELL_KNOWN)
    return ProviderSettings(
        kind="oidc",
        label=block.get("label") or name,
        scopes=tuple(block.get("scopes") or OIDC_SCOPES),
        trust_email=bool(block.get("trust_email", False)),
        link_by_email=bool(block.get("link_by_email", True)),
        issuer=issuer,
        discovery_url=discovery,
        **common,
    )
