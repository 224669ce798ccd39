"""Two-factor sign-in (TOTP) through a real server, codes made with pyotp as an authenticator
app would: enrolment (a provisioning URI, shown once; the secret never again and not stored
in the clear), the second step (no session before the code), recovery codes (once each),
remembered devices, tokens. Attacks: a code replayed, codes guessed from many addresses at
once (the account's checks lock, the right code included), a pending sign-in's attempts
used up."""

from __future__ import annotations

import time

import pyotp
import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, write

from flask_mdb import MDB
from flask_mdb.testing import LiveServer

from .attack import Call, burst
from .raw_http import Browser

SLUG = "vault"
EMAIL = "ada@example.com"
JSON = {"Accept": "application/json"}


def make_app(factory, tmp_path, **two_factor):
    manifest = auth_manifest(SLUG)
    manifest["auth"]["users"]["two_factor"] = {"issuer_name": "Vault", **two_factor}
    limits = manifest["token_management"]["security"]["rate_limiting"]
    limits["two_factor"] = {"max_attempts": 1000, "window_seconds": 60}
    limits["register"] = {"max_attempts": 1000, "window_seconds": 60}
    write(tmp_path, manifest)
    return factory(MDB(), **auth_config(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG=SLUG))


@pytest.fixture
def server(factory, tmp_path):
    with LiveServer(make_app(factory, tmp_path)) as live:
        yield live.url


def post(browser: Browser, path: str, body: dict | None = None):
    return browser.post(path, json=body or {}, headers={"X-CSRF-Token": browser.csrf(), **JSON})


def enrol(base: str) -> tuple[Browser, pyotp.TOTP, list[str]]:
    browser = Browser(base, "127.0.0.2")
    assert post(browser, "/auth/register", {"email": EMAIL, "password": PASSWORD}).status == 201
    setup = post(browser, "/auth/2fa/setup")
    assert setup.status == 200, setup.text
    uri = setup.json["provisioning_uri"]
    assert (
        uri.startswith("otpauth://totp/Vault:ada%40example.com?secret=") and "issuer=Vault" in uri
    )
    totp = pyotp.TOTP(setup.json["secret"])
    done = post(browser, "/auth/2fa/confirm", {"code": totp.now()})
    assert done.status == 200 and len(done.json["recovery_codes"]) == 10
    return browser, totp, done.json["recovery_codes"]


def password_step(base: str, source: str = "127.0.0.3") -> Browser:
    browser = Browser(base, source)
    reply = post(browser, "/auth/login", {"email": EMAIL, "password": PASSWORD})
    assert reply.status == 200 and reply.json == {
        "two_factor_required": True,
        "methods": ["totp", "recovery_code"],
    }
    assert browser.get("/auth/me", headers=JSON).status == 401  # no session yet
    return browser


def next_code(totp: pyotp.TOTP, steps: int = 1) -> str:
    return totp.at(time.time() + 30 * steps)


def test_enrolment_shows_the_secret_once_and_stores_it_sealed(server, raw_db):
    browser, totp, _ = enrol(server)
    me = browser.get("/auth/me", headers=JSON).json["user"]
    assert me["two_factor_enabled"] is True and "two_factor" not in me
    assert totp.secret not in browser.get("/auth/me", headers=JSON).text
    doc = raw_db[f"{SLUG}_users"].find_one({"email": EMAIL})
    assert totp.secret not in str(doc["two_factor"])  # encrypted at rest
    assert all(len(h) == 64 for h in doc["two_factor"]["recovery"])  # hashes, not the codes
    status = browser.get("/auth/2fa/status", headers=JSON).json
    assert status == {"enabled": True, "recovery_codes_left": 10}


