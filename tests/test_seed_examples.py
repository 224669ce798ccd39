"""The seeds' example apps through their real interfaces, without a browser: HTTP and
websocket clients against each app on a real WSGI server (bounds, errors, limits, who may
change what), and each app run as a script on its own embedded database."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

import pytest
import websocket
from example_apps import EXAMPLES, load_example, running_script
from flask_apps import free_port, http, serve
from realtime_support import connect, recv_json, wait_for, ws_url

pytest_plugins = ("openai_server",)
GREEN_TEA = (EXAMPLES / "interactive_rag" / "docs" / "green_tea.md").read_text()


def _no_chat_model(monkeypatch):
    for key in ("MDB_LLM_BASE_URL", "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)


def _until(ws, kind: str, **match: Any) -> list[Any]:
    """Messages up to and including the first of type ``kind`` (with ``match``'s values)."""
    seen = []
    while True:
        message = recv_json(ws)
        seen.append(message)
        if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
            return seen


# --- interactive_rag ------------------------------------------------------------------------------


@pytest.fixture
def rag(mongo_uri, db_name, monkeypatch):
    _no_chat_model(monkeypatch)
    module = load_example("interactive_rag", monkeypatch)

    def start(**config: Any):
        app = module.create_app({"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, **config})
        started.append(app)
        return serve(app)

    started: list[Any] = []
    yield start
    for app in started:
        module.shutdown(app)


def test_rag_pushes_each_stage_and_answers_from_passages_without_a_chat_model(rag):
    with rag() as base:
        status, _, body = http(f"{base}/api/ask", "POST", {"question": "green tea?"})
        assert status == 200 and body["passages"] == [] and body["answer"] is None

        ws, _ = connect(ws_url(base, "/ws"))
        documents = [
            {"name": "tea.md", "text": GREEN_TEA},
            {"name": "chain.md", "text": "# Chains\n\nReplace a chain stretched by 0.5 %."},
        ]
        status, _, body = http(f"{base}/api/documents", "POST", {"documents": documents})
        assert status == 202 and [j["source"] for j in body["jobs"]] == ["tea.md", "chain.md"]
        tea, chain = (j["job"] for j in body["jobs"])
        seen = _until(ws, "ingest", job=chain, stage="stored")
        seen += _until(ws, "sources")
        stages = [(m["source"], m["stage"]) for m in seen if m["type"] == "ingest"]
        for source in ("tea.md", "chain.md"):  # each job's stages in order, jobs in turn
            assert [st for s, st in stages if s == source] == ["queued", "embedding", "stored"]
        assert stages.index(("tea.md", "stored")) < stages.index(("chain.md", "embedding"))
        stored = [m for m in seen if m.get("stage") == "stored"]
        assert stored[0] == {"type": "ingest", "job": tea, "source": "tea.md",
                             "stage": "stored", "chunks": 1, "replaced": 0}  # fmt: skip
        assert [s["source_id"] for s in seen[-1]["sources"]] == ["chain.md", "tea.md"]
        ws.close()

        status, _, body = http(f"{base}/api/ask", "POST", {"question": "How hot for green tea?"})
        assert status == 200 and body["answer"] is None and body["model"] is False
        assert "computes embeddings only" in body["error"]
        assert body["passages"][0]["source_id"] == "tea.md" and body["passages"][0]["n"] == 1
        assert http(f"{base}/api/sources")[2]["sources"][1] == {
            "source_id": "tea.md", "title": "Brewing green tea", "chunks": 1,
        }  # fmt: skip


def test_rag_bounds_every_input(rag):
    with rag(RAG_QUEUE_SIZE=1) as base:
        upload = f"{base}/api/documents"

        def refused(payload, status, message):
            got, _, body = http(upload, "POST", payload)
            assert (got, body["error"]["message"]) == (status, message), body

        refused({}, 400, "documents: a non-empty list of {name, text} is required")
        refused({"documents": [{"name": "a", "text": "x"}] * 21}, 400,
                "documents: at most 20 per upload")  # fmt: skip
        refused({"documents": ["x"]}, 400, "documents[0]: an object with name and text is required")
        refused({"documents": [{"name": "a\x00b", "text": "x"}]}, 400,
                "documents[0].name: control characters are not allowed")  # fmt: skip
        refused({"documents": [{"name": "n" * 201, "text": "x"}]}, 400,
                "documents[0].name: at most 200 characters")  # fmt: skip
        refused({"documents": [{"name": "a", "text": " "}]}, 400,
                "documents[0].text: a non-empty text is required")  # fmt: skip
        refused({"documents": [{"name": "a", "text": "x" * 500_001}]}, 400,
                "documents[0].text: at most 500,000 characters")  # fmt: skip
        two = [{"name": "a", "text": "x"}, {"name": "b", "text": "y"}]
        refused({"documents": two}, 503, "the ingestion queue is full (1): try again shortly")
        assert http(f"{base}/api/sources")[2]["sources"] == []  # nothing was queued

        form = urllib.request.Request(upload, data=b"documents=x", method="POST")
        form.add_header("Content-Type", "application/x-www-form-urlencoded")  # a cross-site form
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(form, timeout=10)
        assert error.value.code == 415
        big = json.dumps({"documents": [{"name": "a", "text": "x" * 3_000_000}]}).encode()
        too_big = urllib.request.Request(upload, data=big, method="POST")
        too_big.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(too_big, timeout=30)
        assert error.value.code == 413
        assert http(f"{base}/api/ask", "POST", {"question": "q" * 1001})[0] == 400
        assert http(f"{base}/api/ask", "POST", {"question": 3})[0] == 400
        status, _, body = http(f"{base}/api/sources/nope.md", "DELETE")
        assert status == 404 and body["error"]["message"] == "no source named 'nope.md'"


# --- vector_hacking -------------------------------------------------------------------------------


@pytest.fixture
def hacking(mongo_uri, db_name, llm_server, monkeypatch):
    monkeypatch.setenv("MDB_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    module = load_example("vector_hacking", monkeypatch)
    app = module.create_app(
        {"MDB_MONGO_URI": mongo_uri, "MDB_DB_NAME": db_name, "VECTOR_HACKING_MAX_RUNS": 1}
    )
    release = threading.Event()
    try:
        with serve(app) as base:
            yield ws_url(base, "/ws"), module, release
    finally:
        release.set()
        module.shutdown(app)


def _blocking(release: threading.Event, reply: str = "a guess"):
    def answer(body):
        release.wait(20)
        return reply

    return answer


def _send(ws, **message: Any) -> Any:
    ws.send(json.dumps(message))
    return recv_json(ws)


def test_attack_messages_are_checked_and_attacks_are_bounded(hacking, llm_server, raw_db):
    url, module, release = hacking
    ada, _ = connect(url)
    for message, code in (
        ({"target": 12}, "bad_target"),
        ({"target": "x" * 201}, "bad_target"),
        ({"target": "a\u202eb"}, "bad_target"),
        ({"max_steps": 0}, "bad_max_steps"),
        ({"max_steps": 2.5}, "bad_max_steps"),
        ({"max_steps": True}, "bad_max_steps"),
        ({"threshold": 2}, "bad_threshold"),
    ):
        assert _send(ada, type="start", **message)["error"]["code"] == code, message
    assert _send(ada, type="stop")["error"]["code"] == "not_running"

    llm_server.script_chat(*[_blocking(release)] * 5)
    assert _send(ada, type="start", target="Be mindful", max_steps=3)["type"] == "accepted"
    assert recv_json(ada)["type"] == "run.started"
    assert _send(ada, type="start")["error"]["code"] == "busy"
    bob, _ = connect(url)
    refused = _send(bob, type="start")
    assert refused["error"] == {
        "code": "too_many",
        "message": "1 attack(s) are running on this server: try again when one ends",
    }
    assert _send(ada, type="stop") == {"type": "stopping"}
    release.set()
    finished = _until(ada, "run.finished")[-1]
    assert (finished["status"], finished["steps"]) == ("stopped", 1)
    assert _send(ada, type="history")["runs"][0]["status"] == "stopped"
    assert module.running() == 0
    ada.close()
    bob.close()


def test_closing_the_page_stops_its_attack(hacking, llm_server, raw_db):
    """Without the stop, all 50 steps would run: ``stopped`` is the disconnect's doing."""
    url, module, release = hacking

    def thinking(body):  # 50 steps would take 10 s: ample time for the close to be seen
        time.sleep(0.2)
        return "another guess"

    llm_server.script_chat(_blocking(release), *[thinking] * 60)
    ws, _ = connect(url)
    assert _send(ws, type="start", target="Be mindful", max_steps=50)["type"] == "accepted"
    wait_for(lambda: raw_db["vector_hacking_runs"].find_one(), what="the run")
    ws.close()
    release.set()
    wait_for(lambda: module.running() == 0, 30, "the attack to end")
    run = raw_db["vector_hacking_runs"].find_one()
    assert run["status"] == "stopped" and run["steps"] < 50


def test_a_failing_or_missing_chat_model_ends_the_run_with_its_error(
    hacking, llm_server, monkeypatch
):
    url, _, _ = hacking
    ws, _ = connect(url)
    llm_server.fail_next(500, times=2)  # the manifest allows one retry
    assert _send(ws, type="start")["type"] == "accepted"
    finished = recv_json(ws)
    assert finished["type"] == "run.finished" and finished["status"] == "failed"
    assert finished["error"].startswith("no target: ") and "HTTP 500" in finished["error"]

    llm_server.fail_next(500, times=2)
    assert _send(ws, type="start", target="Be mindful")["type"] == "accepted"
    seen = _until(ws, "run.finished")
    assert seen[0]["type"] == "run.started" and seen[-1]["status"] == "failed"
    assert seen[-1]["error"].startswith("the chat model failed") and seen[-1]["steps"] == 0

    monkeypatch.delenv("MDB_LLM_BASE_URL")  # the local provider alone: no chat model
    assert _send(ws, type="start")["type"] == "accepted"
    finished = recv_json(ws)
    assert finished["status"] == "failed" and "computes embeddings only" in finished["error"]
    ws.close()


# --- parallax -------------------------------------------------------------------------------------

ADMIN = ("admin@example.com", "Parallax admin for tests 1")
VIEWER = ("viewer@example.com", "Parallax viewer for tests 1")


class Browserless:
    """An HTTP client with its own cookies, signed in through the library's JSON login."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: Any = None, csrf: bool = True) -> tuple:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if csrf and self.csrf and method != "GET":
            request.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def sign_in(self, email: str, password: str) -> None:
        self.csrf = self.call("GET", "/auth/csrf")[1]["csrf_token"]
        status, body = self.call("POST", "/auth/login", {"email": email, "password": password})
        assert status == 200, body
        self.csrf = body.get("csrf_token") or self.call("GET", "/auth/csrf")[1]["csrf_token"]


@pytest.fixture
def parallax(mongo_uri, db_name, monkeypatch):
    module = load_example("parallax", monkeypatch)
    app = module.create_app(
        {
            "MDB_MONGO_URI": mongo_uri,
            "MDB_DB_NAME": db_name,
            "MDB_PASSWORD_HASH_COST": 4096,
            "PARALLAX_ADMIN_PASSWORD": ADMIN[1],
        }
    )
    module.ensure_admin(app)
    with app.app_context(), module.mdb.bind("parallax", app):
        from flask_mdb.auth import current_service

        current_service().create_user(VIEWER[0], VIEWER[1], roles=["viewer"])
    try:
        with serve(app) as base:
            yield base
    finally:
        module.mdb.shutdown(app)


def test_parallax_needs_sign_in_and_the_admin_role_to_change_anything(parallax, raw_db):
    anonymous = Browserless(parallax)
    assert anonymous.call("GET", "/api/collections")[0] == 401

    viewer = Browserless(parallax)
    viewer.sign_in(*VIEWER)
    status, body = viewer.call("GET", "/api/collections")
    assert status == 200
    assert [c["name"] for c in body["collections"]] == ["products", "reviews"]  # no accounts
    status, body = viewer.call("POST", "/api/collections/products/infer", {"sample_size": 5})
    assert status == 200 and body["sampled"] == 5
    schema = body["schema"]
    assert viewer.call("POST", "/api/collections/products/dry-run", {"schema": schema})[0] == 200
    for name in ("users", "casbin_policies"):  # password hashes are not data to browse
        status, body = viewer.call("POST", f"/api/collections/{name}/dry-run", {"schema": schema})
        assert status == 404, body
    assert viewer.call("PUT", "/api/collections/products/validator", {"schema": schema})[0] == 403
    insert = {"document": {"sku": "X"}}
    assert viewer.call("POST", "/api/collections/products/documents", insert)[0] == 403
    assert viewer.call("DELETE", "/api/collections/products/validator")[0] == 403

    admin = Browserless(parallax)
    admin.sign_in(*ADMIN)
    apply = {"schema": {"required": ["sku"]}}
    status, _ = admin.call("PUT", "/api/collections/products/validator", apply, csrf=False)
    assert status in (400, 403)
    assert admin.call("PUT", "/api/collections/users/validator", apply)[0] == 404
    assert admin.call("POST", "/api/collections/users/documents", insert)[0] == 404
    status, body = admin.call("PUT", "/api/collections/products/validator", apply)
    assert status == 200 and body["status"] == "updated"
    assert raw_db["parallax_products"].options()["validator"] == {
        "$jsonSchema": {"required": ["sku"]}
    }
    assert "validator" not in raw_db["parallax_users"].options()


def test_parallax_refuses_bad_requests_clearly(parallax):
    admin = Browserless(parallax)
    admin.sign_in(*ADMIN)
    api = "/api/collections"
    for path, body, status, message in (
        (f"{api}/products/infer", {"sample_size": 0}, 400,
         "sample_size: a whole number between 1 and 10000"),
        (f"{api}/nothing/infer", {}, 400,
         "collection 'nothing' of app 'parallax' has no documents to infer a schema from"),
        (f"{api}/products/dry-run", {"schema": []}, 400, "schema: a JSON object is required"),
        (f"{api}/products/dry-run", {"schema": {"$where": "true"}}, 400,
         "$where is not allowed in a filter: server-side JavaScript is refused"),
        (f"{api}/products/documents", {"document": {"x": "y" * 20_000}}, 400,
         "document: at most 16 KB here"),
    ):  # fmt: skip
        got, answer = admin.call("POST", path, body)
        assert (got, answer["error"]["message"]) == (status, message), (path, answer)
    got, answer = admin.call("PUT", f"{api}/products/validator",
                             {"schema": {"required": ["sku"]}, "level": "off"})  # fmt: skip
    assert got == 400 and answer["error"]["message"].startswith("level: strict or moderate")
    doubles = {"schema": {"properties": {"price": {"bsonType": "double"}}}}
    got, answer = admin.call("PUT", f"{api}/products/validator", doubles)
    assert got == 409 and answer["report"]["failed"] == 3  # integer and string prices
    assert admin.call("POST", f"{api}/system.x/infer", {})[0] == 400


# --- each example as a script, on its own embedded database ---------------------------------------


@pytest.mark.parametrize(
    ("name", "how"),
    [("interactive_rag", "python"), ("vector_hacking", "flask"), ("parallax", "python")],
)
def test_the_example_runs_on_the_embedded_database(name, how, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "MDB_EMBEDDED_DIR": str(tmp_path / ".mdb"),
           "PARALLAX_ADMIN_PASSWORD": ADMIN[1]}  # fmt: skip
    for key in ("MDB_MONGO_URI", "MDB_DB_NAME", "MDB_LLM_BASE_URL", "OPENAI_API_KEY"):
        env.pop(key, None)
    app = EXAMPLES / name / "app.py"
    if how == "flask":
        command = [sys.executable, "-m", "flask", "--app", str(app), "run", "--port", str(port)]
    else:
        command = [sys.executable, str(app)]
    with running_script(command, env, tmp_path, f"{base}/health") as proc:
        assert (tmp_path / ".mdb" / "server.json").exists()
        status, _, page = http(f"{base}/", headers={"Accept": "text/html"})
        assert status == 200
        if name == "interactive_rag":
            documents = [{"name": "tea.md", "text": GREEN_TEA}]
            assert http(f"{base}/api/documents", "POST", {"documents": documents})[0] == 202
            wait_for(lambda: http(f"{base}/api/sources")[2]["sources"], 60, "the ingestion")
            answer = http(f"{base}/api/ask", "POST", {"question": "Water for green tea?"})[2]
            assert answer["passages"][0]["source_id"] == "tea.md"
        elif name == "vector_hacking":
            assert 'data-live="/ws"' in page
            ws = websocket.create_connection(ws_url(base, "/ws"), timeout=10)
            assert json.loads(ws.recv())["type"] == "connected"
            ws.close()
        else:
            assert 'id="sign-in"' in page  # sent to sign in
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output
    assert not (tmp_path / ".mdb" / "server.json").exists(), "the embedded server stopped"
