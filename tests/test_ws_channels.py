"""Channels (rooms) of an app's websockets, served by a real threaded WSGI server and driven
by real websocket clients: subscribing and unsubscribing, the server-side API, who may join
(authorizers), bounds, metrics, channel messages from a script process and to a second
server process, and channels that never cross apps. The attacks (forbidden channels, role
changes, floods) are in ``tests/security/test_ws_channel_attacks.py``.

A message that must *not* arrive is checked without waiting on a clock: a marker sent to
the whole app after it, by the same publisher, arrives in order — so the next frame a
client gets is the marker if and only if the other message was not for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from flask_apps import AppFactory, serve, write_manifest
from realtime_support import (
    ServerProcess,
    connect,
    recv_json,
    token_identity,
    wait_for,
    ws_url,
)

from flask_mdb import broadcast_to_app, broadcast_to_channel, db, get_websocket_manager
from flask_mdb.identity import register_token_verifier
from flask_mdb.websockets import (
    MessageError,
    channel_authorizers,
    handler_registry,
    register_channel_authorizer,
    register_connect_handler,
)
from mdb_sync.exceptions import (
    ChannelLimitExceeded,
    ChannelRefused,
    ConfigurationError,
    InvalidChannelError,
)
from mdb_sync.realtime import EVENTS_COLLECTION, MAX_CHANNEL_LENGTH

MARKER = {"type": "marker"}


@pytest.fixture
def factory(mongo_uri, db_name, recorder):
    made = AppFactory(mongo_uri, db_name, recorder)
    yield made
    made.close()


@pytest.fixture
def slug():
    name = f"ch{uuid.uuid4().hex[:8]}"
    yield name
    handler_registry.clear(name)
    channel_authorizers.clear(name)


def make_app(factory, tmp_path, slugs, **config):
    for index, slug in enumerate(slugs):
        write_manifest(tmp_path, slug, websockets={"live": {"path": f"/ws{index or ''}"}})
    app = factory(MDB_MANIFESTS=str(tmp_path), **config)
    register_token_verifier(app, token_identity)
    return app


def subscribe(ws, channel, request_id=None):
    message = {"type": "subscribe", "channel": channel}
    if request_id is not None:
        message["id"] = request_id
    ws.send(json.dumps(message))
    return recv_json(ws)


def nothing_but_the_marker(ws, slug, app):
    broadcast_to_app(slug, MARKER, app=app)
    return recv_json(ws) == MARKER


def counter(manager, name):
    return manager.engine.get_metrics()["apps"][manager.app_slug].get("counters", {}).get(name, 0)


def labelled(manager, name):
    sets = manager.engine.get_metrics()["apps"][manager.app_slug].get("labelled", {}).get(name, [])
    return {entry["labels"]["channel"]: entry["value"] for entry in sets}


# --- subscribing ----------------------------------------------------------------------------------


def test_a_client_gets_the_messages_of_its_channels_only(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [slug])
    with serve(app) as base:
        ada, ada_hello = connect(ws_url(base, "/ws"))
        bob, _ = connect(ws_url(base, "/ws"))
        assert subscribe(ada, "rooms/1", request_id=7) == {
            "type": "subscribed",
            "channel": "rooms/1",
            "id": 7,
        }
        assert subscribe(ada, "rooms/1") == {"type": "subscribed", "channel": "rooms/1"}  # again
        broadcast_to_channel(slug, "rooms/1", {"n": 1}, app=app)
        assert recv_json(ada) == {"n": 1}
        assert nothing_but_the_marker(bob, slug, app)
        assert recv_json(ada) == MARKER

        with app.app_context():
            manager = get_websocket_manager(slug)
        assert manager.channel_counts() == {"rooms/1": 1}
        assert [c.id for c in manager.channel_members("rooms/1")] == [ada_hello["connection_id"]]
        connection = manager.get_connection(ada_hello["connection_id"])
        assert connection.channels == frozenset({"rooms/1"})

        assert subscribe(bob, "rooms/1")["type"] == "subscribed"
        manager.broadcast_to_channel("rooms/1", {"n": 2}, exclude=ada_hello["connection_id"])
        assert recv_json(bob) == {"n": 2}
        assert nothing_but_the_marker(ada, slug, app)  # the excluded sender
        assert recv_json(bob) == MARKER

        ada.send(json.dumps({"type": "unsubscribe", "channel": "rooms/1", "id": 8}))
        assert recv_json(ada) == {"type": "unsubscribed", "channel": "rooms/1", "id": 8}
        ada.send(json.dumps({"type": "unsubscribe", "channel": "rooms/1"}))  # not in it: same
        assert recv_json(ada) == {"type": "unsubscribed", "channel": "rooms/1"}
        broadcast_to_channel(slug, "rooms/1", {"n": 3}, app=app)
        assert recv_json(bob) == {"n": 3}
        assert nothing_but_the_marker(ada, slug, app)
        ada.close()
        bob.close()
        wait_for(lambda: manager.channel_counts() == {}, what="memberships to end")


def test_server_code_joins_and_leaves_connections(factory, tmp_path, slug):
    """A connect handler puts each user in a channel of their own: no authorization, the
    server decides. Membership never crosses apps, and ends with the connection."""
    other = f"{slug}b"
    app = make_app(factory, tmp_path, [slug, other])

    @register_connect_handler(slug)
    def own_channel(connection):
        if connection.user_id is not None:
            assert connection.join(f"users/{connection.user_id}") is True
            assert connection.join(f"users/{connection.user_id}") is False

    with serve(app) as base:
        ada, hello = connect(ws_url(base, "/ws") + "?token=good-ada")
        theirs, their_hello = connect(ws_url(base, "/ws1") + "?token=good-ada")
        broadcast_to_channel(slug, "users/ada", {"to": "ada"}, app=app)
        assert recv_json(ada) == {"to": "ada"}
        with app.app_context():
            manager = get_websocket_manager(slug)
            other_manager = get_websocket_manager(other)
        connection = manager.get_connection(hello["connection_id"])
        foreign = other_manager.get_connection(their_hello["connection_id"])
        with pytest.raises(ChannelRefused, match="not a live connection"):
            manager.join(foreign, "users/ada")  # another app's connection
        with pytest.raises(InvalidChannelError):
            connection.join("users/../admin")
        assert connection.leave("users/ada") is True
        assert connection.leave("users/ada") is False
        broadcast_to_channel(slug, "users/ada", {"to": "ada", "n": 2}, app=app)
        assert nothing_but_the_marker(ada, slug, app)
        ada.close()
        theirs.close()
        wait_for(lambda: manager.connection_count == 0, what="cleanup")
        with pytest.raises(ChannelRefused):
            connection.join("users/ada")  # closed: no longer a member of anything


def test_channel_names_are_checked_before_anything_is_stored(factory, tmp_path, slug, raw_db):
    app = make_app(factory, tmp_path, [slug])
    bad = [
        "",
        "x" * (MAX_CHANNEL_LENGTH + 1),
        "rooms//1",
        "/rooms",
        "rooms/",
        "rooms:1",
        "rooms/*",
        "rooms/.*",
        "../admin",
        "ro oms",
        "röom",
        "rooms\x00",
        5,
        None,
        ["rooms"],
        {"$gt": ""},
    ]
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        for name in bad:
            ws.send(json.dumps({"type": "subscribe", "channel": name, "id": 1}))
            answer = recv_json(ws)
            assert answer["type"] == "error" and answer["error"]["code"] == "bad_channel", name
        ws.send(json.dumps({"type": "subscribe", "id": 2}))  # no channel at all
        assert recv_json(ws)["error"]["code"] == "bad_channel"
        assert subscribe(ws, "x" * MAX_CHANNEL_LENGTH)["type"] == "subscribed"
        assert subscribe(ws, "A-b_9/c")["type"] == "subscribed"
        ws.close()
    stored = raw_db[EVENTS_COLLECTION].count_documents({})
    for name in bad:
        with pytest.raises(InvalidChannelError):
            broadcast_to_channel(slug, name, {"never": "stored"}, app=app)
    assert raw_db[EVENTS_COLLECTION].count_documents({}) == stored


# --- who may join ---------------------------------------------------------------------------------


def test_the_most_specific_authorizer_decides(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [slug])
    calls = []

    @register_channel_authorizer(slug)
    def public_only(connection, channel):
        calls.append(("app", channel))
        return channel.startswith("public")

    @register_channel_authorizer(slug, channel="rooms/*")
    def named_users(connection, channel):
        calls.append(("rooms", channel))
        return connection.user_id is not None

    @register_channel_authorizer(slug, channel="rooms/vip")
    def vip(connection, channel):
        calls.append(("vip", channel))
        raise MessageError("members only", code="vip_only")

    with serve(app) as base:
        anonymous, _ = connect(ws_url(base, "/ws"))
        ada, _ = connect(ws_url(base, "/ws") + "?token=good-ada")
        assert subscribe(anonymous, "public/news")["type"] == "subscribed"
        refused = subscribe(anonymous, "private", request_id=3)
        assert refused == {
            "type": "error",
            "id": 3,
            "error": {"code": "forbidden", "message": "you may not subscribe to this channel"},
        }
        assert subscribe(anonymous, "rooms/1")["error"]["code"] == "forbidden"
        assert subscribe(ada, "rooms/1")["type"] == "subscribed"
        assert subscribe(ada, "rooms/1/deep")["type"] == "subscribed"  # a prefix covers all
        assert subscribe(ada, "rooms/vip")["error"] == {
            "code": "vip_only",
            "message": "members only",
        }
        anonymous.close()
        ada.close()
    assert calls == [
        ("app", "public/news"),
        ("app", "private"),
        ("rooms", "rooms/1"),
        ("rooms", "rooms/1"),
        ("rooms", "rooms/1/deep"),
        ("vip", "rooms/vip"),
    ]
    with pytest.raises(ConfigurationError, match="already has an authorizer"):
        register_channel_authorizer(slug, lambda c, n: True, channel="rooms/*")
    for pattern in ("rooms/**", "*", "rooms:*", "/rooms/*"):
        with pytest.raises(ConfigurationError, match="prefix ending in"):
            register_channel_authorizer(slug, lambda c, n: True, channel=pattern)


def test_without_an_authorization_policy_every_connection_may_join(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [slug])
    with serve(app) as base:
        ws, _ = connect(ws_url(base, "/ws"))
        assert subscribe(ws, "anything/at/all")["type"] == "subscribed"
        ws.close()


# --- bounds and metrics ---------------------------------------------------------------------------


def test_channels_per_connection_and_per_app_are_bounded(factory, tmp_path, slug):
    app = make_app(
        factory,
        tmp_path,
        [slug],
        MDB_WEBSOCKET_MAX_CHANNELS_PER_CONNECTION=2,
        MDB_WEBSOCKET_MAX_CHANNELS=3,
    )
    with serve(app) as base:
        one, hello = connect(ws_url(base, "/ws"))
        two, _ = connect(ws_url(base, "/ws"))
        assert subscribe(one, "a")["type"] == "subscribed"
        assert subscribe(one, "b")["type"] == "subscribed"
        assert subscribe(one, "c")["error"] == {
            "code": "too_many_channels",
            "message": "a connection may be in at most 2 channels",
        }
        assert subscribe(two, "c")["type"] == "subscribed"  # the third channel
        assert subscribe(two, "d")["error"] == {
            "code": "too_many_channels",
            "message": "too many channels on this server, try again later",
        }
        assert subscribe(two, "a")["type"] == "subscribed"  # an existing one is no new one
        with app.app_context():
            manager = get_websocket_manager(slug)
        with pytest.raises(ChannelLimitExceeded):  # the server-side API is bounded too
            manager.get_connection(hello["connection_id"]).join("e")
        one.send(json.dumps({"type": "unsubscribe", "channel": "b"}))
        assert recv_json(one)["type"] == "unsubscribed"  # b has no member left...
        assert subscribe(one, "d")["type"] == "subscribed"  # ...so there is room for d
        assert manager.channel_counts() == {"a": 2, "c": 1, "d": 1}
        one.close()
        two.close()


def test_counts_per_channel_in_the_metrics(factory, tmp_path, slug):
    app = make_app(factory, tmp_path, [slug])

    @register_channel_authorizer(slug)
    def rooms_only(connection, channel):
        return channel.startswith("rooms/")

    with serve(app) as base:
        clients = [connect(ws_url(base, "/ws"))[0] for _ in range(3)]
        for ws in clients:
            assert subscribe(ws, "rooms/1")["type"] == "subscribed"
        assert subscribe(clients[0], "rooms/2")["type"] == "subscribed"
        assert subscribe(clients[0], "secret-name-xyz")["error"]["code"] == "forbidden"
        broadcast_to_channel(slug, "rooms/1", {"n": 1}, app=app)
        broadcast_to_channel(slug, "rooms/2", {"n": 2}, app=app)
        broadcast_to_channel(slug, "rooms/3", {"n": 3}, app=app)  # nobody there
        for ws in clients:
            assert recv_json(ws) == {"n": 1}
        assert recv_json(clients[0]) == {"n": 2}
        with app.app_context():
            manager = get_websocket_manager(slug)
        clients[2].close()
        wait_for(lambda: labelled(manager, "ws.channel_left"), what="one closed")
        assert labelled(manager, "ws.channel_joined") == {"rooms/1": 3, "rooms/2": 1}
        assert labelled(manager, "ws.channel_left") == {"rooms/1": 1}
        assert labelled(manager, "ws.channel_delivered") == {"rooms/1": 3, "rooms/2": 1}
        assert labelled(manager, "realtime.channel_published") == {
            "rooms/1": 1,
            "rooms/2": 1,
            "rooms/3": 1,
        }
        assert counter(manager, "ws.channel_refused") == 1
        exposition = manager.engine.metrics_text()
        assert f'mdb_ws_channel_joined_total{{app="{slug}",channel="rooms/1"}} 3' in exposition
        assert "secret-name-xyz" not in exposition  # a refused name is never recorded
        assert "secret-name-xyz" not in json.dumps(manager.engine.get_metrics())
        for ws in clients[:2]:
            ws.close()


# --- across processes -----------------------------------------------------------------------------


def test_a_script_process_publishes_to_a_channel(factory, tmp_path, slug, mongo_uri, db_name):
    app = make_app(factory, tmp_path, [slug])
    with serve(app) as base:
        member, _ = connect(ws_url(base, "/ws"))
        outsider, _ = connect(ws_url(base, "/ws"))
        assert subscribe(member, "rooms/1")["type"] == "subscribed"
        assert subscribe(outsider, "rooms/2")["type"] == "subscribed"
        script = textwrap.dedent(
            f"""
            from mdb_sync import MongoDBEngine
            from mdb_sync.exceptions import InvalidChannelError
            from mdb_sync.realtime import broadcast_to_app, broadcast_to_channel
            with MongoDBEngine({mongo_uri!r}, {db_name!r}):
                broadcast_to_channel({slug!r}, "rooms/1", {{"from": "script", "n": 1}})
                try:
                    broadcast_to_channel({slug!r}, "rooms/*", {{"never": True}})
                except InvalidChannelError:
                    pass
                else:
                    raise SystemExit("a bad name was accepted")
                broadcast_to_app({slug!r}, {MARKER!r})
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert recv_json(member) == {"from": "script", "n": 1}
        assert recv_json(member) == MARKER
        assert recv_json(outsider) == MARKER  # one publisher's events arrive in order
        member.close()
        outsider.close()


