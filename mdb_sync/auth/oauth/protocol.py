"""Talking to a provider: the authorization URL, the code exchange, and who the user is.

The authorization request is the authorization-code flow with PKCE (``S256``), ``state`` and,
for OpenID Connect, ``nonce`` (authlib builds the URL). The code is exchanged at the token
endpoint with the client's secret and the PKCE verifier; who the user is then comes from the
verified ID token (OpenID Connect, plus the userinfo endpoint when the token has no e-mail)
or from GitHub's API (``/user``, and ``/user/emails`` for a primary e-mail GitHub verified).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ..users import MAX_EMAIL
from . import http
from .errors import OAuthError, ProviderUnavailable
from .idtoken import verify_id_token
from .metadata import ProviderCache
from .settings import ProviderSettings

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_NAME = 200
#: E-mail addresses read from GitHub at most.
MAX_GITHUB_EMAILS = 100


@dataclass(frozen=True)
class Endpoints:
    """Where one provider's flow goes (from its preset, or its discovery document)."""

    authorize: str
    token: str
    userinfo: str | None = None
    jwks_uri: str | None = None
    issuer: str | None = None
    #: The discovery document (OpenID Connect), for issuer and algorithm checks.
    metadata: dict[str, Any] | None = None
    token_auth: str = "client_secret_post"


@dataclass(frozen=True)
class Profile:
    """Who the provider says the user is."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None

    def asserted(self) -> dict[str, Any]:
        """What an identity record keeps of this sign-in."""
        return {"email": self.email, "email_verified": self.email_verified, "name": self.name}


def endpoints(provider: ProviderSettings, cache: ProviderCache, timeout: float) -> Endpoints:
    if provider.kind == "github":
        assert provider.authorize_url and provider.token_url
        return Endpoints(provider.authorize_url, provider.token_url, issuer=provider.issuer)
    assert provider.discovery_url is not None
    meta = cache.discovery(provider.discovery_url, what=provider.label, timeout=timeout)
    if provider.issuer is not None and meta["issuer"].rstrip("/") != provider.issuer.rstrip("/"):
        raise ProviderUnavailable(
            f"the discovery document of {provider.label} names the issuer {meta['issuer']!r}, "
            f"not {provider.path}.issuer {provider.issuer!r}"
        )
    methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    auth = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
    return Endpoints(
        meta["authorization_endpoint"],
        meta["token_endpoint"],
        userinfo=meta.get("userinfo_endpoint"),
        jwks_uri=meta["jwks_uri"],
        issuer=meta["issuer"],
        metadata=meta,
        token_auth=auth,
    )


def authorization_url(
    provider: ProviderSettings,
    where: Endpoints,
    *,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
) -> str:
    extra: dict[str, Any] = {
        # types-authlib leaves this helper unannotated (it returns the S256 challenge, a str).
        "code_challenge": create_s256_code_challenge(code_verifier),  # type: ignore[no-untyped-call]
        "code_challenge_method": "S256",
    }
    if provider.kind == "oidc":
        extra["nonce"] = nonce
    return str(
        prepare_grant_uri(
            where.authorize,
            provider.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=list(provider.scopes),
            state=state,
            **extra,
        )
    )


def exchange_code(
    provider: ProviderSettings,
    where: Endpoints,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    client_secret: str,
    timeout: float,
) -> dict[str, Any]:
    """The token endpoint's answer to the code (an :class:`OAuthError` when it refuses)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "client_id": provider.client_id,
    }
    headers = {}
    if where.token_auth == "client_secret_basic":
        pair = f"{quote(provider.client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_secret"] = client_secret
    what = f"the token endpoint of {provider.label}"
    response = http.request(
        "POST", where.token, what=what, form=form, headers=headers, timeout=timeout
    )
    if response.content_type == "application/x-www-form-urlencoded":
        body: Any = dict(parse_qsl(response.body.decode("utf-8", "replace")))
    elif response.status != 200 and response.content_type != "application/json":
        body = {"error": f"http_{response.status}"}  # an error page, not an OAuth answer
    else:
        body = response.json(what)
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"{what} answered something other than a JSON object")
    # GitHub answers a refused code with 200 and {"error": ...}.
    if response.status != 200 or "error" in body:
        error = str(body.get("error") or f"HTTP {response.status}")
        error = error if _ERROR_CODE.fullmatch(error) else "error"
        raise OAuthError(
            f"{provider.label} refused the authorization code ({error})",
            reason="code_refused",
            status=401,
        )
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise ProviderUnavailable(f"{what} answered no access token")
    return body


