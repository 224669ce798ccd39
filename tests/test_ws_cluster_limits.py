"""Connection limits across processes (``MDB_WEBSOCKET_LIMITS_SCOPE = "cluster"``): this
test process serves the app, a second server process serves the same app on the same
database, and real websocket clients connect to both — from distinct loopback addresses
where they race. What a crash (SIGKILL) of a process holding connections does is in
``tests/faults/test_ws_limit_faults.py``."""

from __future__ import annotations

import threading
import uuid

import pytest
import websocket
from flask_apps import AppFactory, serve, write_manifest
from realtime_support import (
    ServerProcess,
    close_frame,
    connect,
    open_from,
    token_identity,
    wait_for,
    ws_url,
)

from flask_mdb import get_websocket_manager
from flask_mdb.identity import register_token_verifier
from flask_mdb.websockets import handler_registry
from mdb_sync.realtime.slots import SLOTS_COLLECTION

USER_FULL = (1008, "too many connections for this user (at most 2)")
APP_FULL = (1013, "too many connections, try again later")


@pytest.fixture
def slug():
    name = f"cl{uuid.uuid4().hex[:8]}"
    yield name
    handler_registry.clear(name)


@pytest.fixture
def cluster(mongo_uri, db_name, recorder, tmp_path, slug):
    """``(app here, its base URL, the second process's base URL, config)``."""
    write_manifest(tmp_path, slug, websockets={"live": {"path": "/ws"}})
    config = {
        "MDB_MONGO_URI": mongo_uri,
        "MDB_DB_NAME": db_name,
        "MDB_MANIFESTS": str(tmp_path),
        "MDB_WEBSOCKET_LIMITS_SCOPE": "cluster",
        "MDB_WEBSOCKET_MAX_CONNECTIONS": 4,
        "MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER": 2,
    }
    factory = AppFactory(mongo_uri, db_name, recorder)
    app = factory(**config)
    register_token_verifier(app, token_identity)
    second = ServerProcess(config)
    try:
        with serve(app) as base:
            yield app, base, second.url
    finally:
        second.stop()
        factory.close()


def refused(url):
    ws = websocket.create_connection(url, timeout=30)
    try:
        return close_frame(ws)
    finally:
        ws.close()


def test_the_limits_hold_across_two_server_processes(cluster, slug, raw_db):
    app, here, there = cluster
    ada_here, _ = connect(ws_url(here, "/ws") + "?token=good-ada")
    ada_there, _ = connect(ws_url(there, "/ws") + "?token=good-ada")
    # Each process holds one of ada's connections: a third, in either, is one too many.
    assert refused(ws_url(here, "/ws") + "?token=good-ada") == USER_FULL
    assert refused(ws_url(there, "/ws") + "?token=good-ada") == USER_FULL
    bob, _ = connect(ws_url(there, "/ws") + "?token=good-bob")
    cy, _ = connect(ws_url(here, "/ws") + "?token=good-cy")
    assert refused(ws_url(here, "/ws") + "?token=good-dan") == APP_FULL  # 4 in all
    assert refused(ws_url(there, "/ws")) == APP_FULL
    with app.app_context():
        manager = get_websocket_manager(slug)
    assert manager.connection_count == 2  # this process alone is far from its limit
    counters = manager.engine.get_metrics()["apps"][slug]["counters"]
    assert counters["ws.refused"] == 2  # the refusals made here (two more there)
    slots = raw_db[SLOTS_COLLECTION].find({"app_id": slug})
    users = {d["_id"]: len(d["leases"]) for d in slots if d["leases"]}  # dan's: given back
    assert users == {f"{slug}:app:": 4, f"{slug}:user:ada": 2, f"{slug}:user:bob": 1,
                     f"{slug}:user:cy": 1}  # fmt: skip

    # A connection closed in the other process frees its slots here.
    ada_there.close()
    wait_for(
        lambda: (
            raw_db[SLOTS_COLLECTION].find_one({"_id": f"{slug}:user:ada"})["leases"].__len__() == 1
        ),
        what="the other process to release ada's slot",
    )
    again, hello = connect(ws_url(here, "/ws") + "?token=good-ada")
    assert hello["user_id"] == "ada"
    for ws in (ada_here, again, bob, cy):
        ws.close()
    wait_for(lambda: manager.connection_count == 0, what="cleanup")
    wait_for(
        lambda: not raw_db[SLOTS_COLLECTION].find_one({"_id": f"{slug}:app:"})["leases"],
        what="every slot given back",
    )


def test_racing_clients_of_two_processes_get_exactly_the_limit(cluster, slug):
    """Twelve anonymous clients, from twelve loopback addresses, connect at once — half to
    each process — to an app limited to four connections: exactly four are admitted."""
    _app, here, there = cluster
    start = threading.Barrier(12)
    results: list[object] = []
    sockets = []
    lock = threading.Lock()

    def client(index: int) -> None:
        base = here if index % 2 else there
        start.wait()
        ws, first = open_from(base, "/ws", f"127.0.0.{index + 2}")
        with lock:
            results.append(first)
            sockets.append(ws)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    admitted = [r for r in results if isinstance(r, dict) and r.get("type") == "connected"]
    assert len(results) == 12
    assert len(admitted) == 4
    assert [r for r in results if r not in admitted] == [APP_FULL] * 8
    for ws in sockets:
        ws.close()


def test_the_process_scope_never_asks_the_database(mongo_uri, db_name, recorder, tmp_path, slug):
    """The default scope keeps the per-process fast path: connecting and disconnecting
    count in memory, with no command on ``mdb_ws_slots``."""
    write_manifest(tmp_path, slug, websockets={"live": {"path": "/ws"}})
    factory = AppFactory(mongo_uri, db_name, recorder)
    try:
        app = factory(MDB_MANIFESTS=str(tmp_path), MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER=1)
        register_token_verifier(app, token_identity)
        with serve(app) as base:
            ada, _ = connect(ws_url(base, "/ws") + "?token=good-ada")
            assert refused(ws_url(base, "/ws") + "?token=good-ada") == (
                1008,
                "too many connections for this user (at most 1)",
            )
            ada.close()
        touched = [c for c in recorder.commands() if SLOTS_COLLECTION in str(c.get(next(iter(c))))]
        assert touched == []
    finally:
        factory.close()
