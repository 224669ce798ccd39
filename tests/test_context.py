"""One context: a Flask request binds its app, correlation id (``X-Request-ID`` or a new one)
and engine in mdb_sync's one ContextVar, so log records, custom metrics and
``current_engine()`` made anywhere below it agree; teardown always resets it, so a server
thread serving the next request on the same connection never carries the previous one's."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading

import pytest
from flask import request
from flask_apps import AppFactory, write_manifest

from flask_mdb import MDB, db, get_current_app_slug
from mdb_sync import MongoDBEngine, context, current_engine
from mdb_sync.context import NoCurrentEngineError
from mdb_sync.exceptions import ConfigurationError
from mdb_sync.observability import (
    ContextFilter,
    get_log_context,
    log_context,
    record_operation,
    set_app_context,
    set_correlation_id,
)

log = logging.getLogger("mdbtest.context")


class Capture(logging.Handler):
    """The app id, correlation id and message of every record, as the context filter sees
    them on the thread that made the record."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(ContextFilter())
        self.seen: list[tuple[str | None, str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.app_id, record.correlation_id, record.getMessage()))  # type: ignore[attr-defined]

    def about(self, text: str) -> list[tuple[str | None, str | None, str]]:
        return [entry for entry in self.seen if text in entry[2]]


@pytest.fixture
def capture():
    handler = Capture()
    loggers = [logging.getLogger(name) for name in ("mdbtest", "flask_mdb")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def factory(mongo_uri, db_name):
    made = AppFactory(mongo_uri, db_name)
    yield made
    made.close()


@pytest.fixture
def tenants(tmp_path):
    write_manifest(tmp_path, "acme")
    write_manifest(tmp_path, "globex")
    return str(tmp_path)


def header_resolver(req):
    return req.headers.get("X-App")


def add_views(app):
    @app.get("/work")
    def work():
        log.info("working on %s", request.args.get("n", "-"))
        if get_current_app_slug() is not None:
            db.items.insert_one({"n": request.args.get("n")})
        return {
            "context": get_log_context(),
            "slug": get_current_app_slug(),
            "thread": threading.get_ident(),
        }

    @app.get("/leak")
    def leak():
        # Bare setters that never reset: teardown must undo them anyway.
        set_app_context("leaked_app")
        set_correlation_id("leaked-id")
        return {"context": get_log_context(), "thread": threading.get_ident()}

    return app


def test_a_flask_requests_log_records_carry_its_app_and_correlation_id(factory, tenants, capture):
    app = add_views(factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver))
    client = app.test_client()
    response = client.get("/work?n=1", headers={"X-App": "acme", "X-Request-ID": "req-abc.1"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-abc.1"
    assert response.json["context"] == {"app_id": "acme", "correlation_id": "req-abc.1"}
    assert capture.about("working on 1") == [("acme", "req-abc.1", "working on 1")]

    # Without a header: a new id per request, echoed; the app follows the request.
    first = client.get("/work?n=2", headers={"X-App": "globex"})
    second = client.get("/work?n=3", headers={"X-App": "acme"})
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
    assert capture.about("working on 2") == [("globex", ids[0], "working on 2")]
    assert capture.about("working on 3") == [("acme", ids[1], "working on 3")]
    # Outside the requests, nothing is left bound.
    assert context.current() == context.EMPTY


def _raw_get(port: int, path: str, header_lines: list[bytes]) -> tuple[int, dict[str, str]]:
    """A GET sent byte for byte over a socket (header values no client library would send)."""
    head = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *header_lines]
    head.append(b"Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, headers


HOSTILE_IDS = [
    b"x" * 129,  # longer than 128
    b"two words",
    b"folded\r\n continued",  # obsolete line folding: one header on two lines
    b"<script>alert(1)</script>",
    b'quote"d',
    "\u00fcn\u00efcode".encode(),
    b"tab\there",
    b"ctl\x7f",
]


def test_an_unacceptable_request_id_is_replaced_never_logged(factory, tenants, capture):
    """Through a real server: each hostile X-Request-ID is replaced by a new id (echoed
    back), and the value it sent appears in no log record's correlation id."""
    from flask_mdb.testing import LiveServer

    app = add_views(factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver))
    with LiveServer(app) as server:
        port = int(server.url.rsplit(":", 1)[1])
        for n, sent in enumerate(HOSTILE_IDS):
            status, headers = _raw_get(
                port, f"/work?n=bad{n}", [b"X-App: acme", b"X-Request-ID: " + sent]
            )
            echoed = headers["X-Request-ID"]
            assert status == 200, sent
            assert len(echoed) == 32 and echoed.isalnum(), sent
            assert capture.about(f"working on bad{n}") == [("acme", echoed, f"working on bad{n}")]
    logged = {cid for _, cid, _ in capture.seen}
    assert not any(sent.decode("latin-1") in cid for sent in HOSTILE_IDS for cid in logged if cid)


def test_acceptable_request_ids_are_kept(factory, tenants):
    app = add_views(factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver))
    client = app.test_client()
    for sent in ("a", "x" * 128, "Root=1-5759e988-bd862e3fe1be46a994272793", "id:+/=@._-"):
        response = client.get("/work", headers={"X-App": "acme", "X-Request-ID": sent})
        assert response.headers["X-Request-ID"] == sent
        assert response.json["context"]["correlation_id"] == sent


