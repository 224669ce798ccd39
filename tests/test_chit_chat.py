"""The chit_chat example end to end: sign in over HTTP, chat over the websocket with the
session cookie, a streamed reply from an OpenAI-compatible server (the tests' own, on
127.0.0.1), memories extracted, searched in the next turn, kept per user, and forgotten."""

from __future__ import annotations

import http.client
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import websocket
from flask_apps import serve
from realtime_support import close_frame, connect, recv_json, ws_url

from flask_mdb.websockets import handler_registry

pytest_plugins = ("openai_server",)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chit_chat" / "app.py"


def brain(body):
    """The scripted model: replies, facts and memory decisions, by the request's prompt."""
    system = " ".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
    if "You extract durable facts" in system:
        conversation = body["messages"][-1]["content"]
        facts = ["Loves green tea"] if "green tea" in conversation else []
        return json.dumps({"facts": facts})
    if "You maintain a user's memory" in system:
        facts = json.loads(body["messages"][-1]["content"])["new_facts"]
        decisions = [{"id": f"new{i}", "text": f, "event": "ADD"} for i, f in enumerate(facts)]
        return json.dumps({"memory": decisions})
    return "Nice to meet you, I will remember that."


@pytest.fixture
def chit_chat(mongo_uri, db_name, llm_server, monkeypatch):
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    handler_registry.clear("chit_chat")
    spec = importlib.util.spec_from_file_location("chit_chat_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers the example's websocket handlers
    app = module.create_app({"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name})
    llm_server.script_chat(*[brain] * 50)
    try:
        with serve(app) as base:
            yield base, llm_server
    finally:
        module.mdb.shutdown(app)
        handler_registry.clear("chit_chat")


def _request(base: str, method: str, path: str, body: Any = None, headers=None):
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    data = json.dumps(body) if body is not None else None
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, data, {**sent, **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    cookies = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    conn.close()
    return response.status, payload, cookies


def sign_in(base: str, email: str) -> str:
    """Register ``email`` through the library's auth endpoints; return the session cookie."""
    status, body, cookies = _request(base, "GET", "/auth/csrf")
    assert status == 200, body
    token = json.loads(body)["csrf_token"]
    status, body, cookies = _request(
        base,
        "POST",
        "/auth/register",
        {"email": email, "password": "correct horse battery"},
        {"X-CSRF-Token": token, "Cookie": "; ".join(cookies)},
    )
    assert status in (200, 201), body
    [session] = [c for c in cookies if c.split("=", 1)[0] != "mdb_csrf"]
    return session


def until(ws, kind):
    """Messages up to and including the first of type ``kind``."""
    seen = []
    while True:
        message = recv_json(ws)
        seen.append(message)
        assert message["type"] != "error", seen
        if message["type"] == kind:
            return seen


def test_chat_with_memory_over_the_websocket(chit_chat, raw_db):
    base, llm = chit_chat
    url = ws_url(base, "/chat/ws")

    anonymous = websocket.create_connection(url, timeout=10)
    assert close_frame(anonymous) == (1008, "authentication required")

    ada, hello = connect(url, cookie=sign_in(base, "ada@example.com"))
    ada_id = hello["user_id"]
    assert ada_id
    ada.send(json.dumps({"type": "history", "id": 1}))
    assert recv_json(ada) == {"type": "history", "messages": [], "memories": [], "id": 1}

    ada.send(json.dumps({"type": "chat", "text": "Hi! I really love green tea."}))
    seen = until(ada, "memories")
    kinds = [m["type"] for m in seen]
    assert kinds[0] == "message" and seen[0]["message"]["role"] == "user"
    deltas = "".join(m["text"] for m in seen if m["type"] == "reply.delta")
    assert deltas == "Nice to meet you, I will remember that."  # streamed
    [reply] = [m for m in seen if m["type"] == "message" and m["message"]["role"] == "assistant"]
    assert reply["message"]["text"] == deltas
    assert [m["memory"] for m in seen[-1]["memories"]] == ["Loves green tea"]

    # The next turn's prompt carries what was remembered, and the conversation so far.
    ada.send(json.dumps({"type": "chat", "text": "What should I drink this afternoon?"}))
    until(ada, "memories")
    prompts = [
        r.body["messages"]
        for r in llm.recorded("chat/completions")
        if r.body.get("stream") and r.body["messages"][0]["content"].startswith("You are Chit")
    ]
    system, *turns = prompts[-1]
    assert "talking with ada." in system["content"] and "- Loves green tea" in system["content"]
    assert [t["content"] for t in turns] == [
        "Hi! I really love green tea.",
        "Nice to meet you, I will remember that.",
        "What should I drink this afternoon?",
    ]

    # Another user has a conversation and memories of their own.
    bob, _ = connect(url, cookie=sign_in(base, "bob@example.com"))
    bob.send(json.dumps({"type": "history"}))
    assert recv_json(bob) == {"type": "history", "messages": [], "memories": []}
    memory_id = seen[-1]["memories"][0]["id"]
    bob.send(json.dumps({"type": "forget", "id": memory_id}))
    assert recv_json(bob)["error"]["code"] == "not_found"  # not Bob's to forget

    ada.send(json.dumps({"type": "forget", "id": memory_id}))
    assert recv_json(ada) == {"type": "memories", "memories": []}
    ada.send(json.dumps({"type": "chat", "text": "   "}))
    assert recv_json(ada)["error"]["code"] == "empty"

    stored = list(raw_db["chit_chat_messages"].find({}, {"_id": 0, "user_id": 1, "role": 1}))
    assert {d["user_id"] for d in stored} == {ada_id} and len(stored) == 4
    ada.close()
    bob.close()


def test_the_page_needs_a_sign_in_and_opens_the_websocket(chit_chat):
    base, _ = chit_chat
    status, _, _ = _request(base, "GET", "/", headers={"Accept": "text/html"})
    assert status == 302, "anonymous visitors are sent to the sign-in page"
    status, page, _ = _request(base, "GET", "/auth/login", headers={"Accept": "text/html"})
    assert status == 200 and b"password" in page
    cookie = sign_in(base, "ada@example.com")
    status, page, _ = _request(base, "GET", "/", headers={"Cookie": cookie, "Accept": "text/html"})
    assert status == 200
    assert b'data-ws="/chat/ws"' in page and b"chat.js" in page and b">ada</strong>" in page
