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

The presets' defaults (endpoints, label, scopes, trust) are the manifest schema's
(:mod:`mdb_sync.manifest.schema_oauth`): the typed section
(:class:`~mdb_sync.manifest.model_auth.OAuthProviderSection`) holds them, and this module
derives the endpoints each kind of provider is called at.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...deprecation import deprecated
from ...exceptions import ConfigurationError
from ...manifest.model_auth import OAuthProviderSection, OAuthSection
from ...manifest.schema_oauth import GITHUB_SCOPES, GOOGLE, OIDC_SCOPES
from ...manifest.sections import load_section

#: The tenant of personal Microsoft accounts (what ``consumers`` tokens carry as ``tid``).
MICROSOFT_CONSUMERS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
WELL_KNOWN = "/.well-known/openid-configuration"


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

    @classmethod
    def from_section(cls, name: str, section: OAuthProviderSection) -> ProviderSettings:
        """Provider ``name`` of a typed ``auth.oauth.providers`` entry: the endpoints its
        kind is called at, from its (default-filled) ``base_url``, ``issuer`` or
        ``discovery_url``."""
        common: dict[str, Any] = {
            "name": name,
            "preset": section.preset,
            "label": section.label or name,
            "client_id": section.client_id,
            "client_secret_env": section.client_secret_env,
            "scopes": section.scopes,
            "trust_email": section.trust_email,
            "link_by_email": section.link_by_email,
            "allow_signup": bool(section.allow_signup),
        }
        base = section.base_url
        if section.preset == "github":
            assert base is not None and section.api_url is not None  # filled by the schema
            return cls(
                kind="github",
                issuer=base,
                authorize_url=base + "/login/oauth/authorize",
                token_url=base + "/login/oauth/access_token",
                api_url=section.api_url,
                **common,
            )
        if section.preset == "google":
            return cls(
                kind="oidc",
                issuer=base,
                issuer_aliases=("accounts.google.com",) if base == GOOGLE else (),
                discovery_url=f"{base}{WELL_KNOWN}",
                **common,
            )
        if section.preset == "microsoft":
            return cls(
                kind="oidc",
                issuer=None,  # the tenant's, from discovery and the token's tid
                discovery_url=f"{base}/{section.tenant}/v2.0{WELL_KNOWN}",
                tenant=section.tenant,
                allowed_tenants=section.allowed_tenants,
                **common,
            )
        issuer = section.issuer
        return cls(
            kind="oidc",
            issuer=issuer,
            discovery_url=section.discovery_url or f"{str(issuer).rstrip('/')}{WELL_KNOWN}",
            **common,
        )

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
    def from_section(cls, section: OAuthSection | None) -> OAuthSettings | None:
        """The settings of a typed ``auth.oauth`` block, or None without one."""
        if section is None:
            return None
        return cls(
            providers={
                name: ProviderSettings.from_section(name, provider)
                for name, provider in section.providers.items()
            },
            state_ttl=section.state_ttl_seconds,
            http_timeout=float(section.http_timeout_seconds),
        )

    @classmethod
    @deprecated("OAuthSettings.from_section(manifest.auth.oauth)")
    def from_manifest(
        cls, block: Mapping[str, Any] | None, *, allow_registration: bool = False
    ) -> OAuthSettings | None:
        """The settings of an ``auth.oauth`` block (checked by the manifest's schema; a
        provider's ``allow_signup`` defaults to the block's, which defaults to
        ``allow_registration``), or None without one."""
        if not block:
            return None
        block = {**block, "allow_signup": block.get("allow_signup", allow_registration)}
        block["providers"] = {
            name: {**provider, "allow_signup": provider.get("allow_signup", block["allow_signup"])}
            for name, provider in (block.get("providers") or {}).items()
        }
        section = load_section("auth.oauth", block)
        return cls.from_section(section)


__all__ = [
    "GITHUB_SCOPES",
    "MICROSOFT_CONSUMERS_TENANT",
    "OIDC_SCOPES",
    "WELL_KNOWN",
    "OAuthSettings",
    "ProviderSettings",
]
