"""Every call that touches the network has a bound (issue 15, item 2; issue 16, item 11).

Each test runs its own ``secantusd-py`` process and stops it (SIGSTOP: connections accepted,
nothing answered), kills it (SIGKILL: connections refused) or restarts it by pid, then times
the library's calls against their documented bounds (with a margin for a loaded machine).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from embedded_support import OwnServer, read_line, spawn_python, stop_process, wait_until
from pymongo.errors import ConnectionFailure

from mdb_sync import MongoDBEngine
from mdb_sync.engine import CLOSE_TIMEOUT, SHUTDOWN_FLUSH_TIMEOUT
from mdb_sync.observability.health import DEFAULT_TIMEOUT

pytestmark = pytest.mark.timeout(120)

#: Scheduling slack on a loaded machine, over each bound.
MARGIN = 2.0
APPS = 20


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path).start()
    yield server
    server.stop()


def _timed(call, *args, **kwargs):
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def test_health_answers_within_its_bound_in_every_outage_shape(own_server):
    """``get_health_status()`` answers within its timeout (default 3 s; 1 s when asked)
    with the server stalled and with it down — even with a 30 s server-selection timeout and
    a registry cache that is always stale (the apps check then reads no server) — and is
    healthy again once the server is back."""
    engine = MongoDBEngine(
        own_server.uri, "bounds", registry_refresh_seconds=0, serverSelectionTimeoutMS=30_000
    )
    engine.initialize()
    try:
        for i in range(APPS):
            engine.get_scoped_db(f"app{i}").items.insert_one({"i": i})
        assert engine.get_health_status()["status"] == "healthy"
        for shape, fault in (("stalled", signal.SIGSTOP), ("down", signal.SIGKILL)):
            own_server.signal(fault)
            for timeout in (None, 1.0):
                health, elapsed = _timed(engine.get_health_status, timeout=timeout)
                bound = timeout or DEFAULT_TIMEOUT
                assert elapsed < bound + MARGIN, f"{shape}: {elapsed:.1f}s for a {bound}s bound"
                assert health["status"] == "unhealthy", shape
                assert health["mongodb"]["error"], shape
                assert health["apps"]["registered"] == APPS, "from the engine's cache"
            if fault == signal.SIGSTOP:
                own_server.signal(signal.SIGCONT)
                wait_until(
                    lambda: engine.get_health_status()["status"] == "healthy", 30, "continued"
                )
            else:
                own_server.proc.wait()
        own_server.start()  # same port, same data
        wait_until(lambda: engine.get_health_status()["status"] == "healthy", 30, "restarted")
        assert engine.get_scoped_db("app0").items.count_documents({}) == 1
    finally:
        if own_server.proc.poll() is None:
            own_server.signal(signal.SIGCONT)
        _, elapsed = _timed(engine.shutdown)
        assert elapsed < SHUTDOWN_FLUSH_TIMEOUT + CLOSE_TIMEOUT + MARGIN


def test_shutdown_and_process_exit_are_bounded_while_the_server_is_down(own_server):
    """Two processes with query shapes waiting to be saved and a 30 s server-selection
    timeout; their server is killed. One calls ``shutdown()``, the other just exits (atexit):
    both are done within the shape flush's and the client close's bounds."""
    code = f"""
        import sys, time
        from mdb_sync import MongoDBEngine
        engine = MongoDBEngine({own_server.uri!r}, "exit", serverSelectionTimeoutMS=30000)
        engine.initialize()
        db = engine.get_scoped_db("shapes")
        for i in range(20):
            db.items.insert_one({{"i": i}})
            db.items.find_one({{"i": i, "kind": "x"}})
            db.items.find({{"i": {{"$gt": i}}}}).sort("kind", 1).to_list()
        print("ready", flush=True)
        if sys.stdin.readline().strip() == "shutdown":
            started = time.monotonic()
            engine.shutdown()
            print(f"{{time.monotonic() - started:.3f}}", flush=True)
        """
    explicit, implicit = spawn_python(code), spawn_python(code)
    try:
        assert read_line(explicit) == read_line(implicit) == "ready"
        own_server.kill()
        time.sleep(0.5)
        started = time.monotonic()
        for child, command in ((explicit, "shutdown\n"), (implicit, "exit\n")):
            child.stdin.write(command)
            child.stdin.flush()
        shutdown = float(read_line(explicit, timeout=60))
        assert shutdown < SHUTDOWN_FLUSH_TIMEOUT + CLOSE_TIMEOUT + MARGIN, shutdown
        for child in (explicit, implicit):
            assert child.wait(60) == 0, child.stderr.read()
        exited = time.monotonic() - started
        assert exited < SHUTDOWN_FLUSH_TIMEOUT + CLOSE_TIMEOUT + MARGIN + 1.0, exited
    finally:
        for child in (explicit, implicit):
            stop_process(child)


def test_operations_on_a_stalled_server_are_bounded(own_server):
    """With the server stopped (SIGSTOP), an operation fails once pymongo's monitor gives up
    on the server — within heartbeatFrequencyMS + connectTimeoutMS, plus the server-selection
    timeout for a read pymongo retries — not at the socket timeout (which only bounds what
    the monitor cannot see); a new one fails within the server-selection timeout. Values
    scaled down here; the defaults make it ~20 s."""
    engine = MongoDBEngine(
        own_server.uri,
        "stall",
        heartbeatFrequencyMS=1000,
        connectTimeoutMS=1000,
        serverSelectionTimeoutMS=2000,
    )
    engine.initialize()
    try:
        items = engine.get_scoped_db("app").items
        items.insert_one({"n": 1})
        own_server.signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(ConnectionFailure):
            items.find_one({"n": 1})
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(ConnectionFailure):
            items.insert_one({"n": 2})
        second = time.monotonic() - started
        own_server.signal(signal.SIGCONT)
        selection_step = 0.5  # pymongo re-checks a server selection every 0.5 s
        assert first < 1.0 + 1.0 + 2.0 + selection_step + MARGIN, first
        assert second < 2.0 + selection_step + MARGIN, second
        wait_until(lambda: _answers(items), 30, "the server answers again")
    finally:
        own_server.signal(signal.SIGCONT)
        engine.shutdown()


def _answers(collection) -> bool:
    try:
        collection.find_one()
        return True
    except ConnectionFailure:
        return False


def test_the_default_timeouts_and_how_they_are_changed():
    """Defaults: server selection 5 s, connect 5 s, socket = the scoped ``maxTimeMS`` cap +
    30 s (never cuts a legitimate operation); no ``timeoutMS``. Keyword arguments and URI
    options replace them."""
    from mdb_sync import QueryLimits

    settings = MongoDBEngine("mongodb://db.example.com:27017", "x").client_settings()
    assert settings["serverSelectionTimeoutMS"] == 5_000
    assert settings["connectTimeoutMS"] == 5_000
    assert settings["socketTimeoutMS"] == 300_000 + 30_000
    assert "timeoutMS" not in settings
    longer = MongoDBEngine("mongodb://h", "x", limits=QueryLimits(max_time_ms=600_000))
    assert longer.client_settings()["socketTimeoutMS"] == 630_000
    longer.limits = QueryLimits(max_time_ms=900_000)
    assert longer.client_settings()["socketTimeoutMS"] == 930_000, "follows the limits"
    chosen = MongoDBEngine("mongodb://h/?sockettimeoutms=9000", "x", timeoutMS=8000)
    assert "socketTimeoutMS" not in chosen.client_settings(), "the URI's value is kept"
    assert chosen.client_settings()["timeoutMS"] == 8000
