"""``flask_mdb.testing``: a live server and websocket test clients for users' own tests —
used here the way a user would, against manifest endpoints and a plain flask-sock route."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

import pytest
from flask_apps import AppFactory, http, write_manifest
from flask_sock import Sock

from flask_mdb import broadcast_to_app
from flask_mdb.identity import register_token_verifier
from flask_mdb.testing import HandshakeRefused, LiveServer, RequestsStillRunning
from flask_mdb.websockets import handler_registry, register_message_handler


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


@pytest.fixture
def slug():
    name = f"lt{uuid.uuid4().hex[:8]}"
    yield name
    handler_registry.clear(name)


@pytest.fixture
def app(factory, tmp_path, slug):
    websockets = {
        "open": {"path": "/ws"},
        "members": {"path": "/members", "auth": {"required": True}},
    }
    write_manifest(tmp_path, slug, websockets=websockets)
    app = factory(MDB_MANIFESTS=str(tmp_path))
    register_token_verifier(app, lambda token, app_slug: {"user_id": token} if token else None)

    @register_message_handler(slug, message_type="echo")
    def echo(connection, message):
        return {"type": "echoed", "text": message["text"], "user": connection.user_id}

    return app


def test_a_live_server_and_its_websocket_clients(app, slug):
    with LiveServer(app) as server:
        status, _, _ = http(server.url + "/nothing-here")
        assert status == 404  # plain HTTP on the same server
        with server.websocket("/ws") as ws:
            hello = ws.receive_json()
            assert hello["type"] == "connected" and hello["app"] == slug
            ws.send_json({"type": "echo", "id": 1, "text": "hi"})
            assert ws.receive_json() == {"type": "echoed", "id": 1, "text": "hi", "user": None}

            with app.app_context():
                broadcast_to_app(slug, {"type": "other"})
                broadcast_to_app(slug, {"type": "news", "n": 1})
            assert ws.receive_json(type="news") == {"type": "news", "n": 1}  # skips "other"
            with pytest.raises(TimeoutError, match="no message"):
                ws.receive(timeout=0.2)

        with server.websocket("/members", token="ada") as ws:
            assert ws.receive_json()["user_id"] == "ada"
        refused = server.websocket("/members")
        assert refused.wait_closed() == (1008, "authentication required")
        with pytest.raises(ConnectionError):
            refused.receive()
        with pytest.raises(HandshakeRefused) as refusal:  # Origin not allowed: no upgrade
            server.websocket("/ws", headers={"Origin": "https://evil.example"})
        assert refusal.value.status == 403

        kept = server.websocket("/ws")
        kept.receive_json()
    assert kept.wait_closed() == (1001, "server shutting down")  # stopping closes clients
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_a_plain_flask_sock_route_works_too(factory):
    app = factory()
    sock = Sock(app)

    @sock.route("/upper")
    def upper(ws):
        ws.send(ws.receive().upper())

    with LiveServer(app) as server, server.websocket("/upper") as ws:
        ws.send("shout")
        assert ws.receive() == "SHOUT"


# --- stopping: complete and bounded --------------------------------------------------------------


def _in_thread(target, *args):
    """Run ``target`` on a thread; its result (or error) in the returned list once joined."""
    outcome = []

    def run():
        try:
            outcome.append(target(*args))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def waiting_app(factory):
    """An app whose ``/wait`` view blocks until the test sets ``release``."""
    app = factory()
    app.entered, app.release, app.ran = threading.Event(), threading.Event(), []

    @app.get("/wait")
    def wait():
        app.entered.set()
        app.release.wait(30)
        return "done"

    @app.get("/late")
    def late():
        app.ran.append("late")
        return "late"

    yield app
    app.release.set()  # whatever the test did, nothing stays blocked


def test_stop_waits_for_a_request_in_flight_and_runs_no_new_one(waiting_app):
    server = LiveServer(waiting_app).start()
    url = server.url
    client, response = _in_thread(http, url + "/wait")
    assert waiting_app.entered.wait(10)

    stopper, stopped = _in_thread(server.stop, 30)
    stopper.join(0.5)
    assert stopper.is_alive()  # waiting for the view, which cannot finish before release
    with pytest.raises(OSError):  # no longer accepting: refused, or closed unanswered
        http(url + "/late")
    assert waiting_app.ran == []

    waiting_app.release.set()
    stopper.join(30)
    client.join(30)
    assert stopped == [None]  # returned, no error
    assert response == [(200, response[0][1], "done")]  # the view finished and answered
    assert waiting_app.ran == []


def test_stop_reports_a_request_that_never_finishes(waiting_app):
    server = LiveServer(waiting_app).start()
    client, response = _in_thread(http, server.url + "/wait?token=secret")
    assert waiting_app.entered.wait(10)

    started = time.monotonic()
    with pytest.raises(RequestsStillRunning) as still_running:
        server.stop(timeout=0.5)
    took = time.monotonic() - started
    assert took < 5  # bounded by the timeout (0.5 s), with room for a loaded machine

    (request,) = still_running.value.requests
    assert (request.method, request.path, request.websocket) == ("GET", "/wait", False)
    assert request.thread.is_alive() and request.seconds >= 0.5
    message = str(still_running.value)
    assert "1 request thread(s)" in message and "GET /wait" in message
    assert "secret" not in message  # the query string (tokens) is not repeated
    assert request.thread.name in message

    waiting_app.release.set()  # the view resumes: its socket is shut, its thread ends
    request.thread.join(10)
    client.join(30)
    assert not request.thread.is_alive()
    assert isinstance(response[0], OSError)  # never answered


def test_a_request_left_running_by_a_failed_block_is_a_warning(waiting_app):
    with (
        pytest.warns(RuntimeWarning, match="GET /wait"),
        pytest.raises(KeyError, match="the test's own failure"),
        LiveServer(waiting_app, stop_timeout=0.3) as server,
    ):
        _in_thread(http, server.url + "/wait")
        assert waiting_app.entered.wait(10)
        raise KeyError("the test's own failure")  # stays the error the test reports


def test_stop_timeout_must_be_a_bound(waiting_app):
    server = LiveServer(waiting_app).start()
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            server.stop(timeout=bad)
    assert http(server.url + "/late")[0] == 200  # still serving
    server.stop()


def _serve_everything_once(app, threads):
    """Open what a test leaves open — a manifest websocket, a plain flask-sock websocket, a
    connection whose request never comes whole — then stop; the clients' view of it."""
    with LiveServer(app, threads=threads) as server:
        managed = server.websocket("/ws")
        assert managed.receive_json()["type"] == "connected"
        plain = server.websocket("/echo")
        plain.send("hi")
        assert plain.receive() == "hi"
        idle = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), 10)
        idle.sendall(b"GET /nothing-here HTTP/1.1\r\n")  # the headers never end
    return managed, plain, idle


