"""One round trip to know the user (issue 18, item 3), and no cache between a revocation
and the next request.

A request with a session cookie reads its session together with its user (one aggregation
with a ``$lookup``); a request with a bearer token reads its user together with the token's
deny-list entries; a websocket handshake and each message's re-check do the same. Each test
counts, over real HTTP and websockets from distinct client addresses, the commands that read
a session, a user or the deny-list (exactly one per request), then revokes the login from
*another process* (a script with an engine of its own, as an administrator or a second web
worker would) and shows that the very next request or message is refused — nothing in the
serving process remembered the user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from auth_apps import PASSWORD, SECRET
from flask_apps import AppFactory

from flask_mdb.testing import LiveServer
from flask_mdb.websockets import handler_registry

from .ws_security_support import (
    ATTACKER_ADDRESS,
    VICTIM_ADDRESS,
    Browser,
    app_config,
    install,
    open_socket,
    read_frames,
    try_send,
    write_manifests,
    ws_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
#: Commands that read one of these collections are how a request learns its user.
IDENTITY_COLLECTIONS = ("mdb_auth_sessions", "mdb_auth_denylist", "mdb_auth_users")
READS = ("find", "aggregate")


class Site:
    def __init__(
        self, base: str, slug: str, recorder: Any, db_name: str, uri: str, strategy: str
    ) -> None:
        self.base, self.slug, self.recorder = base, slug, recorder
        self.db_name, self.uri = db_name, uri
        #: Where the app's users are stored.
        self.users = "mdb_auth_users" if strategy == "global_users" else f"{slug}_users"

    def identity_reads(self) -> list[dict[str, Any]]:
        """The commands recorded since the last ``clear()`` that read a session, a user or
        the deny-list (a ``$lookup`` inside an aggregation counts with its aggregation)."""
        watched = {*IDENTITY_COLLECTIONS, f"{self.slug}_users"}
        return [
            body
            for body in self.recorder.commands(*READS)
            if body.get("find", body.get("aggregate")) in watched
        ]

    def in_another_process(self, code: str) -> None:
        """Run ``code`` with ``auth``, the app's AuthService on an engine of its own."""
        script = textwrap.dedent(
            f"""
            from mdb_sync import MongoDBEngine
            from mdb_sync.auth import AuthService, PasswordHasher
            with MongoDBEngine({self.uri!r}, {self.db_name!r}) as engine:
                auth = AuthService(engine, {self.slug!r}, secret={SECRET!r},
                                   hasher=PasswordHasher(n=4096), seed=False)
            """
        ) + textwrap.indent(textwrap.dedent(code), "    ")
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(params=["app_users", "global_users"])
def site(request, mongo_uri, db_name, tmp_path, recorder):
    slug = f"one{uuid.uuid4().hex[:8]}"
    manifests = write_manifests(tmp_path / "manifests", ws_manifest(slug, strategy=request.param))
    factory = AppFactory(mongo_uri, db_name, recorder)
    app = install(factory(**app_config(mongo_uri, db_name, manifests)), [slug])
    try:
        with LiveServer(app) as server:
            yield Site(server.url, slug, recorder, db_name, mongo_uri, request.param)
    finally:
        handler_registry.clear(slug)
        factory.close()


def _me(browser: Browser, token: str | None = None) -> tuple[int, Any]:
    return browser.request("GET", "/auth/me", token=token)


def test_a_session_request_learns_its_user_in_one_round_trip(site):
    victim = Browser(site.base, site.slug, VICTIM_ADDRESS)
    user_id = victim.register("victim@example.com")["user"]["user_id"]
    for _ in range(3):
        site.recorder.clear()
        status, body = _me(victim)
        assert (status, body["user"]["email"]) == (200, "victim@example.com")
        (read,) = site.identity_reads()
        assert read["aggregate"] == "mdb_auth_sessions"
        lookups = [s["$lookup"] for s in read["pipeline"] if "$lookup" in s]
        assert [lookup["from"] for lookup in lookups] == [site.users]
    # Deactivated by another process: the next request is refused, reading no cache.
    site.in_another_process(f"auth.deactivate({user_id!r})")
    site.recorder.clear()
    assert _me(victim)[0] == 401
    assert len(site.identity_reads()) == 1


def test_a_password_changed_elsewhere_ends_the_session_at_the_next_request(site):
    victim = Browser(site.base, site.slug, VICTIM_ADDRESS)
    user_id = victim.register("victim@example.com")["user"]["user_id"]
    assert _me(victim)[0] == 200
    site.in_another_process(
        f"auth.change_password({user_id!r}, {PASSWORD!r}, 'another horse battery')"
    )
    site.recorder.clear()
    assert _me(victim)[0] == 401
    assert len(site.identity_reads()) == 1


