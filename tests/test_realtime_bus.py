"""The event bus (``engine.events``): local delivery, delivery to other processes through
MongoDB with a change stream or a tailable cursor, per-app scoping, order, resuming without
duplicates, fork safety, bad messages."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal

import pytest
from bson import Decimal128, ObjectId
from realtime_support import Inbox, wait_for

from mdb_sync import MongoDBEngine
from mdb_sync.exceptions import (
    AppNotFoundError,
    ConfigurationError,
    InvalidMessageError,
    RealtimeError,
    ResourceLimitExceeded,
    ScopeError,
)
from mdb_sync.realtime import EVENTS_COLLECTION, broadcast_to_app, send_to_user
from mdb_sync.realtime.store import server_scans_capped_inserts

MODES = ["change_stream", "tailable"]


@pytest.fixture
def engines(mongo_uri, db_name, recorder):
    """Two engines on the same database: each stands for a process of its own (a bus has
    its own origin, listener and subscribers)."""
    made = []

    def make(mode="change_stream", **options):
        engine = MongoDBEngine(mongo_uri, db_name, event_listeners=[recorder], **options)
        engine.initialize()
        engine.events.configure(mode=mode)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.shutdown()


def _listener_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mdb-realtime-")]


def test_local_subscribers_get_the_event_before_publish_returns(engine, raw_db):
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    event = engine.events.publish("chat", {"type": "hello", "n": 1})
    assert inbox.messages == [{"type": "hello", "n": 1}]  # no wait: delivered in publish()
    stored = raw_db[EVENTS_COLLECTION].find_one({"_id": event.id})
    assert stored["app_id"] == "chat"
    assert json.loads(stored["data"]) == {"type": "hello", "n": 1}
    assert stored["origin"] == engine.events.origin
    # Capped, except on a server whose capped inserts scan the collection (the embedded
    # one): there a plain collection, trimmed (see test_a_plain_store_is_trimmed...).
    scans = server_scans_capped_inserts(raw_db[EVENTS_COLLECTION])
    assert bool(raw_db[EVENTS_COLLECTION].options().get("capped")) is not scans


def test_local_only_stays_in_the_process(engine, raw_db):
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    engine.events.publish("chat", {"n": 1}, local_only=True)
    assert inbox.messages == [{"n": 1}]
    assert raw_db[EVENTS_COLLECTION].count_documents({"data": {"$regex": "n"}}) == 0


@pytest.mark.parametrize("mode", MODES)
def test_other_processes_receive_events_in_order_and_only_their_apps(engines, mode):
    web, worker = engines(mode), engines(mode)
    chat, other = Inbox(), Inbox()
    web.events.subscribe("chat", chat)
    web.events.subscribe("other", other)
    assert web.events.listening_mode == mode
    for i in range(50):
        worker.events.publish("chat", {"i": i})
        worker.events.publish("elsewhere", {"i": i})  # nobody here listens to it
    worker.events.publish("other", {"last": True})
    assert chat.wait(50) == [{"i": i} for i in range(50)]  # one publisher: its order
    assert other.wait(1) == [{"last": True}]
    assert all(e.app_id == "chat" for e in chat.events)
    assert all(e.origin == worker.events.origin for e in chat.events)


def test_the_listener_asks_the_server_only_for_its_apps(engines, recorder):
    web = engines()
    web.events.subscribe("chat", Inbox())
    streams = [
        c
        for c in recorder.commands("aggregate")
        if c.get("aggregate") == EVENTS_COLLECTION and "$changeStream" in c["pipeline"][0]
    ]
    assert streams, "no change stream was opened on the events collection"
    assert streams[-1]["pipeline"][1]["$match"]["fullDocument.app_id"] == {"$in": ["chat"]}


@pytest.mark.parametrize("mode", MODES)
def test_a_process_does_not_receive_its_own_events_twice(engines, mode):
    web, worker = engines(mode), engines(mode)
    inbox, remote = Inbox(), Inbox()
    web.events.subscribe("chat", inbox)
    worker.events.subscribe("chat", remote)
    for i in range(5):
        web.events.publish("chat", {"i": i})
    assert remote.wait(5) == [{"i": i} for i in range(5)]  # the stream carried them...
    worker.events.publish("chat", {"marker": True})
    inbox.wait(6)
    assert inbox.messages == [*({"i": i} for i in range(5)), {"marker": True}]  # ...once here


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_listener_resumes_without_losing_or_repeating(
    engines, raw_client, db_name, recorder, mode
):
    """Kill the listener's server cursor between events: it resumes after the last event it
    handed over, so nothing is lost and nothing is delivered twice."""
    web, worker = engines(mode), engines(mode)
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    for i in range(10):
        worker.events.publish("chat", {"i": i})
    inbox.wait(10)
    killed = _kill_event_cursors(raw_client, db_name, recorder)
    assert killed, "found no server cursor on the events collection to kill"
    for i in range(10, 20):
        worker.events.publish("chat", {"i": i})
    assert inbox.wait(20) == [{"i": i} for i in range(20)]
    # A new app's subscription reopens the change stream from the last token: still exact.
    web.events.subscribe("second", Inbox())
    for i in range(20, 30):
        worker.events.publish("chat", {"i": i})
    assert inbox.wait(30) == [{"i": i} for i in range(30)]
    worker.events.publish("chat", {"done": True})
    assert inbox.wait(31)[-1] == {"done": True}
    assert len(inbox.events) == 31


def _kill_event_cursors(raw_client, db_name, recorder):
    """Kill the server cursors the listener reads from (their ids are in its getMores)."""
    ids = {
        c["getMore"] for c in recorder.commands("getMore") if c["collection"] == EVENTS_COLLECTION
    }
    if ids:
        raw_client[db_name].command("killCursors", EVENTS_COLLECTION, cursors=sorted(ids))
    return ids


def test_tailing_needs_a_capped_collection(engines, raw_db):
    raw_db.create_collection(EVENTS_COLLECTION)  # someone made it uncapped
    web = engines("tailable")
    with pytest.raises(RealtimeError, match="not a capped collection"):
        # The listener keeps failing; publishing still works (inserts need no cap).
        web.events.collection(require_capped=True)
    web.events.publish("chat", {"ok": True})


def test_health_reports_a_listener_that_cannot_read(engines, raw_db):
    raw_db.create_collection(EVENTS_COLLECTION)  # uncapped: a tailing listener cannot read it
    web = engines("tailable")
    health = web.get_health_status()
    assert health["status"] == "healthy" and health["realtime"]["state"] == "idle"

    web.events.subscribe("chat", Inbox(), wait=0.2)
    health = wait_for(
        lambda: (h := web.get_health_status())["realtime"]["state"] == "retrying" and h,
        what="the listener to fail",
    )
    assert health["status"] == "degraded"
    assert health["realtime"]["subscribed_apps"] == ["chat"]
    assert "not a capped collection" in health["realtime"]["error"]
    assert "not being received" in health["realtime"]["reason"]

    raw_db.drop_collection(EVENTS_COLLECTION)
    raw_db.create_collection(EVENTS_COLLECTION, capped=True, size=1 << 20)
    health = wait_for(
        lambda: (h := web.get_health_status())["realtime"]["state"] == "listening" and h,
        what="the listener to recover",
    )
    assert health["status"] == "healthy" and health["realtime"]["error"] is None

    web.events.stop()
    health = web.get_health_status()
    assert health["status"] == "degraded" and health["realtime"]["state"] == "stopped"


def test_messages_are_json_encoded_once_with_bson_values(engine):
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    oid = ObjectId()
    when = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.timezone.utc)
    event = engine.events.publish(
        "chat", {"id": oid, "at": when, "price": Decimal128("1.10"), "d": Decimal("2.5")}
    )
    assert json.loads(event.data) == {
        "id": str(oid),
        "at": "2024-01-15T10:00:00Z",
        "price": "1.10",
        "d": "2.5",
    }
    assert inbox.events[0].data is event.data  # the same text for every recipient


def test_bad_messages_are_refused_and_nothing_is_stored(mongo_uri, db_name, raw_db):
    with MongoDBEngine(mongo_uri, db_name, implicit_apps=False) as engine:
        engine.register_app({"slug": "chat", "name": "chat"})
        inbox = Inbox()
        engine.events.subscribe("chat", inbox)
        with pytest.raises(InvalidMessageError, match="JSON"):
            engine.events.publish("chat", {"obj": object()})
        with pytest.raises(InvalidMessageError, match="JSON"):
            engine.events.publish("chat", {"x": float("nan")})
        engine.events.configure(max_message_bytes=100)
        with pytest.raises(ResourceLimitExceeded, match="more than the 100 allowed"):
            engine.events.publish("chat", {"text": "é" * 60})
        with pytest.raises(AppNotFoundError):
            engine.events.publish("nobody", {"x": 1})
        with pytest.raises(ScopeError):
            engine.events.publish("mdb_x", {"x": 1})
        with pytest.raises(InvalidMessageError, match="user_id"):
            engine.events.publish("chat", {"x": 1}, user_id={"$gt": ""})
        with pytest.raises(ConfigurationError):
            engine.events.configure(mode="carrier-pigeon")
        assert inbox.events == []
        assert raw_db[EVENTS_COLLECTION].count_documents({"app_id": {"$ne": None}}) == 0


def test_targets_user_and_connection_and_exclusions(engine):
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    engine.events.publish("chat", {"n": 1}, user_id=ObjectId("65a5f0000000000000000001"))
    engine.events.publish("chat", {"n": 2}, connection_id="c1", exclude=["c2", "c2"])
    first, second = inbox.events
    assert first.user_id == "65a5f0000000000000000001"
    assert first.reaches("any", "65a5f0000000000000000001")
    assert not first.reaches("any", "someone-else")
    assert second.reaches("c1", None) and not second.reaches("c3", None)
    assert second.exclude == ("c2",)


def test_module_functions_find_the_processes_engine(engines):
    web, worker = engines(), engines()
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    worker.register_app({"slug": "chat", "name": "chat"})
    with pytest.raises(RealtimeError, match="several engines"):
        broadcast_to_app("chat", {"x": 1})
    broadcast_to_app("chat", {"x": 1}, engine=worker)
    send_to_user("chat", "u1", {"x": 2}, engine=worker)
    assert inbox.wait(2) == [{"x": 1}, {"x": 2}]
    assert inbox.events[1].user_id == "u1"


def test_shutdown_stops_the_listener(mongo_uri, db_name):
    before = len(_listener_threads())
    engine = MongoDBEngine(mongo_uri, db_name)
    engine.initialize()
    engine.events.subscribe("chat", Inbox())
    assert len(_listener_threads()) == before + 1
    engine.shutdown()
    assert len(_listener_threads()) == before
    assert engine.events.listening_mode is None


def _publish_in_forked_child(engine, queue):
    try:
        engine.events.publish("chat", {"from": "child", "pid": os.getpid()})
        queue.put(("ok", engine.events.origin))
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_publishes_with_an_origin_of_its_own(engine):
    """A child forked after the parent subscribed (gunicorn --preload, Celery prefork) has no
    listener and a new origin, so the parent's listener delivers the child's events."""
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_publish_in_forked_child, args=(engine, queue))
    child.start()
    status, origin = queue.get(timeout=30)
    child.join(30)
    assert status == "ok", origin
    assert origin != engine.events.origin
    assert inbox.wait(1)[0]["from"] == "child"


def test_a_script_in_another_process_reaches_this_process(engine, mongo_uri, db_name):
    inbox = Inbox()
    engine.events.subscribe("chat", inbox)
    script = textwrap.dedent(
        f"""
        from mdb_sync import MongoDBEngine
        from mdb_sync.realtime import broadcast_to_app
        with MongoDBEngine({mongo_uri!r}, {db_name!r}):
            for i in range(3):
                broadcast_to_app("chat", {{"i": i}})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert inbox.wait(3) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_the_mode_comes_from_the_environment(monkeypatch, mongo_uri, db_name):
    monkeypatch.setenv("MDB_REALTIME_MODE", "tailable")
    with MongoDBEngine(mongo_uri, db_name) as engine:
        inbox = Inbox()
        engine.events.subscribe("chat", inbox)
        assert engine.events.listening_mode == "tailable"
    monkeypatch.setenv("MDB_REALTIME_MODE", "smoke-signals")
    with pytest.raises(ConfigurationError, match="MDB_REALTIME_MODE"):
        MongoDBEngine(mongo_uri, db_name).events  # noqa: B018


