"""Attacks on cookies and caches, and missing security headers.

* Cookie tossing: a sibling subdomain (or any plain-HTTP page of the domain) plants a
  session or CSRF-seed cookie in the victim's browser — to sign the victim into the
  attacker's account (login CSRF, session fixation). Over HTTPS the cookies are named
  ``__Host-...`` (Secure, ``Path=/``, no ``Domain``: nobody else can set them) and only
  those names are read.
* A shared cache (a proxy, the browser's back button) keeping a response with a token or a
  CSRF token: auth responses are ``Cache-Control: no-store``.
* Security headers on every response of an app with auth — its 404s, 405s, errors, unknown
  apps — and on the health and metrics endpoints.

HTTPS is what a TLS-terminating proxy tells the app (``X-Forwarded-Proto`` through werkzeug's
``ProxyFix``), as in production."""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, header_resolver
from flask import render_template_string
from flask_apps import write_manifest
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_mdb.auth import public
from flask_mdb.testing import LiveServer

from .raw_http import Browser
from .site_apps import SLUG, make_site, register, site_manifest

HTTPS = {"X-Forwarded-Proto": "https", "Accept": "application/json"}
SESSION, SEED = f"{SLUG}_session", f"{SLUG}_session_csrf"
ATTACKER = "attacker@example.com"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


@pytest.fixture
def server(factory, tmp_path):
    manifest = site_manifest(reset=True)
    app = make_site(factory, tmp_path, manifest, MDB_PASSWORD_RESET_SENDER=lambda u, url: None,
                    MDB_EXTERNAL_URL="https://alice.example")  # fmt: skip
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)

    @app.get("/form")
    @public
    def form():
        return render_template_string('<form><input name="csrf_token" value="{{ csrf_token() }}">')

    with LiveServer(app) as live:
        yield live


def _secure_cookie_attributes(morsel) -> None:
    raw = morsel._raw
    assert morsel["secure"] and morsel["path"] == "/" and not morsel["domain"], raw
    assert "Domain=" not in raw


def test_over_https_the_session_and_csrf_cookies_are_host_prefixed(server):
    browser = Browser(server.url, "127.0.0.2", headers=HTTPS)
    reply = browser.get("/auth/csrf")
    seed = reply.set_cookies[f"__Host-{SEED}"]
    _secure_cookie_attributes(seed)
    assert seed["httponly"]
    register(browser, "ada@example.com")
    assert f"__Host-{SESSION}" in browser.cookies and SESSION not in browser.cookies
    me = browser.get("/auth/me")
    assert me.status == 200 and me.json["user"]["email"] == "ada@example.com"
    login = browser.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD},
                         headers={"X-CSRF-Token": browser.csrf()})  # fmt: skip
    _secure_cookie_attributes(login.set_cookies[f"__Host-{SESSION}"])
    assert login.set_cookies[f"__Host-{SESSION}"]["httponly"]


def test_over_plain_http_the_names_stay_plain(server):
    browser = Browser(server.url, "127.0.0.2", headers={"Accept": "application/json"})
    register(browser, "ada@example.com")
    assert SESSION in browser.cookies and SEED in browser.cookies
    assert not any(name.startswith("__Host-") for name in browser.cookies)


def test_a_planted_session_cookie_does_not_sign_the_victim_in_over_https(server):
    attacker = Browser(server.url, "127.0.0.9", headers=HTTPS)
    register(attacker, ATTACKER)
    attacker_sid = attacker.cookies[f"__Host-{SESSION}"]
    # A sibling subdomain plants the attacker's session id under the plain name.
    victim = Browser(server.url, "127.0.0.2", headers=HTTPS)
    victim.cookies[SESSION] = attacker_sid
    assert victim.get("/auth/me").status == 401
    assert victim.get("/whoami").status == 401


def test_a_planted_csrf_seed_does_not_allow_login_csrf_over_https(server):
    register(Browser(server.url, "127.0.0.9", headers=HTTPS), ATTACKER)
    # The attacker mints a token for a seed of their own (over plain HTTP, or on a sibling
    # subdomain), plants that seed in the victim's browser and makes it post the login form
    # with the attacker's credentials.
    minter = Browser(server.url, "127.0.0.9", headers={"Accept": "application/json"})
    token = minter.csrf()
    victim = Browser(server.url, "127.0.0.2", headers=HTTPS)
    victim.cookies[SEED] = minter.cookies[SEED]
    forged = victim.post(
        "/auth/login",
        json={"email": ATTACKER, "password": PASSWORD},
        headers={"X-CSRF-Token": token, "Origin": "https://evil.example"},
    )
    assert forged.status in (400, 403), forged.text
    assert not any(SESSION in name for name in victim.cookies if not name.endswith("_csrf"))
    assert victim.get("/auth/me").status == 401


