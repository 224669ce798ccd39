"""Declared index builds off the caller's path (issue 18, item 4), with the server stopped
while a build is under way.

The test owns its ``secantusd-py`` process. It registers an app with background index
builds; the moment the build thread sends its first command, the server is stopped
(SIGSTOP, by pid): the build cannot finish. Meanwhile the registration has returned, the
unique index (a constraint) exists already, the other index reads ``pending`` in the result,
the registry and the health report (which answers within its bound, from the engine's
cache), and ``wait_for_indexes`` times out. Once the server continues, the build completes
and every report says ``created``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from embedded_support import OwnServer
from pymongo import monitoring

from mdb_sync import MongoDBEngine
from mdb_sync.observability.health import DEFAULT_TIMEOUT

pytestmark = pytest.mark.timeout(120)

MARGIN = 2.0
MANIFEST = {
    "slug": "bg",
    "managed_indexes": {
        "tasks": [
            {"type": "regular", "name": "by_status", "keys": {"status": 1}},
            {"type": "regular", "name": "code_unique", "keys": {"code": 1},
             "options": {"unique": True}},
        ]
    },
}  # fmt: skip


class StopAtFirstBuildCommand(monitoring.CommandListener):
    """Stops the server (SIGSTOP) when the background build thread sends its first
    command, before the server receives it."""

    def __init__(self, server: OwnServer) -> None:
        self.server = server
        self.stopped = threading.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.current_thread().name == "mdb-index-builds" and not self.stopped.is_set():
            self.stopped.set()
            self.server.signal(signal.SIGSTOP)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path).start()
    yield server
    server.stop()


def _statuses(outcomes):
    return {o["name"]: o["status"] for o in outcomes}


def test_a_background_build_is_pending_until_done_even_with_the_server_stopped(own_server):
    stopper = StopAtFirstBuildCommand(own_server)
    # A long heartbeat: the stalled build waits on its socket instead of being cut off by
    # the monitor (the server is continued within seconds).
    engine = MongoDBEngine(
        own_server.uri, "bgidx", event_listeners=[stopper], heartbeatFrequencyMS=60_000
    )
    engine.initialize()
    try:
        started = time.monotonic()
        result = engine.register_app(MANIFEST, background_indexes=True)
        assert time.monotonic() - started < 30
        assert _statuses(result["indexes"]) == {"by_status": "pending", "code_unique": "created"}
        assert stopper.stopped.wait(10), "the build thread sent nothing"

        assert engine.wait_for_indexes("bg", timeout=0.5) is False
        assert _statuses(engine.registry.get_record("bg")["index_outcomes"]) == {
            "by_status": "pending",
            "code_unique": "created",
        }
        started = time.monotonic()
        health = engine.get_health_status(timeout=1.0)
        assert time.monotonic() - started < 1.0 + MARGIN
        assert health["status"] == "unhealthy"  # the server does not answer
        assert health["indexes"]["pending"] == ["bg"]
        assert health["indexes"]["outcomes"] == {"pending": 1, "created": 1}

        own_server.signal(signal.SIGCONT)
        assert engine.wait_for_indexes(timeout=60)
        record = engine.registry.get_record("bg")
        assert _statuses(record["index_outcomes"]) == {
            "by_status": "created",
            "code_unique": "created",
        }
        health = engine.get_health_status()
        assert health["status"] == "healthy", health
        assert health["indexes"]["pending"] == []
        names = set(engine._raw_collection("bg_tasks").index_information())
        assert {"by_status", "code_unique"} <= names
    finally:
        if own_server.proc is not None and own_server.proc.poll() is None:
            own_server.signal(signal.SIGCONT)
        started = time.monotonic()
        engine.shutdown()
        assert time.monotonic() - started < DEFAULT_TIMEOUT + 10
