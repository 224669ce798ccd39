"""The background sender (flask_mdb.outbox): one worker thread per app and process, in the
app's context, bounded, fork-safe, drained by ``mdb.shutdown``."""

from __future__ import annotations

import os
import threading

import pytest
from flask import current_app
from flask_apps import AppFactory

from flask_mdb import MDB
from flask_mdb.outbox import get_outbox, stop_outbox
from mdb_sync.observability import get_correlation_id, log_context


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


@pytest.fixture
def app(factory):
    return factory(MDB_APP_SLUG="outbox_app")


def test_jobs_run_in_order_on_one_thread_in_the_app_context(app, caplog):
    outbox = get_outbox(app, 10, "test")
    assert get_outbox(app, 99, "other") is outbox  # one per Flask app
    seen: list[tuple[str, str, str | None, str]] = []

    def job(n: int):
        def run() -> None:
            seen.append(
                (str(n), current_app.name, get_correlation_id(), threading.current_thread().name)
            )
            if n == 1:
                raise RuntimeError("job 1 breaks")

        return run

    with log_context(correlation_id="req-42"):
        for n in range(4):
            assert outbox.submit(job(n), f"job {n}")
    assert outbox.join(10) and outbox.pending == 0
    assert [s[0] for s in seen] == ["0", "1", "2", "3"]  # a failing job does not stop the rest
    assert {s[1:] for s in seen} == {(app.name, "req-42", "mdb-test")}
    failed = [r for r in caplog.records if r.name == "flask_mdb.outbox"]
    assert len(failed) == 1 and "job 1 failed" in failed[0].getMessage() and failed[0].exc_info


def test_a_full_queue_drops_the_job_and_says_so(app, caplog):
    outbox = get_outbox(app, 1, "small")
    entered, release = threading.Event(), threading.Event()
    outbox.submit(lambda: (entered.set(), release.wait(10)), "blocker")
    assert entered.wait(10)
    assert outbox.submit(lambda: None, "fits") is True
    assert outbox.submit(lambda: None, "too many") is False
    assert outbox.dropped == 1
    assert any("too many dropped" in r.getMessage() for r in caplog.records)
    release.set()
    assert outbox.join(10)


def test_stop_runs_what_is_queued_then_stops_and_a_later_submit_starts_again(app):
    outbox = get_outbox(app, 10, "stopping")
    ran: list[int] = []
    for n in range(3):
        outbox.submit(lambda n=n: ran.append(n), f"job {n}")
    assert stop_outbox(app, timeout=10) is True
    assert ran == [0, 1, 2]
    assert not any(t.name == "mdb-stopping" for t in threading.enumerate())
    outbox.submit(lambda: ran.append(3), "after")
    assert outbox.join(10) and ran == [0, 1, 2, 3]
    stop_outbox(app)


def test_stop_gives_up_after_its_timeout(app, caplog):
    outbox = get_outbox(app, 10, "stuck")
    release = threading.Event()
    outbox.submit(lambda: release.wait(10), "stuck")
    outbox.submit(lambda: None, "waiting")
    assert outbox.stop(timeout=0.2) is False
    assert any("1 jobs not run" in r.getMessage() for r in caplog.records)
    release.set()


def test_mdb_shutdown_lets_the_queued_jobs_finish(factory):
    mdb = MDB()
    app = factory(mdb, MDB_APP_SLUG="outbox_app")
    done = threading.Event()
    get_outbox(app, 10, "shutdown").submit(lambda: done.wait(0.3) or done.set(), "slow")
    mdb.shutdown(app)
    assert done.is_set()


def test_a_forked_child_gets_an_empty_outbox_and_a_worker_of_its_own(app):
    outbox = get_outbox(app, 10, "forking")
    entered, release = threading.Event(), threading.Event()
    outbox.submit(lambda: (entered.set(), release.wait(10)), "parent's job")
    assert entered.wait(10)  # the parent's worker is busy (and may hold the outbox's lock)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            ran = threading.Event()
            submitted = outbox.submit(ran.set, "child's job")
            ok = submitted and ran.wait(10) and outbox.join(10) and outbox.pending == 0
            os.write(write_fd, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 10)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and message == b"ok"
    assert outbox.pending == 1  # the parent's job is still the parent's
    release.set()
    assert outbox.join(10)