def test_auth_responses_and_pages_with_csrf_tokens_are_not_stored(server):
    browser = Browser(server.url, "127.0.0.2", headers={"Accept": "application/json"})
    register(browser, "ada@example.com")
    html = {"Accept": "text/html"}
    visitor = Browser(server.url, "127.0.0.3")
    replies = {
        "me": browser.get("/auth/me"),
        "csrf": browser.get("/auth/csrf"),
        "login page": visitor.get("/auth/login", headers=html),
        "register page": visitor.get("/auth/register", headers=html),
        "forgot page": visitor.get("/auth/forgot", headers=html),
        "reset page": visitor.get("/auth/reset?token=abc", headers=html),
        "app form": visitor.get("/form", headers=html),
        "token": browser.post(
            "/auth/token", json={"email": "ada@example.com", "password": PASSWORD}
        ),
        "anonymous me": Browser(server.url, "127.0.0.3").get("/auth/me"),
    }
    refresh = replies["token"].json["refresh_token"]
    replies["refresh"] = browser.post("/auth/refresh", json={"refresh_token": refresh})
    for name, reply in replies.items():
        assert reply.status in (200, 401), (name, reply.status)
        assert "no-store" in (reply.header("Cache-Control") or ""), name
    # ... and a page without anything private keeps its caching alone.
    assert "no-store" not in (browser.get("/open").header("Cache-Control") or "")


def _has_security_headers(reply, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.header(name) == value, (what, reply.status, name, dict(reply.headers))


def test_security_headers_on_errors_unknown_apps_health_and_metrics(factory, tmp_path):
    manifest = site_manifest(reset=False)
    manifest["auth"]["security"] = {"hsts": {"max_age": 600, "include_subdomains": False}}
    app = make_site(factory, tmp_path, manifest, MDB_APP_SLUG=None,
                    MDB_APP_RESOLVER=header_resolver,
                    MDB_HEALTH_URL="/health", MDB_METRICS_URL="/metrics",
                    PROPAGATE_EXCEPTIONS=False)  # fmt: skip  # errors answered as in production
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)

    @app.get("/boom")
    @public
    def boom():
        raise RuntimeError("broken view")

    bound = {"X-App": SLUG, "Accept": "application/json"}
    with LiveServer(app) as live:
        client = Browser(live.url, "127.0.0.4")
        cases = {
            "404 of the bound app": client.get("/nowhere", headers=bound),
            "405 of the bound app": client.request("PUT", "/open", headers=bound),
            "500 of the bound app": client.get("/boom", headers=bound),
            "404 of an unknown app": client.get("/open", headers={"X-App": "nobody"}),
            "no app at all": client.get("/nowhere"),
            "health": client.get("/health"),
            "metrics": client.get("/metrics"),
        }
        expected = {"404": 404, "405": 405, "500": 500, "health": 200, "metrics": 200}
        for what, reply in cases.items():
            status = next((v for k, v in expected.items() if what.startswith(k)), 404)
            assert reply.status == status, (what, reply.status)
            _has_security_headers(reply, what)
        secure = client.get("/nowhere", headers={**bound, "X-Forwarded-Proto": "https"})
        assert secure.header("Strict-Transport-Security") == "max-age=600"
        assert cases["404 of the bound app"].header("Strict-Transport-Security") is None  # HTTP


def test_health_and_metrics_carry_the_headers_without_auth(factory, tmp_path):
    write_manifest(tmp_path, "plain")
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_HEALTH_URL="/health",
                  MDB_METRICS_URL="/metrics")  # fmt: skip
    with LiveServer(app) as live:
        client = Browser(live.url, "127.0.0.4")
        for path in ("/health", "/metrics"):
            reply = client.get(path)
            assert reply.status == 200
            _has_security_headers(reply, path)
            assert reply.header("Cache-Control") == "no-store"
