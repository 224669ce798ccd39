"""Registration races between real processes, and registrations killed half-way.

Each race runs two worker processes (``spawn``: fresh interpreters, each with its own
engine and client) on the same database; a barrier shared with the test releases both into
``register_app`` at the same moment, round after round. Overlapping slugs (``my`` vs
``my_app``: ``my`` + ``app_tasks`` and ``my_app`` + ``tasks`` are the same physical
collection) must end with exactly one app registered and the other process told why
(:class:`AppConflictError` naming the winner); the same new slug must be reported
``created: True`` by exactly one process. The fault tests SIGKILL a process while it holds
the registration lock or a pending claim, then check that the next registration is neither
blocked nor allowed to overlap.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import AppConflictError
from mdb_sync.registry_claims import LOCKS_COLLECTION, REGISTERING

ROUNDS = 25
WORKER = Path(__file__).with_name("registration_worker.py")


def race_worker(uri: str, db: str, slugs: list[str], barrier: Any, results: Any) -> None:
    """One process of a race: its own engine; per round, wait for the start, register."""
    engine = MongoDBEngine(uri, db).initialize()
    try:
        barrier.wait(timeout=60)  # engines ready
        for slug in slugs:
            barrier.wait(timeout=60)
            try:
                result = engine.register_app({"slug": slug})
                results.put((slug, "ok", result["created"], None))
            except AppConflictError as exc:
                results.put((slug, "conflict", None, (str(exc), exc.context.get("conflicts"))))
            except Exception as exc:  # pragma: no cover - reported by the test
                results.put((slug, "error", None, repr(exc)))
    finally:
        engine.shutdown()


def run_race(uri: str, db: str, plans: list[list[str]]) -> list[dict[str, Any]]:
    """Run ``plans[i]`` (one slug per round) in process ``i``; per round, what each got."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=race_worker, args=(uri, db, plan, barrier, results)) for plan in plans
    ]
    for proc in procs:
        proc.start()
    outcomes: dict[str, list[tuple[Any, ...]]] = {}
    expected = sum(len(plan) for plan in plans)
    try:
        for _ in range(expected):
            slug, *rest = results.get(timeout=120)
            outcomes.setdefault(slug, []).append(tuple(rest))
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():  # pragma: no cover - a hung worker fails the test below
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    return [
        {"round": i, "slugs": [plan[i] for plan in plans], "outcomes": outcomes}
        for i in range(len(plans[0]))
    ]


def test_overlapping_slugs_registered_at_once_exactly_one_wins(mongo_uri, db_name, raw_db):
    plans = [[f"r{i}" for i in range(ROUNDS)], [f"r{i}_app" for i in range(ROUNDS)]]
    run = run_race(mongo_uri, db_name, plans)
    outcomes = run[0]["outcomes"]
    winners = []
    for i in range(ROUNDS):
        short, long = f"r{i}", f"r{i}_app"
        (a,), (b,) = outcomes[short], outcomes[long]
        assert "error" not in (a[0], b[0]), (a, b)
        assert sorted([a[0], b[0]]) == ["conflict", "ok"], f"round {i}: {a} / {b}"
        winner, loser, lost = (short, long, b) if a[0] == "ok" else (long, short, a)
        message, conflicts = lost[2]
        assert conflicts == [winner]
        assert f"{loser!r} cannot be registered next to {winner!r}" in message
        assert "collide" in message
        stored = {d["_id"] for d in raw_db.apps_config.find({"_id": {"$in": [short, long]}})}
        assert stored == {winner}
        winners.append(winner)
    # Nothing pending and no lock left behind by either side.
    assert raw_db.apps_config.count_documents({"status": REGISTERING}) == 0
    assert raw_db[LOCKS_COLLECTION].count_documents({}) == 0
    assert len(winners) == ROUNDS


def test_same_new_slug_registered_at_once_is_created_exactly_once(mongo_uri, db_name, raw_db):
    slugs = [f"same{i}" for i in range(ROUNDS)]
    run = run_race(mongo_uri, db_name, [slugs, slugs])
    outcomes = run[0]["outcomes"]
    for slug in slugs:
        both = outcomes[slug]
        assert [o[0] for o in both] == ["ok", "ok"], both
        assert sorted(o[1] for o in both) == [False, True], f"{slug}: {both}"
        record = raw_db.apps_config.find_one({"_id": slug})
        assert record["status"] == "active" and "claim" not in record
    assert raw_db.apps_config.count_documents({}) == ROUNDS
    assert raw_db[LOCKS_COLLECTION].count_documents({}) == 0


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def _wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(
        f"worker never printed {expected!r}: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_process_killed_while_holding_the_segment_lock_blocks_nobody(
    engine, mongo_uri, db_name, raw_db
):
    victim = _spawn("hold-lock", mongo_uri, db_name, "held_app")
    try:
        _wait_for_line(victim, "locked")
        assert raw_db[LOCKS_COLLECTION].find_one({"_id": "held"})["pid"] == victim.pid
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:  # pragma: no cover
            victim.kill()
    started = time.monotonic()
    result = engine.register_app({"slug": "held_other"})
    # Taken over at once (same host, process gone), not after the 15 s lease.
    assert result["created"] is True
    assert time.monotonic() - started < 10
    assert raw_db[LOCKS_COLLECTION].count_documents({}) == 0
    with pytest.raises(AppConflictError, match="'held_other'"):
        engine.register_app({"slug": "held"})