def test_a_password_alone_no_longer_signs_in(server):
    _, totp, _ = enrol(server)
    browser = password_step(server)
    wrong = post(browser, "/auth/2fa", {"code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.status == 401 and wrong.json["error"]["reason"] == "wrong_code"
    assert post(browser, "/auth/2fa", {"code": next_code(totp)}).status == 200
    assert browser.get("/auth/me", headers=JSON).json["user"]["email"] == EMAIL


def test_a_replayed_code_is_refused(server):
    _, totp, _ = enrol(server)
    code = next_code(totp)
    first = password_step(server, "127.0.0.3")
    assert post(first, "/auth/2fa", {"code": code}).status == 200
    # An observer of that code (shoulder, phishing proxy) tries it within its 30 seconds.
    thief = password_step(server, "127.0.0.66")
    assert post(thief, "/auth/2fa", {"code": code}).status == 401
    assert post(thief, "/auth/2fa", {"code": totp.now()}).status == 401  # an earlier step too
    assert thief.get("/auth/me", headers=JSON).status == 401


def test_a_recovery_code_works_once(server):
    _, _, codes = enrol(server)
    browser = password_step(server)
    assert post(browser, "/auth/2fa", {"recovery_code": codes[0].upper()}).status == 200
    again = password_step(server, "127.0.0.66")
    assert post(again, "/auth/2fa", {"recovery_code": codes[0]}).status == 401
    assert post(again, "/auth/2fa", {"recovery_code": codes[1]}).status == 200
    status = again.get("/auth/2fa/status", headers=JSON).json
    assert status["recovery_codes_left"] == 8


def test_guessing_codes_from_many_addresses_locks_the_account_checks(server):
    _, totp, _ = enrol(server)
    # Twenty password steps (the attacker knows the password), one guess each, all at once.
    pending = [password_step(server, f"127.0.0.{30 + i}") for i in range(20)]
    calls = []
    for browser in pending:
        token = browser.csrf()
        jar = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        guess = "123456" if "123456" not in (totp.now(), next_code(totp)) else "654321"
        calls.append(
            Call("POST", "/auth/2fa", browser.source, {"code": guess},
                 headers={"Cookie": jar, "X-CSRF-Token": token})
        )  # fmt: skip
    answers = burst(server, calls)
    statuses = sorted(a.status for a in answers)
    assert statuses.count(401) <= 5  # at most five codes were checked
    assert statuses.count(429) >= 15
    # Locked: even the right code is refused now, from anywhere.
    late = password_step(server, "127.0.0.99")
    refused = post(late, "/auth/2fa", {"code": next_code(totp)})
    assert refused.status == 429 and int(refused.header("Retry-After")) > 0


def test_a_pending_sign_in_takes_five_codes_at_most(factory, tmp_path):
    with LiveServer(make_app(factory, tmp_path, max_failed_attempts=100)) as live:
        _, totp, _ = enrol(live.url)
        browser = password_step(live.url)
        wrong = "000000" if "000000" not in (totp.now(), next_code(totp)) else "999999"
        assert [post(browser, "/auth/2fa", {"code": wrong}).status for _ in range(5)] == [401] * 5
        spent = post(browser, "/auth/2fa", {"code": next_code(totp)})
        assert spent.status == 401 and spent.json["error"]["reason"] == "sign_in_again"


def test_tokens_need_the_code_too(server):
    _, totp, _ = enrol(server)
    client = Browser(server, "127.0.0.4")
    bare = client.post("/auth/token", json={"email": EMAIL, "password": PASSWORD})
    assert bare.status == 401 and bare.json["error"]["reason"] == "two_factor_required"
    full = {"email": EMAIL, "password": PASSWORD, "code": next_code(totp)}
    assert client.post("/auth/token", json=full).status == 200


def test_a_remembered_device_skips_the_code_until_the_password_changes(factory, tmp_path):
    with LiveServer(make_app(factory, tmp_path, remember_device_days=30)) as live:
        _, totp, _ = enrol(live.url)
        browser = password_step(live.url)
        body = {"code": next_code(totp), "remember_device": True}
        reply = post(browser, "/auth/2fa", body)
        assert reply.status == 200
        cookie = reply.set_cookies[f"{SLUG}_session_device"]
        assert cookie["httponly"] and int(cookie["max-age"]) == 30 * 86_400
        post(browser, "/auth/logout")
        again = post(browser, "/auth/login", {"email": EMAIL, "password": PASSWORD})
        assert again.status == 200 and again.json["user"]["email"] == EMAIL
        new = "another horse battery"
        changed = post(browser, "/auth/password", {"current_password": PASSWORD,
                                                    "new_password": new})  # fmt: skip
        assert changed.status == 200
        post(browser, "/auth/logout")
        after = post(browser, "/auth/login", {"email": EMAIL, "password": new})
        assert after.json.get("two_factor_required") is True


def test_disabling_needs_a_code(server):
    browser, totp, _ = enrol(server)
    assert post(browser, "/auth/2fa/disable", {"code": "not a code"}).status == 401
    assert browser.get("/auth/2fa/status", headers=JSON).json["enabled"] is True
    assert post(browser, "/auth/2fa/disable", {"code": next_code(totp)}).status == 200
    assert browser.get("/auth/2fa/status", headers=JSON).json["enabled"] is False
    # Enrolling (and disabling) are fresh_login_required views: a token or session older
    # than auth.users.fresh_login_seconds is sent to re-authenticate (tested with a short
    # window in test_email_verification).


def test_a_provider_sign_in_still_needs_the_code(factory, tmp_path, monkeypatch):
    """The identity provider is one factor; an enrolled account's code is the other."""
    from oidc_provider import TestProvider

    from .oauth_site import SECRET, SECRET_ENV, callback, consent, oauth_manifest, register_client
    from .oauth_site import start as start_oauth
    from .site_apps import EXTERNAL_URL

    monkeypatch.setenv(SECRET_ENV, SECRET)
    with TestProvider() as op:
        register_client(op)
        manifest = oauth_manifest(op)
        manifest["auth"]["users"]["two_factor"] = {}
        write(tmp_path, manifest)
        app = factory(MDB(), **auth_config(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG="alice_app",
                                           MDB_EXTERNAL_URL=EXTERNAL_URL))  # fmt: skip
        with LiveServer(app) as live:
            op.add_user("otp-ada", email="otp-ada@example.com")
            browser = Browser(live.url, "127.0.0.2")
            first = callback(browser, consent(op, start_oauth(browser), "otp-ada"))
            assert first.status == 303  # no code enrolled yet: signed in
            setup = post(browser, "/auth/2fa/setup")  # fresh: the sign-in just happened
            totp = pyotp.TOTP(setup.json["secret"])
            assert post(browser, "/auth/2fa/confirm", {"code": totp.now()}).status == 200
            post(browser, "/auth/logout")
            again = callback(browser, consent(op, start_oauth(browser), "otp-ada"))
            assert again.status == 303 and again.header("Location") == "/auth/2fa"
            assert browser.get("/auth/me", headers=JSON).status == 401
            assert post(browser, "/auth/2fa", {"code": next_code(totp)}).status == 200
            assert (
                browser.get("/auth/me", headers=JSON).json["user"]["email"] == "otp-ada@example.com"
            )
