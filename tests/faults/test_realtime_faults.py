"""Realtime events across crashes of the database server (issue 15, item 6).

Each test starts its own server (``secantusd-py`` on a fixed port and data directory), a
listening process (``realtime_listener.py``) and a publisher (an engine in this process),
then kills the server with SIGKILL at the moment that matters — while the listener is
stopped (SIGSTOP) behind a burst of acknowledged events, while a publish is in flight — and
restarts it on the same port and data directory. Both tailing modes, three crashes each:

* durable server: every acknowledged event is delivered exactly once;
* a server that loses its last writes in the crash: nothing is delivered twice (no replay
  of old events), and exactly the events that could not be recovered are counted in
  ``realtime.gaps``;
* a capped collection that overflows while the listener is cut off: the same, plus the
  overflow is reported.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from crash_server import CrashableServer
from pymongo import MongoClient

from mdb_sync import MongoDBEngine
from mdb_sync.realtime import EVENTS_COLLECTION

MODES = ["change_stream", "tailable"]
CRASHES = 3
APP = "chat"
DB = "faults"
GRACE = 0.3
LISTENER = Path(__file__).with_name("realtime_listener.py")
#: Every call on a server that hangs instead of dying fails within this bound.
SOCKET_TIMEOUT_MS = 15_000

pytestmark = pytest.mark.timeout(120)


class ListenerProcess:
    """The listening process: what it delivered, in order, and its counters."""

    def __init__(self, uri: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LISTENER), uri, DB, mode, APP, str(GRACE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.received: list[int] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._replies.get(timeout=60)
        assert ready.get("ready") and ready["mode"] == mode, ready

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            record = json.loads(line)
            if "i" in record:
                with self._lock:
                    self.received.append(record["i"])
            else:
                self._replies.put(record)

    def delivered(self) -> list[int]:
        with self._lock:
            return list(self.received)

    def wait_for(self, number: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while number not in self.delivered():
            assert time.monotonic() < deadline, f"event {number} never arrived"
            time.sleep(0.01)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def metrics(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("metrics\n")
        self.proc.stdin.flush()
        return self._replies.get(timeout=30)

    def counter(self, name: str) -> int:
        return int(self.metrics()["metrics"][name])

    def close(self) -> None:
        self.resume()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Publisher:
    """Publishes numbered events and keeps which were attempted and which acknowledged."""

    def __init__(self, uri: str) -> None:
        # The registry is read once: a publish during the outage fails only at its insert.
        self.engine = MongoDBEngine(
            uri, DB, registry_refresh_seconds=3600, socketTimeoutMS=SOCKET_TIMEOUT_MS
        ).initialize()
        self.engine.register_app({"slug": APP, "name": APP})
        self.attempted: list[int] = []
        self.acked: list[int] = []
        self._next = 0
        self._lock = threading.Lock()

    def publish(self, count: int = 1) -> int:
        for _ in range(count):
            with self._lock:
                number, self._next = self._next, self._next + 1
                self.attempted.append(number)
            try:
                self.engine.events.publish(APP, {"i": number})
            except Exception:
                continue  # not acknowledged: it may or may not have been stored
            with self._lock:
                self.acked.append(number)
        return self._next - 1

    def in_background(self) -> tuple[threading.Event, threading.Thread]:
        """Publish continuously (a publish in flight when the server dies) until set."""
        done = threading.Event()

        def run() -> None:
            while not done.is_set():
                self.publish()
                time.sleep(0.002)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return done, thread


@pytest.fixture
def rig(tmp_path):
    """Start a server, a publisher and a listening process; stop all of them afterwards."""
    made: list[Any] = []

    def make(mode: str, *, durable: bool = True, capped_bytes: int | None = None) -> Any:
        server = CrashableServer(tmp_path / "server", durable=durable).start()
        made.append(server)
        if capped_bytes is not None:
            with MongoClient(server.uri) as client:
                client[DB].create_collection(EVENTS_COLLECTION, capped=True, size=capped_bytes)
        publisher = Publisher(server.uri)
        made.append(publisher.engine)
        listener = ListenerProcess(server.uri, mode)
        made.append(listener)
        return server, publisher, listener

    yield make
    for thing in reversed(made):
        if isinstance(thing, ListenerProcess):
            thing.close()
        elif isinstance(thing, CrashableServer):
            thing.kill()  # its data directory is thrown away
        else:
            thing.shutdown()


def _check(publisher: Publisher, listener: ListenerProcess, last: int) -> dict[str, int]:
    """What must hold whatever the crash lost: each event delivered at most once, in
    publish order per publisher, nothing that was not published, and every event the
    listener did not get is counted as lost once its grace is over."""
    listener.wait_for(last)
    delivered = listener.delivered()
    duplicates = sum(n - 1 for n in Counter(delivered).values() if n > 1)
    assert duplicates == 0, f"{duplicates} event(s) delivered twice"
    assert delivered == sorted(delivered), "events arrive in the order they were published"
    assert set(delivered) <= set(publisher.attempted)
    missing = len(publisher.attempted) - len(delivered)
    deadline = time.monotonic() + 15
    while (gaps := listener.counter("realtime.gaps")) != missing:
        assert time.monotonic() < deadline, f"realtime.gaps is {gaps}, {missing} were not delivered"
        time.sleep(0.1)
    catch_up = listener.metrics()["status"]["catch_up_seconds"]
    return {"delivered": len(delivered), "missing": missing, "gaps": gaps, "catch_up": catch_up}


@pytest.mark.parametrize("mode", MODES)
def test_every_acknowledged_event_is_delivered_once_across_server_crashes(rig, mode):
    server, publisher, listener = rig(mode)
    publisher.publish(20)
    listener.wait_for(19)
    for _crash in range(CRASHES):
        listener.pause()  # the listener falls behind: these are acknowledged, not read
        publisher.publish(80)
        done, thread = publisher.in_background()
        time.sleep(0.05)
        server.kill()  # mid-publish, with the listener 80+ events behind
        server.start()
        listener.resume()
        time.sleep(0.2)
        done.set()
        thread.join(30)
        last = publisher.publish(10)
        listener.wait_for(last)
    outcome = _check(publisher, listener, last)
    delivered = set(listener.delivered())
    lost = [n for n in publisher.acked if n not in delivered]
    assert lost == [], f"acknowledged events lost: {lost[:20]}"
    assert server.starts == CRASHES + 1
    print(f"\n{mode}: {len(publisher.acked)} acknowledged, {outcome}")


@pytest.mark.parametrize("mode", MODES)
def test_a_server_that_loses_its_last_writes_causes_no_replay_and_counts_the_loss(rig, mode):
    """Without ``--sync-on-commit`` the crash loses the last events, the very ones the
    listener read last: it must neither replay the older ones nor lose the later ones, and
    it counts the lost ones."""
    server, publisher, listener = rig(mode, durable=False)
    last = publisher.publish(1100)  # more than the listener's window of ids
    listener.wait_for(last)
    for _crash in range(CRASHES):
        publisher.publish(40)
        server.kill()  # right after: the last ones, read or not, may not be on disk
        server.start()
        last = publisher.publish(20)
        listener.wait_for(last)
    outcome = _check(publisher, listener, last)
    print(f"\n{mode}, not durable: {len(publisher.attempted)} published, {outcome}")


@pytest.mark.parametrize("mode", MODES)
def test_events_pushed_out_of_the_capped_collection_are_counted_not_replayed(rig, mode):
    server, publisher, listener = rig(mode, capped_bytes=8192)
    publisher.publish(5)
    listener.wait_for(4)
    for _crash in range(CRASHES):
        listener.pause()
        publisher.publish(100)  # ~2x what 8 KB holds: the listener's position is pushed out
        server.kill()
        server.start()
        listener.resume()
        last = publisher.publish(10)
        listener.wait_for(last)
        delivered = listener.delivered()
        assert delivered[-10:] == list(range(last - 9, last + 1))
    outcome = _check(publisher, listener, last)
    if mode == "tailable":
        assert outcome["missing"] > 0
        assert listener.counter("realtime.overflows") == CRASHES
    # (A change stream that pymongo resumed by itself before the listener noticed the
    # restart may read a few pushed-out events from the oplog: fewer are missing then.)
    print(f"\n{mode}, overflowing: {len(publisher.attempted)} published, {outcome}")
