"""Typed manifest sections: the schemas are the one model of a manifest.

Every section a subsystem reads is loaded by its schema into frozen dataclasses; a default
lives on a schema field only, an invalid value is refused at load with its path, and the
readers (auth, OAuth, CORS, websockets, AI) take the typed sections instead of re-parsing
dicts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from flask_mdb.cors import CorsPolicy
from flask_mdb.websockets.endpoints import Endpoint, endpoints_of
from mdb_sync.ai.config import EmbeddingConfig, LLMConfig, MemoryConfig
from mdb_sync.auth.config import AuthConfig
from mdb_sync.auth.lockout import LockoutPolicy
from mdb_sync.auth.oauth.settings import OAuthSettings
from mdb_sync.auth.passwords import PasswordPolicy
from mdb_sync.exceptions import ConfigurationError, ManifestValidationError
from mdb_sync.manifest import (
    Manifest,
    schema_auth,
    schema_oauth,
    schema_services,
    sections,
    validate_manifest,
)
from mdb_sync.manifest.fields import BaseSchema, modelled, typed_defaults
from mdb_sync.manifest.sections import load_section

SEEDS = Path(__file__).parent / "manifests" / "seeds"

#: A manifest using every typed section.
RICH = {
    "slug": "rich",
    "auth": {
        "roles": ["user", "admin"],
        "default_role": "user",
        "users": {
            "enabled": True,
            "allow_registration": True,
            "require_verification": True,
            "two_factor": {"issuer_name": "Rich"},
            "password_reset": {},
            "demo_users": [{"email": "demo@example.com", "password_hash": "pbkdf2:sha256$x$y"}],
        },
        "policy": {"authorization": {"initial_policies": [["admin", "/reports", "*"]]}},
        "oauth": {
            "providers": {
                "google": {"preset": "google", "client_id": "g", "client_secret_env": "G_SECRET"},
                "corp": {"issuer": "https://id.corp/", "client_id": "c", "client_secret_env": "C"},
            }
        },
        "security": {"hsts": {"max_age": 600}},
        "password_policy": {"min_length": 10},
    },
    "token_management": {
        "security": {
            "account_lockout": {"max_failed_attempts": 3},
            "rate_limiting": {"login": {"max_attempts": 4, "window_seconds": 60}},
        }
    },
    "websockets": {"live": {"path": "/ws", "auth": {"required": True}}},
    "cors": {"allow_origins": ["HTTPS://App.Example.com:443"], "allow_credentials": True},
    "llm_config": {
        "enabled": True,
        "provider": "openai",
        "providers": {"acme": {"base_url": "https://acme.example/v1/"}},
        "prices": {"acme/*": 1.5, "gpt-4o": {"input": 2}},
    },
    "embedding_config": {"default_max_tokens": 500},
    "memory_config": {"temperature": 0.2},
    "data_access": {"cross_app_policy": "deny_all"},
    "observability": {"metrics": {"enabled": False}},
    "auto_index": {"threshold": 4},
}


def _schemas() -> list[type[BaseSchema]]:
    found = []
    for module in (schema_auth, schema_oauth, schema_services):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSchema) and value.typed_as:
                found.append(value)
    return sorted(set(found), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("schema", _schemas(), ids=lambda cls: cls.__name__)
def test_each_model_holds_its_schemas_fields_and_no_default_of_its_own(schema):
    """The dataclass a schema loads into has exactly the schema's modelled fields (inert,
    alias and refused keys left out) and no default value: every value, defaults included,
    comes from the schema."""
    model = schema.typed_as
    assert dataclasses.is_dataclass(model) and model.__dataclass_params__.frozen
    wanted = {name for name, field in schema().load_fields.items() if modelled(field)}
    assert {f.name for f in dataclasses.fields(model)} == wanted
    for f in dataclasses.fields(model):
        assert f.default is dataclasses.MISSING, f"{model.__name__}.{f.name} has a default"
        assert f.default_factory is dataclasses.MISSING, f"{model.__name__}.{f.name}"


def test_an_omitted_section_reads_as_the_schema_defaults():
    bare = Manifest.from_dict({"slug": "bare"})
    for name, schema in (
        ("llm_config", schema_services.LLMConfigSchema),
        ("data_access", schema_services.DataAccessSchema),
        ("observability", schema_services.ObservabilitySchema),
    ):
        instance = schema()
        assert getattr(bare, name) == instance.typed(instance.load({})), name
    fields = schema_services.LLMConfigSchema().fields
    assert bare.llm_config.max_retries == fields["max_retries"].load_default
    assert bare.llm_config.default_chat_model == fields["default_chat_model"].load_default
    # ... and what the services read are those values, never ones of their own.
    config = LLMConfig.from_section(bare.llm_config, environ={})
    assert (config.enabled, config.max_retries, config.embedding_batch_size) == (False, 3, 256)
    assert LLMConfig().max_retries == bare.llm_config.max_retries
    assert EmbeddingConfig() == EmbeddingConfig.from_section(None)
    assert MemoryConfig() == MemoryConfig.from_section(None)
    assert LockoutPolicy() == LockoutPolicy.from_section(
        typed_defaults(schema_auth.AccountLockoutSchema)
    )
    auth = AuthConfig.from_manifest(bare)
    tokens = typed_defaults(schema_auth.TokenManagementSchema)
    assert (auth.access_ttl, auth.refresh_ttl) == (
        tokens.access_token_ttl,
        tokens.refresh_token_ttl,
    )
    assert (auth.issuer, auth.leeway) == ("mdb-sync", 5)  # auth.jwt's schema defaults
    assert not auth.enabled and not auth.manifest_present


def test_a_present_block_is_completed_by_its_schema():
    m = Manifest.from_dict(RICH)
    users = m.auth.users
    assert users.collection_name == "users" and users.fresh_login_seconds == 900
    assert users.require_verification.unverified == "refuse"  # `true`: the object's defaults
    assert m.auth.policy.authorization.policies_collection == "casbin_policies"
    google, corp = m.auth.oauth.providers["google"], m.auth.oauth.providers["corp"]
    assert (google.label, google.trust_email, google.base_url) == (
        "Google",
        True,
        "https://accounts.google.com",
    )
    assert (corp.label, corp.trust_email, corp.scopes) == (
        "corp",
        False,
        ("openid", "email", "profile"),
    )
    assert google.allow_signup is True  # auth.users.allow_registration, through oauth
    assert m.cors.allow_origins == ("https://app.example.com",)  # normalized
    assert m.llm_config.providers["acme"].base_url == "https://acme.example/v1"
    assert m.llm_config.prices["acme/*"].input == m.llm_config.prices["acme/*"].output == 1.5
    assert m.llm_config.prices["gpt-4o"].output == 0
    assert m.embedding_config.max_tokens_per_chunk == 500  # the seeds' spelling, read
    # The document says the same: what is stored and exported is what the services read.
    stored = m.to_dict()
    assert stored["auth"]["oauth"]["providers"]["google"]["label"] == "Google"
    assert stored["embedding_config"]["max_tokens_per_chunk"] == 500
    assert "default_max_tokens" not in stored["embedding_config"]


def test_the_readers_take_the_typed_sections():
    m = Manifest.from_dict(RICH)
    auth = AuthConfig.from_manifest(m)
    assert auth.users_enabled and auth.allow_registration and auth.csrf_enabled
    assert auth.verification is not None and auth.verification.token_ttl == 86_400
    assert auth.two_factor is not None and auth.two_factor.issuer_name == "Rich"
    assert auth.password_reset_ttl == 3600
    assert auth.password_policy == PasswordPolicy.from_section(m.auth.password_policy)
    assert auth.password_policy.min_length == 10 and auth.password_policy.require_uppercase
    assert auth.lockout == LockoutPolicy(3, 900, True)
    assert auth.rate_limits["login"].max_attempts == 4
    assert auth.hsts == {
        "enabled": True,
        "max_age": 600,
        "include_subdomains": True,
        "preload": False,
    }
    assert auth.initial_policies == (["admin", "/reports", "*"],)  # plain JSON for hashing
    assert auth.demo_users[0]["email"] == "demo@example.com"
    assert auth.oauth == OAuthSettings.from_section(m.auth.oauth)
    assert auth.oauth.providers["google"].discovery_url == (
        "https://accounts.google.com/.well-known/openid-configuration"
    )
    policy = CorsPolicy.from_section(m.cors)
    assert policy.origins == frozenset({"https://app.example.com"}) and policy.credentials
    assert endpoints_of(m)["live"] == Endpoint.from_settings("rich", "live", m.websockets["live"])
    assert endpoints_of(m)["live"].auth_required
    memory = MemoryConfig.from_section(m.memory_config)
    assert memory.temperature == 0.2 and memory.collection_name == "memories"


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"auth": {"users": {"session_ttl_seconds": 5}}}, "auth.users.session_ttl_seconds"),
        (
            {"token_management": {"security": {"account_lockout": {"max_failed_attempts": 0}}}},
            "token_management.security.account_lockout.max_failed_attempts",
        ),
        ({"llm_config": {"providers": {"acme": {"type": "x"}}}}, "llm_config.providers.acme.type"),
        ({"llm_config": {"prices": {"m": {"input": -1}}}}, "llm_config.prices.m.input"),
        ({"cors": {"allow_headers": ["X Bad"]}}, "cors.allow_headers[0]"),
        (
            {"websockets": {"live": {"path": "/ws", "ping_interval": -1}}},
            "websockets.live.ping_interval",
        ),
        (
            {
                "auth": {
                    "users": {"enabled": True},
                    "oauth": {"providers": {"g": {"preset": "google"}}},
                }
            },
            "auth.oauth.providers.g.client_id",
        ),
        ({"memory_config": {"temperature": 3}}, "memory_config.temperature"),
    ],
)
def test_an_invalid_value_is_refused_at_load_with_its_path(section, path):
    with pytest.raises(ManifestValidationError) as info:
        Manifest.from_dict({"slug": "bad", **section})
    assert path in info.value.errors, info.value.errors
    assert path in str(info.value)
    # One section alone, as a service given configuration outside a manifest reads it.
    ((name, value),) = section.items()
    with pytest.raises(ConfigurationError) as direct:
        load_section(name, value, slug="bad", lenient=False)
    assert path in direct.value.context["errors"]
    assert "of app 'bad'" in str(direct.value)


def test_a_stored_section_this_release_refuses_fails_alone_with_its_path():
    """A registry record is typed section by section: a block written by another tool (or
    an older release) that the schema now refuses breaks that section only, naming it."""
    stored = validate_manifest({"slug": "old", "data_access": {"cross_app_policy": "deny_all"}})
    stored["cors"] = {"allow_origins": ["*"], "allow_credentials": True}
    m = Manifest.from_dict(stored, validate=False)
    assert m.data_access.denies_all
    with pytest.raises(ConfigurationError, match=r"^cors.allow_origins of app 'old': '\*'"):
        _ = m.cors


def test_a_stored_record_gets_the_defaults_a_later_schema_added():
    stored = {"slug": "old", "websockets": {"live": {"path": "/ws"}}}  # no defaults at all
    m = Manifest.from_dict(stored, validate=False)
    assert m.websockets["live"].ping_interval == 30
    assert m.websockets["live"].auth.allow_anonymous is True


@pytest.mark.parametrize(
    "path", [*sorted(SEEDS.glob("*.json")), "rich"], ids=lambda p: getattr(p, "stem", p)
)
def test_validation_is_idempotent_and_stored_sections_type_alike(path):
    """What validation stores validates again to itself (defaults are valid values), and a
    stored record's typed sections equal those of the manifest it came from."""
    raw = RICH if path == "rich" else json.loads(path.read_text())
    first = validate_manifest(raw)
    assert validate_manifest(first) == first
    fresh, stored = Manifest.from_dict(raw), Manifest.from_dict(first, validate=False)
    for name in (
        "data_access",
        "observability",
        "auto_index",
        "websockets",
        "cors",
        "auth",
        "token_management",
        "llm_config",
        "embedding_config",
        "memory_config",
    ):
        assert getattr(fresh, name) == getattr(stored, name), name