def test_a_bearer_request_learns_its_user_and_revocation_in_one_round_trip(site):
    victim = Browser(site.base, site.slug, VICTIM_ADDRESS)
    victim.register("victim@example.com")
    token = victim.token("victim@example.com")
    for _ in range(3):
        site.recorder.clear()
        status, body = _me(victim, token)
        assert (status, body["user"]["email"]) == (200, "victim@example.com")
        (read,) = site.identity_reads()
        assert read["aggregate"] == site.users
        (lookup,) = [s["$lookup"] for s in read["pipeline"] if "$lookup" in s]
        assert lookup["from"] == "mdb_auth_denylist"
    # Logged out by another process (its refresh family and the token denied there).
    site.in_another_process(f"auth.revoke_token({token!r})")
    site.recorder.clear()
    assert _me(victim, token)[0] == 401
    assert len(site.identity_reads()) == 1


def test_a_bearer_token_of_a_deleted_user_reads_as_revoked(site):
    """The user gone and the token denied: the refusal says revoked (the deny-list is read
    on its own when the user is missing — the only case with a second read)."""
    victim = Browser(site.base, site.slug, VICTIM_ADDRESS)
    user_id = victim.register("victim@example.com")["user"]["user_id"]
    token = victim.token("victim@example.com")
    site.in_another_process(
        f"""
        auth.deactivate({user_id!r})
        users = engine._raw_collection(auth.users.source)
        assert users.delete_one({{"_id": __import__("bson").ObjectId({user_id!r})}}).deleted_count
        """
    )
    assert _me(victim, token)[0] == 401


def test_a_websocket_handshake_and_each_message_learn_the_user_in_one_round_trip(site):
    victim = Browser(site.base, site.slug, VICTIM_ADDRESS)
    user_id = victim.register("victim@example.com")["user"]["user_id"]
    site.recorder.clear()
    ws, hello = open_socket(
        site.base, f"/{site.slug}/ws", address=ATTACKER_ADDRESS, cookies=dict(victim.cookies)
    )
    try:
        assert hello["type"] == "connected"
        assert len(site.identity_reads()) == 1, "the handshake"
        for n in range(3):
            site.recorder.clear()
            try_send(ws, {"type": "note", "text": f"n{n}"})
            frames, closed = read_frames(ws, 1)
            assert (frames, closed) == ([{"type": "noted"}], None)
            assert len(site.identity_reads()) == 1, "the re-check before the handler"
        # Deactivated by another process, without any event reaching this one in time or
        # not: the next message is not handled and the socket closes.
        site.in_another_process(f"auth.deactivate({user_id!r})")
        try_send(ws, {"type": "note", "text": "after"})
        frames, closed = read_frames(ws, timeout=5)
        assert frames == [] and closed == (4401, "credentials revoked")
    finally:
        ws.close()


def test_the_service_reads_one_round_trip_without_flask(engine, recorder):
    """``load_session``, ``user_from_token`` and the re-check, called directly: one read."""
    from auth_apps import auth_manifest

    from mdb_sync.auth import AuthService, PasswordHasher, revocation

    engine.register_app(auth_manifest("direct"))
    auth = AuthService(engine, "direct", secret=SECRET, hasher=PasswordHasher(n=4096))
    user = auth.register_user("ada@example.com", PASSWORD)
    sid, session = auth.start_session(user)
    token = auth.issue_tokens(user)["access_token"]
    identity = {
        "user_id": user["user_id"],
        "auth_version": 0,
        "session": {"id": session["_id"], "expires_at": session["expires_at"]},
    }
    for call in (
        lambda: auth.load_session(sid),
        lambda: auth.user_from_token(token),
        lambda: revocation.recheck(auth, identity),
    ):
        recorder.clear()
        assert call()
        reads = [
            c
            for c in recorder.commands(*READS)
            if c.get("find", c.get("aggregate")) != engine.registry.collection.name
        ]
        assert len(reads) == 1, reads


def test_a_revocation_announced_during_a_handshake_makes_the_admission_read_again(engine):
    """The handshake's single read stands only while no revocation event arrived since it
    began: the manager's mark says when one did (then the admission reads the login again)."""
    from flask_mdb.websockets.manager import WebSocketManager
    from mdb_sync.auth import revocation

    engine.get_scoped_db("marked")
    manager = WebSocketManager("marked", engine)
    mark = manager.control_mark()
    assert not manager.controls_since(mark)
    engine.events.publish("marked", {"type": "news"})
    assert not manager.controls_since(mark)
    revocation.session_ended(engine, "marked", ["a-session-digest"])
    assert manager.controls_since(mark)  # delivered locally on the publishing thread
    assert not manager.controls_since(manager.control_mark())
