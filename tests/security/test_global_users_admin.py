"""One app's administration cannot take over, or knock out, a ``global_users`` account
in the other apps that share it.

``alice_app`` and ``mallory_app`` share their users; mallory's administrator uses
mallory's own admin endpoints (code mallory wrote on the public AuthService API, as any
app's admin pages are) from their own client address. Setting the shared account's
password, disabling it everywhere, or lifting its lockout is refused; disabling it in
mallory_app ends it there only. The platform's operator (the mdb CLI) still can.
"""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, header_resolver, write
from click.testing import CliRunner
from flask import request

from flask_mdb.auth import current_service, require_role
from flask_mdb.testing import LiveServer
from mdb_sync.cli import cli

from .attack import Call, send

ADMIN = "127.0.0.66"
VICTIM = "127.0.0.77"
TAKEOVER = "Mallory owns this now 1"


def _manifest(slug, admin_email):
    manifest = auth_manifest(slug)
    manifest["auth"]["roles"] = ["user", "admin"]
    manifest["auth"]["users"]["strategy"] = "global_users"
    manifest["auth"]["users"]["demo_users"] = [
        {"email": admin_email, "password": "Admin demo passphrase 1", "role": "admin"}
    ]
    manifest["token_management"]["security"]["account_lockout"] = {"max_failed_attempts": 3}
    return manifest


@pytest.fixture
def url(factory, tmp_path):
    write(tmp_path, _manifest("alice_app", "admin@alice.example"))
    write(tmp_path, _manifest("mallory_app", "admin@mallory.example"))
    app = factory(
        MDB_MANIFESTS=str(tmp_path),
        MDB_APP_RESOLVER=header_resolver,
        MDB_ERROR_HANDLERS=True,
        **auth_config(),
    )

    @app.get("/whoami")
    def whoami():
        from flask_mdb.auth import get_current_user

        return {"email": get_current_user().email}

    # An app's admin pages, as an app would write them on the public API.
    @app.post("/admin/password")
    @require_role("admin")
    def admin_password():
        auth = current_service()
        user = auth.get_user_by_email(request.json["email"])
        auth.set_password(user["user_id"], request.json["password"])
        return {"done": True}

    @app.post("/admin/deactivate")
    @require_role("admin")
    def admin_deactivate():
        auth = current_service()
        user = auth.get_user_by_email(request.json["email"])
        auth.deactivate(user["user_id"], everywhere=bool(request.json.get("everywhere")))
        return {"done": True}

    @app.post("/admin/unlock")
    @require_role("admin")
    def admin_unlock():
        current_service().unlock_account(request.json["email"])
        return {"done": True}

    with LiveServer(app) as server:
        yield server.url


def _token(url, slug, email, password, source):
    answer = send(
        url,
        Call(
            "POST", "/auth/token", source, {"email": email, "password": password}, {"X-App": slug}
        ),
    )
    return answer.status, (answer.body.get("access_token") if answer.status == 200 else None)


def _as(url, slug, token, method, path, source, body=None):
    head = {"X-App": slug, "Authorization": f"Bearer {token}"}
    return send(url, Call(method, path, source, body, head))


@pytest.fixture
def victim(url):
    """Ada: a member of both apps, signed in to alice_app."""
    for slug in ("alice_app", "mallory_app"):  # the demo admins are seeded on first use
        send(url, Call("GET", "/auth/csrf", VICTIM, headers={"X-App": slug}))
    head = {"X-App": "alice_app"}
    seed = send(url, Call("GET", "/auth/csrf", VICTIM, headers=head))
    created = send(
        url,
        Call(
            "POST",
            "/auth/register",
            VICTIM,
            {"email": "ada@example.com", "password": PASSWORD},
            {
                **head,
                "X-CSRF-Token": seed.body["csrf_token"],
                "Cookie": seed.headers["Set-Cookie"].split(";", 1)[0],
            },
        ),
    )
    assert created.status == 201, created.body
    assert _token(url, "mallory_app", "ada@example.com", PASSWORD, VICTIM)[0] == 200  # joins
    status, token = _token(url, "alice_app", "ada@example.com", PASSWORD, VICTIM)
    assert status == 200
    return token


