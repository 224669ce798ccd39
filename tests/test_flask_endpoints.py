"""The health and metrics endpoints."""

from __future__ import annotations

import pytest
from flask_apps import FAIL_FAST, AppFactory, http, serve, unreachable_uri

from flask_mdb import db


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


def test_endpoints_are_off_by_default(factory):
    app = factory(MDB_APP_SLUG="quiet")
    client = app.test_client()
    assert client.get("/health").status_code == 404
    assert client.get("/metrics").status_code == 404


def test_health_is_json_and_200_when_healthy(factory):
    app = factory(MDB_HEALTH_URL="/_health")
    response = app.test_client().get("/_health")
    assert response.status_code == 200
    assert response.json["status"] == "healthy"
    assert {c["name"] for c in response.json["checks"]} >= {"engine", "mongodb"}
    assert response.headers["Cache-Control"] == "no-store"


def test_health_is_503_when_the_server_is_unreachable(factory):
    app = factory(
        MDB_MONGO_URI=unreachable_uri(), MDB_CLIENT_OPTIONS=FAIL_FAST, MDB_HEALTH_URL="/health"
    )
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.json["status"] == "unhealthy"
    assert response.json["checks"][0] == {
        "name": "engine",
        "status": "unhealthy",
        "error": "EngineConnectionError",
    }


def test_health_and_metrics_need_no_app_even_with_a_strict_resolver(factory):
    """A resolver that names an unknown app 404s ordinary requests, never the probes."""
    app = factory(
        MDB_APP_RESOLVER=lambda request: "unknown_tenant",
        MDB_HEALTH_URL="/health",
        MDB_METRICS_URL="/metrics",
    )
    app.add_url_rule("/x", "x", lambda: "x")
    client = app.test_client()
    assert client.get("/x").status_code == 404
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_metrics_are_prometheus_text_with_per_app_requests(factory):
    app = factory(MDB_APP_SLUG="metered", MDB_METRICS_URL="/metrics")

    @app.get("/work")
    def work():
        db.items.insert_one({"n": 1})
        return {"ok": True}

    @app.get("/fail")
    def fail():
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    with serve(app) as base:  # a real server and a real scrape
        for _ in range(3):
            assert http(f"{base}/work")[0] == 200
        assert http(f"{base}/fail")[0] == 500
        status, headers, text = http(f"{base}/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE mdb_operations_total counter" in text
    assert 'mdb_operations_total{app="metered",operation="http.request"} 4' in text
    assert 'mdb_operation_errors_total{app="metered",operation="http.request"} 1' in text