@pytest.mark.parametrize(
    "llm_config",
    [
        {"openai_api_key": "sk-secret"},
        {"x-api_key": "sk-secret"},
        {"providers": {"acme": {"token": "sk-secret"}}},
    ],
)
def test_secret_looking_keys_are_refused_even_in_lenient_mode(llm_config):
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest({"slug": "leaky", "llm_config": llm_config}, lenient=True)
    assert "sk-secret" not in str(info.value)
    assert any("environment variable" in m for msgs in info.value.errors.values() for m in msgs)


def test_extension_keys_of_an_ai_section_reach_the_service():
    """An ``x-`` key is the author's own: kept, and no reason to refuse the section (the
    hand-written reader used to)."""
    m = Manifest.from_dict({"slug": "ext", "llm_config": {"enabled": True, "x-owner": "team"}})
    assert m.to_dict()["llm_config"]["x-owner"] == "team"
    assert LLMConfig.from_section(m.llm_config, environ={}).enabled
    assert LLMConfig.from_section(m.to_dict()["llm_config"], environ={}).enabled


def test_the_old_readers_are_thin_deprecated_wrappers():
    m = Manifest.from_dict(RICH)
    with pytest.warns(DeprecationWarning, match="PasswordPolicy.from_section"):
        assert PasswordPolicy.from_manifest({"min_length": 10}) == PasswordPolicy.from_section(
            m.auth.password_policy
        )
    with pytest.warns(DeprecationWarning):
        assert PasswordPolicy.from_manifest(None) == PasswordPolicy()
    block = RICH["auth"]["oauth"]
    with pytest.warns(DeprecationWarning, match="OAuthSettings.from_section"):
        assert OAuthSettings.from_manifest(block, allow_registration=True) == (
            OAuthSettings.from_section(m.auth.oauth)
        )
    with pytest.warns(DeprecationWarning, match="MemoryConfig.from_section"):
        assert MemoryConfig.from_manifest({"temperature": 0.2}).temperature == 0.2
    with pytest.warns(DeprecationWarning, match="Endpoint.from_settings"):
        assert (
            Endpoint.from_manifest("rich", "live", RICH["websockets"]["live"])
            == (endpoints_of(m)["live"])
        )
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="min_length"):
        PasswordPolicy.from_manifest({"min_length": 2})