def _mallory_admin(url):
    status, token = _token(
        url, "mallory_app", "admin@mallory.example", "Admin demo passphrase 1", ADMIN
    )
    assert status == 200
    return token


def test_an_apps_admin_cannot_set_a_shared_accounts_password(url, victim):
    admin = _mallory_admin(url)
    answer = _as(
        url,
        "mallory_app",
        admin,
        "POST",
        "/admin/password",
        ADMIN,
        {"email": "ada@example.com", "password": TAKEOVER},
    )
    assert answer.status == 403, answer.body
    assert "shared by several apps" in answer.body["error"]["message"]
    # No takeover anywhere; ada's password and login are untouched.
    for slug in ("alice_app", "mallory_app"):
        assert _token(url, slug, "ada@example.com", TAKEOVER, ADMIN)[0] == 401
    assert _as(url, "alice_app", victim, "GET", "/whoami", VICTIM).status == 200
    assert _token(url, "alice_app", "ada@example.com", PASSWORD, VICTIM)[0] == 200


def test_deactivating_in_one_app_leaves_the_others_alone(url, victim):
    admin = _mallory_admin(url)
    _status, ada_at_mallory = _token(url, "mallory_app", "ada@example.com", PASSWORD, VICTIM)
    done = _as(
        url, "mallory_app", admin, "POST", "/admin/deactivate", ADMIN, {"email": "ada@example.com"}
    )
    assert done.status == 200, done.body
    # Out of mallory_app: its token and sign-in are refused there.
    assert _as(url, "mallory_app", ada_at_mallory, "GET", "/whoami", VICTIM).status == 401
    assert _token(url, "mallory_app", "ada@example.com", PASSWORD, VICTIM)[0] == 401
    # Still signed in to alice_app, and able to sign in again there.
    assert _as(url, "alice_app", victim, "GET", "/whoami", VICTIM).status == 200
    assert _token(url, "alice_app", "ada@example.com", PASSWORD, VICTIM)[0] == 200
    # Disabling the account itself, in every app, is not an app administrator's act.
    everywhere = _as(
        url,
        "mallory_app",
        admin,
        "POST",
        "/admin/deactivate",
        ADMIN,
        {"email": "ada@example.com", "everywhere": True},
    )
    assert everywhere.status == 403
    assert _as(url, "alice_app", victim, "GET", "/whoami", VICTIM).status == 200


def test_an_apps_admin_cannot_lift_a_shared_accounts_lockout(url, victim):
    """Unlocking would let mallory keep guessing ada's password through its own app."""
    for i in range(3):
        assert _token(url, "mallory_app", "ada@example.com", f"guess {i}!", ADMIN)[0] == 401
    assert _token(url, "alice_app", "ada@example.com", PASSWORD, VICTIM)[0] == 429
    admin = _mallory_admin(url)
    unlock = _as(
        url, "mallory_app", admin, "POST", "/admin/unlock", ADMIN, {"email": "ada@example.com"}
    )
    assert unlock.status == 403
    assert _token(url, "mallory_app", "ada@example.com", "guess 4!", ADMIN)[0] == 429


def test_the_platform_operator_still_administers_shared_accounts(url, victim, mongo_uri, db_name):
    env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
    changed = CliRunner().invoke(
        cli,
        ["users", "set-password", "mallory_app", "ada@example.com"],
        env=env,
        input=f"{TAKEOVER}\n{TAKEOVER}\n",
    )
    assert changed.exit_code == 0, changed.output
    # A password change ends the account's logins in every app that shares it.
    assert _as(url, "alice_app", victim, "GET", "/whoami", VICTIM).status == 401
    assert _token(url, "alice_app", "ada@example.com", TAKEOVER, VICTIM)[0] == 200
