"""Fork safety: a child process builds its own client; the parent keeps working."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import warnings
import weakref

from pymongo import WriteConcern

from mdb_sync import MongoDBEngine


def test_os_fork_child_gets_its_own_client(engine):
    db = engine.get_scoped_db("forked")
    db.items.insert_one({"who": "parent-before"})
    parent_client = engine.client
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            child_client = engine.client
            db.items.insert_one({"who": "child"})
            seen = db.items.count_documents({})
            ok = child_client is not parent_client and seen == 2
            os.write(write_fd, b"ok" if ok else f"bad {seen}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 100)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert message == b"ok"
    assert engine.client is parent_client
    db.items.insert_one({"who": "parent-after"})
    assert sorted(d["who"] for d in db.items.find()) == ["child", "parent-after", "parent-before"]


def _child_task(engine: MongoDBEngine, queue) -> None:
    db = engine.get_scoped_db("mp")
    db.items.insert_one({"pid": os.getpid()})
    queue.put(db.items.count_documents({}))


def test_multiprocessing_fork_children_use_the_engine(engine):
    engine.get_scoped_db("mp").items.insert_one({"pid": os.getpid()})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_task, args=(engine, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    counts = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert all(c >= 2 for c in counts)
    db = engine.get_scoped_db("mp")
    assert db.items.count_documents({}) == 4
    assert len({d["pid"] for d in db.items.find()}) == 4


def test_forked_child_keeps_the_shared_embedded_server_alive(tmp_path):
    """A child that uses the parent's embedded server holds its own lease."""
    base = tmp_path / "forkdir"
    engine = MongoDBEngine(embedded_dir=base)
    engine.initialize()
    server_pid = engine.embedded_server.pid
    engine.get_scoped_db("lease").items.insert_one({"n": 0})
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_task, args=(engine, queue))
    proc.start()
    assert queue.get(timeout=60) >= 1
    proc.join(60)
    # The child exited; the parent still has its server.
    assert engine.embedded_server.pid == server_pid and engine.embedded_server.is_running()
    engine.shutdown()


def test_a_forked_child_uses_nothing_of_the_parents_client(engine):
    """Issue 15, item 5: after a fork, the engine's cached scoped databases, the scoped
    database and collections the child still holds (and ones derived with ``with_options``)
    all run on the child's own client: pymongo never warns "MongoClient opened before fork",
    and once they were used the parent's client is unreachable in the child (collected)."""
    db = engine.get_scoped_db("forksafe")
    tasks = db.tasks
    derived = db.with_options().tasks
    acknowledged = tasks.with_options(write_concern=WriteConcern(w=1))
    tasks.insert_one({"who": "parent"})
    parent_client = weakref.ref(engine.client)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cached = engine.get_scoped_db("forksafe")
                tasks.insert_one({"who": "child"})
                seen = [
                    cached.tasks.count_documents({}),
                    db.tasks.count_documents({}),
                    derived.count_documents({}),
                    acknowledged.count_documents({}),
                ]
                gc.collect()
            report = {
                "fresh_cache": cached is not db,
                "seen": seen,
                # The parent's pooled sockets are dropped unclosed when its client is
                # collected (closing them would talk to the parent's server connections):
                # ResourceWarnings about them are expected; pymongo's fork warning is not.
                "warnings": [
                    str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)
                ],
                "parent_client_reachable": parent_client() is not None,
            }
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    message = os.read(read_fd, 10_000).decode()
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    report = json.loads(message)
    assert report == {
        "fresh_cache": True,
        "seen": [2, 2, 2, 2],
        "warnings": [],
        "parent_client_reachable": False,
    }
    assert engine.client is parent_client()
    assert tasks.count_documents({}) == 2
