"""Metrics: the scoped API counts every operation per app, from many threads at once,
and never records document contents; custom operations, event counters, Prometheus text."""

from __future__ import annotations

import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import monitoring

from mdb_sync import MongoDBEngine
from mdb_sync.observability import (
    MetricsCollector,
    get_metrics_collector,
    log_context,
    record_operation,
    timed,
)

THREADS = 8
ROUNDS = 15


def _ops(engine, app):
    return engine.get_metrics()["apps"].get(app, {}).get("operations", {})


def test_counts_match_operations_from_eight_threads(engine):
    apps = ["alpha", "beta"]
    for app in apps:
        engine.get_scoped_db(app)  # registered before the threads start
    engine.metrics.reset()
    barrier = threading.Barrier(THREADS)
    errors = []

    def work(n: int) -> None:
        try:
            db = engine.get_scoped_db(apps[n % 2])
            barrier.wait()
            for i in range(ROUNDS):
                db.items.insert_one({"thread": n, "i": i})
                db.items.find_one({"thread": n, "i": i})
                db.items.update_one({"thread": n, "i": i}, {"$set": {"done": True}})
                db.items.count_documents({"thread": n})
            db.items.delete_many({"thread": n, "i": {"$lt": 5}})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    per_app = THREADS // 2
    for app in apps:
        ops = _ops(engine, app)
        assert ops["insert"]["count"] == per_app * ROUNDS
        assert ops["find"]["count"] == per_app * ROUNDS
        assert ops["update"]["count"] == per_app * ROUNDS
        assert ops["aggregate"]["count"] == per_app * ROUNDS  # count_documents
        assert ops["delete"]["count"] == per_app
        assert all(op["errors"] == 0 for op in ops.values())
        assert 0 < ops["insert"]["p50_ms"] <= ops["insert"]["p95_ms"] <= ops["insert"]["p99_ms"]
        assert ops["insert"]["p99_ms"] <= ops["insert"]["max_ms"]
    summary = engine.get_metrics()["summary"]
    assert set(apps) <= set(summary["apps"])
    assert summary["operations"] >= 4 * THREADS * ROUNDS + THREADS


def test_get_more_belongs_to_the_cursor_collection(engine):
    db = engine.get_scoped_db("pages")
    db.items.insert_many([{"n": i} for i in range(5)])
    engine.metrics.reset()
    assert len(list(db.items.find({}, batch_size=2))) == 5
    ops = _ops(engine, "pages")
    assert ops["find"]["count"] == 1
    assert ops["getMore"]["count"] == 2


def test_errors_are_counted(engine):
    db = engine.get_scoped_db("errs")
    db.items.insert_one({"_id": 1})
    engine.metrics.reset()
    with pytest.raises(Exception, match=r"(?i)duplicate"):
        db.items.insert_one({"_id": 1})
    with pytest.raises(Exception):  # noqa: B017 - the server refuses an unknown operator
        list(db.items.find({"a": {"$notAnOperator": 1}}))
    ops = _ops(engine, "errs")
    assert ops["insert"] == {**ops["insert"], "count": 1, "errors": 1, "error_rate": 1.0}
    assert ops["find"]["errors"] == 1
    assert engine.get_metrics()["summary"]["errors"] == 2


def test_engine_internal_commands_are_not_an_apps(engine):
    engine.metrics.reset()
    engine.client.admin.command("ping")
    engine.registry.load()
    # The scoped API records operations: engine-internal commands are nobody's.
    assert engine.get_metrics()["apps"] == {}
    assert engine.get_metrics()["summary"]["apps"] == []


def test_command_metrics_record_every_command_of_the_client(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name, command_metrics=True) as engine:
        engine.metrics.reset()
        engine.client.admin.command("ping")
        engine.registry.load()
        apps = engine.get_metrics()["apps"]
        assert apps["-"]["operations"]["ping"]["count"] == 1
        assert apps["-"]["operations"]["find"]["count"] == 1
        assert engine.get_metrics()["summary"]["apps"] == []
        db = engine.get_scoped_db("listened")
        db.items.insert_many([{"n": i} for i in range(5)])
        engine.metrics.reset()
        assert len(list(db.items.find({}, batch_size=2))) == 5
        db.items.update_one({"n": 1}, {"$set": {"m": 1}})
        ops = _ops(engine, "listened")
        assert (ops["find"]["count"], ops["getMore"]["count"], ops["update"]["count"]) == (1, 2, 1)
        assert engine.pool_stats()["checkout_failures"] == 0  # the pool monitor's counters


