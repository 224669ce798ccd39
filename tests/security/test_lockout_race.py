"""Account lockout under a distributed, simultaneous guesser.

With ``max_failed_attempts: 5`` the attacker sends 24 wrong passwords at once, each from its
own client address (so the per-address rate limits never trigger), against a live threaded
WSGI server. Counted from outside: at most 5 answers are 401 "invalid email or password"
(a password was checked), every other one is 429 before any check, none is a 500, and the
right password sent afterwards gets 429 too. Each door counts: the sign-in form, the token
endpoint, the current-password check of ``/auth/password``, and every app that shares a
``global_users`` account.
"""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, header_resolver, write

from flask_mdb.testing import LiveServer

from .attack import ADDRESSES, Call, burst, csrf_headers, send, statuses

MAX = 5
INVALID = "invalid email or password"
#: The default scrypt cost (~65 ms a check): the window the race used to slip through.
REAL_COST = 32768


def _manifest(slug, **lockout):
    manifest = auth_manifest(slug)
    manifest["token_management"]["security"]["account_lockout"] = {
        "max_failed_attempts": MAX,
        "lockout_duration_seconds": 900,
        **lockout,
    }
    return manifest


@pytest.fixture
def make_server(factory, tmp_path):
    servers = []

    def make(*manifests):
        for manifest in manifests:
            write(tmp_path, manifest)
        app = factory(
            MDB_MANIFESTS=str(tmp_path),
            MDB_APP_RESOLVER=header_resolver,
            **auth_config(MDB_PASSWORD_HASH_COST=REAL_COST),
        )
        server = LiveServer(app).start()
        servers.append(server)
        return app, server.url

    yield make
    for server in servers:
        server.stop()


def _register(app, slug, email="ada@example.com"):
    client = app.test_client()
    token = client.get("/auth/csrf", headers={"X-App": slug}).json["csrf_token"]
    response = client.post(
        "/auth/register",
        json={"email": email, "password": PASSWORD},
        headers={"X-App": slug, "X-CSRF-Token": token},
    )
    assert response.status_code == 201, response.json


def _guesses(url, slug, email, *, doors=("token", "login"), count=24):
    """``count`` wrong passwords for ``email``, one per client address, alternating doors
    (the JSON token endpoint, and the sign-in form with its CSRF cookie and token)."""
    calls = []
    for i, source in enumerate(ADDRESSES[:count]):
        door = doors[i % len(doors)]
        headers = {"X-App": slug}
        if door == "login":
            headers = csrf_headers(url, source, headers)
        body = {"email": email, "password": f"guess number {i}!"}
        calls.append(Call("POST", f"/auth/{door}", source, body, headers))
    return calls


def _assert_bounded(answers, checked):
    codes = statuses(answers)
    assert set(codes) <= {401, 429}, codes  # never a 500, whatever raced
    assert codes.count(401) == checked, codes
    for answer in answers:
        if answer.status == 401:
            assert answer.body["error"]["message"] == INVALID
        else:
            assert answer.body["error"]["message"].startswith("too many failed sign-ins")
            assert 1 <= int(answer.headers["Retry-After"]) <= 900


def _right_password(url, slug, source, email="ada@example.com"):
    body = {"email": email, "password": PASSWORD}
    return [
        send(url, Call("POST", "/auth/token", source, body, {"X-App": slug})),
        send(
            url,
            Call("POST", "/auth/login", source, body, csrf_headers(url, source, {"X-App": slug})),
        ),
    ]


def test_24_simultaneous_guesses_get_at_most_max_password_checks(make_server):
    app, url = make_server(_manifest("site"))
    _register(app, "site")
    answers = burst(url, _guesses(url, "site", "ada@example.com"))
    _assert_bounded(answers, MAX)
    # The lock is set: the right password, from an address never seen, is refused unchecked.
    for answer in _right_password(url, "site", "127.0.0.26"):
        assert answer.status == 429, answer.body
    # Another account is untouched by ada's lock.
    _register(app, "site", "bob@example.com")
    bob = send(
        url,
        Call(
            "POST",
            "/auth/token",
            "127.0.0.27",
            {"email": "bob@example.com", "password": PASSWORD},
            {"X-App": "site"},
        ),
    )
    assert bob.status == 200 and bob.body["access_token"]


