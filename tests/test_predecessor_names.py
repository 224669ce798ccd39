"""The predecessor's spellings, for apps moving over: ``require_auth``, ``require_admin``,
``register_user`` (Flask), ``get_embedding_service`` and ``run_index_creation_for_collection``
— each doing the real thing against the real server."""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, write
from flask_apps import AppFactory

from flask_mdb.auth import get_current_user, register_user, require_admin, require_auth
from mdb_sync.ai import get_embedding_service
from mdb_sync.exceptions import ConfigurationError, ManifestValidationError, ScopeError
from mdb_sync.indexes import run_index_creation_for_collection

pytest_plugins = ("openai_server",)
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@pytest.fixture
def app(mongo_uri, db_name, tmp_path):
    manifest = auth_manifest("site")
    manifest["auth"]["roles"] = ["user", "admin"]
    manifest["auth"]["policy"]["required"] = False  # the decorators decide, not the app policy
    write(tmp_path, manifest)
    factory = AppFactory(mongo_uri, db_name)
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG="site", **auth_config())

    @app.get("/dashboard")
    @require_auth(redirect_to="/welcome")
    def dashboard():
        return {"email": get_current_user().email}

    @app.get("/plain")
    @require_auth
    def plain():
        return {"ok": True}

    @app.get("/admin-only")
    @require_admin
    def admin_only():
        return {"admin": True}

    @app.post("/signup")
    def signup():
        user = register_user("ada@example.com", PASSWORD, login=True, name="Ada")
        return {"user_id": user["user_id"], "signed_in": get_current_user() is not None}

    yield app
    factory.close()


def test_require_auth_require_admin_and_register_user(app):
    client = app.test_client()
    redirected = client.get("/dashboard", headers=HTML)
    assert redirected.status_code == 302
    assert redirected.headers["Location"] == "/welcome?next=%2Fdashboard"
    assert client.get("/dashboard", headers=JSON).status_code == 401
    assert client.get("/plain", headers=JSON).status_code == 401

    csrf = client.get("/auth/csrf").json["csrf_token"]
    signed_up = client.post("/signup", headers={"X-CSRF-Token": csrf})
    assert signed_up.status_code == 200 and signed_up.json["signed_in"] is True
    assert client.get("/dashboard", headers=HTML).json == {"email": "ada@example.com"}
    assert client.get("/plain").status_code == 200
    assert client.get("/admin-only").status_code == 403  # default roles: user
    with pytest.raises(ValueError, match="path of this site"):
        require_auth(redirect_to="https://evil.example/login")


def test_get_embedding_service_with_and_without_an_app(engine, llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MDB_LLM_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        get_embedding_service()  # nothing configured: said at once, not at the first call
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    standalone = get_embedding_service()
    assert standalone.embed(["hello"]) == [llm_server.expected_embedding("hello")]

    engine.register_app(
        {"slug": "embedder", "llm_config": {"enabled": True}, "embedding_config": {}}
    )
    assert get_embedding_service("embedder") is engine.get_embedding_service("embedder")


def test_run_index_creation_for_collection(engine, raw_db):
    db = engine.get_scoped_db("indexed")
    outcomes = run_index_creation_for_collection(
        db.tasks, [{"name": "by_status", "type": "regular", "keys": {"status": 1}}], "indexed"
    )
    assert [(o["name"], o["status"]) for o in outcomes] == [("by_status", "created")]
    keys = raw_db["indexed_tasks"].index_information()["by_status"]["key"]
    assert ("status", 1) in keys
    again = run_index_creation_for_collection(
        db.tasks, [{"name": "by_status", "type": "regular", "keys": {"status": 1}}]
    )
    assert again[0]["status"] != "created"  # already there
    with pytest.raises(ScopeError, match="belongs to app 'indexed'"):
        run_index_creation_for_collection(db.tasks, [], "someone_else")
    with pytest.raises(ManifestValidationError):
        run_index_creation_for_collection(db.tasks, [{"name": "bad", "type": "regular"}])
