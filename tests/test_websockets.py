"""Websocket endpoints from the manifest, served by a real threaded WSGI server on 127.0.0.1
and driven by real websocket clients: connecting, authentication, Origin, handlers, errors,
pings, size limits, cleanup, isolation between apps, broadcasts (to many clients, past a
blocked one, from other processes), shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
import simple_websocket
import websocket
from flask import request
from flask_apps import AppFactory, serve, write_manifest
from realtime_support import (
    DeflateClient,
    close_frame,
    connect,
    raw_client,
    recv_json,
    wait_for,
    ws_url,
)

from flask_mdb import MDB, broadcast_to_app, db, get_websocket_manager
from flask_mdb.identity import register_identity_resolver, register_token_verifier
from flask_mdb.websockets import (
    UNHANDLED,
    MessageError,
    handler_registry,
    register_connect_handler,
    register_disconnect_handler,
    register_message_handler,
    send_to_user,
)
from mdb_sync.exceptions import ConfigurationError


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


@pytest.fixture
def slug():
    """A slug of the test's own: handlers are registered per slug, process-wide."""
    name = f"ws{uuid.uuid4().hex[:8]}"
    yield name
    handler_registry.clear(name)


def _tokens(token, app_slug):
    """Test verifier: ``good-<user>`` is valid for any app; ``foreign-<user>`` belongs to
    another app."""
    if token.startswith("good-"):
        user = token.removeprefix("good-")
        return {"user_id": user, "email": f"{user}@example.com", "app": app_slug}
    if token.startswith("foreign-"):
        return {"user_id": token.removeprefix("foreign-"), "app": "someone_else"}
    return None


def _session():
    """Test resolver: the ``session_user`` cookie stands for a logged-in session."""
    user = request.cookies.get("session_user")
    return {"user_id": user, "app": request.cookies.get("session_app")} if user else None


def make_app(factory, tmp_path, manifests, **config):
    for manifest in manifests:
        write_manifest(tmp_path, **manifest)
    app = factory(MDB_MANIFESTS=str(tmp_path), **config)
    register_token_verifier(app, _tokens)
    register_identity_resolver(app, _session)
    return app


def endpoint(path="/ws", **block):
    return {"live": {"path": path, **block}}


# --- connecting -----------------------------------------------------------------------------------


def test_connect_handlers_and_cleanup(factory, tmp_path, slug, raw_db):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    seen = {"connect": [], "disconnect": []}
    register_connect_handler(slug, lambda c: seen["connect"].append(c.id))
    register_disconnect_handler(slug, lambda c: seen["disconnect"].append(c.id))

    @register_message_handler(slug, message_type="note")
    def note(connection, message):
        db.notes.insert_one({"text": message["text"]})  # the endpoint's app is bound
        return {"type": "noted", "count": db.notes.count_documents({})}

    with serve(app) as base:
        ws, hello = connect(ws_url(base, "/ws"))
        assert hello["app"] == slug and hello["endpoint"] == "live" and hello["user_id"] is None
        assert seen["connect"] == [hello["connection_id"]]
        with app.app_context():
            manager = get_websocket_manager(slug)
        assert manager.connection_count == 1
        assert manager.get_connection(hello["connection_id"]).endpoint == "live"

        ws.send(json.dumps({"type": "note", "id": "n1", "text": "hi"}))
        assert recv_json(ws) == {"type": "noted", "count": 1, "id": "n1"}
        assert [(d["text"], d["app_id"]) for d in raw_db[f"{slug}_notes"].find()] == [("hi", slug)]

        ws.close()
        wait_for(lambda: manager.connection_count == 0, what="cleanup after disconnect")
        wait_for(lambda: seen["disconnect"] == [hello["connection_id"]], what="disconnect hook")


