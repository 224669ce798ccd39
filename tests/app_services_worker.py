"""Engine B of tests/test_app_services_cross_process.py: another process on the same server.

Serves a Flask app (MDB on its own engine, ``registry_refresh_seconds`` from argv) on a live
server and answers JSON commands on stdin, one per line: ``observe`` reports what this
process derives from the app's manifest now (metrics recording, LLM model, auth settings,
websocket endpoints, whether Flask and a script share one AuthService); ``reload`` calls
``engine.reload_apps()`` first. Usage: ``app_services_worker.py URI DB SLUG REFRESH``.
"""

from __future__ import annotations

import json
import sys

from flask import Flask

from flask_mdb import MDB
from flask_mdb.auth.current import service_for_slug
from flask_mdb.state import get_state
from flask_mdb.testing import LiveServer
from flask_mdb.websockets.endpoints import endpoints_of
from mdb_sync import MongoDBEngine
from mdb_sync.auth.service import get_auth_service


def main() -> None:
    uri, db, slug, refresh = sys.argv[1:5]
    engine = MongoDBEngine(uri, db, registry_refresh_seconds=float(refresh), implicit_apps=False)
    engine.initialize()
    app = Flask("engine_b")
    app.config.update(SECRET_KEY="b" * 32, MDB_APP_SLUG=slug, MDB_AUTH_ROUTES=False)
    MDB(engine=engine).init_app(app)
    app.add_url_rule("/ping", "ping", lambda: "pong")

    def operations() -> int:
        apps = engine.get_metrics().get("apps") or {}
        ops = (apps.get(slug) or {}).get("operations") or {}
        return sum(int(series.get("count", 0)) for series in ops.values())

    def observe() -> dict:
        before = operations()
        engine.get_scoped_db(slug).items.insert_one({"probe": True})
        recorded = operations() > before
        with app.app_context():
            state = get_state(app)
            flask_auth = service_for_slug(slug)
            record = engine.registry.require_usable(slug)
            endpoints = state.per_slug(
                state.slug_state(slug, record), "websockets", lambda s: endpoints_of(s.manifest)
            )
        script_auth = get_auth_service(engine, slug)
        return {
            "metrics_recorded": recorded,
            "llm_model": engine.get_llm_service(slug).config.default_chat_model,
            "session_cookie": script_auth.config.session_cookie_name,
            "same_auth": flask_auth is script_auth,
            "websockets": sorted(e.path for e in endpoints.values()),
        }

    with LiveServer(app) as server:
        print(json.dumps({"ready": True, "url": server.url}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "reload":
                engine.reload_apps()
            try:
                reply = observe()
            except Exception as exc:  # reported to the test, which fails with it
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    engine.shutdown()


if __name__ == "__main__":
    main()
