"""Attack: a session cookie or token copied from the victim keeps working after the victim
asked the app to sign them out everywhere.

``POST /auth/logout {"everywhere": true}`` on an app outside a platform ends every login of
the account in that app — every browser's session, a copied cookie, bearer tokens — not only
the browser that asked. The victim signs in from two browsers (127.0.0.2, 127.0.0.3) and takes
a token; the attacker replays a copy of the second browser's cookie and the token from other
addresses, concurrently, before and after.
"""

from __future__ import annotations

import concurrent.futures

import pytest
from auth_apps import PASSWORD

from flask_mdb.testing import LiveServer

from .raw_http import Browser
from .site_apps import make_site, register, site_manifest

VICTIM = "victim@example.com"
JSON = {"Accept": "application/json"}
ATTACKERS = [f"127.0.0.{n}" for n in range(10, 14)]


@pytest.fixture
def server(factory, tmp_path):
    with LiveServer(make_site(factory, tmp_path, site_manifest(reset=False))) as live:
        register(Browser(live.url, "127.0.0.5"), VICTIM)
        yield live


def _signed_in(server, source):
    browser = Browser(server.url, source, headers=JSON)
    reply = browser.post(
        "/auth/login",
        json={"email": VICTIM, "password": PASSWORD},
        headers={"X-CSRF-Token": browser.csrf()},
    )
    assert reply.status == 200, reply.text
    return browser


def _who(browser):
    """The email the browser's identity names, None when it names nobody (a dead cookie or
    token is answered 401)."""
    reply = browser.get("/whoami")
    assert reply.status in (200, 401), reply.text
    return reply.json["email"] if reply.status == 200 else None


def _replays(server, cookies, token):
    """Who the copied cookies and the token identify, from the attackers' addresses."""

    def replay(source):
        thief = Browser(server.url, source, headers=JSON)
        thief.cookies = dict(cookies)
        bearer = Browser(server.url, source, headers={**JSON, "Authorization": f"Bearer {token}"})
        return _who(thief), _who(bearer)

    with concurrent.futures.ThreadPoolExecutor(len(ATTACKERS)) as pool:
        return set(pool.map(replay, ATTACKERS))


def _token(server):
    reply = Browser(server.url, "127.0.0.4", headers=JSON).post(
        "/auth/token", json={"email": VICTIM, "password": PASSWORD}
    )
    assert reply.status == 200, reply.text
    return reply.json["access_token"]


def test_logout_everywhere_ends_every_login_of_the_account(server):
    first, second = _signed_in(server, "127.0.0.2"), _signed_in(server, "127.0.0.3")
    token = _token(server)
    stolen = dict(second.cookies)
    assert _replays(server, stolen, token) == {(VICTIM, VICTIM)}
    out = first.post(
        "/auth/logout", json={"everywhere": True}, headers={"X-CSRF-Token": first.csrf()}
    )
    assert out.status == 200 and out.json == {"logged_out": True}, out.text
    assert _who(first) is None and _who(second) is None
    assert _replays(server, stolen, token) == {(None, None)}
    # The account itself still signs in.
    assert _who(_signed_in(server, "127.0.0.6")) == VICTIM


def test_a_plain_logout_ends_only_that_browser(server):
    first, second = _signed_in(server, "127.0.0.2"), _signed_in(server, "127.0.0.3")
    out = first.post("/auth/logout", json={}, headers={"X-CSRF-Token": first.csrf()})
    assert out.status == 200, out.text
    assert _who(first) is None and _who(second) == VICTIM