def test_bad_messages_get_error_frames_and_the_connection_survives(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])

    @register_message_handler(slug, message_type="strict")
    def strict(connection, message):
        if "name" not in message:
            raise MessageError("name is required", code="missing_name")
        return {"type": "ok"}

    @register_message_handler(slug, message_type="broken")
    def broken(connection, message):
        raise RuntimeError("secret internal detail")

    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.send("{not json")
        assert recv_json(ws)["error"]["code"] == "bad_json"
        ws.send_binary(b"\x00\x01")
        assert recv_json(ws)["error"]["code"] == "bad_message"
        ws.send(json.dumps([1, 2, 3]))
        assert recv_json(ws)["error"]["code"] == "bad_message"
        ws.send(json.dumps({"type": "nobody-handles-this", "id": 3}))
        assert recv_json(ws) == {
            "type": "error",
            "id": 3,
            "error": {
                "code": "unknown_type",
                "message": "no handler for messages of type 'nobody-handles-this'",
            },
        }
        ws.send(json.dumps({"type": "strict", "id": 4}))
        assert recv_json(ws) == {
            "type": "error",
            "id": 4,
            "error": {"code": "missing_name", "message": "name is required"},
        }
        ws.send(json.dumps({"type": "broken"}))
        error = recv_json(ws)["error"]
        assert error["code"] == "internal_error" and "secret" not in error["message"]
        ws.send(json.dumps({"type": "ping", "id": 5}))
        assert recv_json(ws) == {"type": "pong", "id": 5}  # still alive after all that
        ws.send(json.dumps({"type": "strict", "name": "x"}))
        assert recv_json(ws) == {"type": "ok"}
        ws.close()


def test_a_catch_all_handler_gets_the_other_types(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    register_message_handler(slug, lambda c, m: {"type": "echo", "of": m})
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.send(json.dumps({"type": "anything", "x": 1}))
        assert recv_json(ws) == {"type": "echo", "of": {"type": "anything", "x": 1}}
        ws.close()
    with pytest.raises(ConfigurationError, match="already has a websocket handler"):
        register_message_handler(slug, lambda c, m: None)


def test_a_catch_all_handler_leaves_the_built_in_messages_working(factory, tmp_path, slug):
    """A catch-all handler registered as the seeds do (no type) sees what no typed handler or
    built-in type takes: ``ping``, ``subscribe`` and ``unsubscribe`` keep working, a frame
    that is not an object with a type never reaches it, and it can say "not mine"
    (``UNHANDLED``) to give the client the ``unknown_type`` error."""
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    seen = []

    def seeds_style(connection, message):
        seen.append(message)
        if message["type"] == "chat":
            return {"type": "echo", "text": message.get("text")}
        return UNHANDLED

    register_message_handler(slug, seeds_style)
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.send(json.dumps({"type": "ping", "id": 1}))
        assert recv_json(ws) == {"type": "pong", "id": 1}
        ws.send(json.dumps({"type": "subscribe", "channel": "news", "id": 2}))
        assert recv_json(ws) == {"type": "subscribed", "channel": "news", "id": 2}
        ws.send(json.dumps({"type": "unsubscribe", "channel": "news", "id": 3}))
        assert recv_json(ws) == {"type": "unsubscribed", "channel": "news", "id": 3}
        ws.send(json.dumps({"type": "chat", "text": "hi", "id": 4}))
        assert recv_json(ws) == {"type": "echo", "text": "hi", "id": 4}
        ws.send(json.dumps({"type": "mystery", "id": 5}))
        assert recv_json(ws) == {
            "type": "error",
            "id": 5,
            "error": {
                "code": "unknown_type",
                "message": "no handler for messages of type 'mystery'",
            },
        }
        for frame in ([1, 2], {"no": "type"}, {"type": 7}, "text"):
            ws.send(json.dumps(frame))
            assert recv_json(ws)["error"]["code"] == "bad_message"
        ws.close()
    assert [m["type"] for m in seen] == ["chat", "mystery"]


def test_a_typed_handler_takes_over_a_built_in_type(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    register_message_handler(slug, lambda c, m: {"type": "my-pong"}, message_type="ping")
    register_message_handler(slug, lambda c, m: {"type": "mine"}, message_type="subscribe")
    register_message_handler(slug, lambda c, m: {"type": "catch-all"})
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws) == {"type": "my-pong"}
        ws.send(json.dumps({"type": "subscribe", "channel": "news"}))
        assert recv_json(ws) == {"type": "mine"}
        ws.send(json.dumps({"type": "unsubscribe", "channel": "news"}))
        assert recv_json(ws) == {"type": "unsubscribed", "channel": "news"}  # still built in
        ws.close()


def test_a_connect_handler_can_refuse(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])

    @register_connect_handler(slug)
    def only_members(connection):
        if connection.user_id is None:
            raise MessageError("members only")

    with serve(app) as base:
        ws = websocket.create_connection(ws_url(base, "/ws"), timeout=10)
        assert close_frame(ws) == (1008, "members only")
        with app.app_context():
            assert get_websocket_manager(slug).connection_count == 0


