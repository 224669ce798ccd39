"""The identity keys of a manifest (``auth.mode``/``related_apps``/``auth_hub_url``,
``auth.users.require_verification``/``fresh_login_seconds``/``two_factor``,
``auth.anonymous``): bad values are refused at their path, good ones become
:class:`AuthConfig` fields with their documented defaults."""

from __future__ import annotations

import pytest

from mdb_sync import ManifestValidationError
from mdb_sync.auth import AuthConfig
from mdb_sync.manifest import validate_manifest


def users(**extra):
    return {"enabled": True, **extra}


@pytest.mark.parametrize(
    ("auth", "path"),
    [
        ({"users": users(require_verification={"unverified": "maybe"})},
         "auth.users.require_verification.unverified"),
        ({"users": users(require_verification="yes")}, "auth.users.require_verification"),
        ({"users": users(require_verification={"token_ttl_seconds": 10})},
         "auth.users.require_verification.token_ttl_seconds"),
        ({"users": users(fresh_login_seconds=5)}, "auth.users.fresh_login_seconds"),
        ({"users": users(two_factor={"remember_device_days": 1000})},
         "auth.users.two_factor.remember_device_days"),
        ({"users": users(two_factor={"max_failed_attempts": 0})},
         "auth.users.two_factor.max_failed_attempts"),
        ({"users": users(), "anonymous": {"ttl_seconds": 1}}, "auth.anonymous.ttl_seconds"),
        ({"users": users(), "anonymous": {"max_new_per_address": {"max_attempts": 0}}},
         "auth.anonymous.max_new_per_address.max_attempts"),
        ({"users": users(), "mode": "shared", "related_apps": {"b": "https://b.example/auth"}},
         "auth.mode"),
        ({"users": users(strategy="global_users"), "mode": "shared"}, "auth.related_apps"),
        ({"users": users(strategy="global_users"), "mode": "shared",
          "auth_hub_url": "https://hub.example/auth",
          "related_apps": {"hub": "https://elsewhere.example/auth"}}, "auth.related_apps"),
        ({"users": users(), "related_apps": {"Not A Slug": "https://x.example"}},
         'auth.related_apps["Not A Slug"]'),
    ],
)  # fmt: skip
def test_bad_identity_keys_are_refused_at_their_path(auth, path):
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest({"slug": "app", "auth": auth})
    assert any(p.startswith(path) for p in info.value.paths), info.value.errors


def test_defaults_and_values_reach_the_config():
    hub = AuthConfig.from_manifest(
        validate_manifest(
            {
                "slug": "hub",
                "auth": {
                    "mode": "shared",
                    "users": users(
                        strategy="global_users", require_verification=True, two_factor={}
                    ),
                    "related_apps": {"shop": "https://shop.example/auth"},
                    "policy": {"allow_anonymous": True, "required": False},
                },
            }
        )
    )
    assert (
        hub.shared
        and hub.hub_slug is None
        and hub.related_apps == {"shop": "https://shop.example/auth"}
    )
    assert hub.verification is not None and hub.verification.unverified == "refuse"
    assert hub.verification.token_ttl == 86_400 and hub.fresh_login_seconds == 900
    assert hub.two_factor is not None and hub.two_factor.max_failed_attempts == 5
    assert hub.two_factor.remember_device_days == 0
    assert hub.anonymous_identities and hub.anonymous_ttl == 604_800
    assert hub.limit("anonymous").max_attempts == 20
    shop = AuthConfig.from_manifest(
        validate_manifest(
            {
                "slug": "shop",
                "auth": {
                    "mode": "shared",
                    "users": users(strategy="global_users"),
                    "auth_hub_url": "https://hub.example/auth",
                    "related_apps": {"hub": "https://hub.example/auth/"},
                },
            }
        )
    )
    assert shop.hub_slug == "hub" and shop.hub_url == "https://hub.example/auth"
    assert not shop.anonymous_identities  # allow_anonymous was not said


def test_anonymous_identities_need_an_explicit_allow_anonymous_and_users():
    plain = AuthConfig.from_manifest({"slug": "a", "auth": {"users": users()}})
    assert not plain.anonymous_identities  # allow_anonymous defaults to true without a policy
    no_users = AuthConfig.from_manifest(
        {"slug": "a", "auth": {"policy": {"allow_anonymous": True}}}
    )
    assert not no_users.anonymous_identities
