"""An authenticated Flask request: flask_mdb against the stack a Flask user picks today.

Two routes, the same on both sides — ``GET /tasks`` (the signed-in user's 20 newest tasks)
and ``POST /tasks`` (add one) — behind a login, served through Flask's test client (no
sockets: the numbers are the framework's, the auth's and the driver's):

* **peer**: Flask + Flask-PyMongo + Flask-Login, the tenant filter and the owner filter
  written by hand, the user loaded by Flask-Login's ``user_loader`` from Flask's signed
  cookie session (one ``find_one``), no CSRF check;
* **flask_mdb**: ``MDB`` with an auth manifest, the user from a server-side session cookie
  (revocable: logout, password change and deactivation end it everywhere), the POST with a
  CSRF token (``X-CSRF-Token``), ``flask_mdb.db`` scoping the queries.

For each route: client CPU µs per request (``time.thread_time()``; the server is another
process, and the test client runs the request on the calling thread); each round runs peer,
flask_mdb, flask_mdb, peer (a load drifting during the round weighs on both alike); the
medians over the rounds (of each side's µs, and of the per-round ratios); and the database
commands each request sends (from a separate, untimed pass on clients with a recording
listener; ours include the registry's refresh of the app, one read every 5 s).

Flask-PyMongo is not a dependency of mdb-sync: install it into the benchmark's
environment first::

    .venv/bin/pip install flask-pymongo
    .venv/bin/python benchmarks/flask_auth.py [--requests 500] [--rounds 7] [--runs 1]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compare import (
    CommandCounter,
    Row,
    arguments,
    commands_per_call,
    compare,
    print_table,
    repeated,
)

try:
    from flask_pymongo import PyMongo
except ImportError:  # pragma: no cover - depends on the benchmark's environment
    sys.exit(
        "benchmarks/flask_auth.py compares with Flask-PyMongo, which is not installed: "
        "run `pip install flask-pymongo` in this environment first (it is not a dependency "
        "of mdb-sync)"
    )
import flask_login
from bson import ObjectId
from flask import Flask, request
from pymongo import MongoClient

from flask_mdb import MDB, db
from flask_mdb.auth import get_current_user, login_required
from mdb_sync import MongoDBEngine, embedded
from mdb_sync.auth import PasswordHasher, get_auth_service

SECRET = "flask-secret-for-the-benchmark-" + "z" * 16
JWT_SECRET = "jwt-secret-for-the-benchmark-" + "y" * 16
EMAIL, PASSWORD = "ada@example.com", "correct horse battery staple"
MANIFEST = {"slug": "bench", "name": "bench", "auth": {"users": {"enabled": True}}}
TASKS = 20


# --- the peer: Flask + Flask-PyMongo + Flask-Login ------------------------------------------------


class PeerUser(flask_login.UserMixin):
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.id = str(doc["_id"])

    @property
    def is_active(self) -> bool:
        return bool(self.doc.get("active", True))


def peer_app(uri: str, db_name: str, listeners: list[Any]) -> tuple[Flask, PyMongo]:
    app = Flask("peer")
    app.config.update(SECRET_KEY=SECRET, MONGO_URI=uri)
    mongo = PyMongo(app, uri, event_listeners=listeners) if listeners else PyMongo(app, uri)
    database = mongo.cx[db_name]  # type: ignore[index]
    logins = flask_login.LoginManager(app)

    @logins.user_loader
    def load_user(user_id: str) -> PeerUser | None:
        try:
            oid = ObjectId(user_id)
        except Exception:
            return None
        doc = database.peer_users.find_one({"_id": oid, "app_id": "peer"})
        return PeerUser(doc) if doc is not None else None

    @app.post("/login")
    def login() -> Any:
        doc = database.peer_users.find_one({"email": request.json["email"], "app_id": "peer"})
        flask_login.login_user(PeerUser(doc))
        return {"ok": True}

    @app.get("/tasks")
    @flask_login.login_required
    def list_tasks() -> Any:
        owner = flask_login.current_user.id
        docs = (
            database.peer_tasks.find({"app_id": "peer", "owner": owner})
            .sort("created_at", -1)
            .limit(TASKS)
        )
        return {"tasks": [{"id": str(d["_id"]), "title": d["title"]} for d in docs]}

    @app.post("/tasks")
    @flask_login.login_required
    def add_task() -> Any:
        doc = {
            "app_id": "peer",
            "owner": flask_login.current_user.id,
            "title": str(request.json["title"])[:200],
            "created_at": dt.datetime.now(dt.timezone.utc),
        }
        return {"id": str(database.peer_tasks.insert_one(doc).inserted_id)}, 201

    return app, mongo


def seed_peer(uri: str, db_name: str) -> None:
    client: MongoClient[Any] = MongoClient(uri)
    database = client[db_name]
    user = database.peer_users.insert_one({"email": EMAIL, "app_id": "peer", "active": True})
    owner = str(user.inserted_id)
    database.peer_tasks.create_index([("app_id", 1), ("owner", 1), ("created_at", -1)])
    now = dt.datetime.now(dt.timezone.utc)
    database.peer_tasks.insert_many(
        {"app_id": "peer", "owner": owner, "title": f"task {i}", "created_at": now}
        for i in range(TASKS)
    )
    client.close()


# --- flask_mdb ------------------------------------------------------------------------------------


def mdb_app(uri: str, db_name: str, manifests: Path, listeners: list[Any]) -> tuple[Flask, MDB]:
    app = Flask("ours")
    app.config.update(
        MDB_MANIFESTS=str(manifests),
        SECRET_KEY=SECRET,
        MDB_MONGO_URI=uri,
        MDB_DB_NAME=db_name,
        MDB_APP_SLUG="bench",
        MDB_JWT_SECRET=JWT_SECRET,
        MDB_PASSWORD_HASH_COST=4096,
        MDB_CLIENT_OPTIONS={"event_listeners": listeners} if listeners else {},
    )
    mdb = MDB(app)

    @app.get("/tasks")
    @login_required
    def list_tasks() -> Any:
        owner = get_current_user().id  # type: ignore[union-attr]
        docs = db.tasks.find({"owner": owner}).sort("created_at", -1).limit(TASKS)
        return {"tasks": [{"id": str(d["_id"]), "title": d["title"]} for d in docs]}

    @app.post("/tasks")
    @login_required
    def add_task() -> Any:
        doc = {
            "owner": get_current_user().id,  # type: ignore[union-attr]
            "title": str(request.json["title"])[:200],
            "created_at": dt.datetime.now(dt.timezone.utc),
        }
        return {"id": str(db.tasks.insert_one(doc).inserted_id)}, 201

    return app, mdb


def seed_mdb(uri: str, db_name: str, manifests: Path) -> None:
    (manifests / "bench.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    with MongoDBEngine(uri, db_name) as engine:
        engine.register_app(MANIFEST)
        auth = get_auth_service(engine, "bench", signing=False, hasher=PasswordHasher(n=4096))
        user = auth.register_user(EMAIL, PASSWORD)
        tasks = engine.get_scoped_db("bench").tasks
        tasks.create_index([("owner", 1), ("created_at", -1)])
        now = dt.datetime.now(dt.timezone.utc)
        tasks.insert_many(
            [
                {"owner": user["user_id"], "title": f"task {i}", "created_at": now}
                for i in range(TASKS)
            ]
        )


# --- measuring ------------------------------------------------------------------------------------


def signed_in(app: Flask, ours: bool) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """``(get, post)`` calls of a test client signed in to ``app`` (``get(i)``: the
    argument, a call's number, is not used)."""
    client = app.test_client()
    headers: dict[str, str] = {}
    if ours:
        token = client.get("/auth/csrf").json["csrf_token"]
        response = client.post(
            "/auth/login",
            json={"email": EMAIL, "password": PASSWORD},
            headers={"X-CSRF-Token": token},
        )
        assert response.status_code == 200, response.json
        headers["X-CSRF-Token"] = client.get("/auth/csrf").json["csrf_token"]
    else:
        assert client.post("/login", json={"email": EMAIL}).status_code == 200

    def get(_i: int = 0) -> Any:
        response = client.get("/tasks")
        assert response.status_code == 200, response.data
        return response

    def post(_i: int = 0) -> Any:
        response = client.post("/tasks", json={"title": "new"}, headers=headers)
        assert response.status_code == 201, response.data
        return response

    assert len(get().json["tasks"]) == TASKS
    return get, post


def measure(requests: int, rounds: int) -> list[Row]:
    """One run: both routes, then their commands per request (see the module docstring)."""
    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    uri = uri or server.uri  # type: ignore[union-attr]
    db_name = f"bench_flask_{uuid.uuid4().hex[:8]}"
    seed_peer(uri, db_name)
    manifests = Path(tempfile.mkdtemp(prefix="mdb-bench-"))
    seed_mdb(uri, db_name, manifests)
    peer, mongo = peer_app(uri, db_name, [])
    ours, mdb = mdb_app(uri, db_name, manifests, [])
    peer_counter, ours_counter = CommandCounter(), CommandCounter()
    peer_counted, mongo_counted = peer_app(uri, db_name, [peer_counter])
    ours_counted, mdb_counted = mdb_app(uri, db_name, manifests, [ours_counter])
    try:
        rows = []
        peer_calls, ours_calls = signed_in(peer, False), signed_in(ours, True)
        counted = signed_in(peer_counted, False), signed_in(ours_counted, True)
        for index, route in enumerate(("GET /tasks", "POST /tasks")):
            peer_call, ours_call = peer_calls[index], ours_calls[index]
            for _ in range(20):  # warm up
                peer_call(), ours_call()
            row = compare(route, peer_call, ours_call, max(1, requests // 2), rounds)
            row.commands = (
                commands_per_call(counted[0][index], peer_counter, 50),
                commands_per_call(counted[1][index], ours_counter, 50),
            )
            rows.append(row)
        return rows
    finally:
        for app, extension in ((ours, mdb), (ours_counted, mdb_counted)):
            extension.shutdown(app)
        for client in (mongo.cx, mongo_counted.cx):
            client.close()  # type: ignore[union-attr]
        cleanup: MongoClient[Any] = MongoClient(uri)
        cleanup.drop_database(db_name)
        cleanup.close()
        shutil.rmtree(manifests, ignore_errors=True)
        if server is not None:
            embedded.stop_private(server)


def main() -> None:
    parser = arguments(__doc__, requests=(int, 500, "requests per round"))
    args, _ = parser.parse_known_args()
    rows = repeated(args.runs, lambda: measure(args.requests, args.rounds))
    print(
        f"authenticated requests, {args.requests} per round, {args.rounds} rounds interleaved, "
        f"{args.runs} run(s), medians (client CPU µs per request)\n"
    )
    print_table(("route", "Flask-PyMongo + Flask-Login", "flask_mdb"), rows)
    print("target: ratio <= 1.15, commands per request equal to the peer's")


if __name__ == "__main__":
    main()