# --- authentication and Origin ------------------------------------------------------------------


def test_auth_required_closes_with_policy_violation(factory, tmp_path, slug):
    app = make_app(
        factory, tmp_path, [{"slug": slug, "websockets": endpoint(auth={"required": True})}]
    )
    with serve(app) as base:
        url = ws_url(base, "/ws")
        ws = websocket.create_connection(url, timeout=10)
        assert close_frame(ws) == (1008, "authentication required")

        ws, hello = connect(url + "?token=good-ada")  # query parameter
        assert hello["user_id"] == "ada"
        ws.close()

        ws, hello = connect(url, subprotocols=["bearer", "good-bob"])  # browsers: subprotocol
        assert hello["user_id"] == "bob"
        assert ws.subprotocol == "bearer"  # the token itself is never echoed
        assert "good-bob" not in json.dumps(dict(ws.getheaders()))
        ws.close()

        ws, hello = connect(url, header=["Authorization: Bearer good-cy"])
        assert hello["user_id"] == "cy"
        with app.app_context():
            manager = get_websocket_manager(slug)
        assert manager.user_ids() == ["cy"]
        assert manager.connections("cy")[0].user_email == "cy@example.com"
        ws.close()

        for bad in ("?token=forged", "?token=foreign-eve"):
            ws = websocket.create_connection(url + bad, timeout=10)
            assert close_frame(ws) == (1008, "invalid or expired token")
        # A bad token is refused even with a valid session: never downgraded or mixed.
        ws = websocket.create_connection(
            url + "?token=forged", timeout=10, cookie=f"session_user=dan; session_app={slug}"
        )
        assert close_frame(ws) == (1008, "invalid or expired token")

        ws, hello = connect(url, cookie=f"session_user=dan; session_app={slug}")
        assert hello["user_id"] == "dan"
        ws.close()
        ws = websocket.create_connection(url, timeout=10, cookie="session_user=dan; session_app=x")
        assert close_frame(ws) == (1008, "authentication required")  # another app's session


def test_anonymous_clients_follow_allow_anonymous(factory, tmp_path, slug):
    app = make_app(
        factory,
        tmp_path,
        [
            {
                "slug": slug,
                "websockets": {
                    "open": {"path": "/open"},
                    "members": {"path": "/members", "auth": {"allow_anonymous": False}},
                },
            }
        ],
    )
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/open"))
        ws.close()
        ws = websocket.create_connection(ws_url(base, "/members"), timeout=10)
        assert close_frame(ws) == (1008, "authentication required")


def test_origin_is_checked_before_the_upgrade(factory, tmp_path, slug):
    cors = {"allow_origins": ["https://partner.example"], "allow_credentials": False}
    trusted = {"allow_origins": ["https://trusted.example"], "allow_credentials": True}
    other = f"{slug}b"
    app = make_app(
        factory,
        tmp_path,
        [
            {"slug": slug, "websockets": endpoint(), "cors": cors},
            {"slug": other, "websockets": endpoint("/ws2"), "cors": trusted},
        ],
    )
    cookie = "session_user=dan"
    with serve(app) as base:
        url = ws_url(base, "/ws")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=10, origin="https://evil.example")
        assert refused.value.status_code == 403
        with app.app_context():
            assert get_websocket_manager(slug).connection_count == 0

        ws, hello = connect(url, origin=base, cookie=cookie)  # same host: the session counts
        assert hello["user_id"] == "dan"
        ws.close()
        ws, hello = connect(url, origin="https://partner.example", cookie=cookie)
        assert hello["user_id"] is None  # allowed origin without credentials: no cookies
        ws.close()
        ws, hello = connect(
            url, origin="https://partner.example", subprotocols=["bearer", "good-ann"]
        )
        assert hello["user_id"] == "ann"  # ...but tokens work
        ws.close()
        ws, hello = connect(ws_url(base, "/ws2"), origin="https://trusted.example", cookie=cookie)
        assert hello["user_id"] == "dan"  # allowed with credentials: the session counts
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(
                ws_url(base, "/ws2"), timeout=10, origin="https://partner.example"
            )


