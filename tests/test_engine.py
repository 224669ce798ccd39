"""Engine lifecycle: initialize, shutdown, context manager, configuration, connection errors."""

from __future__ import annotations

import socket
import time

import pytest
from pymongo.errors import ConnectionFailure

from mdb_sync import (
    AppNotFoundError,
    EngineConnectionError,
    EngineNotInitializedError,
    MongoDBEngine,
)
from mdb_sync.exceptions import InvalidMongoURI


def test_initialize_and_shutdown(mongo_uri, db_name):
    engine = MongoDBEngine(mongo_uri, db_name)
    assert not engine.is_initialized
    assert engine.initialize() is engine
    assert engine.is_initialized
    assert engine.db_name == db_name
    assert engine.get_health_status()["status"] == "healthy"
    engine.initialize()  # idempotent
    engine.shutdown()
    assert not engine.is_initialized
    engine.shutdown()  # idempotent
    with pytest.raises(EngineNotInitializedError, match="initialize"):
        engine.get_scoped_db("app")


def test_context_manager_initializes_and_shuts_down(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name) as engine:
        assert engine.is_initialized
        engine.get_scoped_db("ctx").items.insert_one({"x": 1})
        assert engine.get_scoped_db("ctx").items.count_documents({}) == 1
    assert not engine.is_initialized


def test_engine_can_be_initialized_again_after_shutdown(mongo_uri, db_name):
    engine = MongoDBEngine(mongo_uri, db_name)
    engine.initialize()
    engine.get_scoped_db("again").things.insert_one({"n": 1})
    engine.shutdown()
    engine.initialize()
    assert engine.get_scoped_db("again").things.count_documents({}) == 1
    engine.shutdown()


def test_used_before_initialize_is_a_clear_error(mongo_uri, db_name):
    engine = MongoDBEngine(mongo_uri, db_name)
    with pytest.raises(EngineNotInitializedError, match=r"engine\.initialize\(\)"):
        engine.get_scoped_db("app")
    with pytest.raises(EngineNotInitializedError):
        engine.register_app({"slug": "app"})


def test_uri_and_db_name_come_from_the_environment(monkeypatch, mongo_uri, db_name):
    monkeypatch.setenv("MDB_MONGO_URI", mongo_uri)
    monkeypatch.setenv("MDB_DB_NAME", db_name)
    with MongoDBEngine() as engine:
        assert engine.db_name == db_name
        assert not engine.uses_embedded_server


def test_db_name_defaults_to_the_uri_database(mongo_uri):
    base, _, query = mongo_uri.partition("?")
    uri = base.rstrip("/") + "/from_uri" + ("?" + query if query else "")
    engine = MongoDBEngine(uri)
    assert engine.db_name == "from_uri"
    assert MongoDBEngine(base).db_name == "mdb_sync"


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("mongodb://user:s3cret@db.example:27017/?retryWrites=fasle", "db.example:27017"),
        ("mongodb://user:s3cret@db.example:27017/?ssl=maybe", "db.example:27017"),
        ("mongodb://user:s3cret@db.example:notaport/", "db.example:notaport"),
        ("mongodb://user:s3cret@db.example/?unknownOption=1", "db.example"),
    ],
)
def test_malformed_uri_raises_a_connection_error_naming_the_host(uri, host):
    engine = MongoDBEngine(uri)
    with pytest.raises(InvalidMongoURI) as info:
        engine.initialize()
    assert isinstance(info.value, ConnectionFailure)
    assert isinstance(info.value, EngineConnectionError)
    assert host in str(info.value)
    assert "s3cret" not in str(info.value)
    assert not engine.is_initialized


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_within_the_selection_timeout():
    port = _closed_port()
    engine = MongoDBEngine(f"mongodb://127.0.0.1:{port}", "x", serverSelectionTimeoutMS=500)
    started = time.monotonic()
    with pytest.raises(EngineConnectionError) as info:
        engine.initialize()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, ConnectionFailure)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert elapsed < 5, f"took {elapsed:.1f}s with a 0.5s server-selection timeout"
    assert not engine.is_initialized


def test_one_client_shared_by_threads(engine):
    import threading

    seen = []

    def work(i):
        seen.append(id(engine.client))
        engine.get_scoped_db("threads").items.insert_one({"i": i})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    assert engine.get_scoped_db("threads").items.count_documents({}) == 16


def test_scoped_databases_are_cached(engine):
    assert engine.get_scoped_db("cache") is engine.get_scoped_db("cache")
    db = engine.get_scoped_db("cache")
    assert db.tasks is db["tasks"]


def test_registry_changes_by_another_process_are_seen_within_the_refresh_delay(
    mongo_uri, db_name, raw_db
):
    import time

    from mdb_sync import AppNotActiveError

    with MongoDBEngine(mongo_uri, db_name, registry_refresh_seconds=0.2) as engine:
        db = engine.get_scoped_db("fading")
        db.items.insert_one({"x": 1})
        # Another process (here: a raw write) deactivates the app.
        raw_db["apps_config"].update_one({"_id": "fading"}, {"$set": {"status": "inactive"}})
        assert engine.get_scoped_db("fading") is db, "cached within the delay"
        time.sleep(0.25)
        with pytest.raises(AppNotActiveError):
            engine.get_scoped_db("fading")
        # A miss is cached too, then re-read.
        engine.implicit_apps = False
        with pytest.raises(AppNotFoundError):
            engine.get_scoped_db("latecomer")
        raw_db["apps_config"].insert_one(
            {
                "_id": "latecomer",
                "slug": "latecomer",
                "status": "active",
                "manifest": {"slug": "latecomer"},
            }
        )
        time.sleep(0.25)
        assert engine.get_scoped_db("latecomer").app_slug == "latecomer"
