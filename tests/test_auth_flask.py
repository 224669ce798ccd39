"""flask_mdb.auth over HTTP: login, sessions, tokens, CSRF, redirects, limits, headers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import parse_qs, urlsplit

import pytest
from auth_apps import (
    FLASK_SECRET,
    PASSWORD,
    SECRET,
    add_views,
    auth_config,
    auth_manifest,
    header_resolver,
    write,
)
from flask_apps import AppFactory, http, serve

from flask_mdb.auth import safe_next
from flask_mdb.identity import current_identity, verify_token
from mdb_sync.exceptions import ConfigurationError

JSON = {"Accept": "application/json"}


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


@pytest.fixture
def make_app(factory, tmp_path):
    def make(*manifests, **config):
        for manifest in manifests or (auth_manifest("site"),):
            write(tmp_path, manifest)
        return add_views(
            factory(MDB_MANIFESTS=str(tmp_path), MDB_APP_RESOLVER=header_resolver,
                    **auth_config(**{"MDB_APP_SLUG": None, **config}))
        )  # fmt: skip

    return make


@pytest.fixture
def app(make_app):
    return make_app(auth_manifest("site"), MDB_APP_SLUG="site")


def csrf(client, slug="site"):
    return client.get("/auth/csrf", headers={"X-App": slug}).json["csrf_token"]


def register(client, email="ada@example.com", slug="site", password=PASSWORD):
    response = client.post(
        "/auth/register",
        json={"email": email, "password": password},
        headers={"X-App": slug, "X-CSRF-Token": csrf(client, slug)},
    )
    assert response.status_code == 201, response.json
    return response.json


def login(client, email="ada@example.com", password=PASSWORD, slug="site", **extra):
    return client.post(
        "/auth/login",
        json={"email": email, "password": password, **extra},
        headers={"X-App": slug, "X-CSRF-Token": csrf(client, slug)},
    )


def session_cookie(client, slug="site"):
    cookie = client.get_cookie(f"{slug}_session")
    return cookie.value if cookie is not None else None


# --- protection ---------------------------------------------------------------------------------


def test_protected_routes_need_a_user_and_public_ones_do_not(app):
    client = app.test_client()
    denied = client.get("/whoami", headers={"X-App": "site"})
    assert denied.status_code == 401
    assert denied.json["error"]["type"] == "AuthenticationError"
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="site"'
    for path in ("/open", "/docs/intro", "/auth/login", "/auth/csrf"):
        assert client.get(path, headers={"X-App": "site", **JSON}).status_code == 200, path
    browser = client.get("/whoami?x=1", headers={"X-App": "site", "Accept": "text/html"})
    assert browser.status_code == 302
    assert browser.headers["Location"] == "/auth/login?next=%2Fwhoami%3Fx%3D1"
    register(client)
    assert client.get("/whoami", headers={"X-App": "site"}).json == {
        "email": "ada@example.com",
        "via": "session",
    }


def test_role_and_permission_decorators(app):
    client = app.test_client()
    assert client.get("/admin", headers={"X-App": "site"}).status_code == 401
    register(client)  # default role: user
    assert client.get("/admin", headers={"X-App": "site"}).status_code == 403
    assert client.get("/reports", headers={"X-App": "site"}).status_code == 200
    refused = client.delete("/reports", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    assert refused.status_code == 403 and "delete on reports" in refused.json["error"]["message"]
    with app.app_context():
        from flask_mdb import MDB  # noqa: F401

        state = app.extensions["mdb"]
        from mdb_sync.auth import get_auth_service

        auth = get_auth_service(state.engine, "site", secret=SECRET)
        user = auth.get_user_by_email("ada@example.com")
        auth.set_roles(user["user_id"], ["admin"])
    assert client.get("/admin", headers={"X-App": "site"}).status_code == 200
    assert client.delete(
        "/reports", headers={"X-App": "site", "X-CSRF-Token": csrf(client)}
    ).json == {"deleted": True}


# --- sessions -----------------------------------------------------------------------------------


def test_login_sets_a_named_server_side_session_that_logout_ends(app, raw_db):
    client = app.test_client()
    register(client)
    client.post("/auth/logout", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    response = login(client)
    assert response.status_code == 200 and response.json["user"]["email"] == "ada@example.com"
    assert "password_hash" not in response.json["user"]
    header = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("site_session=")]
    assert header and "HttpOnly" in header[0] and "SameSite=Lax" in header[0]
    assert "Max-Age" not in header[0]  # a browser-session cookie unless "remember"
    sid = session_cookie(client)
    assert raw_db["mdb_auth_sessions"].count_documents({"app_id": "site"}) == 1
    assert sid not in str(list(raw_db["mdb_auth_sessions"].find()))
    out = client.post("/auth/logout", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    assert out.json == {"logged_out": True} and session_cookie(client) is None
    assert raw_db["mdb_auth_sessions"].count_documents({}) == 0
    client.set_cookie("site_session", sid)  # a copied cookie is dead after logout
    assert client.get("/whoami", headers={"X-App": "site"}).status_code == 401
    remembered = login(client, remember=True)
    assert "Max-Age=86400" in remembered.headers["Set-Cookie"]


def test_the_session_id_changes_on_login(app):
    client = app.test_client()
    register(client)
    first = session_cookie(client)
    assert login(client).status_code == 200
    second = session_cookie(client)
    assert second and second != first
    client.set_cookie("site_session", first)
    assert client.get("/whoami", headers={"X-App": "site"}).status_code == 401  # rotated out
    attacker = "fixed-session-id-chosen-by-an-attacker-0123456789"
    client.set_cookie("site_session", attacker)
    assert login(client).status_code == 200
    assert session_cookie(client) not in (attacker, first, second)


def test_unknown_email_and_wrong_password_get_identical_responses(app):
    client = app.test_client()
    register(client, "ada@example.com")
    other = app.test_client()
    responses = [
        login(other, "nobody@example.com", PASSWORD),
        login(other, "ada@example.com", "wrong password!"),
        login(other, {"$ne": None}, PASSWORD),
    ]
    assert [r.status_code for r in responses[:2]] == [401, 401]
    assert responses[0].get_data() == responses[1].get_data()
    assert responses[0].json["error"]["message"] == "invalid email or password"
    assert responses[2].status_code == 400  # not a string: refused before any query
    for response in responses[:2]:
        assert not any(
            h.startswith("site_session=") for h in response.headers.getlist("Set-Cookie")
        )
    html = [
        other.post(
            "/auth/login",
            data={"email": email, "password": password, "csrf_token": csrf(other)},
            headers={"X-App": "site", "Accept": "text/html"},
        )
        for email, password in (("nobody@example.com", PASSWORD), ("ada@example.com", "nope!"))
    ]
    strip = lambda r: re.sub(rb'value="[^"]*"', b"", r.get_data())  # noqa: E731 - csrf differs
    assert html[0].status_code == html[1].status_code == 401
    assert strip(html[0]) == strip(html[1])


def test_a_user_of_app_a_cannot_log_into_app_b(make_app):
    app = make_app(auth_manifest("alpha"), auth_manifest("beta"))
    client = app.test_client()
    register(client, slug="alpha")
    assert login(client, slug="beta").status_code == 401
    alpha_sid = session_cookie(client, "alpha")
    assert client.get("/whoami", headers={"X-App": "alpha"}).json["email"] == "ada@example.com"
    assert client.get("/whoami", headers={"X-App": "beta"}).status_code == 401
    client.set_cookie("beta_session", alpha_sid)  # alpha's id under beta's name
    assert client.get("/whoami", headers={"X-App": "beta"}).status_code == 401
    token = client.post(
        "/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "alpha"},
    ).json["access_token"]  # fmt: skip
    fresh = app.test_client()
    ok = fresh.get("/whoami", headers={"X-App": "alpha", "Authorization": f"Bearer {token}"})
    assert ok.json == {"email": "ada@example.com", "via": "token"}
    refused = fresh.get("/whoami", headers={"X-App": "beta", "Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert refused.json["error"]["message"] == "the token was not signed by a key of this app"


# --- CSRF ---------------------------------------------------------------------------------------


def test_csrf_missing_is_400_and_invalid_is_403(app):
    client = app.test_client()
    register(client)
    missing = client.post("/echo", headers={"X-App": "site"})
    assert missing.status_code == 400 and "missing" in missing.json["error"]["message"]
    invalid = client.post("/echo", headers={"X-App": "site", "X-CSRF-Token": "1700000000.forged"})
    assert invalid.status_code == 403
    other = app.test_client()
    register(other, "bob@example.com")
    foreign = client.post("/echo", headers={"X-App": "site", "X-CSRF-Token": csrf(other)})
    assert foreign.status_code == 403  # another session's token
    good = client.post("/echo", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    assert good.json == {"ok": True}
    form = client.post("/echo", data={"csrf_token": csrf(client)}, headers={"X-App": "site"})
    assert form.status_code == 200
    no_csrf_login = app.test_client().post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "site"},
    )  # fmt: skip
    assert no_csrf_login.status_code == 400  # login CSRF


def test_bearer_requests_need_no_csrf_token(app):
    client = app.test_client()
    register(client)
    tokens = client.post(
        "/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "site"},
    ).json  # fmt: skip
    bearer = {"X-App": "site", "Authorization": f"Bearer {tokens['access_token']}"}
    assert app.test_client().post("/echo", headers=bearer).json == {"ok": True}
    # An Authorization header is never combined with the cookie: a bad token is a 401
    # even from a browser holding a valid session.
    bad = client.post("/echo", headers={"X-App": "site", "Authorization": "Bearer forged"})
    assert bad.status_code == 401


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/%0d%0aSet-Cookie:x",
        " //evil.example",
        "/ok\r\nLocation: https://evil.example",
        "evil.example",
    ],
)
def test_open_redirects_via_next_are_refused(app, target):
    client = app.test_client()
    register(client)
    client.post("/auth/logout", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    response = client.post(
        "/auth/login",
        data={"email": "ada@example.com", "password": PASSWORD, "next": target,
              "csrf_token": csrf(client)},
        headers={"X-App": "site", "Accept": "text/html"},
    )  # fmt: skip
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location == ("/%0d%0aSet-Cookie:x" if target == "/%0d%0aSet-Cookie:x" else "/")
    assert safe_next("/tasks?page=2") == "/tasks?page=2"


# --- tokens over HTTP ---------------------------------------------------------------------------


def test_token_refresh_and_logout_endpoints(app):
    client = app.test_client()
    register(client)
    api = app.test_client()
    first = api.post(
        "/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "site"},
    )  # fmt: skip
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    pair = first.json
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 300
    assert not first.headers.getlist("Set-Cookie")
    second = api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]},
                      headers={"X-App": "site"}).json  # fmt: skip
    reuse = api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]},
                     headers={"X-App": "site"})  # fmt: skip
    assert reuse.status_code == 401 and "reuse" in reuse.json["error"]["message"]
    stolen = {"X-App": "site", "Authorization": f"Bearer {second['access_token']}"}
    revoked = api.get("/whoami", headers=stolen)
    assert revoked.status_code == 401
    third = api.post(
        "/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "site"},
    ).json  # fmt: skip
    bearer = {"X-App": "site", "Authorization": f"Bearer {third['access_token']}"}
    assert api.get("/auth/me", headers=bearer).json["user"]["email"] == "ada@example.com"
    assert api.post("/auth/logout", headers=bearer).json == {"logged_out": True}
    after = api.get("/auth/me", headers=bearer)
    assert after.status_code == 401 and "revoked" in after.json["error"]["message"]
    refresh_after = api.post("/auth/refresh", json={"refresh_token": third["refresh_token"]},
                             headers={"X-App": "site"})  # fmt: skip
    assert refresh_after.status_code == 401
    bad = api.post("/auth/token", json={"email": "ada@example.com", "password": "nope nope"},
                   headers={"X-App": "site"})  # fmt: skip
    assert bad.status_code == 401


def test_password_change_ends_other_sessions_and_keeps_this_one(app):
    client, other = app.test_client(), app.test_client()
    register(client)
    assert login(other).status_code == 200
    changed = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers={"X-App": "site", "X-CSRF-Token": csrf(client)},
    )
    assert changed.status_code == 200, changed.json
    assert client.get("/whoami", headers={"X-App": "site"}).status_code == 200
    assert other.get("/whoami", headers={"X-App": "site"}).status_code == 401
    wrong = client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "another passphrase"},
        headers={"X-App": "site", "X-CSRF-Token": csrf(client)},
    )
    assert wrong.status_code == 403


# --- identity seam ------------------------------------------------------------------------------


def test_identity_resolvers_and_token_verifier(app):
    @app.get("/identity")
    def identity():
        return {"identity": current_identity()}

    client = app.test_client()
    register(client)
    seen = client.get("/identity", headers={"X-App": "site"}).json["identity"]
    assert seen["email"] == "ada@example.com" and seen["via"] == "session"
    assert seen["app"] == "site" and seen["roles"] == ["user"]
    token = client.post(
        "/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
        headers={"X-App": "site"},
    ).json["access_token"]  # fmt: skip
    with app.app_context():
        assert verify_token(token, "site")["email"] == "ada@example.com"
        assert verify_token(token, "nope") is None
        assert verify_token("garbage", "site") is None


# --- limits, headers, HTTPS, startup ------------------------------------------------------------


def test_brute_force_login_hits_429(make_app):
    manifest = auth_manifest("site")
    manifest["token_management"]["security"]["rate_limiting"] = {
        "login": {"max_attempts": 3, "window_seconds": 600}
    }
    app = make_app(manifest, MDB_APP_SLUG="site")
    client = app.test_client()
    statuses = [login(client, "ada@example.com", f"guess {i}!").status_code for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    limited = login(client, "ada@example.com", "guess 9!")
    assert 590 <= int(limited.headers["Retry-After"]) <= 600
    assert limited.json["error"]["type"] == "RateLimitExceeded"
    token_endpoint = client.post("/auth/token", json={"email": "a@b.co", "password": "x"},
                                 headers={"X-App": "site"})  # fmt: skip
    assert token_endpoint.status_code == 429  # the same budget: no second door


def test_a_locked_account_gets_429_from_every_client_and_door(make_app):
    manifest = auth_manifest("site")
    manifest["token_management"]["security"]["account_lockout"] = {"max_failed_attempts": 2}
    app = make_app(manifest, MDB_APP_SLUG="site")
    register(app.test_client())
    guesser = app.test_client()
    assert [login(guesser, password=f"guess {i}!").status_code for i in range(2)] == [401, 401]

    owner = app.test_client()  # another client, the right password
    locked = login(owner)
    assert locked.status_code == 429 and 890 <= int(locked.headers["Retry-After"]) <= 900
    assert locked.json["error"]["message"].startswith("too many failed sign-ins for this account")
    token = owner.post("/auth/token", json={"email": "ada@example.com", "password": PASSWORD},
                       headers={"X-App": "site"})  # fmt: skip
    assert token.status_code == 429 and token.headers["Retry-After"]
    page = owner.post(
        "/auth/login",
        data={"email": "ada@example.com", "password": PASSWORD, "csrf_token": csrf(owner)},
        headers={"X-App": "site", "Accept": "text/html"},
    )
    assert page.status_code == 429 and page.headers["Retry-After"]
    assert b"too many failed sign-ins" in page.data and b"<form" in page.data


def _reset_app(make_app, sender):
    manifest = auth_manifest("site")
    manifest["auth"]["users"]["password_reset"] = {"token_ttl_seconds": 600}
    return make_app(
        manifest,
        MDB_APP_SLUG="site",
        MDB_PASSWORD_RESET_SENDER=sender,
        MDB_EXTERNAL_URL="http://site.example",
    )


def _delivered(app):
    """Wait for the background sender (reset links are sent outside the request)."""
    assert app.extensions["mdb"].outbox.join(20)


def _post(client, path, body):
    return client.post(path, json=body, headers={"X-App": "site", "X-CSRF-Token": csrf(client)})


def test_forgot_password_links_over_http(make_app):
    outbox = []
    app = _reset_app(make_app, lambda user, url: outbox.append((user["email"], url)))
    signed_in = app.test_client()
    register(signed_in)
    visitor = app.test_client()
    known = _post(visitor, "/auth/forgot", {"email": "ada@example.com"})
    unknown = _post(visitor, "/auth/forgot", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202 and known.json == unknown.json
    _delivered(app)
    assert [email for email, _ in outbox] == ["ada@example.com"]  # only real accounts get mail
    link = urlsplit(outbox[0][1])
    assert (link.scheme, link.netloc, link.path) == ("http", "site.example", "/auth/reset")
    token = parse_qs(link.query)["token"][0]

    html = {"X-App": "site", "Accept": "text/html"}
    page = visitor.get(f"/auth/reset?token={token}", headers=html)
    assert page.status_code == 200 and token in page.text and 'content="no-referrer"' in page.text
    weak = _post(visitor, "/auth/reset", {"token": token, "new_password": "short"})
    assert weak.status_code == 400 and "at least" in weak.json["error"]["message"]
    new = "a brand new horse battery"
    done = _post(visitor, "/auth/reset", {"token": token, "new_password": new})
    assert done.status_code == 200 and done.json["user"]["email"] == "ada@example.com"
    assert login(visitor, password=new).status_code == 200
    assert login(app.test_client()).status_code == 401  # the old password is gone
    spent = _post(visitor, "/auth/reset", {"token": token, "new_password": "another horse 77"})
    assert spent.status_code == 400 and "invalid or has expired" in spent.json["error"]["message"]
    assert signed_in.get("/auth/me", headers={"X-App": "site"}).status_code == 401  # ended

    # The browser flow: a form post, then the sign-in page with a notice.
    _post(visitor, "/auth/forgot", {"email": "ada@example.com"})
    _delivered(app)
    token = parse_qs(urlsplit(outbox[-1][1]).query)["token"][0]
    fields = {"token": token, "new_password": "browser horse 9", "csrf_token": csrf(visitor)}
    form = visitor.post("/auth/reset", headers=html, data=fields)
    assert form.status_code == 303 and form.headers["Location"].endswith("/auth/login?reset=done")
    assert "your password was changed" in visitor.get(form.headers["Location"], headers=html).text

    limited = [_post(visitor, "/auth/forgot", {"email": "x@example.com"}).status_code
               for _ in range(3)]  # fmt: skip
    assert limited == [202, 202, 429]  # 5 requests per hour per address by default


def test_a_failing_sender_does_not_change_the_answer(make_app):
    def broken(user, url):
        raise OSError("mail server down")

    app = _reset_app(make_app, broken)
    register(app.test_client())
    client = app.test_client()
    known = _post(client, "/auth/forgot", {"email": "ada@example.com"})
    unknown = _post(client, "/auth/forgot", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202 and known.json == unknown.json


def test_password_reset_needs_a_sender_and_is_off_by_default(make_app):
    manifest = auth_manifest("site")
    manifest["auth"]["users"]["password_reset"] = {}
    with pytest.raises(ConfigurationError, match="MDB_PASSWORD_RESET_SENDER"):
        make_app(manifest, MDB_APP_SLUG="site", MDB_EXTERNAL_URL="https://site.example")


def test_forgot_is_404_without_password_reset(app):
    client = app.test_client()
    assert _post(client, "/auth/forgot", {"email": "ada@example.com"}).status_code == 404
    page = client.get("/auth/login", headers={"X-App": "site", "Accept": "text/html"})
    assert "forgot-link" not in page.text


_SERVER = """
import json, sys
from flask import Flask
from werkzeug.serving import make_server
sys.path.insert(0, sys.argv[4])
from auth_apps import add_views, auth_config, header_resolver
from flask_mdb import MDB
app = Flask("second")
app.config.update(MDB_MONGO_URI=sys.argv[1], MDB_DB_NAME=sys.argv[2], MDB_MANIFESTS=sys.argv[3],
                  MDB_APP_RESOLVER=header_resolver, **auth_config())