@pytest.mark.parametrize("mode", MODES)
def test_a_restarted_listener_delivers_what_was_published_meanwhile(engines, mode):
    web, worker = engines(mode), engines(mode)
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    for i in range(5):
        worker.events.publish("chat", {"i": i})
    inbox.wait(5)
    web.events.stop()
    for i in range(5, 10):
        worker.events.publish("chat", {"i": i})  # nobody listens in the web process now
    web.events.start()
    assert inbox.wait(10) == [{"i": i} for i in range(10)]
    worker.events.publish("chat", {"done": True})
    assert inbox.wait(11)[-1] == {"done": True} and len(inbox.events) == 11


def test_a_refused_resume_token_falls_back_to_the_operation_time(engines, caplog):
    """Some servers refuse a token they issued themselves (the embedded server stamps an idle
    stream's token with the namespace of the last write anywhere): the listener then resumes
    from the last operation time it saw, skipping what it had already delivered."""
    web, worker = engines(), engines()
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    for i in range(5):
        worker.events.publish("chat", {"i": i})
    inbox.wait(5)
    web.events.stop()
    for i in range(5, 10):
        worker.events.publish("chat", {"i": i})
    web.events._resume_point.token = {"_data": "826B0000000000000000"}  # no server takes it
    with caplog.at_level("INFO", logger="mdb_sync.realtime.listener"):
        web.events.start()
        assert inbox.wait(10) == [{"i": i} for i in range(10)]
    assert "resuming by time" in caplog.text
    worker.events.publish("chat", {"done": True})
    assert inbox.wait(11)[-1] == {"done": True} and len(inbox.events) == 11


