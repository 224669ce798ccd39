"""Attack: listening in on channels (rooms) one may not join (issue 20, item 1).

The app grants channels by role in its RBAC policy (``channel/<name>``, ``subscribe``):
members may join ``rooms/*``, staff ``staff``. Alice (a member and staff) and the attacker
Mallory (a plain user) are signed in over real HTTP from loopback addresses of their own,
with real websockets. Mallory tries to join what she may not — directly, through names
that would be patterns in the policy's ``keyMatch2`` matching, through another app — and
tries to tell which channels exist from how she is refused; she floods the server with
channel names. Alice loses a role over HTTP while her socket is open in another server
process: she leaves the channel it granted, and nothing of it reaches her afterwards.

A message that must not arrive is checked without waiting on a clock: a marker pushed to
the same client afterwards, by the same publisher, arrives in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_apps import AppFactory

from flask_mdb import broadcast_to_channel, get_websocket_manager
from flask_mdb.auth.current import service_for_slug
from flask_mdb.testing import LiveServer
from flask_mdb.websockets import channel_authorizers, handler_registry, send_to_user

from .ws_security_support import (
    ADMIN_ADDRESS,
    ATTACKER_ADDRESS,
    SECOND_SERVER,
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

#: How long a socket may keep a channel its roles no longer grant: the role change's
#: control event, from one process to the other (its channels are authorized again when
#: the event is handed over, before any later event).
WITHIN = 2.0
MARKER = {"type": "marker"}
FORBIDDEN = {"code": "forbidden", "message": "you may not subscribe to this channel"}


def channel_manifest(slug: str) -> dict[str, Any]:
    manifest = ws_manifest(slug)
    policy = manifest["auth"]["policy"]
    policy["allowed_roles"] = ["user", "admin", "member", "staff"]
    policy["authorization"]["initial_policies"] += [
        ["member", "channel/rooms/*", "subscribe"],
        ["staff", "channel/staff", "subscribe"],
    ]
    return manifest


@pytest.fixture
def slug():
    name = f"rm{uuid.uuid4().hex[:8]}"
    yield name
    handler_registry.clear(name)
    channel_authorizers.clear(name)


@dataclass
class Site:
    app: Flask
    base: str
    slug: str
    admin_token: str

    @property
    def path(self) -> str:
        return f"/{self.slug}/ws"

    def sign_up(self, email: str, roles: list[str], address: str) -> tuple[Browser, str]:
        browser = Browser(self.base, self.slug, address)
        user_id = browser.register(email)["user"]["user_id"]
        if roles != ["user"]:
            self.set_roles(user_id, roles)
        return browser, user_id

    def set_roles(self, user_id: str, roles: list[str]) -> None:
        admin = Browser(self.base, self.slug, ADMIN_ADDRESS)
        status, body = admin.request(
            "POST", f"/admin/users/{user_id}/roles", {"roles": roles}, token=self.admin_token
        )
        assert status == 200, body

    def socket(self, browser: Browser, base: str | None = None) -> tuple[Any, dict[str, Any]]:
        return open_socket(
            base or self.base, self.path, address=browser.address, cookies=dict(browser.cookies)
        )

    def manager(self) -> Any:
        with self.app.app_context():
            return get_websocket_manager(self.slug)


@pytest.fixture
def site(mongo_uri, db_name, tmp_path, slug):
    manifests = write_manifests(tmp_path / "manifests", channel_manifest(slug))
    factory = AppFactory(mongo_uri, db_name)
    config = app_config(mongo_uri, db_name, manifests, MDB_WEBSOCKET_MAX_CHANNELS=150)
    app = install(factory(**config), [slug])
    try:
        with LiveServer(app) as server:
            with app.app_context():
                service_for_slug(slug).register_user(
                    "admin@example.com", "correct horse battery", roles=["admin"]
                )
            admin = Browser(server.url, slug, ADMIN_ADDRESS)
            yield Site(app, server.url, slug, admin.token("admin@example.com"))
    finally:
        factory.close()


def subscribe(ws: Any, channel: Any) -> Any:
    try_send(ws, {"type": "subscribe", "channel": channel})
    frames, closed = read_frames(ws, 1)
    assert closed is None and frames, closed
    return frames[0]


def marker_is_next(site: Site, ws: Any, user_id: str) -> bool:
    """Push a marker to the user: True if it is the next thing the socket gets."""
    send_to_user(site.slug, user_id, MARKER, app=site.app)
    frames, closed = read_frames(ws, 1)
    return closed is None and frames == [MARKER]


def test_a_user_cannot_join_or_probe_channels_her_roles_do_not_grant(site):
    alice, alice_id = site.sign_up("alice@example.com", ["user", "member", "staff"], VICTIM_ADDRESS)
    mallory, mallory_id = site.sign_up("mallory@example.com", ["user"], ATTACKER_ADDRESS)
    alice_ws, _ = site.socket(alice)
    mallory_ws, _ = site.socket(mallory)
    assert subscribe(alice_ws, "staff")["type"] == "subscribed"
    assert subscribe(alice_ws, "rooms/1")["type"] == "subscribed"

    # Refused the same way whether the channel has members (staff) or not (ghost): the
    # answer tells nothing about what exists.
    for name in ("staff", "ghost", "rooms/1", "rooms/2", "rooms", "staff/sub", "staffroom"):
        answer = subscribe(mallory_ws, name)
        assert answer == {"type": "error", "error": FORBIDDEN}, name
    # Names that would be patterns in the policy's keyMatch2 (or a path) are not names.
    for name in ("channel/staff", "staff:x", "rooms/*", "rooms/:id", "*", "../staff", "st.ff"):
        answer = subscribe(mallory_ws, name)
        assert answer["error"]["code"] in ("bad_channel", "forbidden"), name
        assert answer["error"]["code"] == "bad_channel" or name == "channel/staff", name
    for name in ({"$ne": None}, ["staff"], None):
        assert subscribe(mallory_ws, name)["error"]["code"] == "bad_channel"
    # A rule for one channel grants no other: staff may join "staff", not "staffroom".
    assert subscribe(alice_ws, "staffroom") == {"type": "error", "error": FORBIDDEN}

    broadcast_to_channel(site.slug, "staff", {"secret": "staff"}, app=site.app)
    broadcast_to_channel(site.slug, "rooms/1", {"secret": "room"}, app=site.app)
    assert read_frames(alice_ws, 2) == ([{"secret": "staff"}, {"secret": "room"}], None)
    assert marker_is_next(site, mallory_ws, mallory_id)
    assert site.manager().channel_counts() == {"staff": 1, "rooms/1": 1}
    # Mallory's socket was refused, never closed for trying, and learnt nothing.
    assert marker_is_next(site, alice_ws, alice_id)
    alice_ws.close()
    mallory_ws.close()


def test_channels_never_cross_apps(mongo_uri, db_name, tmp_path):
    """Mallory is a member in her own app; the victim app's "rooms/1" is another channel."""
    victim_slug, own_slug = f"va{uuid.uuid4().hex[:6]}", f"ow{uuid.uuid4().hex[:6]}"
    manifests = write_manifests(
        tmp_path / "manifests", channel_manifest(victim_slug), channel_manifest(own_slug)
    )
    factory = AppFactory(mongo_uri, db_name)
    app = install(factory(**app_config(mongo_uri, db_name, manifests)), [victim_slug, own_slug])
    try:
        with LiveServer(app) as server:
            with app.app_context():
                service_for_slug(own_slug).register_user(
                    "admin@example.com", "correct horse battery", roles=["admin"]
                )
            admin = Browser(server.url, own_slug, ADMIN_ADDRESS)
            own = Site(app, server.url, own_slug, admin.token("admin@example.com"))
            mallory, mallory_id = own.sign_up("m@example.com", ["user", "member"], ATTACKER_ADDRESS)
            ws, hello = own.socket(mallory)
            assert hello["app"] == own_slug
            assert subscribe(ws, "rooms/1")["type"] == "subscribed"
            broadcast_to_channel(victim_slug, "rooms/1", {"secret": "victim"}, app=app)
            assert marker_is_next(own, ws, mallory_id)
            broadcast_to_channel(own_slug, "rooms/1", {"own": True}, app=app)
            assert read_frames(ws, 1) == ([{"own": True}], None)
            ws.close()
    finally:
        for slug in (victim_slug, own_slug):
            handler_registry.clear(slug)
        factory.close()


