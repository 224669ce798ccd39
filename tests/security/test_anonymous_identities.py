"""Anonymous visitors' identities (``auth.policy.allow_anonymous``), through a real server: a
visitor gets an identity of its own (its id, its data, its websocket connections), signing
up or in upgrades it — the app's hook re-owns the visitor's notes in the same request — and
the identity ends. Attacks: the anonymous cookie used after the upgrade, the same anonymous
cookie raced into two accounts' sign-ins, a flood of new identities from one address, an
anonymous identity knocking at a websocket that needs a sign-in."""

from __future__ import annotations

import time

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, write
from flask import request

from flask_mdb import MDB, db
from flask_mdb.auth import caller_key, get_anonymous, get_current_user, rate_limit_auth
from flask_mdb.testing import LiveServer
from mdb_sync.auth import AnonymousIdentities

from .attack import Call, burst, cookies
from .raw_http import Browser
from .ws_security_support import open_socket, read_frames, refused

SLUG = "guestbook"
JSON = {"Accept": "application/json"}
COOKIE = f"{SLUG}_session_anon"


def carry_over(anonymous_id, user):
    """The app's hook: the visitor's notes become the account's (idempotent)."""
    db.notes.update_many({"owner": anonymous_id}, {"$set": {"owner": user["user_id"]}})


def manifest(new_per_address: int = 1000) -> dict:
    made = auth_manifest(SLUG)
    made["auth"]["policy"]["allow_anonymous"] = True
    made["auth"]["policy"]["required"] = False
    made["auth"]["anonymous"] = {
        "ttl_seconds": 3600,
        "max_new_per_address": {"max_attempts": new_per_address, "window_seconds": 3600},
    }
    made["token_management"]["security"]["rate_limiting"]["register"] = {
        "max_attempts": 1000,
        "window_seconds": 60,
    }
    made["websockets"] = {
        "live": {"path": f"/{SLUG}/ws", "auth": {"required": False, "allow_anonymous": True}},
        "members": {"path": f"/{SLUG}/members", "auth": {"required": True}},
    }
    return made


def make_app(factory, tmp_path, **manifest_options):
    write(tmp_path, manifest(**manifest_options))
    app = factory(
        MDB(),
        **auth_config(
            MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG=SLUG, MDB_ANONYMOUS_UPGRADE=carry_over
        ),
    )

    @app.post("/notes")
    def add_note():
        owner = get_current_user() or get_anonymous()
        if owner is None:
            return {"error": "no identity"}, 429
        db.notes.insert_one({"owner": owner.id, "text": request.get_json()["text"]})
        return {"owner": owner.id}, 201

    @app.get("/notes")
    def notes():
        owner = get_current_user() or get_anonymous(create=False)
        if owner is None:
            return {"owner": None, "notes": []}
        found = db.notes.find({"owner": owner.id}).sort("text", 1).to_list()
        return {"owner": owner.id, "notes": [n["text"] for n in found]}

    @app.post("/vote")
    @rate_limit_auth(2, 3600, key=caller_key)
    def vote():
        return {"voted": True}

    return app


@pytest.fixture
def server(factory, tmp_path):
    with LiveServer(make_app(factory, tmp_path)) as live:
        yield live.url


def _note(browser: Browser, text: str):
    return browser.post("/notes", json={"text": text}, headers={"X-CSRF-Token": browser.csrf()})


def _register(browser: Browser, email: str):
    return browser.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD},
        headers={"X-CSRF-Token": browser.csrf(), **JSON},
    )


def test_a_visitor_gets_an_identity_of_its_own(server):
    visitor = Browser(server, "127.0.0.2")
    first = _note(visitor, "hello")
    assert first.status == 201
    anon_id = first.json["owner"]
    assert anon_id.startswith("anon:")
    cookie = first.set_cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert _note(visitor, "again").json["owner"] == anon_id  # the same identity
    assert visitor.get("/notes").json == {"owner": anon_id, "notes": ["again", "hello"]}
    stranger = Browser(server, "127.0.0.3")
    assert stranger.get("/notes").json == {"owner": None, "notes": []}
    assert _note(stranger, "mine").json["owner"] != anon_id


