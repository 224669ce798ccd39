"""OAuth sign-in on the auth blueprint, through a real WSGI server and the real test provider:
the login page's buttons, the redirect (callback URL from ``MDB_EXTERNAL_URL``), the callback
ending in a server-side session, JSON for API clients (and tokens when asked), linking and
unlinking from a signed-in browser, and the startup checks."""

from __future__ import annotations

import pytest
from oidc_provider import TestProvider

from flask_mdb.testing import LiveServer
from mdb_sync.exceptions import ConfigurationError

from .oauth_site import (
    EXTERNAL_URL,
    HTML,
    JSON,
    SECRET,
    SECRET_ENV,
    callback,
    consent,
    make_oauth_site,
    me,
    oauth_manifest,
    query_of,
    register_client,
    sign_in,
    start,
)
from .raw_http import Browser
from .site_apps import make_site, register, site_manifest


@pytest.fixture(scope="module")
def op():
    with TestProvider() as provider:
        yield provider


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def server(factory, tmp_path, op):
    app = make_oauth_site(factory, tmp_path, op)
    with LiveServer(app) as live:
        yield live.url


def test_the_login_page_offers_each_provider(server):
    page = Browser(server).get("/auth/login?next=/reports", headers=HTML)
    assert page.status == 200
    for name, label in (("sso", "Test SSO"), ("github", "GitHub"), ("untrusted", "Untrusted")):
        assert f'id="oauth-{name}"' in page.text and f"Sign in with {label}" in page.text
    assert "/auth/oauth/sso/login?next=/reports" in page.text
    listed = Browser(server).get("/auth/oauth/providers", headers=JSON).json["providers"]
    assert [p["name"] for p in listed] == ["sso", "github", "untrusted"]


def test_browser_sign_in_ends_in_a_session_and_goes_to_next(server, op):
    op.add_user("web-ada", email="web-ada@example.com")
    browser = Browser(server, "127.0.0.2")
    authorization = start(browser, next="/reports")
    assert authorization.startswith(op.url + "/authorize?")
    assert query_of(authorization)["redirect_uri"] == f"{EXTERNAL_URL}/auth/oauth/sso/callback"
    binding = browser.cookies["alice_app_session_oauth"]
    assert len(binding) >= 40
    reply = callback(browser, consent(op, authorization, "web-ada"))
    assert reply.status == 303 and reply.header("Location") == "/reports"
    session = reply.set_cookies["alice_app_session"]
    assert "HttpOnly" in session._raw and "SameSite=Lax" in session._raw
    who = me(browser)
    assert who.status == 200 and who.json["user"]["email"] == "web-ada@example.com"
    # Signing out ends it like any session.
    out = browser.post("/auth/logout", headers={**JSON, "X-CSRF-Token": who.json["csrf_token"]})
    assert out.status == 200 and me(browser).status == 401


def test_json_clients_get_the_url_then_the_user_and_a_csrf_token(server, op):
    op.add_user("json-bob", email="json-bob@example.com")
    browser = Browser(server, "127.0.0.3")
    reply = browser.get("/auth/oauth/sso/login", headers=JSON)
    assert reply.status == 200 and reply.json["provider"] == "sso"
    assert reply.json["expires_in"] == 600
    done = callback(browser, consent(op, reply.json["authorization_url"], "json-bob"), JSON)
    assert done.status == 200, done.text
    assert (
        done.json["outcome"] == "created" and done.json["user"]["email"] == "json-bob@example.com"
    )
    assert done.json["csrf_token"] and me(browser).status == 200


def test_json_clients_may_ask_for_tokens_instead_of_a_session(server, op):
    op.add_user("token-cy", email="token-cy@example.com")
    browser = Browser(server, "127.0.0.4")
    reply = browser.get("/auth/oauth/sso/login?tokens=1", headers=JSON)
    done = callback(browser, consent(op, reply.json["authorization_url"], "token-cy"), JSON)
    assert done.status == 200 and done.json["access_token"] and done.json["refresh_token"]
    assert "alice_app_session" not in done.set_cookies
    mine = Browser(server, "127.0.0.4").get(
        "/auth/me", headers={**JSON, "Authorization": f"Bearer {done.json['access_token']}"}
    )
    assert mine.status == 200 and mine.json["user"]["email"] == "token-cy@example.com"


def test_link_from_a_signed_in_session_then_sign_in_with_it_then_unlink(server, op):
    browser = Browser(server, "127.0.0.5", headers=JSON)
    register(browser, "dora@example.com")
    token = me(browser).json["csrf_token"]
    op.add_user("dora-gh", email="dora-elsewhere@example.com")
    # Linking is a POST with the session's CSRF token...
    refused = browser.post("/auth/oauth/github/link", json={})
    assert refused.status in (400, 403)
    started = browser.post("/auth/oauth/github/link", json={}, headers={"X-CSRF-Token": token})
    assert started.status == 200, started.text
    linked = callback(browser, consent(op, started.json["authorization_url"], "dora-gh"), JSON)
    assert linked.status == 200 and linked.json["linked"] == "github"
    listed = browser.get("/auth/oauth/identities").json["identities"]
    assert [i["provider"] for i in listed] == ["github"]

    # A fresh browser signs in to Dora's account through GitHub.
    other = Browser(server, "127.0.0.6")
    assert sign_in(other, op, "dora-gh", "github").status == 303
    assert me(other).json["user"]["email"] == "dora@example.com"

    # Dora has a password: GitHub may go.
    token = me(browser).json["csrf_token"]
    gone = browser.post("/auth/oauth/github/unlink", json={}, headers={"X-CSRF-Token": token})
    assert gone.status == 200 and gone.json["identities"] == []


def test_an_account_made_by_a_provider_cannot_unlink_its_only_way_in(server, op):
    op.add_user("eve-only", email="eve-only@example.com")
    browser = Browser(server, "127.0.0.7")
    sign_in(browser, op, "eve-only")
    token = me(browser).json["csrf_token"]
    reply = browser.post("/auth/oauth/sso/unlink", json={}, headers={**JSON, "X-CSRF-Token": token})
    assert reply.status == 409 and reply.json["error"]["reason"] == "last_sign_in_method"


def test_an_unknown_provider_is_404(server):
    reply = Browser(server).get("/auth/oauth/nope/login", headers=JSON)
    assert reply.status == 404 and reply.json["error"]["reason"] == "unknown_provider"


def test_an_app_without_oauth_has_no_oauth_routes_nor_buttons(factory, tmp_path):
    plain = make_site(factory, tmp_path, site_manifest(reset=False))
    with LiveServer(plain) as live:
        assert Browser(live.url).get("/auth/oauth/sso/login", headers=JSON).status == 404
        assert 'id="oauth-' not in Browser(live.url).get("/auth/login", headers=HTML).text


def test_startup_refuses_oauth_without_a_public_address_or_a_secret(
    factory, tmp_path, op, monkeypatch
):
    register_client(op)
    with pytest.raises(ConfigurationError, match="MDB_EXTERNAL_URL") as err:
        make_site(factory, tmp_path, oauth_manifest(op))
    assert err.value.context["option"] == "MDB_EXTERNAL_URL"
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConfigurationError, match=SECRET_ENV) as err:
        make_site(factory, tmp_path, oauth_manifest(op), MDB_EXTERNAL_URL=EXTERNAL_URL)
    assert err.value.context["path"] == "auth.oauth.providers.sso.client_secret_env"
