"""``flask_mdb.testing``: a live server and websocket test clients for users' own tests —
used here the way a user would, against manifest endpoints and a plain flask-sock route."""

from __future__ import annotations

import uuid

import pytest
from flask_apps import AppFactory, http, write_manifest
from flask_sock import Sock

from flask_mdb import broadcast_to_app
from flask_mdb.identity import register_token_verifier
from flask_mdb.testing import HandshakeRefused, LiveServer
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