def test_flooding_channel_names_is_bounded(site):
    """Mallory, a member (``rooms/*``), opens four sockets from four addresses and asks for
    thousands of rooms: each socket stops at 64 channels, the app at 150 in this process,
    and the metrics keep at most 100 channel names per counter."""
    mallory, _ = site.sign_up("mallory@example.com", ["user", "member"], ATTACKER_ADDRESS)
    sockets = []
    for index in range(4):
        browser = Browser(site.base, site.slug, f"127.0.0.{10 + index}")
        browser.cookies = dict(mallory.cookies)
        sockets.append(site.socket(browser)[0])
    joined = refused = 0
    reasons = set()
    for index, ws in enumerate(sockets):
        for room in range(80):
            answer = subscribe(ws, f"rooms/{index}-{room}")
            if answer["type"] == "subscribed":
                joined += 1
            else:
                refused += 1
                reasons.add(answer["error"]["message"])
    assert joined == 150 and refused == 4 * 80 - 150
    assert reasons == {
        "a connection may be in at most 64 channels",
        "too many channels on this server, try again later",
    }
    manager = site.manager()
    assert len(manager.channel_counts()) == 150
    labelled = manager.engine.get_metrics()["apps"][site.slug]["labelled"]["ws.channel_joined"]
    names = [entry["labels"]["channel"] for entry in labelled]
    assert len(names) == 101 and "_other" in names  # 100 names, the rest together
    assert sum(entry["value"] for entry in labelled) == 150
    for ws in sockets:
        ws.close()


