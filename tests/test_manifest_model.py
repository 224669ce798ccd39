"""The typed manifest: the schemas' result as frozen objects that subsystems read, with the
validated document kept for storage and export."""

from __future__ import annotations

import dataclasses

import pytest

from flask_mdb.websockets import endpoints_of
from mdb_sync.auth.config import AuthConfig
from mdb_sync.exceptions import ManifestValidationError, ScopeError
from mdb_sync.manifest import Manifest, validate_manifest
from mdb_sync.manifest.model import (
    AutoIndex,
    CorsSection,
    DataAccess,
    HealthChecks,
    MetricsSettings,
    Observability,
    WebsocketAuth,
    WebsocketSettings,
)

FULL = {
    "slug": "shop",
    "description": "A shop",
    "developer_id": "owner@example.com",
    "data_access": {"read_scopes": ["catalog"], "cross_app_policy": "deny_all"},
    "observability": {"metrics": {"collect_operation_metrics": False}},
    "auto_index": {"threshold": 5},
    "websockets": {"live": {"path": "/ws", "auth": {"required": True}}},
    "cors": {"allow_origins": ["https://shop.example.com"]},
    "auth": {"users": {"enabled": True, "allow_registration": True}},
}


def test_from_dict_validates_and_types_every_section():
    m = Manifest.from_dict(FULL)
    assert (m.slug, m.name, m.status, m.schema_version) == ("shop", "shop", "active", "2.0")
    assert (m.description, m.developer_id, m.is_active) == ("A shop", "owner@example.com", True)
    assert m.data_access == DataAccess(
        read_scopes=("shop", "catalog"), write_scope="shop", cross_app_policy="deny_all"
    )
    assert m.data_access.denies_all
    assert m.observability == Observability(
        health_checks=HealthChecks(enabled=True),
        metrics=MetricsSettings(enabled=True, collect_operation_metrics=False),
    )
    assert m.observability.monitored and not m.observability.operation_metrics
    assert m.auto_index == AutoIndex(enabled=True, threshold=5, max_indexes_per_collection=None)
    assert m.websockets["live"] == WebsocketSettings(
        path="/ws",
        description=None,
        auth=WebsocketAuth(required=True, allow_anonymous=True),
        ping_interval=30,
        max_message_size=65_536,
    )
    assert m.cors == CorsSection(
        enabled=True,
        allow_origins=("https://shop.example.com",),
        allow_methods=("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
        allow_headers=("Content-Type", "Authorization", "X-Requested-With", "X-CSRF-Token"),
        expose_headers=(),
        allow_credentials=False,  # the schema's defaults, filled in
        max_age=600,
    )
    assert m.auth is not None and m.auth.users is not None
    assert m.auth.users.allow_registration is True
    assert m.auth.users.session_ttl_seconds == 86_400
    assert m.section("auth")["users"]["allow_registration"] is True
    assert m.section("llm_config") is None and m.llm_config.enabled is False


def test_absent_sections_have_their_documented_meaning():
    m = Manifest.from_dict({"slug": "bare"})
    assert m.data_access.read_scopes == () and not m.data_access.denies_all
    assert m.observability.operation_metrics and m.observability.health_checks
    assert m.auto_index.enabled and m.auto_index.threshold is None
    assert dict(m.websockets) == {} and m.cors is None
    assert m.auth is None and m.token_management is None
    assert m.embedding_config is None and m.memory_config is None
    assert Manifest.from_dict({"slug": "off", "auto_index": False}).auto_index.enabled is False


def test_the_document_round_trips_and_is_what_validation_returns():
    m = Manifest.from_dict(FULL)
    assert m.to_dict() == validate_manifest(FULL)
    assert Manifest.from_dict(m.to_dict()) == m
    assert Manifest.from_dict(m.to_dict(), validate=False) == m
    assert Manifest.from_dict(m) is m
    assert len({m, Manifest.from_dict(m.to_dict())}) == 1  # hashable, equal ones alike
    copy = m.to_dict()
    copy["auth"]["users"]["enabled"] = False  # a copy: the manifest is unchanged
    assert m.section("auth")["users"]["enabled"] is True


def test_it_is_immutable():
    m = Manifest.from_dict(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.slug = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.data_access.cross_app_policy = "explicit"  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.raw["slug"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        m.websockets["x"] = m.websockets["live"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.auth.users.enabled = False  # type: ignore[misc,union-attr]
    with pytest.raises(TypeError):
        m.auth.rate_limits["/x"] = None  # type: ignore[index,union-attr]


def test_an_invalid_manifest_is_refused_with_its_path():
    with pytest.raises(ManifestValidationError) as info:
        Manifest.from_dict({"slug": "shop", "data_access": {"cross_app_policy": "sometimes"}})
    assert "data_access.cross_app_policy" in info.value.errors


def test_service_readers_accept_the_typed_manifest():
    m = Manifest.from_dict(FULL)
    assert AuthConfig.from_manifest(m) == AuthConfig.from_manifest(m.to_dict())
    assert AuthConfig.from_manifest(m).allow_registration is True
    endpoints = endpoints_of(m)
    assert endpoints == endpoints_of(m.to_dict())
    assert endpoints["live"].flask_endpoint == "mdb_ws.shop.live"
    assert not endpoints["live"].anonymous_ok


def test_the_engine_reads_data_access_from_the_typed_section(engine):
    engine.register_app({"slug": "catalog", "data_access": {"cross_app_policy": "deny_all"}})
    engine.register_app({"slug": "shop", "data_access": {"read_scopes": ["catalog"]}})
    with pytest.raises(ScopeError, match="denies reads by other apps"):
        engine.get_scoped_db("shop")
    engine.register_app({"slug": "catalog"})
    assert list(engine.get_scoped_db("shop").read_scopes) == ["shop", "catalog"]