def test_every_reader_types_its_section_through_one_helper():
    """``typed_section`` passes a typed section through and loads a mapping strictly (the
    same error, naming the path and the app, as before); ``from_typed`` copies every field a
    config shares with its section, so each reader's config equals the section's values."""
    m = Manifest.from_dict(RICH)
    assert sections.typed_section("memory_config", m.memory_config, type(m.memory_config)) is (
        m.memory_config
    )
    loaded = sections.typed_section("memory_config", {"infer": False}, type(m.memory_config))
    assert loaded.infer is False
    with pytest.raises(ConfigurationError, match=r"memory_config\.bogus of app 'x'") as caught:
        MemoryConfig.from_section({"bogus": 1}, slug="x")
    assert caught.value.context["app"] == "x"
    with (
        pytest.raises(ConfigurationError, match="password_policy"),
        pytest.warns(DeprecationWarning),
    ):
        PasswordPolicy.from_manifest({"bogus": 1})
    for config, section in (
        (MemoryConfig.from_section(m.memory_config), m.memory_config),
        (EmbeddingConfig.from_section(m.embedding_config), m.embedding_config),
        (PasswordPolicy.from_section(m.auth.password_policy), m.auth.password_policy),
        (LLMConfig.from_section(m.llm_config, environ={}), m.llm_config),
    ):
        for item in dataclasses.fields(config):
            if hasattr(section, item.name) and item.name != "default_embedding_model":
                assert getattr(config, item.name) == getattr(section, item.name), item.name


