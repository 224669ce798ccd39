"""The event bus's control events (``EventBus.publish_control``): the server's instructions
to connection managers (revoked credentials), carried with the messages in both tailing
modes, handed only to subscribers that ask for them, and never made from a message."""

from __future__ import annotations

import pytest
from realtime_support import Inbox, wait_for

from mdb_sync import MongoDBEngine
from mdb_sync.auth import revocation
from mdb_sync.realtime import Event
from mdb_sync.realtime.events import CONTROL, MESSAGE

REVOKE = {"op": "revoke", "scope": "user", "user_id": "u1", "min_version": 2}


@pytest.fixture
def engines(mongo_uri, db_name):
    """Two engines on the same database, each standing for a process of its own."""
    made = []

    def make(mode: str) -> MongoDBEngine:
        engine = MongoDBEngine(mongo_uri, db_name)
        engine.initialize()
        engine.events.configure(mode=mode)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.shutdown()


@pytest.mark.parametrize("mode", ["change_stream", "tailable"])
def test_control_events_reach_only_control_subscribers_in_every_process(engines, mode):
    here, there = engines(mode), engines(mode)
    for engine in (here, there):
        engine.register_app({"slug": "chat", "name": "chat"})
    plain_here, control_here, plain_there, control_there = Inbox(), Inbox(), Inbox(), Inbox()
    here.events.subscribe("chat", plain_here)
    here.events.subscribe("chat", control_here, control=True)
    there.events.subscribe("chat", plain_there)
    there.events.subscribe("chat", control_there, control=True)

    here.events.publish_control("chat", REVOKE, user_id="u1")
    here.events.publish("chat", {"type": "after"})
    for inbox in (control_here, control_there):
        inbox.wait(2)
        assert [e.kind for e in inbox.events] == [CONTROL, MESSAGE]  # in order
        control = inbox.events[0]
        assert (control.user_id, revocation.parse_control(control.data)) == ("u1", REVOKE)
    for inbox in (plain_here, plain_there):
        wait_for(lambda inbox=inbox: inbox.events, what="the message")
        assert inbox.messages == [{"type": "after"}]


def test_a_message_never_becomes_a_control_event(engine):
    engine.register_app({"slug": "chat", "name": "chat"})
    inbox = Inbox()
    engine.events.subscribe("chat", inbox, control=True)
    event = engine.events.publish("chat", REVOKE, user_id="u1")  # shaped like one
    assert event.kind == MESSAGE and inbox.events[0].kind == MESSAGE
    stored = event.to_document()
    assert "kind" not in stored
    assert Event.from_document({**stored, "kind": "control"}).kind == CONTROL
    assert Event.from_document({**stored, "kind": "anything else"}) is None
    assert revocation.parse_control('{"op": "delete everything", "scope": "user"}') is None
