"""A crafted dump cannot give itself another app's data (issue 14, item 8).

The attacker hands over a dump of ``mallory_app`` whose manifest grants itself
``data_access.read_scopes: ["alice_app"]``; the operator imports it with the real
``mdb import`` CLI. Before the fix the imported app read alice's users (emails, password
hashes) and notes at once. Now the grant is dropped (and said so), it is kept only when the
operator names it and alice's policy allows it, and links inside the dump directory are
refused instead of followed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bson
import pytest
from auth_apps import SECRET, auth_manifest

from mdb_sync.auth import AuthService, PasswordHasher
from mdb_sync.exceptions import ScopeError

ALICE, MALLORY = "alice_app", "mallory_app"
VICTIM_EMAIL = "alice@example.com"


def mdb_import(mongo_uri: str, db_name: str, directory: Path, *extra: str):
    argv = [sys.executable, "-m", "mdb_sync.cli", "import", MALLORY, str(directory)]
    return subprocess.run(
        [*argv, "--into", mongo_uri, "--db", db_name, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def alice(engine):
    """The victim: users with password hashes, and private notes."""
    engine.register_app(auth_manifest(ALICE))
    auth = AuthService(engine, ALICE, secret=SECRET, hasher=PasswordHasher(n=4096))
    auth.register_user(VICTIM_EMAIL, "correct horse battery")
    engine.get_scoped_db(ALICE).notes.insert_many([{"text": f"alice secret {i}"} for i in range(3)])
    return auth


def crafted_dump(root: Path, **manifest_extra) -> Path:
    """``mallory_app``'s dump: a manifest granting itself alice's data, users and notes."""
    app_dir = root / MALLORY
    app_dir.mkdir(parents=True)
    manifest = auth_manifest(MALLORY)
    manifest["data_access"] = {"read_scopes": [MALLORY, ALICE]}
    manifest.update(manifest_extra)
    summary = {"format": "mdb-sync-export", "version": 1, "app": MALLORY, "manifest": manifest}
    (app_dir / "mdb-export.json").write_text(json.dumps(summary))
    (app_dir / "notes.bson").write_bytes(bson.encode({"_id": 1, "text": "mallory's own"}))
    (app_dir / "users.bson").write_bytes(b"")
    return root


def test_an_imported_manifest_cannot_grant_itself_another_apps_data(
    engine, alice, mongo_uri, db_name, tmp_path
):
    result = mdb_import(mongo_uri, db_name, crafted_dump(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"registered {MALLORY} from the dump's manifest" in result.stdout
    assert f"dropped grant(s) of the dump's manifest to read: {ALICE}" in result.stdout
    assert f"  reads: {MALLORY}\n" in result.stdout

    engine.reload_apps()
    granted = (engine.get_app(MALLORY).get("data_access") or {}).get("read_scopes")
    assert granted in (None, [MALLORY])
    mallory = engine.get_scoped_db(MALLORY)
    assert mallory.users.find_one({"email": VICTIM_EMAIL}) is None
    assert [n["text"] for n in mallory.notes.find({})] == ["mallory's own"]
    with pytest.raises(ScopeError, match="does not grant"):
        engine.get_scoped_db(MALLORY, read_scopes=[MALLORY, ALICE])
    # Mallory's own user store (which reads with the app's scopes) does not know alice.
    mallory_auth = AuthService(engine, MALLORY, secret=SECRET, hasher=PasswordHasher(n=4096))
    assert mallory_auth.get_user_by_email(VICTIM_EMAIL) is None
    assert alice.get_user_by_email(VICTIM_EMAIL) is not None  # alice is untouched


def test_a_grant_is_kept_only_when_named_and_the_owner_allows_it(
    engine, alice, mongo_uri, db_name, tmp_path, raw_db
):
    engine.register_app({**auth_manifest(ALICE), "data_access": {"cross_app_policy": "deny_all"}})
    dump = crafted_dump(tmp_path)
    refused = mdb_import(mongo_uri, db_name, dump, "--allow-read-scope", ALICE)
    assert refused.returncode == 1
    assert "denies reads by other apps" in refused.stderr
    assert raw_db.apps_config.find_one({"_id": MALLORY}) is None  # refused before any write
    assert not [n for n in raw_db.list_collection_names() if n.startswith(MALLORY)]

    engine.register_app(auth_manifest(ALICE))  # alice's owner allows explicit grants again
    allowed = mdb_import(mongo_uri, db_name, dump, "--allow-read-scope", ALICE)
    assert allowed.returncode == 0, allowed.stderr
    assert f"  reads: {MALLORY}, {ALICE}\n" in allowed.stdout
    engine.reload_apps()
    assert engine.get_app(MALLORY)["data_access"]["read_scopes"] == [MALLORY, ALICE]


@pytest.mark.parametrize("link", ["notes.bson", "notes.metadata.json", "mdb-export.json"])
def test_links_in_the_dump_directory_are_refused_not_followed(
    engine, alice, mongo_uri, db_name, tmp_path, raw_db, link
):
    """A link to alice's own export (or any file of the importing user) would be read
    and stored as mallory's data."""
    engine.export_app(ALICE, tmp_path / "alice_export")
    victim_files = tmp_path / "alice_export" / ALICE
    dump = crafted_dump(tmp_path / "dump")
    planted = dump / MALLORY / link
    planted.unlink(missing_ok=True)
    target = {"notes.bson": "notes.bson", "notes.metadata.json": "notes.metadata.json"}
    os.symlink(victim_files / target.get(link, "mdb-export.json"), planted)
    result = mdb_import(mongo_uri, db_name, dump)
    assert result.returncode == 1
    assert "symbolic link" in result.stderr and link in result.stderr
    assert raw_db.apps_config.find_one({"_id": MALLORY}) is None
    assert not [n for n in raw_db.list_collection_names() if n.startswith(MALLORY)]
    assert not [n for n in raw_db.list_collection_names() if n.startswith("mdb_import_")]


def test_a_linked_app_directory_is_refused(engine, alice, mongo_uri, db_name, tmp_path, raw_db):
    engine.export_app(ALICE, tmp_path / "alice_export")
    dump = tmp_path / "dump"
    dump.mkdir()
    os.symlink(tmp_path / "alice_export" / ALICE, dump / MALLORY)
    result = mdb_import(mongo_uri, db_name, dump)
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert raw_db.apps_config.find_one({"_id": MALLORY}) is None
