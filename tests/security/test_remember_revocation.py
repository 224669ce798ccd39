"""Attack: replaying a copy of Flask-Login's remember cookie (or of Flask's session cookie)
after the login it carries was ended.

An app may sign users in with ``flask_login.login_user(user, remember=True)`` (its own
sign-in view). Flask-Login's remember cookie is a signed ``<id>|<digest>`` that no server
state backs: a copy taken before logout — stolen, or from another browser — would sign the
user in until the cookie expires (a year by default). Here the id Flask-Login stores names a
server-side session (``mdb_auth_sessions``, keyed by a digest), so a logout ends that one
cookie, and logout everywhere, a password change or a deactivation end every such cookie of
the user.

Each test mounts the attack as an outsider would: the victim's browser (127.0.0.2) signs in
over real HTTP, the attacker copies the cookie and replays it from other loopback addresses,
against a second, independent server (its own Flask app and engine on the same database)
too, and concurrently, so no per-process or per-thread state can explain the refusal.
"""

from __future__ import annotations

import base64
import concurrent.futures

import flask_login
import pytest
from auth_apps import PASSWORD
from flask import request

from flask_mdb import db
from flask_mdb.auth import (
    AuthUser,
    current_service,
    get_current_user,
    login_required,
    logout_user,
    public,
)
from flask_mdb.auth.current import service_for_slug
from flask_mdb.testing import LiveServer

from .raw_http import Browser
from .site_apps import SLUG, make_site, register, site_manifest

VICTIM = "victim@example.com"
REMEMBER = "remember_token"
JSON = {"Accept": "application/json"}
ATTACKERS = [f"127.0.0.{n}" for n in range(10, 16)]


def _legacy_views(app):
    """The app's own sign-in and sign-out, through Flask-Login directly."""

    @app.post("/legacy/login")
    @public
    def legacy_login():
        data = request.get_json()
        user = current_service().authenticate(data["email"], data["password"])
        flask_login.login_user(AuthUser(user, "flask-session"), remember=bool(data.get("remember")))
        return {"signed_in": True}

    @app.post("/legacy/logout")
    @public
    def legacy_logout():
        flask_login.logout_user()
        return {"signed_out": True}

    @app.post("/legacy/logout-everywhere")
    @login_required
    def legacy_logout_everywhere():
        logout_user(everywhere=True)
        return {"signed_out": "everywhere"}

    @app.post("/notes")
    @login_required
    def create_note():
        db.notes.insert_one({"owner": get_current_user().id, "text": request.get_json()["text"]})
        return {"created": True}, 201

    return app


