"""Manifest validation: every seed example is valid, every corpus manifest fails at its path,
errors are complete and readable, lenient mode, caching, parallel validation, the CLI."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from mdb_sync import ManifestValidationError, ManifestValidator
from mdb_sync.cli import cli
from mdb_sync.manifest import (
    load_manifest,
    read_manifest_file,
    validate_manifest,
    validate_manifests,
)

HERE = Path(__file__).parent
SEEDS = sorted((HERE / "manifests" / "seeds").glob("*.json"))
INVALID = sorted((HERE / "manifests" / "invalid").glob("*.json"))
EXAMPLES = sorted((HERE.parent / "examples").glob("*/manifest.json"))


@pytest.mark.parametrize(
    "path", SEEDS + EXAMPLES, ids=lambda p: p.stem if p.stem != "manifest" else p.parent.name
)
def test_every_seed_example_validates(path):
    manifest = load_manifest(path)
    assert manifest["schema_version"] == "2.0"
    assert manifest["slug"] == json.loads(path.read_text())["slug"]
    assert validate_manifest(manifest) == manifest  # normalization is a fixed point


def test_the_corpus_is_large_enough():
    assert len(INVALID) >= 40


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_fails_at_its_path(path):
    case = json.loads(path.read_text())
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest(case["manifest"])
    errors = info.value.errors
    assert case["path"] in errors, f"expected an error at {case['path']}, got {errors}"
    assert any(case["message"] in m for m in errors[case["path"]]), errors
    assert case["path"] in str(info.value)


def test_every_bad_path_is_named_at_once():
    manifest = {
        "slug": "app",
        "status": "paused",
        "managed_indexes": {"tasks": [{"keys": {"a": 1}}, {"keys": {}}]},
        "websockets": {"live": {"path": "live"}},
        "cors": {"max_age": -1},
    }
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest(manifest)
    assert set(info.value.paths) == {
        "status",
        "managed_indexes.tasks[1].keys",
        "websockets.live.path",
        "cors.max_age",
    }
    message = str(info.value)
    assert message.startswith("invalid manifest 'app': ")
    for path in info.value.paths:
        assert path in message


def test_normalization_fills_defaults_and_canonical_index_form():
    manifest = validate_manifest(
        {
            "slug": "shop",
            "managed_indexes": {
                "orders": [
                    {"keys": [["customer", 1], ["created_at", -1]], "unique": False},
                    {"keys": {"loc": "2dsphere"}},
                    {"keys": {"created_at": 1}, "expireAfterSeconds": 60, "background": True},
                    {
                        "type": "vector",
                        "name": "v",
                        "definition": {
                            "fields": [
                                {
                                    "type": "vector",
                                    "path": "e",
                                    "numDimensions": 3,
                                    "similarity": "cosine",
                                }
                            ]
                        },
                    },
                ]
            },
            "websockets": {"live": {"path": "/ws"}},
            "cors": {"allow_origins": ["https://shop.example.com"]},
            "embedding_config": {"default_max_tokens": 500, "default_tokenizer_model": "gpt-4"},
            "data_access": {"read_scopes": ["catalog"]},
        }
    )
    assert manifest["name"] == "shop" and manifest["status"] == "active"
    orders = manifest["managed_indexes"]["orders"]
    assert orders[0] == {
        "type": "regular",
        "name": "app_id_1_customer_1_created_at_-1",
        "keys": {"customer": 1, "created_at": -1},
        "options": {"unique": False},
    }
    assert orders[1]["type"] == "geospatial" and orders[1]["name"] == "app_id_1_loc_2dsphere"
    assert orders[2] == {
        "type": "ttl",
        "name": "created_at_1",
        "keys": {"created_at": 1},
        "options": {"expireAfterSeconds": 60},
    }
    assert orders[3]["type"] == "vectorSearch"
    assert manifest["websockets"]["live"] == {
        "path": "/ws",
        "ping_interval": 30,
        "max_message_size": 65536,
    }
    assert manifest["cors"]["allow_methods"] == ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    assert manifest["cors"]["allow_credentials"] is False
    assert manifest["embedding_config"]["max_tokens_per_chunk"] == 500
    assert manifest["embedding_config"]["tokenizer_model"] == "gpt-4"
    assert "default_max_tokens" not in manifest["embedding_config"]
    assert manifest["data_access"] == {
        "read_scopes": ["shop", "catalog"],
        "write_scope": "shop",
        "cross_app_policy": "explicit",
    }


def test_absent_sections_stay_absent():
    manifest = validate_manifest({"slug": "tiny"})
    assert manifest == {"schema_version": "2.0", "slug": "tiny", "name": "tiny", "status": "active"}


def test_input_is_never_mutated():
    original = {
        "slug": "app",
        "auth_required": True,
        "managed_indexes": {"t": [{"keys": {"a": 1}}]},
    }
    snapshot = json.loads(json.dumps(original))
    validate_manifest(original)
    assert original == snapshot


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_keys_are_refused_with_a_suggestion():
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest(
            {"slug": "app", "managed_indexes": {"t": [{"keys": {"a": 1}, "uniqe": True}]}}
        )
    assert info.value.errors == {
        "managed_indexes.t[0].uniqe": ["unknown key (did you mean 'unique'?)"]
    }


def test_extension_keys_are_always_kept():
    manifest = validate_manifest(
        {"slug": "app", "x-team": "payments", "auth": {"x_note": "reviewed", "mode": "app"}}
    )
    assert manifest["x-team"] == "payments"
    assert manifest["auth"]["x_note"] == "reviewed"


def test_lenient_mode_keeps_unknown_keys_and_logs_their_paths(caplog):
    manifest = {"slug": "app", "theme": "dark", "cors": {"allow_origins": [], "colour": "red"}}
    with pytest.raises(ManifestValidationError):
        validate_manifest(manifest)
    with caplog.at_level(logging.WARNING, logger="mdb_sync.manifest"):
        result = validate_manifest(manifest, lenient=True)
    assert result["theme"] == "dark"
    assert result["cors"]["colour"] == "red"
    assert result["cors"]["enabled"] is True
    assert "theme" in caplog.text and "cors.colour" in caplog.text


def test_lenient_mode_still_refuses_invalid_values():
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest({"slug": "app", "theme": "dark", "status": "gone"}, lenient=True)
    assert info.value.paths == ["status"]


def test_lenient_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("MDB_MANIFEST_LENIENT", "1")
    assert validate_manifest({"slug": "app", "theme": "dark"})["theme"] == "dark"


# --- files --------------------------------------------------------------------------------------


def test_invalid_json_reports_line_and_column(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "slug": "app",\n  "name": "x",,\n}\n')
    with pytest.raises(ManifestValidationError) as info:
        load_manifest(path)
    assert "line 3, column 15" in str(info.value)
    assert info.value.context["line"] == 3


def test_duplicate_json_keys_are_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{"slug": "app", "status": "active", "status": "archived"}')
    with pytest.raises(ManifestValidationError, match="duplicate key 'status'"):
        read_manifest_file(path)


def test_missing_file_and_non_object(tmp_path):
    with pytest.raises(ManifestValidationError, match="cannot read manifest"):
        load_manifest(tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ManifestValidationError, match="must be a JSON object"):
        load_manifest(tmp_path / "list.json")
    with pytest.raises(ManifestValidationError, match="must be an object"):
        validate_manifest(["slug"])


def test_engine_load_manifest(engine, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"slug": "loaded", "managed_indexes": {"t": [{"keys": {"a": 1}}]}}))
    assert engine.load_manifest(path)["managed_indexes"]["t"][0]["name"] == "app_id_1_a_1"


# --- API, cache, parallelism ------------------------------------------------------------------


def test_manifest_validator_api():
    validator = ManifestValidator()
    assert validator.validate({"slug": "ok"}) == (True, None, [])
    valid, error, paths = validator.validate({"slug": "ok", "status": 3})
    assert not valid and paths == ["status"] and "status" in error
    assert validator.validate_many([{"slug": "a"}, {"slug": "B"}]) == [
        (True, None, []),
        (False, validator.validate({"slug": "B"})[1], ["slug"]),
    ]


def test_cached_results_are_copies():
    manifest = {"slug": "cached", "websockets": {"w": {"path": "/ws"}}}
    first = validate_manifest(manifest)
    first["websockets"]["w"]["path"] = "/changed"
    second = validate_manifest(manifest)
    assert second["websockets"]["w"]["path"] == "/ws"


def test_cache_tells_key_order_apart():
    a = validate_manifest({"slug": "o", "managed_indexes": {"t": [{"keys": {"a": 1, "b": 1}}]}})
    b = validate_manifest({"slug": "o", "managed_indexes": {"t": [{"keys": {"b": 1, "a": 1}}]}})
    assert list(a["managed_indexes"]["t"][0]["keys"]) == ["a", "b"]
    assert list(b["managed_indexes"]["t"][0]["keys"]) == ["b", "a"]


def test_cached_errors_are_raised_again():
    for _ in range(2):
        with pytest.raises(ManifestValidationError) as info:
            validate_manifest({"slug": "e", "status": "x"})
        assert info.value.paths == ["status"]


def test_parallel_validation_matches_sequential():
    manifests = [json.loads(p.read_text()) for p in SEEDS] + [
        json.loads(p.read_text())["manifest"] for p in INVALID[:20]
    ]
    results = validate_manifests(manifests, max_workers=4)
    assert len(results) == len(manifests)
    for manifest, result in zip(manifests, results, strict=True):
        try:
            expected = validate_manifest(manifest)
        except ManifestValidationError as exc:
            assert isinstance(result, ManifestValidationError)
            assert result.errors == exc.errors
        else:
            assert result == expected


def test_validation_is_thread_safe():
    manifests = [
        {"slug": f"app{i}", "managed_indexes": {"t": [{"keys": {f"f{i}": 1}}]}} for i in range(40)
    ]
    results: dict[int, dict] = {}

    def work(i):
        results[i] = validate_manifest(manifests[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(40):
        assert results[i]["managed_indexes"]["t"][0]["keys"] == {f"f{i}": 1}


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_validate_ok_and_invalid(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"slug": "good"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"slug": "bad", "managed_indexes": {"t": [{"keys": {}}]}}))
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "good" in result.output
    result = runner.invoke(cli, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert (
        "INVALID" in result.output
        and "managed_indexes.t[0].keys: must not be empty" in result.output
    )
    result = runner.invoke(cli, ["validate", "--json", str(bad)])
    assert result.exit_code == 1
    assert json.loads(result.output)[0]["errors"] == {
        "managed_indexes.t[0].keys": ["must not be empty"]
    }


def test_cli_validate_lenient(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"slug": "app", "theme": "dark"}))
    runner = CliRunner()
    assert runner.invoke(cli, ["validate", str(path)]).exit_code == 1
    assert runner.invoke(cli, ["validate", "--lenient", str(path)]).exit_code == 0
