"""CORS from the manifest: preflight, actual requests, credentials, per-app policies."""

from __future__ import annotations

import logging

import pytest
from flask_apps import AppFactory, write_manifest

from flask_mdb import CorsPolicy
from flask_mdb.cors import normalize_origin
from mdb_sync import ConfigurationError, ManifestValidationError
from mdb_sync.manifest import validate_manifest
from mdb_sync.manifest.sections import load_section

ALLOWED = "https://app.example.com"
EVIL = "https://evil.example"


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


def header_resolver(req):
    return req.headers.get("X-App")


@pytest.fixture
def cors_app(factory, tmp_path):
    """Apps: ``strict`` (two origins, credentials), ``open`` (any origin), ``closed`` (no
    cors block), ``off`` (a disabled block); chosen per request by the X-App header."""
    write_manifest(
        tmp_path,
        "strict",
        cors={
            "allow_origins": [ALLOWED, "http://localhost:3000"],
            "allow_methods": ["GET", "POST", "PUT"],
            "allow_headers": ["Content-Type", "X-Token"],
            "expose_headers": ["X-Total"],
            "allow_credentials": True,
            "max_age": 120,
        },
    )
    write_manifest(tmp_path, "open", cors={"allow_origins": ["*"], "allow_headers": ["*"]})
    write_manifest(tmp_path, "closed")
    write_manifest(tmp_path, "off", cors={"enabled": False, "allow_origins": [ALLOWED]})
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_APP_RESOLVER=header_resolver)

    @app.route("/api/items", methods=["GET", "POST", "PUT", "DELETE"])
    def items():
        return {"ok": True}, 200, {"X-Total": "3"}

    return app


def _preflight(client, app_slug, origin, method="PUT", headers=None):
    request_headers = {
        "X-App": app_slug,
        "Origin": origin,
        "Access-Control-Request-Method": method,
    }
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return client.options("/api/items", headers=request_headers)


def test_an_allowed_preflight(cors_app):
    response = _preflight(cors_app.test_client(), "strict", ALLOWED, "PUT", "content-type, x-token")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT"
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Token"
    assert response.headers["Access-Control-Max-Age"] == "120"
    assert "Origin" in response.headers["Vary"]
    assert response.data == b""


@pytest.mark.parametrize(
    ("origin", "method", "headers", "reason"),
    [
        (EVIL, "PUT", None, "origin 'https://evil.example' is not allowed"),
        ("null", "GET", None, "origin 'null' is not allowed"),
        (ALLOWED + ".evil.example", "GET", None, "is not allowed"),
        ("http://app.example.com", "GET", None, "is not allowed"),  # scheme matters
        (ALLOWED, "DELETE", None, "method 'DELETE' is not allowed"),
        (ALLOWED, "PUT", "content-type, x-evil", "header 'x-evil' is not allowed"),
    ],
)
def test_refused_preflights_get_403_without_cors_headers(cors_app, origin, method, headers, reason):
    response = _preflight(cors_app.test_client(), "strict", origin, method, headers)
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert reason in response.json["error"]["message"]


def test_actual_requests_from_allowed_and_other_origins(cors_app):
    client = cors_app.test_client()
    allowed = client.post("/api/items", headers={"X-App": "strict", "Origin": ALLOWED})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert allowed.headers["Access-Control-Expose-Headers"] == "X-Total"
    assert "Origin" in allowed.headers["Vary"]
    other = client.post("/api/items", headers={"X-App": "strict", "Origin": EVIL})
    assert other.status_code == 200  # served, but the browser will not let evil read it
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]
    same_origin = client.get("/api/items", headers={"X-App": "strict"})
    assert "Access-Control-Allow-Origin" not in same_origin.headers