def test_by_default_the_client_publishes_no_command_or_pool_events(mongo_uri, db_name):
    """pymongo builds event objects for every operation as soon as a command or pool
    listener is installed: by default none is (the scoped API records operations)."""
    with MongoDBEngine(mongo_uri, db_name) as engine:
        listeners = engine.client.options.event_listeners
        assert not [
            x
            for x in listeners
            if isinstance(x, (monitoring.CommandListener, monitoring.ConnectionPoolListener))
        ]
        db = engine.get_scoped_db("quietly")
        db.items.insert_one({"a": 1})
        assert _ops(engine, "quietly")["insert"]["count"] == 1
        stats = engine.pool_stats()
        assert stats["open_connections"] >= 1 and stats["in_use"] == 0
        assert "checkout_failures" not in stats


def test_scoped_operations_are_named_like_their_commands(engine):
    from pymongo import InsertOne, UpdateOne

    from mdb_sync.exceptions import QueryValidationError

    db = engine.get_scoped_db("named")
    db.items.insert_one({"n": 0})
    engine.metrics.reset()
    db.items.bulk_write([InsertOne({"n": 1}), UpdateOne({"n": 1}, {"$set": {"m": 1}})])
    db.items.find_one_and_update({"n": 1}, {"$set": {"m": 2}})
    db.items.replace_one({"n": 0}, {"n": 0, "r": True})
    db.items.delete_one({"n": 0})
    assert db.items.distinct("n") == [1]
    assert db.items.aggregate([{"$match": {"n": 1}}]).to_list() != []
    with pytest.raises(QueryValidationError):  # refused before anything is sent: no operation
        db.items.find_one({"$where": "true"})
    ops = _ops(engine, "named")
    assert {name: op["count"] for name, op in ops.items()} == {
        "bulkWrite": 1,
        "findAndModify": 1,
        "update": 1,
        "delete": 1,
        "distinct": 1,
        "aggregate": 1,
    }


def test_metrics_never_contain_document_contents(engine):
    db = engine.get_scoped_db("secretive")
    secret = "s3cr3t-payload-9f2c"
    db.vault.insert_one({"password_field_x": secret})
    db.vault.find_one({"password_field_x": secret})
    db.vault.update_one({"password_field_x": secret}, {"$set": {"other": secret}})
    dumped = repr(engine.get_metrics()) + engine.metrics_text()
    assert secret not in dumped
    assert "password_field_x" not in dumped
    assert "vault" not in dumped  # not even collection names: app and operation only


def test_custom_operations_and_timed_blocks(engine):
    engine.record_operation("report.build", 12.5, slug="shop")
    engine.record_operation("report.build", 7.5, success=False, slug="shop")
    with pytest.raises(RuntimeError), engine.metrics.timed("job.run", slug="shop"):
        raise RuntimeError("boom")
    with engine.metrics.timed("job.run", slug="shop"):
        pass
    ops = _ops(engine, "shop")
    assert ops["report.build"]["count"] == 2
    assert ops["report.build"]["errors"] == 1
    assert ops["report.build"]["avg_ms"] == 10.0
    assert ops["report.build"]["max_ms"] == 12.5
    assert ops["job.run"]["count"] == 2
    assert ops["job.run"]["errors"] == 1


def test_module_level_record_operation_uses_the_only_engine(engine):
    assert get_metrics_collector() is engine.metrics
    with log_context(app_id="ctxapp"):
        record_operation("custom.step", 3.0)
        with timed("custom.block"):
            pass
    ops = _ops(engine, "ctxapp")
    assert ops["custom.step"]["count"] == 1
    assert ops["custom.block"]["count"] == 1


def test_module_level_record_operation_without_engine_has_a_collector_of_its_own():
    collector = get_metrics_collector()
    assert isinstance(collector, MetricsCollector)
    record_operation("lonely.op", 1.0, slug="nowhere")
    assert collector.snapshot()["apps"]["nowhere"]["operations"]["lonely.op"]["count"] >= 1


def test_registrations_are_counted(engine):
    engine.register_app({"slug": "counted"})
    engine.register_app({"slug": "counted", "name": "Counted again"})
    assert engine.get_metrics()["apps"]["counted"]["counters"]["apps.registered"] == 2
    engine.unregister_app("counted")
    assert engine.get_metrics()["apps"]["counted"]["counters"]["apps.unregistered"] == 1


def test_manifest_can_turn_an_apps_operation_metrics_off(engine):
    engine.register_app({"slug": "quiet", "observability": {"metrics": {"enabled": False}}})
    engine.register_app(
        {"slug": "terse", "observability": {"metrics": {"collect_operation_metrics": False}}}
    )
    engine.get_scoped_db("quiet").items.insert_one({"a": 1})
    engine.get_scoped_db("terse").items.insert_one({"a": 1})
    engine.get_scoped_db("loud").items.insert_one({"a": 1})
    assert _ops(engine, "quiet") == {} and _ops(engine, "terse") == {}
    assert _ops(engine, "loud")["insert"]["count"] == 1
    # Re-registering with metrics on takes effect at once.
    engine.register_app({"slug": "quiet", "observability": {"metrics": {"enabled": True}}})
    engine.get_scoped_db("quiet").items.insert_one({"a": 2})
    assert _ops(engine, "quiet")["insert"]["count"] == 1


