"""Schema 1.0 -> 2.0 migration: one test per 1.0 key, lossless round trips, conflicts."""

from __future__ import annotations

import copy

import pytest

from mdb_sync import ManifestValidationError
from mdb_sync.manifest import V1_KEYS, migrate_manifest, validate_manifest

V1_FULL = {
    "schema_version": "1.0",
    "slug": "legacy",
    "name": "Legacy App",
    "auth_required": True,
    "auth_policy": {
        "allowed_roles": ["admin", "user"],
        "allowed_users": ["a@example.com"],
        "denied_users": ["b@example.com"],
        "required_permissions": ["apps:view"],
        "owner_can_access": False,
        "allow_anonymous": False,
    },
    "sub_auth": {
        "enabled": True,
        "strategy": "app_users",
        "collection_name": "members",
        "session_cookie_name": "legacy_session",
        "session_ttl_seconds": 3600,
        "allow_registration": True,
    },
    "data_scope": ["self", "shared"],
    "managed_indexes": {"tasks": [{"keys": {"status": 1}, "name": "status_idx"}]},
}


def test_auth_required_moves_to_auth_policy_required():
    migrated = migrate_manifest({"slug": "a", "auth_required": True})
    assert migrated == {
        "slug": "a",
        "schema_version": "2.0",
        "auth": {"policy": {"required": True}},
    }


def test_auth_policy_moves_to_auth_policy_and_roles_become_allowed_roles():
    migrated = migrate_manifest(
        {"slug": "a", "auth_policy": {"roles": ["admin"], "owner_can_access": True}}
    )
    assert migrated["auth"] == {"policy": {"allowed_roles": ["admin"], "owner_can_access": True}}
    assert "auth_policy" not in migrated


def test_sub_auth_moves_to_auth_users_and_users_collection_becomes_collection_name():
    migrated = migrate_manifest(
        {"slug": "a", "sub_auth": {"enabled": True, "users_collection": "people"}}
    )
    assert migrated["auth"] == {"users": {"enabled": True, "collection_name": "people"}}
    assert "sub_auth" not in migrated


def test_data_scope_moves_to_data_access_read_scopes():
    migrated = migrate_manifest({"slug": "a", "data_scope": ["self", "shared"]})
    assert migrated["data_access"] == {"read_scopes": ["a", "shared"]}
    assert validate_manifest({"slug": "a", "data_scope": ["self", "shared"]})["data_access"] == {
        "read_scopes": ["a", "shared"],
        "write_scope": "a",
        "cross_app_policy": "explicit",
    }


def test_version_is_read_as_schema_version():
    assert migrate_manifest({"slug": "a", "version": "1.0"})["schema_version"] == "2.0"
    assert "version" not in migrate_manifest({"slug": "a", "version": "2.0"})
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest({"slug": "a", "version": "9.1"})
    assert info.value.paths == ["version"]


@pytest.mark.parametrize("value", ["2.0", "2", 2, 2.0, "1.0", 1])
def test_schema_version_spellings(value):
    assert validate_manifest({"slug": "a", "schema_version": value})["schema_version"] == "2.0"


def test_migration_covers_every_v1_key():
    assert set(V1_KEYS) <= set(V1_FULL)
    migrated = migrate_manifest(V1_FULL)
    assert not set(V1_KEYS) & set(migrated)


def test_v1_round_trip_is_lossless():
    original = copy.deepcopy(V1_FULL)
    upgraded = migrate_manifest(V1_FULL)
    assert migrate_manifest(upgraded, "1.0") == original
    assert original == V1_FULL  # inputs are not mutated


def test_v1_and_migrated_v2_validate_to_the_same_manifest():
    normalized = validate_manifest(V1_FULL)
    assert normalized == validate_manifest(migrate_manifest(V1_FULL))
    assert normalized["auth"]["policy"]["allowed_roles"] == ["admin", "user"]
    assert normalized["auth"]["policy"]["required"] is True
    assert normalized["auth"]["users"]["collection_name"] == "members"
    # and back down and up again: a fixed point
    assert validate_manifest(migrate_manifest(normalized, "1.0")) == normalized


def test_every_value_of_the_v1_manifest_survives_migration():
    migrated = migrate_manifest(V1_FULL)
    policy = migrated["auth"]["policy"]
    assert policy["required"] is V1_FULL["auth_required"]
    for key, value in V1_FULL["auth_policy"].items():
        assert policy[key] == value
    for key, value in V1_FULL["sub_auth"].items():
        assert migrated["auth"]["users"][key] == value
    assert migrated["managed_indexes"] == V1_FULL["managed_indexes"]


def test_v2_manifests_may_carry_v1_keys_as_the_seeds_do():
    normalized = validate_manifest(
        {
            "schema_version": "2.0",
            "slug": "rag",
            "auth_policy": {"required": False, "allow_anonymous": True},
        }
    )
    assert normalized["auth"]["policy"]["required"] is False
    assert normalized["auth"]["policy"]["allow_anonymous"] is True


def test_v1_keys_merge_with_v2_keys_when_they_agree():
    normalized = validate_manifest(
        {
            "slug": "a",
            "auth_required": True,
            "auth": {"policy": {"provider": "oso", "required": True}},
        }
    )
    assert normalized["auth"]["policy"]["provider"] == "oso"
    assert normalized["auth"]["policy"]["required"] is True


@pytest.mark.parametrize(
    ("manifest", "path"),
    [
        ({"slug": "a", "auth_required": False, "auth_policy": {"required": True}}, "auth_required"),
        (
            {"slug": "a", "auth_policy": {"roles": ["x"], "allowed_roles": ["y"]}},
            "auth_policy.roles",
        ),
        (
            {"slug": "a", "sub_auth": {"enabled": True}, "auth": {"users": {"enabled": False}}},
            "sub_auth.enabled",
        ),
        ({"slug": "a", "data_scope": ["b"], "data_access": {"read_scopes": ["c"]}}, "data_scope"),
        ({"slug": "a", "auth_policy": "yes"}, "auth_policy"),
        ({"slug": "a", "auth_required": True, "auth": "on"}, "auth_required"),
    ],
)
def test_contradicting_v1_and_v2_values_are_errors_at_the_v1_path(manifest, path):
    with pytest.raises(ManifestValidationError) as info:
        migrate_manifest(manifest)
    assert path in info.value.errors
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest(manifest)
    assert path in info.value.errors


def test_errors_inside_moved_values_name_the_path_the_author_wrote():
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest({"slug": "a", "sub_auth": {"users_collection": "$bad", "strategy": "x"}})
    assert set(info.value.paths) == {"sub_auth.users_collection", "sub_auth.strategy"}


def test_downgrade_refuses_what_1_0_cannot_express():
    with pytest.raises(ManifestValidationError) as info:
        migrate_manifest({"slug": "a", "auth": {"mode": "shared"}}, "1.0")
    assert info.value.paths == ["auth.mode"]
    with pytest.raises(ValueError):
        migrate_manifest({"slug": "a"}, "3.0")
