"""Issue 17's staleness case: engine A changes an app's manifest, engine B in another
process (a Flask app on a live server, and scripts on its engine) honours the change within
``registry_refresh_seconds`` and at once after ``reload_apps()``, for every per-app service:
operation metrics, the LLM service, auth, CORS and websocket endpoints."""

from __future__ import annotations

import copy
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mdb_sync import MongoDBEngine

SLUG = "shared"
REFRESH = 1.0
WORKER = Path(__file__).with_name("app_services_worker.py")
ORIGIN_1 = "https://one.example.com"
ORIGIN_2 = "https://two.example.com"

pytestmark = pytest.mark.timeout(180)

MANIFEST: dict[str, Any] = {
    "slug": SLUG,
    "name": SLUG,
    "observability": {"metrics": {"enabled": True}},
    "llm_config": {"enabled": True, "default_chat_model": "gpt-4o-mini"},
    "auth": {"users": {"enabled": True, "session_cookie_name": "first_sid"}},
    "cors": {"allow_origins": [ORIGIN_1]},
    "websockets": {"feed": {"path": "/ws/feed"}},
}


class EngineB:
    """The other process: its replies to ``observe`` / ``reload``, and its live server."""

    def __init__(self, uri: str, db_name: str, refresh: float = REFRESH) -> None:
        env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-used"}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), uri, db_name, SLUG, str(refresh)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        ready = self._reply()
        assert ready.get("ready"), ready
        self.address = urlsplit(ready["url"])

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"engine B exited ({self.proc.poll()})"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply  # type: ignore[no-any-return]

    def ask(self, command: str = "observe") -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        observed = self._reply()
        observed["cors"] = self.allowed_origin()
        return observed

    def allowed_origin(self) -> str | None:
        """The ``Access-Control-Allow-Origin`` B's Flask app answers to ORIGIN_2."""
        conn = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=10)
        try:
            conn.request("GET", "/ping", headers={"Origin": ORIGIN_2})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            return response.getheader("Access-Control-Allow-Origin")
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


BEFORE = {
    "metrics_recorded": True,
    "llm_model": "gpt-4o-mini",
    "session_cookie": "first_sid",
    "same_auth": True,
    "websockets": ["/ws/feed"],
    "cors": None,
}
AFTER = {
    "metrics_recorded": False,
    "llm_model": "gpt-4o",
    "session_cookie": "second_sid",
    "same_auth": True,
    "websockets": ["/ws/other"],
    "cors": ORIGIN_2,
}


def _changed(manifest: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    changed["observability"] = {"metrics": {"enabled": False}}
    changed["llm_config"]["default_chat_model"] = "gpt-4o"
    changed["auth"]["users"]["session_cookie_name"] = "second_sid"
    changed["cors"] = {"allow_origins": [ORIGIN_2]}
    changed["websockets"] = {"other": {"path": "/ws/other"}}
    return changed


def _observed(b: EngineB) -> dict[str, Any]:
    return b.ask()


@pytest.fixture
def engine_a(mongo_uri: str, db_name: str):
    engine = MongoDBEngine(mongo_uri, db_name).initialize()
    engine.register_app(MANIFEST)
    yield engine
    engine.shutdown()


@pytest.fixture
def engine_b(mongo_uri: str, db_name: str, engine_a: MongoDBEngine):
    b = EngineB(mongo_uri, db_name)
    yield b
    b.close()


def test_a_change_made_by_another_process_is_honoured_within_the_refresh_delay(engine_a, engine_b):
    assert _observed(engine_b) == BEFORE
    changed_at = time.monotonic()
    engine_a.register_app(_changed(MANIFEST))
    # Every service of B changes together, within registry_refresh_seconds (B's cached
    # scoped database and record are read again then), never stays stale.
    deadline = changed_at + REFRESH * 3 + 5  # a loaded machine: generous, yet bounded
    observed = _observed(engine_b)
    while observed != AFTER and time.monotonic() < deadline:
        time.sleep(0.1)
        observed = _observed(engine_b)
    assert observed == AFTER
    elapsed = time.monotonic() - changed_at
    assert elapsed < deadline - changed_at


def test_reload_apps_honours_a_change_at_once(mongo_uri, db_name, engine_a):
    b = EngineB(mongo_uri, db_name, refresh=3600)  # only reload_apps() can explain a change
    try:
        assert _observed(b) == BEFORE
        engine_a.register_app(_changed(MANIFEST))
        assert _observed(b) == BEFORE  # B trusts its cache for an hour...
        assert b.ask("reload") == AFTER  # at once: no waiting for the refresh delay
        engine_a.register_app(MANIFEST)
        assert b.ask("reload") == BEFORE  # and back
    finally:
        b.close()