def test_window_is_bounded():
    collector = MetricsCollector(window=10)
    for i in range(100):
        collector.record_operation("op", float(i))
    op = collector.snapshot()["apps"]["-"]["operations"]["op"]
    assert op["count"] == 100
    assert op["p50_ms"] >= 90  # the percentiles describe the recent window only
    assert op["max_ms"] == 99


def test_prometheus_text_parses_and_matches_the_snapshot(engine):
    db = engine.get_scoped_db("promapp")
    db.items.insert_one({"a": 1})
    db.items.insert_one({"a": 2})
    engine.metrics.increment("llm.tokens.prompt", 42, slug="promapp")
    text = engine.metrics_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ops = families["mdb_operations"]
    inserts = [
        s
        for s in ops.samples
        if s.labels == {"app": "promapp", "operation": "insert"} and s.name.endswith("_total")
    ]
    assert inserts[0].value == 2
    summary = families["mdb_operation_duration_seconds"]
    assert summary.type == "summary"
    quantiles = {
        s.labels["quantile"]
        for s in summary.samples
        if s.labels.get("app") == "promapp" and "quantile" in s.labels
    }
    assert quantiles == {"0.5", "0.95", "0.99"}
    tokens = families["mdb_llm_tokens_prompt"]
    assert tokens.samples[0].value == 42
    assert families["mdb_pool_open_connections"].samples[0].value >= 1
    assert families["mdb_pool_max_pool_size"].samples[0].value == 100


def test_label_values_are_escaped():
    collector = MetricsCollector()
    collector.record_operation('we"ird\nop\\', 1.0, slug="x")
    families = list(text_string_to_metric_families(collector.prometheus_text()))
    labels = [s.labels for f in families for s in f.samples if "operation" in s.labels]
    assert labels[0]["operation"] == 'we"ird\nop\\'


def test_pool_gauges_follow_the_pool(engine):
    engine.get_scoped_db("pooled").items.insert_one({"a": 1})
    gauges = engine.get_metrics()["gauges"]
    assert gauges["pool.open_connections"] >= 1
    assert gauges["pool.in_use"] == 0
    assert gauges["pool.waiting"] == 0
    assert gauges["pool.max_pool_size"] == 100


def test_max_pool_size_comes_from_the_client_options(mongo_uri, db_name):
    with MongoDBEngine(mongo_uri, db_name, maxPoolSize=7) as engine:
        engine.get_scoped_db("small").items.insert_one({"a": 1})
        assert engine.get_metrics()["gauges"]["pool.max_pool_size"] == 7


def test_forked_child_reports_only_its_own_work(engine):
    db = engine.get_scoped_db("forkm")
    db.items.insert_one({"who": "parent"})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            before = engine.get_metrics()["summary"]["operations"]
            db.items.insert_one({"who": "child"})
            ops = engine.get_metrics()["apps"]["forkm"]["operations"]
            os.write(write_fd, f"{before} {ops['insert']['count']}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 100).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert message == "0 1"
    assert _ops(engine, "forkm")["insert"]["count"] == 1  # the parent's own count


def test_labelled_counters_are_bounded_and_exact_in_the_exposition():
    """Counters split by a label (``llm.cost.usd`` by model): totals per app, one sample per
    label set, at most MAX_LABEL_SETS sets (the rest under ``_other``), and values printed
    without losing precision."""
    from mdb_sync.observability.metrics import MAX_LABEL_SETS

    metrics = MetricsCollector()
    for i in range(MAX_LABEL_SETS + 50):
        metrics.increment("llm.cost.usd", 0.5, slug="shop", labels={"model": f"lab/m{i}"})
    metrics.increment("llm.tokens.prompt", 1_234_567, slug="shop")
    metrics.increment("llm.cost.usd", 12.3456789, slug="shop", labels={"model": "lab/m0"})
    app = metrics.snapshot()["apps"]["shop"]
    assert app["counters"]["llm.cost.usd"] == pytest.approx(0.5 * 150 + 12.3456789)
    sets = {e["labels"]["model"]: e["value"] for e in app["labelled"]["llm.cost.usd"]}
    assert len(sets) == MAX_LABEL_SETS + 1 and sets["_other"] == 25.0
    assert sets["lab/m0"] == pytest.approx(12.8456789)
    text = metrics.prometheus_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["mdb_llm_cost_usd"].samples
    assert len(samples) == MAX_LABEL_SETS + 1
    assert {s.labels["app"] for s in samples} == {"shop"}
    assert sum(s.value for s in samples) == pytest.approx(75 + 12.3456789)
    assert 'mdb_llm_tokens_prompt_total{app="shop"} 1234567' in text, "not 1.23457e+06"
    assert 'mdb_llm_cost_usd_total{app="shop",model="lab/m0"} 12.8456789' in text
    with pytest.raises(ValueError, match="labels"):
        metrics.increment("x", labels={str(i): "v" for i in range(5)})