def test_members_in_another_server_process_get_the_channel(
    factory, tmp_path, slug, mongo_uri, db_name
):
    """The client is in a second web process; the channel message is published here. An
    app of the same name space (another slug, same channel name) reaches nobody there."""
    other = f"{slug}b"
    app = make_app(factory, tmp_path, [slug, other])
    config = {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, "MDB_MANIFESTS": str(tmp_path)}
    second = ServerProcess(config)
    try:
        member, _ = connect(ws_url(second.url, "/ws") + "?token=good-ada")
        neighbour, _ = connect(ws_url(second.url, "/ws1") + "?token=good-bob")
        assert subscribe(member, "rooms/1")["type"] == "subscribed"
        assert subscribe(neighbour, "rooms/1")["type"] == "subscribed"  # of the other app
        broadcast_to_channel(slug, "rooms/1", {"n": 1}, app=app)
        broadcast_to_app(slug, MARKER, app=app)
        broadcast_to_app(other, MARKER, app=app)
        assert recv_json(member) == {"n": 1}
        assert recv_json(member) == MARKER
        assert recv_json(neighbour) == MARKER
        member.close()
        neighbour.close()
    finally:
        second.stop()


def test_a_role_change_from_another_process_authorizes_the_channels_again(
    factory, tmp_path, slug, mongo_uri, db_name
):
    """A script process announces that ada's roles changed; this process's listener
    authorizes her channels again at once — the app's authorizer runs with the app bound
    (``db`` is its sandbox) — and she leaves those her new roles do not grant."""
    app = make_app(factory, tmp_path, [slug])

    @register_channel_authorizer(slug)
    def granted(connection, channel):
        roles = connection.identity.get("roles") or []
        return db.grants.count_documents({"channel": channel, "role": {"$in": roles}}) > 0

    with app.app_context():
        grants = app.extensions["mdb"].extension.get_db(slug).grants
        grants.insert_many(
            [{"channel": "vip", "role": "vip"}, {"channel": "news", "role": "reader"}]
        )
    with serve(app) as base:
        ada, _ = connect(ws_url(base, "/ws") + "?token=good-ada~vip~reader")
        assert subscribe(ada, "vip")["type"] == "subscribed"
        assert subscribe(ada, "news")["type"] == "subscribed"
        script = textwrap.dedent(
            f"""
            from mdb_sync import MongoDBEngine
            from mdb_sync.realtime import broadcast_to_app, broadcast_to_channel
            with MongoDBEngine({mongo_uri!r}, {db_name!r}) as engine:
                engine.events.publish_control(
                    {slug!r}, {{"op": "roles", "user_id": "ada", "roles": ["reader"]}},
                    user_id="ada",
                )
                broadcast_to_channel({slug!r}, "vip", {{"after": "the change"}})
                broadcast_to_channel({slug!r}, "news", {{"news": 1}})
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert recv_json(ada) == {"type": "unsubscribed", "channel": "vip", "reason": "forbidden"}
        assert recv_json(ada) == {"news": 1}  # "vip" after the change never came
        with app.app_context():
            manager = get_websocket_manager(slug)
        assert manager.channel_counts() == {"news": 1}
        ada.close()