def test_request_id_settings(factory, tenants):
    app = add_views(
        factory(
            MDB_MANIFESTS=tenants,
            MDB_APP_RESOLVER=header_resolver,
            MDB_REQUEST_ID_HEADER="X-Correlation-ID",
        )
    )
    response = app.test_client().get(
        "/work", headers={"X-App": "acme", "X-Correlation-ID": "corr-9", "X-Request-ID": "no"}
    )
    assert response.headers["X-Correlation-ID"] == "corr-9"
    assert "X-Request-ID" not in response.headers
    assert response.json["context"]["correlation_id"] == "corr-9"

    untrusting = add_views(
        factory(
            name="untrusting",
            MDB_MANIFESTS=tenants,
            MDB_APP_RESOLVER=header_resolver,
            MDB_TRUST_REQUEST_ID=False,
        )
    )
    response = untrusting.test_client().get(
        "/work", headers={"X-App": "acme", "X-Request-ID": "chosen-by-client"}
    )
    assert response.headers["X-Request-ID"] != "chosen-by-client"
    assert response.json["context"]["correlation_id"] == response.headers["X-Request-ID"]

    with pytest.raises(ConfigurationError, match="MDB_REQUEST_ID_HEADER"):
        factory(name="bad", MDB_REQUEST_ID_HEADER="X Request\nID")


def test_error_responses_and_unbound_requests_carry_an_id_too(factory, tenants, capture):
    app = add_views(factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver))

    @app.get("/free")
    def free():
        log.info("no app here")
        return get_log_context()

    client = app.test_client()
    unknown = client.get("/work", headers={"X-App": "nobody", "X-Request-ID": "r-404"})
    assert (unknown.status_code, unknown.headers["X-Request-ID"]) == (404, "r-404")
    free_response = client.get("/free", headers={"X-Request-ID": "r-free"})
    assert free_response.json == {"app_id": None, "correlation_id": "r-free"}
    assert capture.about("no app here") == [(None, "r-free", "no app here")]


def test_metrics_and_current_engine_in_a_view_follow_the_request(
    factory, tenants, mongo_uri, db_name
):
    """Two initialized engines in the process: in a view, current_engine() is the request's,
    and custom operations recorded without an app go to the request's app."""
    app = factory(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver)
    other = MongoDBEngine(mongo_uri, db_name).initialize()
    try:

        @app.get("/op")
        def op():
            engine = current_engine()
            engine.record_operation("report.build", 5.0)
            record_operation("report.step", 1.0)
            return {"same": engine is app.extensions["mdb"].engine}

        client = app.test_client()
        assert client.get("/op", headers={"X-App": "globex"}).json == {"same": True}
        apps = app.extensions["mdb"].engine.get_metrics()["apps"]
        assert apps["globex"]["operations"]["report.build"]["count"] == 1
        assert apps["globex"]["operations"]["report.step"]["count"] == 1
        assert "globex" not in other.get_metrics()["apps"]
        # Outside a request, with two engines and nothing bound, there is no current one.
        with pytest.raises(NoCurrentEngineError, match="several engines"):
            current_engine()
        with context.bound(engine=other):
            assert current_engine() is other
    finally:
        other.shutdown()


