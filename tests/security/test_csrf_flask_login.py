"""Attack: cross-site request forgery against a user signed in through Flask-Login's own
``login_user`` (a supported path: the app's own sign-in view), and a logout that leaves
them signed in.

The victim's browser sends its cookies with a forged cross-site POST but cannot add a CSRF
token; whatever cookie the identity came from (the app's session cookie, Flask's session, or
Flask-Login's remember cookie), the POST is refused. ``/auth/logout`` ends Flask-Login's
login too, remember cookie included."""

from __future__ import annotations

import flask_login
import pytest
from auth_apps import PASSWORD
from flask import request

from flask_mdb import db
from flask_mdb.auth import AuthUser, current_service, get_current_user, login_required, public
from flask_mdb.testing import LiveServer

from .raw_http import Browser
from .site_apps import make_site, register, site_manifest

VICTIM = "victim@example.com"
EVIL_ORIGIN = {"Origin": "https://evil.example", "Accept": "application/json"}


@pytest.fixture
def site(factory, tmp_path):
    app = make_site(factory, tmp_path, site_manifest(reset=False))

    @app.post("/legacy/login")
    @public
    def legacy_login():  # the app's own sign-in, through Flask-Login directly
        data = request.get_json()
        user = current_service().authenticate(data["email"], data["password"])
        flask_login.login_user(AuthUser(user, "flask-session"), remember=bool(data.get("remember")))
        return {"signed_in": True}

    @app.post("/notes")
    @login_required
    def create_note():
        db.notes.insert_one({"owner": get_current_user().id, "text": request.get_json()["text"]})
        return {"created": True}, 201

    with LiveServer(app) as server:
        register(Browser(server.url, "127.0.0.5"), VICTIM)
        yield app, server


def _victim(server, remember=False):
    browser = Browser(server.url, "127.0.0.2", headers={"Accept": "application/json"})
    reply = browser.post(
        "/legacy/login", json={"email": VICTIM, "password": PASSWORD, "remember": remember}
    )
    assert reply.status == 200, reply.text
    assert browser.get("/whoami").json == {"email": VICTIM, "via": "flask-session"}
    return browser


def _notes(app):
    with app.app_context(), app.extensions["mdb"].extension.bind("alice_app") as scoped:
        return [note["text"] for note in scoped.notes.find({})]


def test_a_forged_post_with_a_flask_login_session_is_refused(site):
    app, server = site
    victim = _victim(server)
    assert "session" in victim.cookies  # Flask's own session cookie carries the login

    forged = victim.post("/notes", json={"text": "forged"}, headers=EVIL_ORIGIN)
    assert forged.status == 400 and "CSRF" in forged.json["error"]["message"]
    bogus = victim.post("/notes", json={"text": "forged"},
                        headers={**EVIL_ORIGIN, "X-CSRF-Token": "x" * 40})  # fmt: skip
    assert bogus.status == 403

    # The attacker's own token (for their own browser, from another address) does not fit.
    attacker = Browser(server.url, "127.0.0.9")
    stolen = attacker.csrf()
    foreign = victim.post("/notes", json={"text": "forged"},
                          headers={**EVIL_ORIGIN, "X-CSRF-Token": stolen})  # fmt: skip
    assert foreign.status == 403
    # Nor does one minted for the victim's seed cookie while anonymous (a planted seed):
    # the token of a Flask-Login user is bound to that user.
    planter = Browser(server.url, "127.0.0.9")
    planted = planter.csrf()
    victim.cookies.update({k: v for k, v in planter.cookies.items() if k.endswith("_csrf")})
    replanted = victim.post("/notes", json={"text": "forged"},
                            headers={**EVIL_ORIGIN, "X-CSRF-Token": planted})  # fmt: skip
    assert replanted.status == 403
    assert _notes(app) == []

    genuine = victim.post("/notes", json={"text": "mine"}, headers={"X-CSRF-Token": victim.csrf()})
    assert genuine.status == 201
    assert _notes(app) == ["mine"]


def test_the_remember_cookie_alone_also_needs_a_csrf_token(site):
    app, server = site
    victim = _victim(server, remember=True)
    assert "remember_token" in victim.cookies
    del victim.cookies["session"]  # the browser restarted: only the remember cookie is left
    assert victim.get("/whoami").json["email"] == VICTIM  # signed in from it
    victim.cookies.pop("session", None)
    forged = victim.post("/notes", json={"text": "forged"}, headers=EVIL_ORIGIN)
    assert forged.status == 400
    assert _notes(app) == []


def test_logout_ends_the_flask_login_session_and_its_remember_cookie(site):
    _app, server = site
    victim = _victim(server, remember=True)
    # Logout is an unsafe request too: a forged one does not sign the victim out.
    assert victim.post("/auth/logout", headers=EVIL_ORIGIN).status == 400
    assert victim.get("/whoami").json["email"] == VICTIM

    done = victim.post("/auth/logout", headers={"X-CSRF-Token": victim.csrf()})
    assert done.status == 200 and done.json == {"logged_out": True}
    cleared = done.set_cookies["remember_token"]
    assert cleared.value == "" or "1970" in cleared["expires"] or cleared["max-age"] == "0"
    assert "remember_token" not in victim.cookies
    assert victim.get("/auth/me").status == 401
    assert victim.get("/whoami").status == 401
    assert victim.post("/notes", json={"text": "late"},
                       headers={"X-CSRF-Token": victim.csrf()}).status == 401  # fmt: skip


def test_a_bearer_token_is_judged_alone_even_next_to_a_flask_login_cookie(site):
    app, server = site
    other = "other@example.com"
    register(Browser(server.url, "127.0.0.6"), other)
    tokens = Browser(server.url, "127.0.0.6").post(
        "/auth/token", json={"email": other, "password": PASSWORD}
    )
    victim = _victim(server)
    bearer = {"Authorization": f"Bearer {tokens.json['access_token']}"}
    assert victim.get("/whoami", headers=bearer).json == {"email": other, "via": "token"}
    # No CSRF needed for the token's request, and it acts as the token's user only.
    assert victim.post("/notes", json={"text": "by token"}, headers=bearer).status == 201
    with app.app_context(), app.extensions["mdb"].extension.bind("alice_app") as scoped:
        [note] = scoped.notes.find({}).to_list()
    assert note["owner"] != victim.get("/auth/me").json["user"]["user_id"]
