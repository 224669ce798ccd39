"""Health: healthy on a live server, degraded by an index the server could not build,
unhealthy within the timeout when the server stops, healthy again once it is back."""

from __future__ import annotations

import subprocess
import time

import pytest

from mdb_sync import MongoDBEngine, embedded


def test_healthy_engine_reports_every_check(engine):
    engine.get_scoped_db("healthy_app").items.insert_one({"a": 1})
    health = engine.get_health_status()
    assert health["status"] == "healthy"
    names = [check["name"] for check in health["checks"]]
    assert names[:3] == ["engine", "mongodb", "pool"]
    assert {"apps", "indexes"} <= set(names)
    assert "realtime" not in names  # the engine's event bus was never used
    assert health["mongodb"]["status"] == "healthy"
    assert health["mongodb"]["latency_ms"] > 0
    assert health["pool"]["status"] == "healthy"
    assert health["pool"]["open_connections"] >= 1
    assert health["pool"]["max_pool_size"] == 100
    assert health["apps"]["registered"] == 1
    assert health["apps"]["by_status"] == {"active": 1}
    assert health["engine"]["database"] == engine.db_name
    for check in health["checks"]:
        assert health[check["name"]] is check


def test_uninitialized_engine_is_unhealthy(mongo_uri, db_name):
    health = MongoDBEngine(mongo_uri, db_name).get_health_status()
    assert health["status"] == "unhealthy"
    assert [c["name"] for c in health["checks"]] == ["engine"]
    assert health["engine"]["initialized"] is False


def test_index_problems_make_the_app_degraded_not_the_engine_unhealthy(engine):
    engine.register_app({"slug": "fine"})
    engine.register_app({"slug": "broken"})
    # The registry record's agreed shape: what registration stores under index_outcomes.
    engine.registry.collection.update_one(
        {"_id": "broken"},
        {
            "$set": {
                "index_outcomes": [
                    {
                        "collection": "docs",
                        "name": "ok_idx",
                        "type": "regular",
                        "status": "created",
                    },
                    {
                        "collection": "docs",
                        "name": "body_text",
                        "type": "text",
                        "status": "not_supported",
                        "error": "text indexes are not supported by this server",
                    },
                    {"collection": "docs", "name": "dup", "type": "regular", "status": "failed"},
                ]
            }
        },
    )
    health = engine.get_health_status()
    assert health["status"] == "degraded"
    assert health["mongodb"]["status"] == "healthy"
    assert health["apps"]["status"] == "degraded"
    assert health["apps"]["degraded"] == ["broken"]
    assert health["indexes"]["outcomes"] == {"created": 1, "not_supported": 1, "failed": 1}
    problems = health["indexes"]["problems"]
    assert [(p["app"], p["name"], p["status"]) for p in problems] == [
        ("broken", "body_text", "not_supported"),
        ("broken", "dup", "failed"),
    ]
    assert "not supported" in problems[0]["error"]


def test_apps_can_opt_out_of_health_checks(engine):
    engine.register_app({"slug": "optout", "observability": {"health_checks": {"enabled": False}}})
    engine.registry.collection.update_one(
        {"_id": "optout"},
        {"$set": {"index_outcomes": [{"collection": "c", "name": "x", "status": "failed"}]}},
    )
    health = engine.get_health_status()
    assert health["status"] == "healthy"
    assert health["apps"]["unmonitored"] == ["optout"]
    assert health["indexes"]["problems"] == []


def test_index_the_server_refuses_at_registration_degrades_the_app(engine, raw_db):
    # An index of the same name but other keys already exists: registration must not crash,
    # and health must show the problem.
    raw_db["clash_tasks"].create_index([("app_id", 1), ("other", 1)], name="by_status")
    result = engine.register_app(
        {
            "slug": "clash",
            "managed_indexes": {"tasks": [{"keys": {"status": 1}, "name": "by_status"}]},
        }
    )
    assert [o["status"] for o in result["indexes"]] in (["failed"], ["conflict"])
    health = engine.get_health_status()
    assert health["status"] == "degraded"
    assert health["apps"]["degraded"] == ["clash"]


def test_timeout_must_be_positive(engine):
    with pytest.raises(ValueError, match="positive"):
        engine.get_health_status(timeout=0)


def _start_server(port: int, storage, config) -> subprocess.Popen:
    argv = [
        *embedded.find_server_command(),
        "--host",
        embedded.HOST,
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--config",
        str(config),
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not embedded._ping(embedded.HOST, port, timeout=1.0):
        assert proc.poll() is None, "the server exited while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    return proc


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_unhealthy_when_the_server_stops_and_healthy_after_restart(tmp_path):
    port = embedded._free_port()
    storage = tmp_path / "data"
    storage.mkdir()
    config = tmp_path / "secantusd.toml"
    config.write_text("# empty\n")
    proc = _start_server(port, storage, config)
    engine = MongoDBEngine(
        embedded.client_uri(embedded.HOST, port), "health_db", serverSelectionTimeoutMS=2000
    )
    try:
        engine.initialize()
        engine.get_scoped_db("restartable").items.insert_one({"n": 1})
        assert engine.get_health_status()["status"] == "healthy"

        _stop_server(proc)
        started = time.monotonic()
        health = engine.get_health_status()
        elapsed = time.monotonic() - started
        assert health["status"] == "unhealthy"
        assert health["mongodb"]["status"] == "unhealthy"
        assert health["mongodb"]["error"]
        assert elapsed < 10, f"health took {elapsed:.1f}s: it must not hang"
        # Without the server the app checks fall back to the engine's registry cache.
        assert health["apps"]["registered"] == 1

        proc = _start_server(port, storage, config)
        deadline = time.monotonic() + 30
        while (health := engine.get_health_status())["status"] != "healthy":
            assert time.monotonic() < deadline, f"still {health['status']}: {health['mongodb']}"
            time.sleep(0.2)
        assert health["mongodb"]["latency_ms"] > 0
        # The same engine and client serve again, without a restart of the process.
        assert engine.get_scoped_db("restartable").items.count_documents({}) == 1
    finally:
        engine.shutdown()
        _stop_server(proc)