MDB(app)
add_views(app)
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.port, flush=True)
server.serve_forever()
"""


def _login_over_http(base, jar, attempt):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(urllib.request.Request(f"{base}/auth/csrf", headers={"X-App": "site"})) as r:
        token = json.loads(r.read())["csrf_token"]
    status, headers, _ = http(
        f"{base}/auth/login",
        "POST",
        {"email": "ada@example.com", "password": f"wrong guess {attempt}"},
        headers={"X-App": "site", "X-CSRF-Token": token,
                 "Cookie": "; ".join(f"{c.name}={c.value}" for c in jar)},
    )  # fmt: skip
    return status, headers


def test_the_login_limit_holds_across_two_processes(make_app, mongo_uri, db_name, tmp_path):
    manifest = auth_manifest("site")
    manifest["token_management"]["security"]["rate_limiting"] = {
        "login": {"max_attempts": 4, "window_seconds": 600}
    }
    app = make_app(manifest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}
    tests_dir = os.path.dirname(__file__)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, mongo_uri, db_name, str(tmp_path), tests_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read()
        second = f"http://127.0.0.1:{line.strip()}"
        with serve(app) as first:
            jar = CookieJar()
            statuses = [
                _login_over_http(first if i % 2 == 0 else second, jar, i)[0] for i in range(6)
            ]
            assert statuses == [401, 401, 401, 401, 429, 429]
            status, headers = _login_over_http(second, jar, 7)
            assert status == 429 and int(headers["Retry-After"]) > 500
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_rate_limit_auth_and_token_security_decorators(app):
    from flask_mdb.auth import public, rate_limit_auth, token_security

    @app.post("/reset")
    @public
    @rate_limit_auth(max_attempts=2, window_seconds=60)
    def reset():
        return {"reset": True}

    @app.post("/transfer")
    @token_security(enforce_https=True, check_csrf=True)
    def transfer():
        return {"done": True}

    client = app.test_client()
    responses = [client.post("/reset", headers={"X-App": "site"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert 55 <= int(responses[-1].headers["Retry-After"]) <= 60
    register(client)
    plain = client.post("/transfer", headers={"X-App": "site", "X-CSRF-Token": csrf(client)})
    assert plain.status_code == 403 and "HTTPS" in plain.json["error"]["message"]
    # Over HTTPS the session cookie is __Host-site_session: the browser signs in there.
    https = {"base_url": "https://localhost", "headers": {"X-App": "site"}}
    token = client.get("/auth/csrf", **https).json["csrf_token"]
    signed_in = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD},
                            base_url="https://localhost",
                            headers={"X-App": "site", "X-CSRF-Token": token})  # fmt: skip
    assert signed_in.status_code == 200
    token = client.get("/auth/csrf", **https).json["csrf_token"]
    secure = client.post(
        "/transfer", base_url="https://localhost", headers={"X-App": "site", "X-CSRF-Token": token}
    )
    assert secure.json == {"done": True}
    no_token = client.post("/transfer", base_url="https://localhost", headers={"X-App": "site"})
    assert no_token.status_code == 400


def test_security_headers_and_https(make_app):
    manifest = auth_manifest("site")
    manifest["token_management"]["security"]["require_https"] = True
    manifest["auth"]["security"] = {"hsts": {"max_age": 600, "include_subdomains": False}}
    app = make_app(
        manifest, MDB_APP_SLUG="site", MDB_CONTENT_SECURITY_POLICY={"default-src": "'self'"}
    )
    client = app.test_client()
    plain = client.get("/open", headers={"X-App": "site"})
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    assert client.post("/echo", headers={"X-App": "site"}).status_code == 403
    secure = client.get("/open", base_url="https://localhost", headers={"X-App": "site"})
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == "max-age=600"
    assert secure.headers["X-Content-Type-Options"] == "nosniff"
    assert secure.headers["X-Frame-Options"] == "DENY"
    assert secure.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert secure.headers["Content-Security-Policy"] == "default-src 'self'"
    login_page = client.get("/auth/login", base_url="https://localhost", headers={"X-App": "site"})
    cookie = next(h for h in login_page.headers.getlist("Set-Cookie") if "_csrf=" in h)
    assert "Secure" in cookie


def test_security_middleware_on_any_app(factory):
    from flask_mdb.auth import SecurityMiddleware

    app = factory(MDB_APP_SLUG="plain")
    SecurityMiddleware(app, require_https=True, content_security_policy="default-src 'none'")

    @app.get("/")
    def index():
        return "hi"

    client = app.test_client()
    assert client.get("/").status_code == 301
    response = client.get("/", base_url="https://localhost")
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_missing_secret_refuses_to_start(factory, tmp_path, monkeypatch):
    monkeypatch.delenv("MDB_JWT_SECRET", raising=False)
    write(tmp_path, auth_manifest("site"))
    with pytest.raises(ConfigurationError, match="MDB_JWT_SECRET"):
        factory(MDB_MANIFESTS=str(tmp_path), SECRET_KEY=FLASK_SECRET)
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        factory(MDB_MANIFESTS=str(tmp_path), SECRET_KEY=FLASK_SECRET, MDB_JWT_SECRET="short")
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        factory(MDB_MANIFESTS=str(tmp_path), MDB_JWT_SECRET=SECRET)
    with pytest.raises(ConfigurationError, match="MDB_PASSWORD_HASH_COST"):
        factory(MDB_MANIFESTS=str(tmp_path), **auth_config(MDB_PASSWORD_HASH_COST=1000))


def test_apps_without_auth_are_untouched(make_app):
    plain = {"slug": "plain", "name": "plain"}
    app = make_app(auth_manifest("site"), plain)

    @app.post("/plain")
    def plain_view():
        return {"ok": True}

    client = app.test_client()
    response = client.post("/plain", headers={"X-App": "plain"})
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    assert client.get("/auth/login", headers={"X-App": "plain", **JSON}).status_code == 404


def test_setup_auth_from_manifest_on_a_plain_flask_app(engine, monkeypatch):
    from flask import Flask

    from flask_mdb.auth import setup_auth_from_manifest

    engine.register_app(auth_manifest("seeded"))
    app = add_views(Flask("plain"))
    app.config.update(auth_config())
    setup_auth_from_manifest(app, engine, "seeded")
    client = app.test_client()
    assert client.get("/whoami").status_code == 401
    register(client, slug="seeded")
    assert client.get("/whoami").json["email"] == "ada@example.com"
    other = Flask("nosecret")
    other.config.update(SECRET_KEY=FLASK_SECRET)
    monkeypatch.delenv("MDB_JWT_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="MDB_JWT_SECRET"):
        setup_auth_from_manifest(other, engine, "seeded")