def test_current_engine_outside_any_request(engine):
    assert current_engine() is engine  # the process's one initialized engine
    engine.shutdown()
    with pytest.raises(NoCurrentEngineError, match="no initialized engine"):
        current_engine()
    assert isinstance(NoCurrentEngineError("x"), LookupError)


def test_an_engine_whose_initialize_failed_is_never_current(mongo_uri, db_name, raw_db):
    """initialize() failing after it connected (here: a registry document it cannot read)
    shuts the engine down again: the caller, told it failed, has nothing to shut down, and
    current_engine() in this process must not find it initialized."""
    raw_db.apps_config.insert_one({"_id": "broken", "version": "not a number"})
    engine = MongoDBEngine(mongo_uri, db_name)
    with pytest.raises(ValueError):
        engine.initialize()
    assert not engine.is_initialized
    assert engine not in [e for e in context.live_engines() if e.is_initialized]


def test_mdb_bind_keeps_the_correlation_id_and_restores_the_context(factory, tenants):
    mdb = MDB()
    app = factory(mdb, MDB_MANIFESTS=tenants)
    with log_context(correlation_id="script-1"):
        with mdb.bind("acme", app=app):
            assert get_log_context() == {"app_id": "acme", "correlation_id": "script-1"}
            assert current_engine() is app.extensions["mdb"].engine
            # Relabelling the app drops the binding: db fails closed, never the old app.
            with log_context(app_id="globex"), pytest.raises(RuntimeError, match="no app is bound"):
                db.items.find_one()
            assert db.name == "acme"
        assert get_log_context() == {"app_id": None, "correlation_id": "script-1"}


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> dict:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return {"header": response.getheader("X-Request-ID"), **json.loads(body)}


def test_a_reused_server_thread_never_carries_the_previous_requests_context(
    factory, tenants, capture
):
    """A real server whose one pooled thread serves every request in turn (as a gthread
    worker does): each request starts from an empty context, even after a view that set the
    app and id with bare setters and never reset them."""
    from flask import Flask

    from flask_mdb.testing import LiveServer

    app = Flask("reused")
    app.config.update(factory.config(MDB_MANIFESTS=tenants, MDB_APP_RESOLVER=header_resolver))

    @app.before_request
    def arriving():  # registered before the extension's hooks: runs before the binding
        log.info("arriving %s", request.full_path)

    mdb = MDB(app)
    add_views(app)
    try:
        with LiveServer(app, threads=1) as server:
            port = int(server.url.rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                first = _get(conn, "/work?n=10", {"X-App": "acme", "X-Request-ID": "first-req"})
                leaky = _get(conn, "/leak", {"X-App": "globex", "X-Request-ID": "leak-req"})
                bare = _get(conn, "/work?n=11", {})  # no app resolved, no id sent
                second = _get(conn, "/work?n=12", {"X-App": "globex"})
            finally:
                conn.close()
    finally:
        mdb.shutdown(app)
    # Code that runs before the binding sees nothing of the request before it.
    arrivals = [entry for entry in capture.seen if entry[2].startswith("arriving")]
    assert len(arrivals) == 4 and {entry[:2] for entry in arrivals} == {(None, None)}
    threads = {r["thread"] for r in (first, leaky, bare, second)}
    assert len(threads) == 1  # one server thread served them all, in turn
    assert threads != {threading.get_ident()}
    assert first["context"] == {"app_id": "acme", "correlation_id": "first-req"}
    assert leaky["context"] == {"app_id": "leaked_app", "correlation_id": "leaked-id"}
    assert bare["slug"] is None and bare["context"]["app_id"] is None
    assert bare["context"]["correlation_id"] == bare["header"]
    assert bare["header"] not in ("first-req", "leak-req", "leaked-id")
    assert second["context"] == {"app_id": "globex", "correlation_id": second["header"]}
    assert capture.about("working on 10") == [("acme", "first-req", "working on 10")]
    assert capture.about("working on 11") == [(None, bare["header"], "working on 11")]
    assert capture.about("working on 12") == [("globex", second["header"], "working on 12")]