def test_a_role_taken_away_takes_the_socket_out_of_its_channel_in_another_process(
    site, mongo_uri, db_name, tmp_path
):
    """Alice's socket lives in a second server process; the administrator takes her member
    role over HTTP in the first. Her socket stays (she is still a user) but leaves
    ``rooms/1`` — told so — and a room message published after the change never reaches
    it; ``staff``, still granted, keeps delivering."""
    tests_dir = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDB_MONGO")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SECOND_SERVER, mongo_uri, db_name,
         str(tmp_path / "manifests"), tests_dir, site.slug],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read()
        second = f"http://127.0.0.1:{line.strip()}"
        alice, alice_id = site.sign_up("alice@example.com", ["user", "member", "staff"],
                                       VICTIM_ADDRESS)  # fmt: skip
        ws, _ = site.socket(alice, base=second)
        assert subscribe(ws, "rooms/1")["type"] == "subscribed"
        assert subscribe(ws, "staff")["type"] == "subscribed"
        broadcast_to_channel(site.slug, "rooms/1", {"room": 1}, app=site.app)
        assert read_frames(ws, 1) == ([{"room": 1}], None)

        site.set_roles(alice_id, ["user", "staff"])
        changed_at = time.monotonic()
        broadcast_to_channel(site.slug, "rooms/1", {"room": 2}, app=site.app)
        broadcast_to_channel(site.slug, "staff", {"staff": 1}, app=site.app)
        frames, closed = read_frames(ws, 2, timeout=WITHIN + 6)
        assert closed is None
        assert frames == [  # in stream order: the change, then what was published after it
            {"type": "unsubscribed", "channel": "rooms/1", "reason": "forbidden"},
            {"staff": 1},
        ]
        assert time.monotonic() - changed_at < WITHIN
        broadcast_to_channel(site.slug, "rooms/1", {"room": 3}, app=site.app)
        assert marker_is_next(site, ws, alice_id)
        assert subscribe(ws, "rooms/1") == {"type": "error", "error": FORBIDDEN}
        ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_membership_ends_with_a_revoked_login(site):
    alice, _ = site.sign_up("alice@example.com", ["user", "member"], VICTIM_ADDRESS)
    ws, _ = site.socket(alice)
    assert subscribe(ws, "rooms/1")["type"] == "subscribed"
    manager = site.manager()
    assert manager.channel_counts() == {"rooms/1": 1}
    status, body = alice.request("POST", "/auth/logout", {})
    assert status == 200, body
    _, closed = read_frames(ws, timeout=5)
    assert closed == (4401, "credentials revoked")
    broadcast_to_channel(site.slug, "rooms/1", {"after": "logout"}, app=site.app)
    deadline = time.monotonic() + 5
    while manager.channel_counts() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.channel_counts() == {}
