"""Keys the schema accepts without acting on them are named in a ManifestWarning.

Manifests written for the predecessor stay valid, but an author must not believe that
``observability.logging`` or ``auth.jwt.token_expiry_hours`` is in force: validation warns
with the key's path, every time the manifest is validated (cached or not) and whether it is
registered, loaded from a file or validated alone; the schema's own defaults never warn.
"""

from __future__ import annotations

import json
import warnings

import pytest

from mdb_sync import ManifestWarning
from mdb_sync.manifest import load_manifest, validate_manifest
from mdb_sync.manifest.inert import INERT
from mdb_sync.manifest.schema import ManifestSchema

#: A manifest setting every inert key (demo user and all), each to a valid value.
EVERY_INERT_KEY = {
    "slug": "legacy",
    "auth": {
        "policy": {
            "provider": "casbin",
            "authorization": {"api_key": "k", "url": "https://oso.example.com"},
            "custom_resource": "document",
            "custom_actions": ["read"],
        },
        "users": {
            "enabled": True,
            "link_platform_users": True,
            "user_id_field": "uid",
            "allow_demo_access": True,
            "demo_users": [{"email": "demo@example.com", "link_to_platform": True}],
        },
        "csrf_protection": {"enabled": True, "rotate_tokens": True},
        "jwt": {"token_expiry_hours": 2},
    },
    "token_management": {"auto_setup": True},
    "memory_config": {"embedding_model_dims": 384},
    "observability": {
        "health_checks": {"endpoint": "/up", "interval_seconds": 10},
        "metrics": {"collect_performance_metrics": False, "custom_metrics": ["m"]},
        "logging": {"level": "DEBUG", "format": "json"},
    },
}
EXPECTED = {
    "auth.policy.authorization.api_key",
    "auth.policy.authorization.url",
    "auth.policy.custom_resource",
    "auth.policy.custom_actions",
    "auth.users.link_platform_users",
    "auth.users.user_id_field",
    "auth.users.allow_demo_access",
    "auth.users.demo_users[0].link_to_platform",
    "auth.csrf_protection.rotate_tokens",
    "auth.jwt.token_expiry_hours",
    "token_management.auto_setup",
    "memory_config.embedding_model_dims",
    "observability.health_checks.endpoint",
    "observability.health_checks.interval_seconds",
    "observability.metrics.collect_performance_metrics",
    "observability.metrics.custom_metrics",
    "observability.logging",
}


def _warned_paths(record: list[warnings.WarningMessage]) -> set[str]:
    found = set()
    for w in record:
        assert issubclass(w.category, ManifestWarning)
        message = str(w.message)
        assert message.startswith("manifest 'legacy': ")
        assert "has no effect yet" in message
        found.add(message.removeprefix("manifest 'legacy': ").split(" is accepted")[0])
    return found


def _inert_fields(schema, prefix=""):
    """Every field marked inert, as a path without list indexes or map keys."""
    out = set()
    for name, field in schema.fields.items():
        path = f"{prefix}.{field.data_key or name}" if prefix else field.data_key or name
        if field.metadata.get(INERT):
            out.add(path)
            continue
        nested = getattr(field, "nested", None) or getattr(
            getattr(field, "inner", None), "nested", None
        )
        if nested is not None:
            out |= _inert_fields(nested() if isinstance(nested, type) else nested, path)
    return out


def test_every_inert_key_is_named_with_its_path():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        validate_manifest(EVERY_INERT_KEY)
    assert _warned_paths(record) == EXPECTED
    # The fixture covers every field the schemas mark inert (a new one needs a line here).
    marked = {p.replace("[0]", "") for p in EXPECTED}
    assert _inert_fields(ManifestSchema()) - marked <= {
        f"observability.logging.{k}"
        for k in ("level", "format", "include_request_id", "log_sensitive_data")
    }
    assert len(EXPECTED) + 4 >= 20  # the ~20 keys the issue counted (logging's 4 under one)


def test_the_warning_repeats_for_a_cached_result_and_normalized_output_never_warns():
    with pytest.warns(ManifestWarning, match=r"observability\.logging is accepted"):
        validate_manifest({"slug": "legacy", "observability": {"logging": {"level": "INFO"}}})
    with pytest.warns(ManifestWarning, match=r"observability\.logging is accepted"):
        validate_manifest({"slug": "legacy", "observability": {"logging": {"level": "INFO"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Sections whose inert keys have schema defaults: filled in, not set by the author.
        normalized = validate_manifest(
            {
                "slug": "legacy",
                "observability": {"health_checks": {"enabled": True}, "metrics": {}},
                "auth": {"jwt": {"algorithm": "HS256"}, "csrf_protection": {"enabled": True}},
            }
        )
        # Inert keys get no default: a normalized manifest validated again never warns.
        assert "token_expiry_hours" not in normalized["auth"]["jwt"]
        assert "collect_performance_metrics" not in normalized["observability"]["metrics"]
        validate_manifest(normalized)
        validate_manifest({"slug": "legacy", "auth": {"policy": {"authorization": {"url": None}}}})


def test_an_error_filter_makes_inert_keys_fail_and_registration_warns(engine, tmp_path):
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps({"slug": "legacy", "token_management": {"auto_setup": True}}))
    with pytest.warns(ManifestWarning, match=r"token_management\.auto_setup"):
        load_manifest(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)
        with pytest.raises(ManifestWarning, match=r"token_management\.auto_setup"):
            validate_manifest(json.loads(path.read_text()))
    with pytest.warns(ManifestWarning, match=r"memory_config\.embedding_model_dims"):
        engine.register_app({"slug": "legacy", "memory_config": {"embedding_model_dims": 8}})
    assert engine.get_app("legacy")["memory_config"]["embedding_model_dims"] == 8  # kept