def test_a_correct_password_inside_a_burst_after_the_lock_is_refused(make_server):
    app, url = make_server(_manifest("site"))
    _register(app, "site")
    _assert_bounded(burst(url, _guesses(url, "site", "ada@example.com")), MAX)
    # A second wave, locked: half carry the right password, half more guesses. Nothing is
    # checked any more (no 401) and nothing is accepted (no 200).
    calls = _guesses(url, "site", "ada@example.com")
    for i in range(0, len(calls), 2):
        calls[i] = Call(
            calls[i].method,
            calls[i].path,
            calls[i].source,
            {"email": "ada@example.com", "password": PASSWORD},
            calls[i].headers,
        )
    assert statuses(burst(url, calls)) == [429] * len(calls)


def test_an_email_without_account_locks_the_same_way_and_the_first_write_never_fails(
    make_server,
):
    _app, url = make_server(_manifest("site"))
    # No account and no lockout state yet: 24 first writes race on one new counter.
    answers = burst(url, _guesses(url, "site", "nobody@example.com", doors=("token",)))
    _assert_bounded(answers, MAX)


def test_current_password_guesses_on_auth_password_count_toward_the_lockout(make_server):
    app, url = make_server(_manifest("site"))
    _register(app, "site")
    # A thief holding ada's bearer token tries to learn her password through /auth/password.
    stolen = send(
        url,
        Call(
            "POST",
            "/auth/token",
            "127.0.0.30",
            {"email": "ada@example.com", "password": PASSWORD},
            {"X-App": "site"},
        ),
    )
    headers = {"X-App": "site", "Authorization": f"Bearer {stolen.body['access_token']}"}
    calls = [
        Call(
            "POST",
            "/auth/password",
            source,
            {"current_password": f"guess number {i}!", "new_password": "Stolen account 2024!"},
            headers,
        )
        for i, source in enumerate(ADDRESSES)
    ]
    answers = burst(url, calls)
    codes = statuses(answers)
    assert set(codes) <= {403, 429}, codes
    assert codes.count(403) == MAX, codes  # "the current password is wrong": checked
    # The account is locked for every door: ada's own sign-in waits too.
    for answer in _right_password(url, "site", "127.0.0.26"):
        assert answer.status == 429, answer.body


def test_a_global_users_account_is_counted_once_for_every_app(make_server):
    apps = [_manifest(slug) for slug in ("shop", "blog", "wiki")]
    for manifest in apps:
        manifest["auth"]["users"]["strategy"] = "global_users"
    app, url = make_server(*apps)
    _register(app, "shop")
    calls = []
    for i, slug in enumerate(("shop", "blog", "wiki")):  # 8 guesses through each app
        batch = _guesses(url, slug, "ada@example.com", doors=("token",))
        calls += batch[i * 8 : (i + 1) * 8]
    answers = burst(url, calls)
    _assert_bounded(answers, MAX)  # not 3 x MAX
    for slug in ("shop", "blog", "wiki"):
        for answer in _right_password(url, slug, "127.0.0.26"):
            assert answer.status == 429, (slug, answer.body)


def test_one_address_bursting_stays_within_its_rate_limit_without_a_500(make_server):
    """The per-address limit (login: 50 a minute here) races on its first write too."""
    manifest = _manifest("site")
    manifest["token_management"]["security"]["rate_limiting"]["login"] = {
        "max_attempts": 10,
        "window_seconds": 60,
    }
    _app, url = make_server(manifest)
    calls = [
        Call("POST", "/auth/token", "127.0.0.40",
             {"email": f"user{i}@example.com", "password": "guess number 1!"}, {"X-App": "site"})
        for i in range(24)
    ]  # fmt: skip
    codes = statuses(burst(url, calls))
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) <= 10, codes  # one address, at most its limit checked
