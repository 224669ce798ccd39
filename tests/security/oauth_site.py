"""An app with sign-in through the test OpenID Connect provider, served for real, and the
steps of a sign-in as a browser takes them (``raw_http.Browser``: its own address and
cookie jar, no redirect followed unless the test follows it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from oidc_provider import TestProvider

from .raw_http import Browser, Reply
from .site_apps import EXTERNAL_URL, SLUG, make_site, site_manifest

CLIENT_ID = "alice-app"
SECRET_ENV = "ALICE_OAUTH_SECRET"
SECRET = "alice-client-secret-0123456789abcdefghij"
PROVIDERS = ("sso", "github", "untrusted")
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def oauth_manifest(op: TestProvider, **overrides: Any) -> dict[str, Any]:
    manifest = site_manifest(reset=False)
    manifest["auth"]["oauth"] = {
        "providers": {
            "sso": {
                "issuer": op.url,
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
                "label": "Test SSO",
                "trust_email": True,
            },
            "github": {
                "preset": "github",
                "base_url": op.url,
                "api_url": op.url,
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
            },
            "untrusted": {
                "issuer": op.url,
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
                "label": "Untrusted",
            },
        },
        **overrides,
    }
    return manifest


def register_client(op: TestProvider) -> None:
    op.add_client(
        CLIENT_ID,
        SECRET,
        [f"{EXTERNAL_URL}/auth/oauth/{name}/callback" for name in PROVIDERS],
        name="Alice's app",
    )


def make_oauth_site(factory: Any, directory: Any, op: TestProvider, **config: Any) -> Any:
    register_client(op)
    settings = {"MDB_EXTERNAL_URL": EXTERNAL_URL, **config}
    return make_site(factory, directory, oauth_manifest(op), **settings)


def start(browser: Browser, provider: str = "sso", **query: str) -> str:
    """Open the login redirect; the provider's authorization URL."""
    suffix = f"?{urlencode(query)}" if query else ""
    reply = browser.get(f"/auth/oauth/{provider}/login{suffix}", headers=HTML)
    assert reply.status == 302, reply.text
    return str(reply.header("Location"))


def consent(op: TestProvider, authorization_url: str, login: str, source: str = "127.0.0.1") -> str:
    """Sign in at the provider as ``login``; the callback URL it redirects to."""
    status, location = op.authorize(authorization_url, login, source=source)
    assert status == 302, (status, location)
    return location


def callback(browser: Browser, callback_url: str, headers: dict[str, str] | None = None) -> Reply:
    """Follow the provider's redirect to the app (the site is served on 127.0.0.1, its
    public address is ``EXTERNAL_URL``)."""
    parts = urlsplit(callback_url)
    assert f"{parts.scheme}://{parts.netloc}" == EXTERNAL_URL, callback_url
    return browser.get(f"{parts.path}?{parts.query}", headers=headers or HTML)


def sign_in(browser: Browser, op: TestProvider, login: str, provider: str = "sso") -> Reply:
    return callback(browser, consent(op, start(browser, provider), login, browser.source))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def me(browser: Browser) -> Reply:
    return browser.get("/auth/me", headers=JSON)


__all__ = ["EXTERNAL_URL", "SLUG"]
