"""`mdb users`: administering an app's users from the shell, on the real auth service."""

from __future__ import annotations

import json

import pytest
from auth_apps import PASSWORD, auth_manifest
from click.testing import CliRunner

from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.cli import cli
from mdb_sync.exceptions import (
    AuthenticationError,
    ConfigurationError,
    RateLimitExceeded,
    TokenError,
)

SECRET = "cli-users-secret-" + "z" * 32


@pytest.fixture
def run(mongo_uri, db_name, monkeypatch):
    monkeypatch.delenv("MDB_JWT_SECRET", raising=False)  # administering needs no token keys

    def invoke(*args: str, input: str | None = None):
        env = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name}
        return CliRunner().invoke(cli, ["users", *args], env=env, input=input)

    return invoke


@pytest.fixture
def app(engine):
    manifest = auth_manifest("cli_users")
    manifest["auth"]["roles"] = ["user", "admin"]
    manifest["token_management"]["security"]["account_lockout"] = {"max_failed_attempts": 1}
    engine.register_app(manifest)
    return "cli_users"


def _service(engine):
    return AuthService(engine, "cli_users", secret=SECRET, hasher=PasswordHasher(n=4096))


def test_create_list_and_roles(run, engine, app):
    created = run("create", app, "Ada@Example.com", "--role", "admin", "--json",
                  input=f"{PASSWORD}\n{PASSWORD}\n")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert PASSWORD not in created.output  # the prompt hides it
    user = json.loads(created.stdout)  # prompts go to stderr: stdout is clean JSON
    assert user["email"] == "ada@example.com" and user["roles"] == ["admin"]
    assert _service(engine).authenticate("ada@example.com", PASSWORD)["user_id"] == user["user_id"]

    listed = run("list", app, "--json")
    assert [u["email"] for u in json.loads(listed.output)] == ["ada@example.com"]
    assert "ada@example.com" in run("list", app).output

    assert "[admin]" in run("roles", app, "ada@example.com").output
    changed = run("roles", app, "ada@example.com", "user", "admin")
    assert changed.exit_code == 0 and "[user, admin]" in changed.output
    unknown = run("roles", app, "ada@example.com", "wizard")
    assert unknown.exit_code == 1 and "wizard" in unknown.output


def test_password_deactivate_activate_unlock(run, engine, app):
    auth = _service(engine)
    user = auth.register_user("ada@example.com", PASSWORD)
    tokens = auth.issue_tokens(user)

    new = "another horse battery 7"
    result = run("set-password", app, "ada@example.com", input=f"{new}\n{new}\n")
    assert result.exit_code == 0 and "sessions and tokens ended" in result.output
    with pytest.raises(TokenError):
        auth.user_from_token(tokens["access_token"])
    assert auth.authenticate("ada@example.com", new)

    assert run("deactivate", app, "ada@example.com").exit_code == 0
    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", new)
    assert run("activate", app, "ada@example.com").exit_code == 0
    assert auth.authenticate("ada@example.com", new)

    with pytest.raises(AuthenticationError):
        auth.authenticate("ada@example.com", "a wrong guess 1")  # locks (max 1)
    with pytest.raises(RateLimitExceeded):
        auth.authenticate("ada@example.com", new)
    assert run("unlock", app, "ada@example.com").exit_code == 0
    assert auth.authenticate("ada@example.com", new)


def test_errors_exit_1_with_the_reason(run, engine, app):
    weak = run("create", app, "bob@example.com", input="short\nshort\n")
    assert weak.exit_code == 1 and "at least" in weak.output
    mismatch = run("create", app, "bob@example.com", input=f"{PASSWORD}\nother\n")
    assert mismatch.exit_code == 1  # click asks again, then stdin runs out
    missing = run("deactivate", app, "nobody@example.com")
    assert missing.exit_code == 1 and "no user with the email" in missing.output
    unknown = run("list", "no_such_app")
    assert unknown.exit_code == 1 and "not registered" in unknown.output
    assert engine.get_app("no_such_app") is None
    engine.register_app({"slug": "no_users", "name": "no users"})
    without = run("list", "no_users")
    assert without.exit_code == 1 and "does not enable auth.users" in without.output


def test_an_administering_service_cannot_sign(engine, app, monkeypatch):
    monkeypatch.delenv("MDB_JWT_SECRET", raising=False)
    admin = AuthService(engine, app, signing=False, hasher=PasswordHasher(n=4096))
    user = admin.register_user("ada@example.com", PASSWORD)
    with pytest.raises(ConfigurationError, match="without signing keys"):
        admin.issue_tokens(user)


def test_show_reports_login_tracking(run, engine, app):
    auth = _service(engine)
    user = auth.create_user("tracked@example.com", PASSWORD)
    auth.record_login(user, "203.0.113.7")
    auth.record_login(user, "198.51.100.2")
    shown = run("show", app, "tracked@example.com")
    assert shown.exit_code == 0, shown.output
    assert "logins: 2" in shown.output
    assert "current login: " in shown.output and "from 198.51.100.2" in shown.output
    assert "from 203.0.113.7" in shown.output.split("last login:")[1]
    data = json.loads(run("show", app, "tracked@example.com", "--json").stdout)
    assert data["login_count"] == 2 and data["last_login_ip"] == "203.0.113.7"
    assert "logins=2" in run("list", app).output