def _clean_email(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_EMAIL or "@" not in value:
        return None
    return value


def _clean_name(value: Any) -> str | None:
    return value[:MAX_NAME] if isinstance(value, str) and value.strip() else None


def issuer_check(provider: ProviderSettings, where: Endpoints) -> Any:
    """``(iss, claims) -> bool`` for this provider's ID tokens."""
    expected = str(where.issuer)
    if provider.preset == "microsoft":
        # Entra ID: the multi-tenant endpoints publish "https://.../{tenantid}/v2.0"; a
        # token's issuer must be that with its own tenant (tid), and a tenant-specific
        # endpoint's issuer must match exactly.
        def microsoft(iss: str, claims: dict[str, Any]) -> bool:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not GUID.fullmatch(tid.lower()):
                return False
            return iss == expected.replace("{tenantid}", tid)

        return microsoft
    accepted = {expected, *provider.issuer_aliases}
    return lambda iss, claims: iss in accepted


def oidc_profile(
    provider: ProviderSettings,
    where: Endpoints,
    tokens: dict[str, Any],
    *,
    nonce: str,
    cache: ProviderCache,
    timeout: float,
) -> Profile:
    """Who the user is, from the verified ID token (and userinfo for a missing e-mail)."""
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise OAuthError(
            f"{provider.label} answered no ID token (is 'openid' among the scopes?)",
            reason="no_id_token",
            status=502,
        )
    assert where.jwks_uri is not None and where.metadata is not None
    jwks_uri = where.jwks_uri
    claims = verify_id_token(
        id_token,
        keys=lambda kid: cache.keys(jwks_uri, what=provider.label, kid=kid, timeout=timeout),
        issuer_ok=issuer_check(provider, where),
        client_id=provider.client_id,
        nonce=nonce,
        access_token=tokens.get("access_token"),
        algorithms=where.metadata.get("id_token_signing_alg_values_supported"),
    )
    if provider.allowed_tenants and str(claims.get("tid", "")).lower() not in (
        provider.allowed_tenants
    ):
        raise OAuthError(
            f"accounts of this {provider.label} tenant may not sign in here",
            reason="tenant_not_allowed",
            status=403,
        )
    info: dict[str, Any] = claims
    if _clean_email(claims.get("email")) is None and where.userinfo:
        info = http.get_json(
            where.userinfo,
            what=f"the userinfo endpoint of {provider.label}",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=timeout,
        )
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            # OpenID Connect Core 5.3.2: a userinfo answer about someone else is discarded.
            raise OAuthError(
                f"{provider.label}'s userinfo describes another user than its ID token",
                reason="userinfo_mismatch",
                status=502,
            )
    email = _clean_email(info.get("email"))
    return Profile(
        issuer=claims["iss"],
        subject=claims["sub"],
        email=email,
        email_verified=bool(email) and info.get("email_verified") is True,
        name=_clean_name(info.get("name")) or _clean_name(info.get("preferred_username")),
    )


def github_profile(
    provider: ProviderSettings, tokens: dict[str, Any], *, timeout: float
) -> Profile:
    """Who the user is, from GitHub's API: ``/user`` (id, login, name) and ``/user/emails``
    (the primary address, counted only if GitHub verified it)."""
    headers = {
        "Authorization": f"Bearer {tokens['access_token']}",
        "Accept": "application/vnd.github+json",
    }
    api = str(provider.api_url)
    user = http.get_json(
        f"{api}/user", what=f"the user API of {provider.label}", headers=headers, timeout=timeout
    )
    uid = user.get("id") if isinstance(user, dict) else None
    if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        raise ProviderUnavailable(f"the user API of {provider.label} answered no user id")
    emails = http.get_json(
        f"{api}/user/emails",
        what=f"the e-mail API of {provider.label}",
        headers=headers,
        timeout=timeout,
    )
    email, verified = None, False
    if isinstance(emails, list):
        for item in emails[:MAX_GITHUB_EMAILS]:
            if (
                isinstance(item, dict)
                and item.get("primary") is True
                and item.get("verified") is True
                and _clean_email(item.get("email"))
            ):
                email, verified = item["email"], True
                break
    if email is None:
        email = _clean_email(user.get("email"))  # public profile e-mail: not verified
    return Profile(
        issuer=str(provider.issuer),
        subject=str(uid),
        email=email,
        email_verified=verified,
        name=_clean_name(user.get("name")) or _clean_name(user.get("login")),
    )