# --- keep-alive and limits ------------------------------------------------------------------------


def test_the_server_pings_and_drops_clients_that_never_answer(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint(ping_interval=1)}])
    with serve(app) as base:
        url = ws_url(base, "/ws")
        ws, _ = connect(url)
        opcode, _ = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PING
        ws.close()
        # simple-websocket's client answers pings on a thread of its own, as browsers do.
        alive = simple_websocket.Client.connect(url)
        mute = raw_client(base, "/ws")  # never reads, never answers a ping
        with app.app_context():
            manager = get_websocket_manager(slug)
        wait_for(lambda: manager.connection_count == 2, what="both connected")
        wait_for(lambda: manager.connection_count == 1, timeout=15, what="the mute one dropped")
        assert json.loads(alive.receive(5))["type"] == "connected"
        alive.send(json.dumps({"type": "ping"}))
        assert json.loads(alive.receive(5)) == {"type": "pong"}  # kept alive by its pongs
        alive.close()
        mute.close()


def test_messages_over_the_size_limit_close_the_connection(factory, tmp_path, slug):
    app = make_app(
        factory, tmp_path, [{"slug": slug, "websockets": endpoint(max_message_size=1024)}]
    )
    register_message_handler(slug, lambda c, m: {"type": "ok"})
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.send(json.dumps({"type": "small", "text": "x" * 900}))
        assert recv_json(ws) == {"type": "ok"}
        ws.send(json.dumps({"type": "big", "text": "x" * 2000}))
        assert close_frame(ws)[0] == 1009
        with app.app_context():
            manager = get_websocket_manager(slug)
        wait_for(lambda: manager.connection_count == 0, what="cleanup")


# --- broadcasts -----------------------------------------------------------------------------------


def test_broadcasts_stay_in_their_app(factory, tmp_path, slug):
    other = f"{slug}b"
    app = make_app(
        factory,
        tmp_path,
        [{"slug": slug, "websockets": endpoint()}, {"slug": other, "websockets": endpoint("/b")}],
    )
    with serve(app) as base:
        mine, me = connect(ws_url(base, "/ws"))
        theirs, _ = connect(ws_url(base, "/b"))
        with app.app_context():
            broadcast_to_app(slug, {"for": slug})
            broadcast_to_app(other, {"for": other})
            get_websocket_manager(slug).broadcast({"second": True}, exclude=me["connection_id"])
            get_websocket_manager(slug).broadcast({"third": True})
        assert recv_json(theirs) == {"for": other}  # never the other app's message first
        assert recv_json(mine) == {"for": slug}
        assert recv_json(mine) == {"third": True}  # the excluded one never came
        mine.close()
        theirs.close()