def test_a_tailing_listener_that_fell_behind_the_capped_window_reports_the_gap(engines):
    web, worker = engines("tailable"), engines("tailable")
    for engine in (web, worker):
        engine.events.configure(capped_bytes=4096, gap_grace=0.2)
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    worker.events.publish("chat", {"i": 0})
    inbox.wait(1)
    web.events.stop()
    for i in range(1, 101):  # far more than 4 KB: the last event read is pushed out
        worker.events.publish("chat", {"i": i, "pad": "x" * 50})
    web.events.start()
    worker.events.publish("chat", {"i": 101})
    wait_for(lambda: inbox.messages[-1]["i"] == 101, what="the newest event")
    received = [m["i"] for m in inbox.messages]
    assert received[0] == 0 and received[-1] == 101
    assert received[1:] == list(range(received[1], 102)), "what is left arrives, in order"
    assert received[1] > 1, "the oldest events were gone"
    # Exactly the events pushed out are counted lost, once their grace is over.
    wait_for(lambda: _counter(web, "realtime.gaps", "chat") == received[1] - 1, what="gaps")
    assert _counter(web, "realtime.overflows") == 1


def _counter(engine, name, app=None):
    apps = engine.get_metrics()["apps"]
    if app is not None:
        return apps.get(app, {}).get("counters", {}).get(name, 0)
    return sum(c.get("counters", {}).get(name, 0) for c in apps.values())


