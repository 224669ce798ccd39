"""Owner access (``developer_id`` with ``owner_can_access``) is bound to a proven email.

The app lets only listed users in (``allowed_users``) — and its owner. A stranger who
self-registers the owner's address while registration is open gets nothing more than any
other stranger; the owner gets in once the address is proven: an account created by the CLI
or ``demo_users``, an administrator's word, or a completed password reset (the link went
to that mailbox). With ``global_users``, another app's administrator cannot vouch for it.
"""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, SECRET, auth_config, auth_manifest, header_resolver, write
from click.testing import CliRunner

from flask_mdb.testing import LiveServer
from mdb_sync import MongoDBEngine
from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.cli import cli

from .attack import Call, cookies, send

OWNER = "owner@alice.example"
STRANGER = "127.0.0.66"
HASHER = PasswordHasher(n=4096)


def _manifest(slug, owner=OWNER, **users):
    manifest = auth_manifest(slug, developer_id=owner)
    manifest["auth"]["policy"]["allowed_users"] = ["staff@alice.example"]
    manifest["auth"]["users"].update(users)
    return manifest


@pytest.fixture
def serve(factory, tmp_path):
    servers = []

    def start(*manifests):
        for manifest in manifests:
            write(tmp_path, manifest)
        app = factory(
            MDB_MANIFESTS=str(tmp_path), MDB_APP_RESOLVER=header_resolver, **auth_config()
        )

        @app.get("/dashboard")
        def dashboard():
            return {"dashboard": True}

        server = LiveServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def _register(url, slug, email, source=STRANGER):
    """Self-registration through the sign-up form's JSON door; the session cookie."""
    head = {"X-App": slug}
    seed = send(url, Call("GET", "/auth/csrf", source, headers=head))
    jar = cookies(seed)
    answer = send(
        url,
        Call(
            "POST",
            "/auth/register",
            source,
            {"email": email, "password": PASSWORD},
            {
                **head,
                "X-CSRF-Token": seed.body["csrf_token"],
                "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()),
            },
        ),
    )
    assert answer.status == 201, answer.body
    return {**jar, **cookies(answer)}


def _dashboard(url, slug, email, *, jar=None, source=STRANGER, password=PASSWORD):
    """The protected page's status, by a bearer token and by session cookie (``jar``)."""
    head = {"X-App": slug}
    token = send(
        url, Call("POST", "/auth/token", source, {"email": email, "password": password}, head)
    )
    assert token.status == 200, token.body
    by_token = send(
        url,
        Call(
            "GET",
            "/dashboard",
            source,
            headers={**head, "Authorization": f"Bearer {token.body['access_token']}"},
        ),
    )
    answers = [by_token.status]
    if jar is not None:
        cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
        answers.append(
            send(url, Call("GET", "/dashboard", source, headers={**head, "Cookie": cookie})).status
        )
    return answers


def _touch(url, *slugs):
    """Serve each app once (the Flask app registers an app's manifest when it first serves
    it), so the CLI and scripts find it registered."""
    for slug in slugs:
        assert send(url, Call("GET", "/auth/csrf", STRANGER, headers={"X-App": slug})).status == 200


def _cli(mongo_uri, db_name, *args, input=None):
    env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    result = CliRunner().invoke(cli, ["users", *args], env=env, input=input)
    assert result.exit_code == 0, result.output
    return result


def test_a_stranger_who_registers_the_owners_email_is_not_the_owner(serve, mongo_uri, db_name):
    url = serve(_manifest("alice_app"))
    jar = _register(url, "alice_app", OWNER)
    assert _dashboard(url, "alice_app", OWNER, jar=jar) == [403, 403]

    # The real owner proves the address with a reset link sent to it: the stranger's
    # password and sessions end, and the owner gets in.
    with MongoDBEngine(mongo_uri, db_name) as engine:
        manifest = engine.get_app("alice_app")
        manifest["auth"]["users"]["password_reset"] = {"token_ttl_seconds": 600}
        engine.register_app(manifest)
        auth = AuthService(engine, "alice_app", secret=SECRET, hasher=HASHER)
        _user, link_token = auth.request_password_reset(OWNER)
        owner = auth.reset_password(link_token, "The owner's own passphrase 7")
    assert owner["email_verified"] is True and auth.access_problem(owner) is None
    assert _dashboard(url, "alice_app", OWNER, password="The owner's own passphrase 7") == [200]
    stale = send(
        url,
        Call(
            "GET",
            "/dashboard",
            STRANGER,
            headers={"X-App": "alice_app", "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())},
        ),
    )
    assert stale.status == 401  # the stranger's session ended with the reset


def test_an_owner_created_by_the_cli_or_demo_users_gets_in(serve, mongo_uri, db_name):
    demo = {"email": "owner@carol.example", "password": "Carol's demo passphrase 9", "role": "user"}
    url = serve(
        _manifest("bob_app", owner="owner@bob.example"),
        _manifest("carol_app", owner="owner@carol.example", demo_users=[demo]),
        _manifest("dave_app", owner="owner@dave.example"),
    )
    _touch(url, "bob_app", "carol_app", "dave_app")
    _cli(
        mongo_uri,
        db_name,
        "create",
        "bob_app",
        "owner@bob.example",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert _dashboard(url, "bob_app", "owner@bob.example") == [200]
    carol = _dashboard(url, "carol_app", "owner@carol.example", password=demo["password"])
    assert carol == [200]

    # A self-registered owner is let in once the platform's operator vouches for it.
    _register(url, "dave_app", "owner@dave.example")
    assert _dashboard(url, "dave_app", "owner@dave.example") == [403]
    _cli(mongo_uri, db_name, "verify", "dave_app", "owner@dave.example")
    assert _dashboard(url, "dave_app", "owner@dave.example") == [200]


def test_another_apps_administrator_cannot_vouch_for_a_shared_owner(serve, mongo_uri, db_name):
    alice = _manifest("alice_app")
    mallory = _manifest("mallory_app", owner="eve@mallory.example")
    for manifest in (alice, mallory):
        manifest["auth"]["users"]["strategy"] = "global_users"
    # Mallory's manifest seeds alice's owner address as a demo user, and mallory's admin
    # code "verifies" it: both hold for mallory_app only.
    mallory["auth"]["users"]["demo_users"] = [
        {"email": OWNER, "password": "Mallory planted this 1", "role": "user"}
    ]
    url = serve(alice, mallory)
    _touch(url, "alice_app", "mallory_app")

    with MongoDBEngine(mongo_uri, db_name) as engine:
        planted = AuthService(engine, "mallory_app", secret=SECRET, hasher=HASHER)
        account = planted.get_user_by_email(OWNER)
        assert account["email_verified"] is True  # in mallory_app
        planted.mark_email_verified(account["user_id"])
    head = {"X-App": "alice_app"}
    token = send(
        url,
        Call(
            "POST",
            "/auth/token",
            STRANGER,
            {"email": OWNER, "password": "Mallory planted this 1"},
            head,
        ),
    )
    assert token.status == 200  # a shared account joins alice_app on its first sign-in...
    page = send(
        url,
        Call(
            "GET",
            "/dashboard",
            STRANGER,
            headers={**head, "Authorization": f"Bearer {token.body['access_token']}"},
        ),
    )
    assert page.status == 403  # ...but is not alice_app's owner
