"""Attacks on OAuth / OpenID Connect sign-in, mounted as outsiders would: real browsers-to-be
(``http.client`` from their own loopback addresses and cookie jars) against the app served by
a real WSGI server, and a real provider on 127.0.0.1 that the attacker also uses — or that
misbehaves (a compromised provider, or anything between it and the app, handing out bad ID
tokens).

Each test shows one defence: the ID token's signature, issuer, audience, expiry and nonce;
the ``state`` bound to the browser that started the sign-in (login CSRF); single-use state
and codes (replay); codes bound to their client (another app's code); callback URLs from the
configured address and ``next`` kept on this site (open redirects); accounts keyed by
(issuer, subject), with an unverified provider e-mail never opening the account that has it
(e-mail-collision takeover); and the per-address rate limit of the callback."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest
from auth_apps import PASSWORD
from oidc_provider import TestProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_mdb.testing import LiveServer

from .oauth_site import (
    CLIENT_ID,
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
from .site_apps import make_site, register

VICTIM = "victim@example.com"


@pytest.fixture(scope="module")
def op():
    with TestProvider() as provider:
        yield provider


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def site(factory, tmp_path, op):
    app = make_oauth_site(factory, tmp_path, op)
    with LiveServer(app) as live:
        yield live.url, app


def _users(raw_db) -> list[str]:
    return sorted(u["email"] for u in raw_db["alice_app_users"].find())


def _refused(reply, status: int, reason: str) -> None:
    assert reply.status == status, reply.text
    assert reply.json["error"]["reason"] == reason
    assert "alice_app_session" not in reply.set_cookies  # no session was started


# --- forged ID tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("forged", "bad_signature"),
        ("unknown_kid", "bad_signature"),
        ("alg_none", "bad_algorithm"),
        ("hs256", "bad_algorithm"),
        ("expired", "expired"),
        ("wrong_audience", "wrong_audience"),
        ("wrong_nonce", "wrong_nonce"),
        ("wrong_issuer", "wrong_issuer"),
    ],
)
def test_bad_id_tokens_never_sign_anyone_in(site, op, raw_db, mode, reason):
    server, _ = site
    op.add_user(f"target-{mode}", email=f"target-{mode}@example.com")
    browser = Browser(server, "127.0.0.20")
    authorization = start(browser)
    op.misbehave(CLIENT_ID, mode)
    reply = callback(browser, consent(op, authorization, f"target-{mode}"), JSON)
    _refused(reply, 401, reason)
    assert reply.json["error"]["reason"] == reason
    assert me(browser).status == 401
    assert _users(raw_db) == []  # no account was made from it either


def test_a_made_up_key_id_refetches_the_keys_at_most_once_a_minute(site, op):
    server, _ = site
    op.add_user("kid-prober", email="kid-prober@example.com")
    browser = Browser(server, "127.0.0.21")
    assert sign_in(browser, op, "kid-prober").status == 303  # keys fetched and cached
    before = op.hit_count("jwks")
    for _ in range(4):
        authorization = start(browser)
        op.misbehave(CLIENT_ID, "unknown_kid")
        assert callback(browser, consent(op, authorization, "kid-prober"), JSON).status == 401
    assert op.hit_count("jwks") == before  # fetched moments ago: the made-up kids fetch nothing


# --- login CSRF: a state that is not this browser's -------------------------------------------


def test_an_attackers_callback_in_the_victims_browser_is_refused(site, op, raw_db):
    server, _ = site
    op.add_user("mallory", email="mallory@example.com")
    attacker = Browser(server, "127.0.0.66")
    # The attacker signs in at the provider but does not follow the redirect: they keep the
    # callback URL (their own code and state) and get the victim's browser to open it.
    planted = consent(op, start(attacker), "mallory", attacker.source)
    victim = Browser(server, "127.0.0.2")
    register(victim, VICTIM)
    reply = callback(victim, planted, JSON)
    _refused(reply, 400, "invalid_state")
    assert reply.json["error"]["reason"] == "invalid_state"
    assert me(victim).json["user"]["email"] == VICTIM  # still the victim, not Mallory
    # A fresh browser (no cookies at all) fares no better.
    _refused(callback(Browser(server, "127.0.0.3"), planted, JSON), 400, "invalid_state")
    # The refused attempts did not burn the state: it still works in the browser it belongs to.
    assert callback(attacker, planted, JSON).status == 200


def test_a_state_not_issued_or_tampered_with_is_refused(site, op):
    server, _ = site
    op.add_user("tamper", email="tamper@example.com")
    browser = Browser(server, "127.0.0.22")
    url = consent(op, start(browser), "tamper")
    parts = urlsplit(url)
    query = query_of(url)
    genuine = query["state"]
    tampered = genuine[:-1] + ("B" if genuine.endswith("A") else "A")  # never the genuine one
    for state in (tampered, "x" * 43, "", "s" * 5000):
        forged = f"{EXTERNAL_URL}{parts.path}?{urlencode({**query, 'state': state})}"
        _refused(callback(browser, forged, JSON), 400, "invalid_state")
    no_state = {k: v for k, v in query.items() if k != "state"}
    _refused(
        callback(browser, f"{EXTERNAL_URL}{parts.path}?{urlencode(no_state)}", JSON),
        400,
        "invalid_state",
    )
    assert callback(browser, url, JSON).status == 200  # the genuine one still works


def test_a_callback_for_another_provider_is_refused(site, op):
    server, _ = site
    op.add_user("crossed", email="crossed@example.com")
    browser = Browser(server, "127.0.0.23")
    url = consent(op, start(browser, "sso"), "crossed")
    crossed = url.replace("/auth/oauth/sso/", "/auth/oauth/untrusted/")
    _refused(callback(browser, crossed, JSON), 400, "invalid_state")


# --- replay -----------------------------------------------------------------------------------


def test_a_callback_url_replayed_signs_nobody_in_and_the_code_is_spent(site, op):
    server, _ = site
    op.add_user("replayed", email="replayed@example.com")
    victim = Browser(server, "127.0.0.24")
    url = consent(op, start(victim), "replayed")
    assert callback(victim, url, JSON).status == 200
    # The same URL again (history, a proxy log, a Referer): in the same browser...
    _refused(callback(victim, url, JSON), 400, "invalid_state")
    # ... or in the thief's, with a copy of the victim's pending-sign-in cookie even.
    thief = Browser(server, "127.0.0.99")
    thief.cookies["alice_app_session_oauth"] = victim.cookies["alice_app_session_oauth"]
    _refused(callback(thief, url, JSON), 400, "invalid_state")
    assert me(thief).status == 401
    # And the provider itself refuses the spent code.
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", urlsplit(op.url).port, timeout=10)
    body = urlencode(
        {
            "grant_type": "authorization_code",
            "code": query_of(url)["code"],
            "redirect_uri": f"{EXTERNAL_URL}/auth/oauth/sso/callback",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "code_verifier": "x" * 43,
        }
    )
    conn.request("POST", "/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
    answer = conn.getresponse()
    assert answer.status == 400 and b"invalid_grant" in answer.read()
    conn.close()


def test_a_stolen_callback_used_first_by_the_thief_is_refused(site, op):
    server, _ = site
    op.add_user("intercepted", email="intercepted@example.com")
    victim = Browser(server, "127.0.0.25")
    url = consent(op, start(victim), "intercepted")
    thief = Browser(server, "127.0.0.98")
    thief.get("/auth/oauth/sso/login", headers=HTML)  # a pending-sign-in cookie of their own
    _refused(callback(thief, url, JSON), 400, "invalid_state")
    assert callback(victim, url, JSON).status == 200  # the victim's sign-in is unharmed


# --- another app's authorization code ---------------------------------------------------------


def test_a_code_issued_to_another_apps_client_is_refused(site, op, raw_db):
    server, _ = site
    op.add_client(
        "mallory-app",
        "mallory-secret-0123456789abcdefghijkl",
        ["https://mallory.example/cb"],
        name="Mallory's app",
    )
    op.add_user("victim-at-op", email=VICTIM)
    # The victim once signed in to Mallory's app: Mallory has a code for the victim...
    from mdb_sync.auth.oauth.protocol import Endpoints
    from mdb_sync.auth.oauth.protocol import authorization_url as build_url
    from mdb_sync.auth.oauth.settings import ProviderSettings
    from mdb_sync.manifest.sections import load_section

    mallory = ProviderSettings.from_section(
        "m",
        load_section(
            "auth.oauth.providers.m",
            {"issuer": op.url, "client_id": "mallory-app", "client_secret_env": "UNUSED"},
        ),
    )
    where = Endpoints(op.url + "/authorize", op.url + "/token")
    stolen_code = query_of(
        consent(
            op,
            build_url(
                mallory,
                where,
                redirect_uri="https://mallory.example/cb",
                state="s" * 43,
                nonce="n" * 43,
                code_verifier="v" * 43,
            ),
            "victim-at-op",
        )
    )["code"]
    # ... and slips it into a sign-in of their own at Alice's app.
    attacker = Browser(server, "127.0.0.66")
    url = consent(op, start(attacker), "victim-at-op")  # a genuine state for the attacker
    injected = url.replace(f"code={query_of(url)['code']}", f"code={stolen_code}")
    reply = callback(attacker, injected, JSON)
    _refused(reply, 401, "code_refused")
    assert reply.json["error"]["reason"] == "code_refused"
    assert _users(raw_db) == [] and me(attacker).status == 401


# --- open redirects ---------------------------------------------------------------------------


FORGED_HOST = {
    "Host": "evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Prefix": "/phish",
    "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
}


def test_the_callback_url_never_follows_the_request_and_next_stays_on_the_site(
    factory, tmp_path, op
):
    app = make_oauth_site(factory, tmp_path, op)
    # Even behind a proxy the operator trusts for every X-Forwarded-* header.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
    op.add_user("redirected", email="redirected@example.com")
    with LiveServer(app) as live:
        for target in (
            "https://evil.example/x",
            "//evil.example/x",
            "/\\evil.example",
            "javascript:alert(1)",
        ):
            browser = Browser(live.url, "127.0.0.30", headers=FORGED_HOST)
            authorization = start(browser, next=target)
            sent = query_of(authorization)["redirect_uri"]
            assert sent == f"{EXTERNAL_URL}/auth/oauth/sso/callback"
            reply = callback(browser, consent(op, authorization, "redirected"))
            assert reply.status == 303 and reply.header("Location") == "/", target


def test_the_provider_refuses_a_redirect_uri_the_app_did_not_register(site, op):
    server, _ = site
    authorization = start(Browser(server, "127.0.0.31"))
    evil = authorization.replace(
        urlencode({"redirect_uri": f"{EXTERNAL_URL}/auth/oauth/sso/callback"}),
        urlencode({"redirect_uri": "https://evil.example/auth/oauth/sso/callback"}),
    )
    assert evil != authorization
    status, location = op.authorize(evil, "redirected")
    assert status == 400 and location == ""  # an error page, never a redirect to evil


# --- e-mail-collision account takeover --------------------------------------------------------


def test_an_unverified_provider_email_never_opens_the_account_that_has_it(site, op, raw_db):
    server, _ = site
    victim = Browser(server, "127.0.0.2")
    register(victim, VICTIM)
    # The attacker's provider account claims the victim's address, unverified.
    op.add_user("squatter", email=VICTIM, email_verified=False)
    attacker = Browser(server, "127.0.0.66")
    reply = sign_in(attacker, op, "squatter")
    assert reply.status == 409 and "alice_app_session" not in reply.set_cookies
    assert "sign in to it" in reply.text
    json_reply = callback(attacker, consent(op, start(attacker), "squatter"), JSON)
    assert json_reply.status == 409 and json_reply.json["error"]["reason"] == "email_in_use"
    assert me(attacker).status == 401
    # Nothing was linked to the victim, who still signs in with the password alone.
    assert list(raw_db["mdb_auth_identities"].find()) == []
    assert _users(raw_db) == [VICTIM]
    fresh = Browser(server, "127.0.0.2", headers=JSON)
    login = fresh.post(
        "/auth/login",
        json={"email": VICTIM, "password": PASSWORD},
        headers={"X-CSRF-Token": fresh.csrf()},
    )
    assert login.status == 200


def test_a_verified_email_from_a_provider_not_trusted_for_email_is_no_key_either(site, op, raw_db):
    server, _ = site
    register(Browser(server, "127.0.0.2"), VICTIM)
    op.add_user("tenant-admin", email=VICTIM, email_verified=True)  # says verified
    attacker = Browser(server, "127.0.0.66")
    reply = callback(attacker, consent(op, start(attacker, "untrusted"), "tenant-admin"), JSON)
    assert reply.status == 409 and reply.json["error"]["reason"] == "email_in_use"
    assert list(raw_db["mdb_auth_identities"].find()) == []


def test_github_public_or_unverified_emails_are_no_key(site, op, raw_db):
    server, _ = site
    register(Browser(server, "127.0.0.2"), VICTIM)
    op.add_user(
        "gh-squatter",
        email="attacker@example.com",
        public_email=VICTIM,  # anyone may put any address on their public profile
        github_emails=[
            {"email": VICTIM, "primary": False, "verified": False},
            {"email": "attacker@example.com", "primary": True, "verified": False},
        ],
    )
    attacker = Browser(server, "127.0.0.66")
    reply = callback(attacker, consent(op, start(attacker, "github"), "gh-squatter"), JSON)
    assert reply.status == 409 and reply.json["error"]["reason"] == "email_in_use"
    assert list(raw_db["mdb_auth_identities"].find()) == []


def test_an_unverified_email_does_not_reserve_the_address_for_later(site, op, raw_db):
    """Pre-hijacking: an attacker signs up first with the victim's address, unverified, hoping
    the victim later registers (or resets a password) into an account the attacker can enter.
    The account made from the unverified identity does not get the address."""
    server, _ = site
    op.add_user("early-bird", email=VICTIM, email_verified=False)
    attacker = Browser(server, "127.0.0.66")
    assert sign_in(attacker, op, "early-bird").status == 303
    assert me(attacker).json["user"]["email"].endswith("@oauth.invalid")
    victim = Browser(server, "127.0.0.2")
    register(victim, VICTIM)  # the address is free: a separate account
    assert me(victim).json["user"]["user_id"] != me(attacker).json["user"]["user_id"]


# --- rate limit -------------------------------------------------------------------------------


def test_callbacks_are_rate_limited_per_client_address(factory, tmp_path, op):
    register_client(op)
    manifest = oauth_manifest(op)
    manifest["token_management"]["security"]["rate_limiting"]["oauth"] = {
        "max_attempts": 5,
        "window_seconds": 600,
    }
    app = make_site(factory, tmp_path, manifest, MDB_EXTERNAL_URL=EXTERNAL_URL)
    with LiveServer(app) as live:
        flood = Browser(live.url, "127.0.0.77")
        path = "/auth/oauth/sso/callback?" + urlencode({"state": "x" * 43, "code": "c"})
        statuses = [flood.get(path, headers=JSON).status for _ in range(7)]
        assert statuses[:5] == [400] * 5 and statuses[5:] == [429, 429]
        other = Browser(live.url, "127.0.0.78")
        assert other.get(path, headers=JSON).status == 400  # another address is not held back