def test_a_default_port_in_the_origin_is_the_same_origin(cors_app):
    response = cors_app.test_client().get(
        "/api/items", headers={"X-App": "strict", "Origin": "http://LOCALHOST:3000"}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "http://LOCALHOST:3000"


def test_a_wildcard_policy_without_credentials(cors_app):
    client = cors_app.test_client()
    response = client.get("/api/items", headers={"X-App": "open", "Origin": EVIL})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    preflight = _preflight(client, "open", EVIL, "DELETE", "x-anything")
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Headers"] == "x-anything"
    assert preflight.headers["Access-Control-Max-Age"] == "600"
    odd = _preflight(client, "open", EVIL, "GET", "x-ok, bad header")
    assert odd.status_code == 403  # "*" echoes header names, never anything else


@pytest.mark.parametrize("slug", ["closed", "off"])
def test_apps_without_an_enabled_block_send_no_cors_headers(cors_app, slug):
    client = cors_app.test_client()
    response = client.get("/api/items", headers={"X-App": slug, "Origin": ALLOWED})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = _preflight(client, slug, ALLOWED, "PUT")
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_a_preflight_for_an_unknown_app_is_404(cors_app):
    response = _preflight(cors_app.test_client(), "nobody", ALLOWED, "PUT")
    assert response.status_code == 404
    assert "Access-Control-Allow-Origin" not in response.headers


def test_mdb_cors_off_disables_it(factory, tmp_path):
    path = write_manifest(tmp_path, "strict", cors={"allow_origins": [ALLOWED]})
    app = factory(MDB_MANIFESTS=str(path), MDB_CORS=False)
    app.add_url_rule("/x", "x", lambda: "x")
    response = app.test_client().get("/x", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_re_registered_manifest_changes_the_policy(factory, tmp_path):
    path = write_manifest(tmp_path, "moving", cors={"allow_origins": [ALLOWED]})
    app = factory(MDB_MANIFESTS=str(path))
    app.add_url_rule("/x", "x", lambda: "x")
    client = app.test_client()
    assert client.get("/x", headers={"Origin": ALLOWED}).headers["Access-Control-Allow-Origin"]
    engine = app.extensions["mdb"].engine
    engine.register_app({"slug": "moving", "name": "moving", "cors": {"allow_origins": [EVIL]}})
    assert (
        "Access-Control-Allow-Origin" not in client.get("/x", headers={"Origin": ALLOWED}).headers
    )
    assert client.get("/x", headers={"Origin": EVIL}).headers["Access-Control-Allow-Origin"] == EVIL


def test_an_invalid_stored_policy_fails_closed(factory, tmp_path, raw_db, caplog):
    """A registry record whose cors block is invalid (written by another tool or an older
    version) gives no CORS headers at all, and an error in the log."""
    path = write_manifest(tmp_path, "broken", cors={"allow_origins": [ALLOWED]})
    app = factory(MDB_MANIFESTS=str(path))
    app.add_url_rule("/x", "x", lambda: "x")
    client = app.test_client()
    assert client.get("/x", headers={"Origin": ALLOWED}).headers["Access-Control-Allow-Origin"]
    raw_db["apps_config"].update_one(
        {"_id": "broken"},
        {"$set": {"manifest.cors": {"allow_origins": ["*"], "allow_credentials": True}}},
    )
    app.extensions["mdb"].engine.reload_apps()
    with caplog.at_level(logging.ERROR, logger="flask_mdb"):
        response = client.get("/x", headers={"Origin": ALLOWED})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "is not allowed together with allow_credentials" in caplog.text


@pytest.mark.parametrize(
    ("block", "path"),
    [
        ("yes", "cors: must be an object"),
        ({"allow_origin": [ALLOWED]}, r"cors.allow_origin: unknown key \(did you mean"),
        ({"enabled": "true"}, "cors.enabled: must be true or false"),
        ({"allow_credentials": 1}, "cors.allow_credentials: must be true or false"),
        ({"allow_origins": ALLOWED}, "cors.allow_origins: must be an array"),
        ({"allow_origins": [ALLOWED, 7]}, r"cors.allow_origins\[1\]: must be a string"),
        ({"allow_origins": [ALLOWED + "/"]}, r"cors.allow_origins\[0\]: .* is not an origin"),
        ({"allow_origins": ["null"]}, r"cors.allow_origins\[0\]: 'null' is not an origin"),
        ({"allow_origins": ["https://*.example.com"]}, r"allow_origins\[0\]: .* is not an origin"),
        ({"allow_origins": ["https://u:p@a.example"]}, r"allow_origins\[0\]: .* is not an origin"),
        (
            {"allow_origins": ["*"], "allow_credentials": True},
            r"cors.allow_origins: '\*' is not allowed together with allow_credentials",
        ),
        (
            {"allow_origins": [ALLOWED], "allow_headers": ["*"], "allow_credentials": True},
            r"cors.allow_headers: '\*' is not allowed together with allow_credentials",
        ),
        ({"allow_methods": ["GET", "GE T"]}, r"cors.allow_methods\[1\]: 'GE T' is not a method"),
        ({"allow_headers": ["X-Ok", "X\nBad"]}, r"cors.allow_headers\[1\]: .* is not a valid"),
        ({"max_age": -1}, "cors.max_age: must be between 0 and 604800"),
        ({"max_age": True}, "cors.max_age: must be an integer"),
        ({"max_age": "600"}, "cors.max_age: must be an integer"),
    ],
)
def test_invalid_blocks_name_their_path(block, path):
    """A block given outside a manifest is checked by the manifest's schema: the same
    messages, each naming its path."""
    with pytest.raises(ConfigurationError, match=path):
        CorsPolicy.from_section(load_section("cors", block, lenient=False))
    with pytest.raises(ManifestValidationError, match=path):
        validate_manifest({"slug": "app", "cors": block})


def test_policy_defaults():
    policy = CorsPolicy.from_section(load_section("cors", {"allow_origins": [ALLOWED]}))
    assert policy.methods == ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    assert "Content-Type" in policy.headers
    assert policy.max_age == 600
    assert policy.credentials is False
    assert CorsPolicy.from_section(None) is None
    assert CorsPolicy.from_section(load_section("cors", {"enabled": False})) is None


def test_the_old_reader_is_a_deprecated_wrapper():
    with pytest.warns(DeprecationWarning, match=r"CorsPolicy.from_manifest\(\) is deprecated"):
        policy = CorsPolicy.from_manifest({"allow_origins": ["HTTPS://App.Example.com:443"]})
    assert policy is not None and policy.origins == frozenset({"https://app.example.com"})
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match=r"cors.max_age: must be an integer"),
    ):
        CorsPolicy.from_manifest({"max_age": "600"})


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:8080", "http://app.example.com:8080"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        ("null", None),
        ("https://app.example.com/path", None),
        ("app.example.com", None),
        ("", None),
    ],
)
def test_normalize_origin(origin, normalized):
    assert normalize_origin(origin) == normalized
