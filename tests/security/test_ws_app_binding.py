"""Attack: a websocket endpoint authenticating against another app (issue 14, item 14).

One Flask process serves ``alice_app`` (its default app, ``MDB_APP_SLUG``) and
``mallory_app``. The request hooks run with alice's app bound and cache its auth before the
websocket hook binds the endpoint's own app; the endpoint then read alice's session cookie
for mallory's socket. Each endpoint must authenticate against its own app: a mallory user
gets in on ``/mallory/ws`` and an alice user does not, whatever cookies the browser holds.
"""

from __future__ import annotations

import pytest
from flask_apps import AppFactory

from flask_mdb.testing import LiveServer
from flask_mdb.websockets import handler_registry

from .ws_security_support import (
    Browser,
    app_config,
    install,
    open_socket,
    refused,
    write_manifests,
    ws_manifest,
)

ALICE, MALLORY = "alice_app", "mallory_app"


@pytest.fixture
def served(mongo_uri, db_name, tmp_path):
    alice = ws_manifest(ALICE)
    alice["websockets"]["live"]["path"] = "/ws"
    mallory = ws_manifest(MALLORY)
    mallory["websockets"]["live"]["path"] = "/mallory/ws"
    manifests = write_manifests(tmp_path / "manifests", alice, mallory)
    factory = AppFactory(mongo_uri, db_name)
    app = install(factory(**app_config(mongo_uri, db_name, manifests, MDB_APP_SLUG=ALICE)), [])
    try:
        with LiveServer(app) as server:
            yield server.url
    finally:
        for slug in (ALICE, MALLORY):
            handler_registry.clear(slug)
        factory.close()


def test_a_mallory_user_is_identified_by_mallorys_endpoint(served):
    mallory = Browser(served, MALLORY, "127.0.0.3")
    user_id = mallory.register("mallory@example.com")["user"]["user_id"]
    ws, hello = open_socket(served, "/mallory/ws", cookies=dict(mallory.cookies))
    assert (hello["app"], hello["user_id"]) == (MALLORY, user_id)
    ws.close()
    ws, hello = open_socket(served, "/mallory/ws", token=mallory.token("mallory@example.com"))
    assert (hello["app"], hello["user_id"]) == (MALLORY, user_id)
    ws.close()


def test_each_endpoint_reads_only_its_own_apps_login(served):
    alice = Browser(served, ALICE, "127.0.0.2")
    alice_id = alice.register("alice@example.com")["user"]["user_id"]
    mallory = Browser(served, MALLORY, "127.0.0.3")
    mallory_id = mallory.register("mallory@example.com")["user"]["user_id"]

    # Another app's login opens nothing.
    assert refused(served, "/mallory/ws", cookies=dict(alice.cookies)) == (
        1008,
        "authentication required",
    )
    assert refused(served, "/ws", cookies=dict(mallory.cookies)) == (
        1008,
        "authentication required",
    )
    assert refused(served, "/mallory/ws", token=alice.token("alice@example.com")) == (
        1008,
        "invalid or expired token",
    )
    # A browser signed in to both apps is each app's own user on each endpoint.
    both = {**alice.cookies, **mallory.cookies}
    ws, hello = open_socket(served, "/mallory/ws", cookies=both)
    assert (hello["app"], hello["user_id"]) == (MALLORY, mallory_id)
    ws.close()
    ws, hello = open_socket(served, "/ws", cookies=both)
    assert (hello["app"], hello["user_id"]) == (ALICE, alice_id)
    ws.close()
