"""What a request keeps between requests never outlives a revocation or a manifest change.

The request path keeps, per app state, what it derives from the app's settings — the app's
binding, its ``AuthPlan`` (cookie names, CSRF and policy flags, security headers) and its
``AuthService`` — so a request does not rebuild them. These tests warm those caches with
real requests, then revoke or change things and check the very next request:

* a session copied to several machines (distinct client addresses, reading concurrently)
  identifies nobody in any request that starts after its owner's logout returned;
* turning CSRF protection on, or renaming the session cookie, in the app's manifest
  applies to the first request after ``reload_apps()``: a cookie-authenticated POST
  without a token is refused, and the old cookie name no longer signs anyone in.
"""

from __future__ import annotations

import threading
import time

from auth_apps import PASSWORD

from flask_mdb.testing import LiveServer

from .raw_http import Browser
from .site_apps import SLUG, make_site, register, site_manifest

VICTIM = "victim@example.com"
#: Addresses the copied session cookie is replayed from, one per reading thread.
REPLAYERS = ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


def _signed_in(base_url: str, source: str = "127.0.0.2") -> Browser:
    browser = Browser(base_url, source, headers={"Accept": "application/json"})
    register(browser, VICTIM)
    reply = browser.post(
        "/auth/login",
        json={"email": VICTIM, "password": PASSWORD},
        headers={"X-CSRF-Token": browser.csrf()},
    )
    assert reply.status == 200, reply.text
    assert browser.get("/whoami").json["email"] == VICTIM
    return browser


def test_a_logout_refuses_every_request_that_starts_after_it(factory, tmp_path):
    """Four threads replay the victim's session cookie from four addresses while the victim
    logs out: before the logout returns their requests may still be served as the victim;
    every request that *starts* after it is anonymous (refused by the app's policy)."""
    app = make_site(factory, tmp_path, site_manifest(reset=False))
    with LiveServer(app) as server:
        victim = _signed_in(server.url)
        stolen = dict(victim.cookies)
        stop = threading.Event()
        seen: list[tuple[float, str | None]] = []  # (when the request started, who it was)
        lock = threading.Lock()

        def replay(source: str) -> None:
            copy = Browser(server.url, source, headers={"Accept": "application/json"})
            copy.cookies = dict(stolen)
            deadline = time.monotonic() + 20  # bounded even if the main thread fails
            while not stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                reply = copy.get("/whoami")  # the app's policy: anonymous callers get 401
                assert reply.status in (200, 401), reply.text
                who = reply.json["email"] if reply.status == 200 else None
                with lock:
                    seen.append((started, who))
                copy.cookies = dict(stolen)  # keep presenting the copied cookie

        threads = [threading.Thread(target=replay, args=(a,), daemon=True) for a in REPLAYERS]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the replayed cookie is served as the victim meanwhile
        reply = victim.post("/auth/logout", headers={"X-CSRF-Token": victim.csrf()})
        assert reply.status == 200, reply.text
        revoked = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)

    before = [who for started, who in seen if started < revoked]
    after = [who for started, who in seen if started > revoked]
    assert VICTIM in before, "the replayed cookie never identified the victim"
    assert after, "no request started after the logout"
    assert set(after) == {None}, f"{after.count(VICTIM)} request(s) after the logout were hers"


def test_csrf_and_cookie_name_changes_apply_at_the_next_request(factory, tmp_path):
    """The app starts without CSRF protection; the plan cached from the first requests
    lets a token-less cookie POST through. Turned on in the manifest (then ``reload_apps``),
    the next such POST is refused. Renaming the session cookie then makes the old cookie
    identify nobody at the next request."""
    manifest = site_manifest(reset=False)
    manifest["auth"]["csrf_protection"] = False
    app = make_site(factory, tmp_path, manifest)
    engine = app.extensions["mdb"].engine
    with LiveServer(app) as server:
        browser = _signed_in(server.url)
        for _ in range(3):  # warm: binding, plan and service cached for this app state
            assert browser.post("/echo", json={}).status == 200

        protected = site_manifest(reset=False)
        protected["auth"]["csrf_protection"] = True
        engine.register_app(protected)
        engine.reload_apps()
        refused = browser.post("/echo", json={})
        assert refused.status == 400, refused.text
        assert "CSRF" in refused.text
        token = browser.csrf()
        assert browser.post("/echo", json={}, headers={"X-CSRF-Token": token}).status == 200

        renamed = site_manifest(reset=False)
        renamed["auth"]["users"]["session_cookie_name"] = "renamed_session"
        engine.register_app(renamed)
        engine.reload_apps()
        assert f"{SLUG}_session" in browser.cookies
        anonymous = browser.get("/whoami")  # the app's policy: anonymous callers get 401
        assert anonymous.status == 401, anonymous.text