def test_send_to_user_reaches_all_their_connections_only(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    with serve(app) as base:
        url = ws_url(base, "/ws")
        tab1, _ = connect(url + "?token=good-ada")
        tab2, hello2 = connect(url + "?token=good-ada")
        bob, _ = connect(url + "?token=good-bob")
        with app.app_context():
            send_to_user(slug, "ada", {"to": "ada"})
            manager = get_websocket_manager(slug)
            assert manager.send_to_connection(hello2["connection_id"], {"only": "tab2"})
            manager.broadcast({"to": "all"})
        assert recv_json(tab1) == {"to": "ada"}
        assert recv_json(tab2) == {"to": "ada"}
        assert recv_json(tab2) == {"only": "tab2"}
        assert recv_json(bob) == {"to": "all"}
        assert recv_json(tab1) == {"to": "all"}
        for ws in (tab1, tab2, bob):
            ws.close()


def test_a_broadcast_reaches_100_clients(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    with serve(app) as base:
        clients = [connect(ws_url(base, "/ws"))[0] for _ in range(100)]
        try:
            with app.app_context():
                assert get_websocket_manager(slug).connection_count == 100
                broadcast_to_app(slug, {"type": "news", "n": 1})
            assert all(recv_json(ws) == {"type": "news", "n": 1} for ws in clients)
        finally:
            for ws in clients:
                ws.close()


def test_compressed_and_plain_clients_get_the_same_broadcasts(factory, tmp_path, slug):
    """A broadcast builds its frame once for the clients that negotiated no compression;
    those that did (browsers offer permessage-deflate) get their own compressed frames."""
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    with serve(app) as base:
        plain = [connect(ws_url(base, "/ws"))[0] for _ in range(3)]
        deflating = [DeflateClient(base, "/ws") for _ in range(2)]
        assert all(c.extensions == ["permessage-deflate"] for c in deflating)
        assert all(c.receive_json()["type"] == "connected" for c in deflating)
        messages = [{"n": 1}, {"text": "é" * 100}, {"pad": "x" * 70_000, "n": 3}]
        with app.app_context():
            for message in messages:
                broadcast_to_app(slug, message)
        for ws in plain:
            assert [recv_json(ws) for _ in messages] == messages
        for client in deflating:
            assert [client.receive_json() for _ in messages] == messages
        for ws in plain:
            ws.close()
        for client in deflating:
            client.close()


def test_connection_limits_per_app_user_and_address(factory, tmp_path, slug):
    app = make_app(
        factory,
        tmp_path,
        [{"slug": slug, "websockets": endpoint()}],
        MDB_WEBSOCKET_MAX_CONNECTIONS=3,
        MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER=2,
        MDB_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS=1,
    )
    with serve(app) as base:
        url = ws_url(base, "/ws")
        anonymous, _ = connect(url)
        ws = websocket.create_connection(url, timeout=10)  # the same address, anonymous
        assert close_frame(ws) == (1008, "too many connections from this address (at most 1)")
        ada = [connect(url + "?token=good-ada")[0] for _ in range(2)]  # users: their own limit
        ws = websocket.create_connection(url + "?token=good-ada", timeout=10)
        assert close_frame(ws) == (1008, "too many connections for this user (at most 2)")
        ws = websocket.create_connection(url + "?token=good-bob", timeout=10)  # the app is full
        assert close_frame(ws) == (1013, "too many connections, try again later")
        with app.app_context():
            manager = get_websocket_manager(slug)
        assert manager.connection_count == 3 and manager.user_ids() == ["ada"]
        counters = manager.engine.get_metrics()["apps"][slug]["counters"]
        assert counters["ws.refused"] == 3 and counters["ws.connected"] == 3

        # Closing frees the slots: of the address, of the user, of the app.
        anonymous.close()
        ada[0].close()
        wait_for(lambda: manager.connection_count == 1, what="cleanup after disconnect")
        anonymous, _ = connect(url)
        bob, hello = connect(url + "?token=good-bob")
        assert hello["user_id"] == "bob" and manager.connection_count == 3
        for ws in (anonymous, bob, ada[1]):
            ws.close()


def test_a_blocked_client_does_not_hold_up_the_others(factory, tmp_path, slug):
    """A client that stops reading fills its own queue and is dropped; the broadcasts and the
    other clients never wait for it."""
    app = make_app(
        factory,
        tmp_path,
        [{"slug": slug, "websockets": endpoint()}],
        MDB_WEBSOCKET_QUEUE_SIZE=8,
    )
    payload = "x" * 60_000
    with serve(app) as base:
        reader, hello = connect(ws_url(base, "/ws"))
        stuck = raw_client(base, "/ws", receive_buffer=4096)
        with app.app_context():
            manager = get_websocket_manager(slug)
            wait_for(lambda: manager.connection_count == 2, what="both connected")
            for i in range(200):  # ~12 MB: far more than the stuck client's buffers hold
                broadcast_to_app(slug, {"i": i, "pad": payload}, local_only=True)
                assert recv_json(reader)["i"] == i  # each arrives while the other is stuck
        assert [c.id for c in manager.connections()] == [hello["connection_id"]]
        counters = manager.engine.get_metrics()["apps"][slug]["counters"]
        assert counters["ws.dropped"] == 1
        reader.close()
        stuck.close()


def test_broadcasts_from_another_process_reach_the_web_process(
    factory, tmp_path, slug, mongo_uri, db_name
):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    with serve(app) as base:
        everyone, _ = connect(ws_url(base, "/ws"))
        ada, _ = connect(ws_url(base, "/ws") + "?token=good-ada")
        script = textwrap.dedent(
            f"""
            from mdb_sync import MongoDBEngine
            from mdb_sync.realtime import broadcast_to_app, send_to_user
            with MongoDBEngine({mongo_uri!r}, {db_name!r}):
                broadcast_to_app({slug!r}, {{"type": "from-script", "n": 1}})
                send_to_user({slug!r}, "ada", {{"type": "private"}})
                broadcast_to_app({slug!r}, {{"type": "from-script", "n": 2}})
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert recv_json(everyone) == {"type": "from-script", "n": 1}
        assert recv_json(everyone) == {"type": "from-script", "n": 2}
        assert [recv_json(ada) for _ in range(3)] == [
            {"type": "from-script", "n": 1},
            {"type": "private"},
            {"type": "from-script", "n": 2},
        ]
        everyone.close()
        ada.close()


# --- registration and shutdown --------------------------------------------------------------------


def test_shutdown_closes_every_connection(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    mdb = app.extensions["mdb"].extension
    with serve(app) as base:
        clients = [connect(ws_url(base, "/ws"))[0] for _ in range(3)]
        mdb.shutdown(app)
        assert [close_frame(ws) for ws in clients] == [(1001, "server shutting down")] * 3


def test_routes_of_an_app_registered_in_the_database(factory, tmp_path, slug, engine):
    app = factory(MDB_WEBSOCKETS=True)
    mdb = app.extensions["mdb"].extension
    with app.app_context():
        mdb.get_engine().register_app({"slug": slug, "name": slug, "websockets": endpoint("/late")})
    assert mdb.register_websocket_routes(app, slug) == ["/late"]
    assert mdb.register_websocket_routes(app, slug) == ["/late"]  # idempotent
    with pytest.raises(ConfigurationError, match="already served"):
        mdb.register_websocket_routes(
            app, f"{slug}z", {"slug": f"{slug}z", "websockets": endpoint("/late")}
        )
    with serve(app) as base:
        ws, hello = connect(ws_url(base, "/late"))
        assert hello["app"] == slug
        ws.close()


def test_settings_follow_the_registered_manifest(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [{"slug": slug, "websockets": endpoint()}])
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        ws.close()
        with app.app_context():
            app.extensions["mdb"].engine.register_app(
                {"slug": slug, "name": slug, "websockets": endpoint(auth={"required": True})}
            )
        ws = websocket.create_connection(ws_url(base, "/ws"), timeout=10)
        assert close_frame(ws) == (1008, "authentication required")


def test_websockets_can_be_left_off_and_bad_options_are_refused(factory, tmp_path, slug):
    write_manifest(tmp_path, slug, websockets=endpoint())
    app = factory(MDB_MANIFESTS=str(tmp_path), MDB_WEBSOCKETS=False)
    assert not [r for r in app.url_map.iter_rules() if r.endpoint.startswith("mdb_ws.")]
    for key, value in (
        ("MDB_WEBSOCKET_QUEUE_SIZE", 0),
        ("MDB_WEBSOCKET_SEND_TIMEOUT", "1"),
        ("MDB_WEBSOCKET_MAX_CONNECTIONS", 0),
        ("MDB_WEBSOCKET_MAX_CONNECTIONS_PER_USER", "16"),
        ("MDB_WEBSOCKET_LIMITS_SCOPE", "global"),
        ("MDB_WEBSOCKET_LEASE_TTL", 0.5),
        ("MDB_WEBSOCKET_MAX_CHANNELS", 0),
        ("MDB_WEBSOCKET_MAX_CHANNELS_PER_CONNECTION", "64"),
    ):
        with pytest.raises(ConfigurationError, match=key):
            factory(MDB(), name="bad", **{key: value})


def test_the_app_route_policy_leaves_websockets_to_their_own_settings(factory, tmp_path, slug):
    """On an app whose policy requires sign-in for every route, a websocket endpoint that
    allows anonymous clients still lets them in: its manifest block decides, not the route
    guard (which would answer the upgrade with 401)."""
    auth = {"policy": {"required": True}, "users": {"enabled": True}}
    app = make_app(
        factory,
        tmp_path,
        [{"slug": slug, "auth": auth, "websockets": endpoint(auth={"allow_anonymous": True})}],
        MDB_JWT_SECRET="s" * 48,
        SECRET_KEY="k" * 48,
    )
    with serve(app) as base:
        ws, hello = connect(ws_url(base, "/ws"))
        assert hello["app"] == slug and hello["user_id"] is None
        ws.close()