@pytest.mark.parametrize("mode", MODES)
def test_a_new_subscription_does_not_receive_old_events_even_after_a_reconnect(
    engines, raw_client, db_name, recorder, mode
):
    web, worker = engines(mode), engines(mode)
    chat, news = Inbox(), Inbox()
    web.events.subscribe("chat", chat)
    worker.events.publish("chat", {"i": 0})
    chat.wait(1)
    for i in range(5):
        worker.events.publish("news", {"old": i})  # before anyone here listens to news
    worker.events.publish("chat", {"i": 1})
    chat.wait(2)  # read after the old news: this process is past them
    web.events.subscribe("news", news)
    worker.events.publish("news", {"new": 0})
    assert news.wait(1) == [{"new": 0}]
    assert _kill_event_cursors(raw_client, db_name, recorder)  # reconnect, catch up
    worker.events.publish("news", {"new": 1})
    worker.events.publish("chat", {"i": 2})
    assert chat.wait(3) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert news.wait(2) == [{"new": 0}, {"new": 1}]


# --- the store: capped, or plain and trimmed ------------------------------------------------------


def test_a_plain_store_is_trimmed_to_its_bounds(engines, raw_db):
    """Where capped inserts scan the collection (the embedded server), events are kept in a
    plain collection that publishers trim in the background — by count and by bytes — and
    delivery across processes is unchanged."""
    web, worker = engines(), engines()
    for engine in (web, worker):
        engine.events.configure(store="plain", max_events=100)
    inbox = Inbox()
    web.events.subscribe("chat", inbox)
    for i in range(600):
        worker.events.publish("chat", {"i": i})
    assert [m["i"] for m in inbox.wait(600)] == list(range(600))
    assert worker.events.store_kind == "plain" and not raw_db[EVENTS_COLLECTION].options()
    # Trimmed in the background after the 1st, 257th and 513th event: bounded meanwhile.
    wait_for(
        lambda: raw_db[EVENTS_COLLECTION].count_documents({}) <= 100 + 600 - 513,
        what="the background trims",
    )
    worker.events.trim()
    left = [json.loads(d["data"])["i"] for d in raw_db[EVENTS_COLLECTION].find({}, {"data": 1})]
    assert sorted(left) == list(range(500, 600))  # exactly the newest 100 stay
    # Bytes bound too (capped_bytes): big messages leave fewer events — as many of the
    # newest as fit (1,018 bytes of message + 160 each: 6 in 8,192), events published
    # within the same millisecond included.
    worker.events.configure(capped_bytes=8192)
    for i in range(20):
        worker.events.publish("chat", {"i": 600 + i, "pad": "x" * 1000})
    worker.events.trim()
    stored = list(raw_db[EVENTS_COLLECTION].find({}, {"size": 1, "data": 1}))
    assert sum(d["size"] + 160 for d in stored) <= 8192
    assert sorted(json.loads(d["data"])["i"] for d in stored) == list(range(614, 620))
    worker.events.publish("chat", {"after": "trim"})
    assert inbox.wait(621)[-1] == {"after": "trim"}