@pytest.fixture
def sites(factory, tmp_path):
    """Two independent web servers of the same app (two Flask apps, two engines, one
    database), as two workers behind a load balancer would be."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    first = _legacy_views(make_site(factory, manifests, site_manifest(reset=False)))
    second = _legacy_views(make_site(factory, manifests, site_manifest(reset=False)))
    with LiveServer(first) as one, LiveServer(second, threads=4) as two:
        register(Browser(one.url, "127.0.0.5"), VICTIM)
        yield (first, one), (second, two)


def _victim(server, remember=True):
    browser = Browser(server.url, "127.0.0.2", headers=dict(JSON))
    reply = browser.post(
        "/legacy/login", json={"email": VICTIM, "password": PASSWORD, "remember": remember}
    )
    assert reply.status == 200, reply.text
    assert browser.get("/whoami").json == {"email": VICTIM, "via": "flask-session"}
    return browser


def _replay(server, cookies, source="127.0.0.3"):
    """What the server makes of ``cookies`` sent from another client (its own address)."""
    thief = Browser(server.url, source, headers=dict(JSON))
    thief.cookies.update(cookies)
    return thief.get("/whoami")


def _replays(server, cookies, sources=ATTACKERS):
    """``cookies`` replayed concurrently from each address of ``sources``: the statuses."""
    with concurrent.futures.ThreadPoolExecutor(len(sources)) as pool:
        replies = pool.map(lambda source: _replay(server, cookies, source), sources)
        return [reply.status for reply in replies]


def _user_id(app):
    with app.app_context():
        return service_for_slug(SLUG).get_user_by_email(VICTIM)["user_id"]


@pytest.mark.parametrize("logout", ["/auth/logout", "/legacy/logout"])
def test_a_copied_remember_cookie_is_dead_after_logout(sites, logout):
    (_app, one), (_other, two) = sites
    victim = _victim(one)
    remembered = {REMEMBER: victim.cookies[REMEMBER]}
    flask_session = {"session": victim.cookies["session"]}
    # Before the logout the copy works — from another address, on another server too.
    assert _replay(one, remembered).json == {"email": VICTIM, "via": "flask-session"}
    assert _replay(two, flask_session).json["email"] == VICTIM
    assert set(_replays(two, remembered, ATTACKERS[:2])) == {200}

    done = victim.post(logout, headers={"X-CSRF-Token": victim.csrf()})
    assert done.status == 200, done.text
    assert REMEMBER not in victim.cookies
    assert victim.get("/whoami").status == 401

    # The copies, replayed concurrently from distinct addresses on both servers: nobody.
    assert _replays(one, remembered) == [401] * len(ATTACKERS)
    assert _replays(two, remembered) == [401] * len(ATTACKERS)
    assert _replays(two, flask_session) == [401] * len(ATTACKERS)
    # The stale cookie does not get in the way of the app's own session cookie either.
    assert _replay(one, {**remembered, "session": "x"}).status == 401


def test_logout_ends_only_that_login(sites):
    (_app, one), (_other, two) = sites
    phone = _victim(one)
    laptop = _victim(two)
    kept = {REMEMBER: laptop.cookies[REMEMBER]}
    assert phone.post("/auth/logout", headers={"X-CSRF-Token": phone.csrf()}).status == 200
    assert _replay(one, kept).json["email"] == VICTIM  # the other browser's login lives on
    assert laptop.get("/whoami").json["email"] == VICTIM


def test_logout_everywhere_ends_every_remember_cookie(sites):
    (_app, one), (_other, two) = sites
    phone = _victim(one)
    laptop = _victim(two)
    copies = [{REMEMBER: b.cookies[REMEMBER]} for b in (phone, laptop)]
    done = phone.post("/legacy/logout-everywhere", headers={"X-CSRF-Token": phone.csrf()})
    assert done.status == 200, done.text
    for copy in copies:
        assert _replays(two, copy, ATTACKERS[:3]) == [401] * 3
    assert laptop.get("/whoami").status == 401
    # Signing in again works (a new login, a new cookie).
    assert _victim(one).get("/whoami").status == 200


def test_a_password_change_ends_every_remember_cookie(sites):
    (_app, one), (_other, two) = sites
    other_browser = _victim(two)
    stolen = {REMEMBER: other_browser.cookies[REMEMBER]}
    victim = _victim(one)
    changed = victim.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase 9"},
        headers={"X-CSRF-Token": victim.csrf()},
    )
    assert changed.status == 200, changed.text
    assert _replays(one, stolen, ATTACKERS[:3]) == [401] * 3
    assert _replays(two, stolen, ATTACKERS[3:]) == [401] * 3
    assert victim.get("/whoami").json["email"] == VICTIM  # this browser got a new login
    # ... still remembered: after the browser closes, its new remember cookie signs it in.
    assert REMEMBER in changed.set_cookies and victim.cookies[REMEMBER] != stolen[REMEMBER]
    del victim.cookies["session"]
    assert victim.get("/whoami").json["email"] == VICTIM


def test_a_deactivated_users_remember_cookie_identifies_nobody(sites):
    (app, one), (other, two) = sites
    victim = _victim(one)
    stolen = {REMEMBER: victim.cookies[REMEMBER]}
    user_id = _user_id(app)
    with other.app_context():  # the other server's engine: an administrator elsewhere
        service_for_slug(SLUG).deactivate(user_id)
    assert _replays(one, stolen, ATTACKERS[:3]) == [401] * 3
    with other.app_context():
        service_for_slug(SLUG).activate(user_id)
    # Back in service, the account signs in again — the old cookie stays dead.
    assert _replays(two, stolen, ATTACKERS[3:]) == [401] * 3
    assert _victim(one).get("/whoami").status == 200


def test_a_tampered_remember_cookie_identifies_nobody(sites):
    (app, one), _ = sites
    victim = _victim(one)
    value = victim.cookies[REMEMBER]
    login_id, _, signature = value.partition("|")
    user_id = _user_id(app)
    forged = [
        f"{login_id}x|{signature}",  # another id under the same signature
        f"{user_id}|{signature}",  # the bare user id
        f"{user_id}.0|{signature}",  # the id format before server-side logins
        f"{login_id}|{signature[:-2]}00",  # a tampered signature
        login_id,  # no signature
        "",
        base64.b64encode(value.encode()).decode(),
        "|" * 10 + "x" * 4000,  # long garbage
    ]
    for cookie in forged:
        assert _replay(one, {REMEMBER: cookie}).status == 401, cookie
    assert _replay(one, {REMEMBER: value}).json["email"] == VICTIM  # the genuine one works


def test_the_remember_cookie_signs_in_again_after_the_browser_closes(sites):
    (_app, one), (_other, two) = sites
    victim = _victim(one)
    plain_request = victim.get("/whoami")  # a plain request writes no new remember cookie
    assert REMEMBER not in plain_request.set_cookies
    del victim.cookies["session"]  # the browser closed: Flask's session cookie is gone
    again = victim.get("/whoami")
    assert again.json == {"email": VICTIM, "via": "flask-session"}
    assert "session" in victim.cookies  # Flask-Login put the login back in Flask's session
    assert victim.get("/whoami").json["email"] == VICTIM
    # The remember cookie identity is a cookie identity: unsafe requests need the token.
    forged = victim.post("/notes", json={"text": "forged"},
                         headers={"Origin": "https://evil.example"})  # fmt: skip
    assert forged.status == 400
    genuine = victim.post("/notes", json={"text": "mine"}, headers={"X-CSRF-Token": victim.csrf()})
    assert genuine.status == 201
    # A login without "remember" sets no remember cookie and does not survive the browser.
    plain = _victim(two, remember=False)
    assert REMEMBER not in plain.cookies
    del plain.cookies["session"]
    assert plain.get("/whoami").status == 401


def test_a_dead_remember_cookie_does_not_hide_the_apps_own_session(sites):
    (_app, one), _ = sites
    victim = _victim(one)
    dead = victim.cookies[REMEMBER]
    assert victim.post("/legacy/logout", headers={"X-CSRF-Token": victim.csrf()}).status == 200
    # A browser still holding the dead cookie signs in through /auth/login (the app's own
    # session cookie): Flask-Login reads the remember cookie first, and must not stop there.
    browser = Browser(one.url, "127.0.0.4", headers=dict(JSON))
    browser.cookies[REMEMBER] = dead
    signed_in = browser.post(
        "/auth/login",
        json={"email": VICTIM, "password": PASSWORD},
        headers={"X-CSRF-Token": browser.csrf()},
    )
    assert signed_in.status == 200, signed_in.text
    browser.cookies[REMEMBER] = dead
    seen = browser.get("/whoami")
    assert seen.json == {"email": VICTIM, "via": "session"}
    assert REMEMBER not in browser.cookies  # the dead cookie was cleared
    assert browser.get("/whoami").json == {"email": VICTIM, "via": "session"}
