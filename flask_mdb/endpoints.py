"""The health and metrics endpoints (``MDB_HEALTH_URL``, ``MDB_METRICS_URL``; off by default).

``GET <MDB_HEALTH_URL>``: the engine's health as JSON, 200 when healthy or degraded, 503
when unhealthy — including when the server cannot be reached at all, so a load balancer or
an orchestrator's probe gets an answer, never a hang or a 500.
``GET <MDB_METRICS_URL>``: the engine's metrics in the Prometheus text format.

Neither needs an app: the blueprint is never bound (see :data:`~flask_mdb.binding.OPS_BLUEPRINT`).
Metrics name the apps and their traffic: expose them on an internal network only.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify

from mdb_sync.exceptions import MongoDBEngineError

from .binding import OPS_BLUEPRINT
from .headers import apply_headers, no_store
from .state import get_state

log = logging.getLogger("flask_mdb")

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _no_store(response: Response) -> Response:
    """Never cached, and with the security headers (``MDB_SECURITY_HEADERS``) like every
    other response of the extension."""
    no_store(response)
    config = get_state().config
    if config["MDB_SECURITY_HEADERS"]:
        apply_headers(response, hsts=None, csp=config["MDB_CONTENT_SECURITY_POLICY"])
    return response


def health() -> tuple[Response, int]:
    state = get_state()
    try:
        state.ensure_ready()
        report: dict[str, Any] = state.engine.get_health_status()
    except MongoDBEngineError as exc:
        log.warning("health check: the engine is not ready: %s", exc)
        report = {
            "status": "unhealthy",
            "checks": [
                {"name": "engine", "status": "unhealthy", "error": type(exc).__name__},
            ],
        }
    status = 503 if report.get("status") == "unhealthy" else 200
    return _no_store(jsonify(report)), status


def metrics() -> Response:
    text = get_state().engine.metrics_text()
    return _no_store(Response(text, mimetype=None, content_type=PROMETHEUS_CONTENT_TYPE))


def make_blueprint(health_url: str | None, metrics_url: str | None) -> Blueprint:
    """A blueprint with the endpoints whose URLs are set."""
    bp = Blueprint(OPS_BLUEPRINT, __name__)
    if health_url:
        bp.add_url_rule(health_url, "health", health, methods=["GET"])
    if metrics_url:
        bp.add_url_rule(metrics_url, "metrics", metrics, methods=["GET"])
    return bp