def _kill_mid_registration(mongo_uri: str, db_name: str, slug: str) -> int:
    """Start a process registering ``slug`` and SIGKILL it between its claim and its final
    write (it says ``claimed`` from inside that window and waits there); its pid."""
    victim = _spawn("register-until-killed", mongo_uri, db_name, slug)
    try:
        _wait_for_line(victim, "claimed")
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        if victim.poll() is None:  # pragma: no cover
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    return victim.pid


def test_process_killed_mid_registration_leaves_a_claim_that_is_taken_over(
    engine, mongo_uri, db_name, raw_db
):
    # The victim is killed while its record is still "registering" (it waits, killable,
    # right after building its declared index).
    pid = _kill_mid_registration(mongo_uri, db_name, "crash")
    left = raw_db.apps_config.find_one({"_id": "crash"})
    assert left["status"] == REGISTERING and left["claim"]["pid"] == pid
    # An app that is being registered is not served meanwhile.
    from mdb_sync.exceptions import AppNotActiveError

    engine.implicit_apps = False
    with pytest.raises(AppNotActiveError, match="first registration did not finish"):
        engine.get_scoped_db("crash")
    # The overlapping slug is not blocked by a dead claim...
    assert engine.register_app({"slug": "crash_two"})["created"] is True
    assert raw_db.apps_config.find_one({"_id": "crash"}) is None
    # ...and the dead claim's slug is now refused next to it, with the winner named.
    with pytest.raises(AppConflictError) as info:
        engine.register_app({"slug": "crash"})
    assert info.value.context["conflicts"] == ["crash_two"]


def test_retry_of_a_killed_registration_takes_its_claim_over(engine, mongo_uri, db_name, raw_db):
    _kill_mid_registration(mongo_uri, db_name, "again")
    assert raw_db.apps_config.find_one({"_id": "again"})["status"] == REGISTERING
    result = engine.register_app({"slug": "again"})
    assert result["created"] is True
    record = raw_db.apps_config.find_one({"_id": "again"})
    assert record["status"] == "active" and "claim" not in record
    assert engine.get_scoped_db("again").items.insert_one({"n": 1}).acknowledged


class OwnServer:
    """An embedded server process of this test's own, on a fixed port and data directory,
    to SIGKILL and restart."""

    def __init__(self, data: Path) -> None:
        from mdb_sync import embedded

        self.data = data
        self.port = _free_port()
        self.command = embedded.find_server_command()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?retryWrites=false&directConnection=true"

    def start(self) -> OwnServer:
        from pymongo import MongoClient

        self.data.mkdir(parents=True, exist_ok=True)
        argv = [*self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--storage-path", str(self.data), "--log-level", "WARNING"]
        # Durable commits (what was acknowledged survives SIGKILL) and no stray config file.
        config = self.data.parent / "secantusd.toml"
        config.write_text("")
        argv += ["--sync-on-commit", "--config", str(config)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client: MongoClient[Any] = MongoClient(self.uri, serverSelectionTimeoutMS=500)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return self
                except Exception:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
        finally:
            client.close()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_killed_mid_registration_then_the_retry_completes_at_once(tmp_path):
    import threading

    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from mdb_sync.signals import index_created

    server = OwnServer(tmp_path / "data").start()
    engine = MongoDBEngine(server.uri, "regcrash", serverSelectionTimeoutMS=1000)
    raw: MongoClient[Any] = MongoClient(server.uri, serverSelectionTimeoutMS=2000)
    try:
        engine.initialize()
        # Index failures are reported per collection, not raised: with the server gone each
        # collection costs one server-selection timeout, so keep them few.
        indexes = {
            f"c{c}": [{"name": f"i{i}", "keys": {f"f{i}": 1, "g": -1}} for i in range(4)]
            for c in range(3)
        }
        failures: list[BaseException] = []

        def register() -> None:
            try:
                engine.register_app({"slug": "crash", "managed_indexes": indexes})
            except BaseException as exc:
                failures.append(exc)

        # The registering thread says when it is between its claim and its final write (the
        # public index_created signal, sent on that thread once its first index is built)
        # and waits there until the server is killed: the kill always lands in that window.
        reached, killed = threading.Event(), threading.Event()

        def hold(sender: Any, **_event: Any) -> None:
            reached.set()
            killed.wait(60)

        index_created.connect(hold, sender=engine)
        worker = threading.Thread(target=register)
        worker.start()
        assert reached.wait(60), "the registration never reached its pending state"
        assert raw.regcrash.apps_config.find_one({"_id": "crash"})["status"] == REGISTERING
        server.kill()  # between the claim and the final write
        killed.set()
        worker.join(60)
        index_created.disconnect(hold, sender=engine)
        assert not worker.is_alive()
        assert len(failures) == 1 and isinstance(failures[0], PyMongoError)  # told, not hung

        server.start()  # same port, same data directory
        left = raw.regcrash.apps_config.find_one({"_id": "crash"})
        assert left["status"] == REGISTERING and left["claim"]["pid"] == os.getpid()
        started = time.monotonic()
        result = engine.register_app({"slug": "crash", "managed_indexes": indexes})
        # Whatever survived the crash (the pending record, the lock) was this process's own
        # abandoned attempt: taken over at once, not after the 15 s lease or 5 min claim.
        assert time.monotonic() - started < 10
        assert result["created"] is True
        record = raw.regcrash.apps_config.find_one({"_id": "crash"})
        assert record["status"] == "active" and "claim" not in record
        assert raw.regcrash[LOCKS_COLLECTION].count_documents({}) == 0
        with pytest.raises(AppConflictError, match="'crash'"):
            engine.register_app({"slug": "crash_more"})
    finally:
        engine.shutdown()
        raw.close()
        server.stop()
