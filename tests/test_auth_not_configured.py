"""``@login_required`` / ``@require_auth`` on an app whose manifest has no ``auth`` block:
a specific configuration error naming the app and the missing key (logged, and its type in
the 500 body), not an AttributeError from inside Flask-Login."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from flask import Flask

from flask_mdb import MDB
from flask_mdb.auth import login_required, require_auth, require_role
from flask_mdb.testing import LiveServer


@pytest.fixture
def plain_app(engine):
    engine.register_app({"slug": "plain", "name": "Plain"})  # no auth block
    app = Flask("plain")
    app.config.update(SECRET_KEY="s" * 32, MDB_APP_SLUG="plain")
    MDB(engine=engine).init_app(app)

    @app.route("/login-required")
    @login_required
    def one():
        return "never"

    @app.route("/require-auth")
    @require_auth(redirect_to="/elsewhere")
    def two():
        return "never"

    @app.route("/role")
    @require_role("admin")
    def three():
        return "never"

    @app.route("/open")
    def four():
        return "open"

    return app


@pytest.mark.parametrize("path", ["/login-required", "/require-auth", "/role"])
def test_a_protected_view_of_an_app_without_auth_names_the_missing_block(plain_app, path, caplog):
    with LiveServer(plain_app) as server, caplog.at_level(logging.ERROR):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert refused.value.code == 500
        body = json.loads(refused.value.read())
        assert body["error"]["type"] == "AuthNotConfiguredError"
        # The open view of the same app is unaffected.
        with urllib.request.urlopen(server.url + "/open", timeout=10) as ok:
            assert ok.read() == b"open"
    assert "app 'plain' has no 'auth'" in caplog.text