def test_registering_upgrades_the_visitor_and_carries_its_notes(server):
    visitor = Browser(server, "127.0.0.2")
    anon_id = _note(visitor, "before signing up").json["owner"]
    old_cookie = visitor.cookies[COOKIE]
    reply = _register(visitor, "guest@example.com")
    assert reply.status == 201
    assert COOKIE not in visitor.cookies  # cleared by the upgrade
    mine = visitor.get("/notes").json
    assert mine["owner"] == reply.json["user"]["user_id"] and mine["notes"] == ["before signing up"]
    # Attack: the anonymous cookie used after the upgrade is refused — no identity, no notes.
    replay = Browser(server, "127.0.0.66")
    replay.cookies[COOKIE] = old_cookie
    assert replay.get("/notes").json == {"owner": None, "notes": []}
    fresh = _note(replay, "a new visitor")
    assert fresh.status == 201 and fresh.json["owner"] not in (anon_id, mine["owner"])


def test_signing_in_upgrades_too(server):
    owner = Browser(server, "127.0.0.4")
    assert _register(owner, "owner@example.com").status == 201
    visitor = Browser(server, "127.0.0.5")
    _note(visitor, "drafted anonymously")
    reply = visitor.post(
        "/auth/login",
        json={"email": "owner@example.com", "password": PASSWORD},
        headers={"X-CSRF-Token": visitor.csrf(), **JSON},
    )
    assert reply.status == 200
    assert visitor.get("/notes").json["notes"] == ["drafted anonymously"]


def test_one_anonymous_identity_raced_into_two_accounts_goes_to_one(server):
    base = Browser(server, "127.0.0.2")
    for email in ("a@example.com", "b@example.com"):
        assert _register(Browser(server, "127.0.0.9"), email).status == 201
    _note(base, "whose is this?")
    calls = []
    for i, email in enumerate(("a@example.com", "b@example.com")):
        jar = dict(base.cookies)
        browser = Browser(server, f"127.0.0.{40 + i}")
        browser.cookies = jar
        token = browser.csrf()
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        calls.append(
            Call(
                "POST",
                "/auth/login",
                browser.source,
                {"email": email, "password": PASSWORD},
                headers={"Cookie": cookie, "X-CSRF-Token": token},
            )
        )
    answers = burst(server, calls)
    assert [a.status for a in answers] == [200, 200]
    seen = []
    for answer in answers:
        jar = cookies(answer)
        browser = Browser(server, "127.0.0.50")
        browser.cookies = {k: v for k, v in jar.items() if v}
        seen.append(browser.get("/notes").json["notes"])
    assert sorted(seen) == [[], ["whose is this?"]]


def test_new_identities_per_address_are_limited(factory, tmp_path):
    with LiveServer(make_app(factory, tmp_path, new_per_address=3)) as live:
        made = [_note(Browser(live.url, "127.0.0.7"), "x").status for _ in range(5)]
        assert made == [201, 201, 201, 429, 429]
        assert _note(Browser(live.url, "127.0.0.8"), "x").status == 201


def test_an_anonymous_visitor_has_its_own_rate_limits(server):
    one, two = Browser(server, "127.0.0.2"), Browser(server, "127.0.0.2")  # one address
    _note(one, "x")
    _note(two, "y")
    votes = [one.post("/vote", headers={"X-CSRF-Token": one.csrf()}).status for _ in range(3)]
    assert votes == [200, 200, 429]
    assert two.post("/vote", headers={"X-CSRF-Token": two.csrf()}).status == 200


def test_the_visitors_websocket_closes_when_it_signs_up(server):
    visitor = Browser(server, "127.0.0.2")
    anon_id = _note(visitor, "x").json["owner"]
    ws, hello = open_socket(server, f"/{SLUG}/ws", address="127.0.0.2",
                            cookies={COOKIE: visitor.cookies[COOKIE]})  # fmt: skip
    try:
        assert hello["user_id"] == anon_id
        assert _register(visitor, "ws@example.com").status == 201
        _frames, closed = read_frames(ws, timeout=15)
        assert closed == (4401, "credentials revoked")
    finally:
        ws.close()


def test_an_anonymous_identity_is_no_sign_in_for_a_members_socket(server):
    visitor = Browser(server, "127.0.0.2")
    _note(visitor, "x")
    closed = refused(server, f"/{SLUG}/members", cookies={COOKIE: visitor.cookies[COOKIE]})
    assert closed == (1008, "authentication required")


def test_anonymous_identities_expire(engine):
    engine.register_app(manifest())
    identities = AnonymousIdentities(engine, SLUG, ttl=1)
    token, doc = identities.create()
    assert identities.get(token)["anonymous_id"] == doc["anonymous_id"]
    time.sleep(1.2)
    assert identities.get(token) is None
    assert identities.claim(token, "0" * 24) is None  # nor can it be upgraded