@pytest.mark.parametrize("threads", [None, 2])
def test_stop_closes_websockets_and_idle_connections_and_leaves_no_thread(app, threads):
    ended = []
    sock = Sock(app)

    @sock.route("/echo")
    def echo(ws):  # never ends by itself: only the connection's end stops it
        try:
            while True:
                ws.send(ws.receive())
        finally:
            ended.append(threading.current_thread())

    for _ in range(2):  # the first round starts the app's own threads (engine, realtime)
        before = set(threading.enumerate())
        started = time.monotonic()
        managed, plain, idle = _serve_everything_once(app, threads)
        took = time.monotonic() - started

        assert managed.wait_closed() == (1001, "server shutting down")
        with pytest.raises(ConnectionError):  # its socket was shut down: closed, no frame
            plain.receive(timeout=10)
        assert len(ended) == 1 and not ended.pop().is_alive()  # the handler's thread ended
        # closed by the server (or reset, if it was still in the listener's backlog)
        with idle, contextlib.suppress(ConnectionResetError):
            assert idle.recv(1) == b""
        assert took < 15  # within the bound (5 s) and the websockets' grace, loaded or not
        managed.close()
        plain.close()
    left = {thread.name for thread in set(threading.enumerate()) - before}
    assert left == set()  # no thread of the server, nor of its clients