def test_a_trim_keeps_the_newest_of_events_sharing_a_date(engine, raw_db):
    """Dates have millisecond precision: where a bound falls among events of one date, the
    newest of them (by id, the order a process makes them in) are kept, the rest deleted —
    not every event of that date."""
    engine.events.configure(store="plain", max_events=4)
    raw = engine.events.collection()  # the plain store (no publish: no background trim)
    same = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    raw.insert_one({"app_id": "chat", "data": "{}", "created_at": same - dt.timedelta(seconds=1)})
    ids = [ObjectId() for _ in range(10)]
    raw.insert_many(
        [{"_id": i, "app_id": "chat", "data": "{}", "created_at": same, "size": 2} for i in ids]
    )
    assert engine.events.trim() == 7  # the older event and the 6 oldest of the same date
    assert sorted(d["_id"] for d in raw_db[EVENTS_COLLECTION].find()) == ids[-4:]
    # The bytes bound falls among them the same way.
    engine.events.configure(capped_bytes=4096, max_events=100)
    assert engine.events.trim() == 0
    big = [ObjectId() for _ in range(5)]
    raw.insert_many(
        [{"_id": i, "app_id": "chat", "data": "{}", "created_at": same, "size": 1000} for i in big]
    )
    engine.events.trim()
    # The big ones have the newer ids: 3 of 1,160 bytes fit in 4,096, the older ones go.
    assert sorted(d["_id"] for d in raw_db[EVENTS_COLLECTION].find()) == big[-3:]


def test_a_trim_due_while_one_runs_is_not_dropped(engine, raw_db):
    """A trim that falls due while the previous one still runs is run after it, with the
    newest bounds: a slow trim never leaves the store unbounded for another period."""
    from mdb_sync.realtime.store import Trimmer

    engine.events.configure(store="plain")
    raw = engine.events.collection()
    now = dt.datetime.now(dt.timezone.utc)
    raw.insert_many(
        [{"app_id": "chat", "data": "{}", "created_at": now, "size": 2} for _ in range(300)]
    )
    trimmer = Trimmer(every=1)
    assert trimmer.stored(raw, 200, 1 << 30) is True  # started
    trimmer.stored(raw, 50, 1 << 30)  # due now: runs after it, if it is still running
    assert trimmer.wait_idle()
    assert raw.count_documents({}) == 50
    assert trimmer.deleted == 250


def test_the_store_kind_can_be_chosen(engines, raw_db, raw_client, db_name):
    capped = engines()
    capped.events.configure(store="capped", capped_bytes=1 << 20)
    capped.events.publish("chat", {"n": 1})
    assert raw_db[EVENTS_COLLECTION].options()["capped"] is True
    assert capped.events.store_kind == "capped" and capped.events.trim() == 0
    with pytest.raises(ConfigurationError, match="store must be one of"):
        capped.events.configure(store="redis")
    with pytest.raises(ConfigurationError, match="max_events"):
        capped.events.configure(max_events=0)
    # A tailing listener needs a capped collection: "auto" never makes a plain one for it.
    raw_client.drop_database(db_name)
    tailing = engines("tailable")
    tailing.events.publish("chat", {"n": 2})
    assert raw_db[EVENTS_COLLECTION].options()["capped"] is True
