"""One user never reaches another user's memories by id.

A chat app serves each signed-in user's memories over HTTP. Eve, signed in from her own
address, knows (or guesses) the id of one of Alice's memories and asks to read it, its
history, to change it and to delete it: every door answers 404 and Alice's memory is intact.
The easy mistake — an endpoint that forgets to pass the user — no longer leaks: the memory
service refuses to run without a user (``all_users=True`` is the explicit, admin-only way).
"""

from __future__ import annotations

import pytest
from auth_apps import PASSWORD, auth_config, auth_manifest, write
from flask import abort, request

from flask_mdb import MDB
from flask_mdb.auth import get_current_user, require_role
from flask_mdb.testing import LiveServer

from .attack import Call, send

pytest_plugins = ("openai_server",)

EVE, ALICE = "127.0.0.66", "127.0.0.77"
SECRET_TEXT = "Alice's bank PIN is 4321"


@pytest.fixture
def url(factory, tmp_path, llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("MDB_LLM_BASE_URL", raising=False)
    manifest = auth_manifest("chat")
    manifest["auth"]["roles"] = ["user", "admin"]
    manifest["llm_config"] = {
        "enabled": True,
        "provider": "openai_compatible",
        "base_url": llm_server.base_url,
        "max_retries": 0,
    }
    manifest["memory_config"] = {"enabled": True, "infer": False}
    write(tmp_path, manifest)
    mdb = MDB()
    app = factory(mdb, MDB_MANIFESTS=str(tmp_path), MDB_APP_SLUG="chat", **auth_config())

    def memories():
        return mdb.engine.get_memory_service("chat")

    def me():
        return get_current_user().id

    @app.post("/memories")
    def add():
        [added] = memories().add(request.json["text"], user_id=me())["results"]
        return {"id": added["id"]}, 201

    @app.get("/memories/<memory_id>")
    def read(memory_id):
        found = memories().get(memory_id, user_id=me())
        return found if found else abort(404)

    @app.get("/memories/<memory_id>/history")
    def history(memory_id):
        events = memories().history(memory_id, user_id=me())
        return {"events": events} if events else abort(404)

    @app.patch("/memories/<memory_id>")
    def change(memory_id):
        try:
            return memories().update(memory_id, request.json["text"], user_id=me())
        except Exception:
            abort(404)

    @app.delete("/memories/<memory_id>")
    def remove(memory_id):
        return ("", 204) if memories().delete(memory_id, user_id=me()) else abort(404)

    @app.get("/careless/<memory_id>")
    def careless(memory_id):  # the mistake the library used to let through
        found = memories().get(memory_id)
        return found if found else abort(404)

    @app.get("/admin/memories/<memory_id>/history")
    @require_role("admin")
    def admin_history(memory_id):
        return {"events": memories().history(memory_id, all_users=True)}

    with LiveServer(app) as server:
        yield server.url


def _signed_in(url, email, source):
    head = {"Accept": "application/json"}
    seed = send(url, Call("GET", "/auth/csrf", source, headers=head))
    created = send(
        url,
        Call(
            "POST",
            "/auth/register",
            source,
            {"email": email, "password": PASSWORD},
            {
                "X-CSRF-Token": seed.body["csrf_token"],
                "Cookie": seed.headers["Set-Cookie"].split(";", 1)[0],
            },
        ),
    )
    assert created.status == 201, created.body
    token = send(url, Call("POST", "/auth/token", source, {"email": email, "password": PASSWORD}))
    return {"Authorization": f"Bearer {token.body['access_token']}"}


def test_another_users_memory_is_unreachable_by_id(url):
    alice = _signed_in(url, "alice@example.com", ALICE)
    eve = _signed_in(url, "eve@example.com", EVE)
    made = send(url, Call("POST", "/memories", ALICE, {"text": SECRET_TEXT}, alice))
    assert made.status == 201
    memory_id = made.body["id"]

    attempts = [
        Call("GET", f"/memories/{memory_id}", EVE, headers=eve),
        Call("GET", f"/memories/{memory_id}/history", EVE, headers=eve),
        Call("PATCH", f"/memories/{memory_id}", EVE, {"text": "Eve was here"}, eve),
        Call("DELETE", f"/memories/{memory_id}", EVE, headers=eve),
    ]
    for call in attempts:
        answer = send(url, call)
        assert answer.status == 404, (call.method, call.path, answer.status)
        assert SECRET_TEXT not in str(answer.body)
    careless = send(url, Call("GET", f"/careless/{memory_id}", EVE, headers=eve))
    assert careless.status == 500 and SECRET_TEXT not in str(careless.body)
    # Only an administrator's tool, saying so, reads any user's history (eve is no admin).
    assert (
        send(url, Call("GET", f"/admin/memories/{memory_id}/history", EVE, headers=eve)).status
        == 403
    )

    # Alice's memory is intact, with its whole history; she can read it.
    mine = send(url, Call("GET", f"/memories/{memory_id}", ALICE, headers=alice))
    assert mine.status == 200 and mine.body["memory"] == SECRET_TEXT
    events = send(url, Call("GET", f"/memories/{memory_id}/history", ALICE, headers=alice))
    assert [e["event"] for e in events.body["events"]] == ["ADD"]