def test_typed_sections_are_cached_by_content_within_a_bound():
    """A section read again (every process reads the same stored records) is not loaded
    again; ever new sections — one per app of a large deployment — keep the cache bounded."""
    first = load_section("cors", {"allow_origins": ["https://a.example"], "max_age": 1})
    again = load_section("cors", {"max_age": 1, "allow_origins": ["https://a.example"]})
    same = load_section("cors", {"allow_origins": ["https://a.example"], "max_age": 1})
    assert same is first and again == first  # another key order: equal, loaded again
    for age in range(sections.CACHE_SIZE + 200):
        load_section("cors", {"max_age": age})
    assert sections.cache_info() == {"size": sections.CACHE_SIZE, "limit": sections.CACHE_SIZE}
    # Invalid sections are never cached: refused every time, naming the app each time.
    for slug in ("one", "two"):
        with pytest.raises(ConfigurationError, match=f"of app '{slug}'"):
            load_section("cors", {"max_age": -1}, slug=slug)


def test_a_child_forked_while_another_thread_holds_the_cache_lock_reads_sections():
    """gunicorn --preload and Celery prefork children fork at any moment: a cache lock held
    by another thread at the fork must not hang the child's first read of a section."""
    import os
    import signal
    import threading
    import time

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with sections._cache_lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: read a new section (a cache miss, then a store), then exit
        try:
            typed = load_section("cors", {"max_age": 4242})
            os._exit(0 if typed.max_age == 4242 else 1)
        except BaseException:
            os._exit(2)
    release.set()
    thread.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung on the section cache's lock")
