"""Faults against the cross-process connection limits (``MDB_WEBSOCKET_LIMITS_SCOPE =
"cluster"``, ``mdb_sync.realtime.slots``):

* a web process holding connections is killed (SIGKILL): its slots free within the lease
  ttl, and not before the others' renewals say so;
* the database stops answering (SIGSTOP) when a client connects: the client is refused
  with 1013 within the documented bound, not admitted uncounted, and admitted again once
  the database answers;
* a release that cannot reach the database (killed, then restarted) leaves a lease behind,
  which the process's next renewal removes.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket
from embedded_support import OwnServer
from flask_apps import AppFactory, serve, write_manifest
from realtime_support import ServerProcess, close_frame, connect, token_identity, ws_url

from flask_mdb.identity import register_token_verifier
from mdb_sync import MongoDBEngine
from mdb_sync.realtime.slots import DB_TIMEOUT, SLOTS_COLLECTION, ConnectionSlots, Slot

pytestmark = pytest.mark.timeout(180)

#: Scheduling slack on a loaded machine, over each bound.
MARGIN = 2.0
TTL = 2.0


def refused(url: str) -> tuple[int | None, str]:
    ws = websocket.create_connection(url, timeout=30)
    try:
        return close_frame(ws)
    finally:
        ws.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path / "db").start()
    yield server
    server.stop()


def test_a_killed_process_slots_free_within_the_lease_ttl(mongo_uri, db_name, tmp_path):
    slug = f"kl{uuid.uuid4().hex[:8]}"
    write_manifest(tmp_path, slug, websockets={"live": {"path": "/ws"}})
    config = {
        "MDB_MONGO_URI": mongo_uri,
        "MDB_DB_NAME": db_name,
        "MDB_MANIFESTS": str(tmp_path),
        "MDB_WEBSOCKET_LIMITS_SCOPE": "cluster",
        "MDB_WEBSOCKET_LEASE_TTL": TTL,
        "MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER": 2,
    }
    factory = AppFactory(mongo_uri, db_name)
    app = factory(**config)
    register_token_verifier(app, token_identity)
    doomed = ServerProcess(config)
    try:
        with serve(app) as here:
            held = [connect(ws_url(doomed.url, "/ws") + "?token=good-ada")[0] for _ in range(2)]
            full = (1008, "too many connections for this user (at most 2)")
            assert refused(ws_url(here, "/ws") + "?token=good-ada") == full
            time.sleep(TTL)  # the doomed process renews its leases meanwhile: still counted
            assert refused(ws_url(here, "/ws") + "?token=good-ada") == full

            doomed.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            doomed.proc.wait(30)
            assert refused(ws_url(here, "/ws") + "?token=good-ada") == full  # not at once
            while True:
                ws = websocket.create_connection(ws_url(here, "/ws") + "?token=good-ada")
                opcode, _data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    freed_after = time.monotonic() - killed_at
                    break
                ws.close()
                assert time.monotonic() - killed_at < TTL + MARGIN, "the slots never freed"
                time.sleep(0.05)
            assert freed_after <= TTL + MARGIN
            ws.close()
            for socket_ in held:
                socket_.close()
    finally:
        doomed.stop()
        factory.close()


def test_an_unreachable_database_refuses_within_a_bound(own_server, tmp_path):
    slug = f"ud{uuid.uuid4().hex[:8]}"
    write_manifest(tmp_path, slug, websockets={"live": {"path": "/ws"}})
    factory = AppFactory(own_server.uri, "limits_fault")
    app = factory(
        MDB_MANIFESTS=str(tmp_path),
        MDB_WEBSOCKET_LIMITS_SCOPE="cluster",
        MDB_WEBSOCKET_LEASE_TTL=TTL,
    )
    try:
        with serve(app) as base:
            first, _ = connect(ws_url(base, "/ws"))  # the app and its slots are set up
            own_server.signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                closed = refused(ws_url(base, "/ws"))
                waited = time.monotonic() - started
            finally:
                own_server.signal(signal.SIGCONT)
            assert closed == (1013, "the server cannot take connections now, try again later")
            assert waited <= DB_TIMEOUT + MARGIN
            again, hello = connect(ws_url(base, "/ws"))
            assert hello["type"] == "connected"
            first.close()
            again.close()
    finally:
        factory.close()


def test_a_release_that_cannot_reach_the_database_is_cleaned_up(own_server):
    with MongoDBEngine(own_server.uri, "slots_fault") as engine:
        slots = ConnectionSlots(engine, ttl=30)
        kept, leaked = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            assert slots.reserve("chat", kept, [Slot("app", "", 5)]) is None
            assert slots.reserve("chat", leaked, [Slot("app", "", 5)]) is None
            own_server.kill()  # the release's write cannot reach it
            started = time.monotonic()
            slots.release(leaked)  # logged, not raised: the connection is gone anyway
            assert time.monotonic() - started <= DB_TIMEOUT + MARGIN
            own_server.start()  # same port and data (durable): the lease is still there
            raw = engine._raw_collection(SLOTS_COLLECTION)
            leases = [lease["c"] for lease in raw.find_one({"_id": "chat:app:"})["leases"]]
            assert leases == [kept, leaked]  # left behind...
            slots.renew()
            leases = [lease["c"] for lease in raw.find_one({"_id": "chat:app:"})["leases"]]
            assert leases == [kept]  # ...until the process's next renewal
        finally:
            slots.stop()
