"""One error path: decorators raise HTTP exceptions carrying their status, the engine's own
exceptions are always answered, and the app's own error handlers — for the status, the
class, a parent class, a blueprint — win over the library's renderer."""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, add_views, auth_config, auth_manifest, write
from flask import Blueprint, jsonify
from flask_apps import AppFactory
from werkzeug.exceptions import Forbidden, HTTPException, Unauthorized

from flask_mdb import db
from flask_mdb.errors import MDBHTTPError, http_error, status_for
from flask_mdb.websockets import broadcast_to_channel
from mdb_sync.exceptions import (
    ChannelLimitExceeded,
    ChannelRefused,
    InvalidChannelError,
    QueryValidationError,
    ScopeError,
)

JSON = {"Accept": "application/json"}


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


def make_app(factory, tmp_path, register_handlers=None, **config):
    """An auth app ``errs`` (MDB_APP_SLUG) with the test views, a view raising a sandbox
    refusal and one raising pymongo's DuplicateKeyError; ``register_handlers(app)`` runs
    after ``init_app``, as an app's own code would."""
    manifest = auth_manifest("errs")
    manifest["auth"]["public_routes"] = ["/open", "/open/*", "/docs/*"]
    write(tmp_path, manifest)
    app = factory(
        name="errs", MDB_MANIFESTS=str(tmp_path), **auth_config(MDB_APP_SLUG="errs", **config)
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_views(app)

    @app.get("/open/foreign")
    def foreign():
        db.tasks.insert_one({"app_id": "someone_else"})  # ScopeError: 403
        return {}

    @app.get("/open/dup")
    def dup():
        db.dups.insert_one({"_id": 1})
        db.dups.insert_one({"_id": 1})  # pymongo's DuplicateKeyError
        return {}

    if register_handlers is not None:
        register_handlers(app)
    return app


def signed_in(app):
    client = app.test_client()
    token = client.get("/auth/csrf").json["csrf_token"]
    body = {"email": "ada@example.com", "password": PASSWORD}
    assert (
        client.post("/auth/register", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    )
    token = client.get("/auth/csrf").json["csrf_token"]
    assert client.post("/auth/login", json=body, headers={"X-CSRF-Token": token}).status_code == 200
    return client


def test_without_handlers_of_the_app_the_library_answers(factory, tmp_path):
    app = make_app(factory, tmp_path)
    client = app.test_client()
    denied = client.get("/whoami", headers=JSON)
    assert denied.status_code == 401
    assert denied.json["error"]["type"] == "AuthenticationError"
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="errs"'
    assert denied.headers["Cache-Control"] == "no-store"
    # The engine's own errors are answered without MDB_ERROR_HANDLERS...
    refused = client.get("/open/foreign", headers=JSON)
    assert refused.status_code == 403
    assert refused.json["error"]["type"] == "ScopeError"
    assert "someone_else" in refused.json["error"]["message"]
    # ... as a page for a browser navigation ...
    page = client.get("/open/foreign", headers={"Accept": "text/html"})
    assert page.status_code == 403 and page.mimetype == "text/html"
    assert "ScopeError" in page.get_data(as_text=True)
    # ... while pymongo's are the app's business unless it opts in.
    assert client.get("/open/dup", headers=JSON).status_code == 500
    assert not client.get("/open/dup", headers=JSON).is_json
    (tmp_path / "opted").mkdir()
    opted = make_app(factory, tmp_path / "opted", MDB_ERROR_HANDLERS=True)
    dup = opted.test_client().get("/open/dup", headers=JSON)
    assert (dup.status_code, dup.json["error"]["type"]) == (409, "DuplicateKeyError")

    signed = signed_in(app)
    forbidden = signed.get("/admin", headers=JSON)
    assert forbidden.status_code == 403
    assert forbidden.json["error"] == {
        "status": 403,
        "type": "AuthorizationError",
        "message": "this requires the role 'admin'",
    }


def test_the_apps_status_handlers_win(factory, tmp_path):
    seen: list[MDBHTTPError] = []

    def on_401(exc):
        seen.append(exc)
        return jsonify(mine=401, message=exc.description), 401

    def on_403(exc):
        seen.append(exc)
        return jsonify(mine=403, message=exc.description), 403

    def register(app):
        app.register_error_handler(401, on_401)
        app.register_error_handler(403, on_403)

    app = make_app(factory, tmp_path, register)
    client = app.test_client()
    # A decorator's refusal (login_required on /echo, the app's guard on /whoami).
    assert client.post("/echo", headers=JSON).json == {
        "mine": 401,
        "message": "authentication required",
    }
    assert client.get("/whoami", headers=JSON).json["mine"] == 401
    # A browser is still redirected to the login page: a redirect is no 401.
    browser = client.get("/whoami", headers={"Accept": "text/html"})
    assert browser.status_code == 302 and browser.headers["Location"].startswith("/auth/login")
    # The engine's ScopeError answers as its status: the app's 403 handler, with the
    # original exception at hand.
    refused = client.get("/open/foreign", headers=JSON)
    assert refused.status_code == 403 and refused.json["mine"] == 403
    assert isinstance(seen[-1], Forbidden) and isinstance(seen[-1].original, ScopeError)
    # A role refusal too.
    assert signed_in(app).get("/admin", headers=JSON).json == {
        "mine": 403,
        "message": "this requires the role 'admin'",
    }
    assert all(isinstance(exc, MDBHTTPError) for exc in seen)


def test_the_apps_class_handlers_win(factory, tmp_path):
    def register(app):
        app.register_error_handler(Unauthorized, lambda exc: ("unauthorized: mine", 401))
        app.register_error_handler(HTTPException, lambda exc: (f"http {exc.code}: mine", exc.code))
        app.register_error_handler(QueryValidationError, lambda exc: ("query: mine", 422))

    app = make_app(factory, tmp_path, register)

    @app.get("/open/where")
    def where():
        return str(db.tasks.find_one({"$where": "1"}))

    client = app.test_client()
    assert client.post("/echo", headers=JSON).text == "unauthorized: mine"
    # Handlers of a parent class count: HTTPException answers the converted ScopeError.
    refused = client.get("/open/foreign", headers=JSON)
    assert (refused.status_code, refused.text) == (403, "http 403: mine")
    # A handler of the engine exception's own class replaces the library's.
    assert (client.get("/open/where").status_code, client.get("/open/where").text) == (
        422,
        "query: mine",
    )


def test_a_blueprints_handlers_win_in_the_blueprint(factory, tmp_path):
    def register(app):
        bp = Blueprint("api", __name__, url_prefix="/open/api")

        @bp.get("/foreign")
        def api_foreign():
            db.tasks.insert_one({"app_id": "someone_else"})
            return {}

        bp.register_error_handler(403, lambda exc: ("api 403", 403))
        app.register_blueprint(bp)

    app = make_app(factory, tmp_path, register)
    client = app.test_client()
    assert client.get("/open/api/foreign", headers=JSON).text == "api 403"
    assert client.get("/open/foreign", headers=JSON).json["error"]["type"] == "ScopeError"


def test_http_error_classes():
    error = http_error(429, "slow down", headers={"Retry-After": "3"}, reason="rate")
    assert isinstance(error, MDBHTTPError) and error.code == 429
    assert type(error).__name__ == "MDBTooManyRequests"
    assert ("Retry-After", "3") in error.get_headers()
    with pytest.raises(ValueError, match="no HTTP error class for status 299"):
        http_error(299, "not an error")


def test_channel_errors_from_a_view(factory, tmp_path):
    """Server code using the channel API in a view gets a client error, not a 500: a bad
    channel name 400, a refused join 403, a channel bound 413."""

    def register(app):
        @app.get("/open/channel/<name>")
        def to_channel(name):
            broadcast_to_channel("errs", name, {"type": "x"}, local_only=True)
            return {"sent": name}

    client = make_app(factory, tmp_path, register).test_client()
    assert client.get("/open/channel/rooms-1", headers=JSON).json == {"sent": "rooms-1"}
    bad = client.get("/open/channel/a..b", headers=JSON)
    assert bad.status_code == 400 and bad.json["error"]["type"] == "InvalidChannelError"
    assert status_for(ChannelRefused("no")) == 403
    assert status_for(ChannelLimitExceeded("too many")) == 413
    assert status_for(InvalidChannelError("bad")) == 400
