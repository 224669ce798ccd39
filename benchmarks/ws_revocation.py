"""What keeping websockets no longer than their login costs, and how fast a revocation closes
them.

1. **The re-check before a message** (``MDB_WEBSOCKET_RECHECK_INTERVAL = 0``), in
   microseconds per check, against what it is made of, in the same run:

   * the raw queries: ``find_one`` of the session by ``_id`` + ``find_one`` of the user
     (a session login), or the deny-list ``find`` + the user (a token login);
   * what an HTTP request's authentication pays: ``AuthService.load_session`` /
     ``AuthService.user_from_token``;
   * the re-check a connection makes: ``Credentials.check(activity=True)`` (app context,
     the identity seam, :func:`mdb_sync.auth.revocation.recheck`).

   And end to end: a message's round trip over a real websocket (``{"type": "ping"}`` →
   ``pong``), re-checked before every message vs. once an hour, rounds interleaved.

2. **Revocation latency**: a session socket is open; its session is ended
   (``AuthService.end_session``, what ``/auth/logout`` calls) — from the call to the close
   frame (4401) arriving at the client, p50 and max over ``--revocations`` revocations, with
   the socket in the revoking process and in another server process.

    .venv/bin/python benchmarks/ws_revocation.py [--ops 300] [--rounds 5] [--revocations 25]

With no ``MDB_MONGO_URI`` it starts a private in-memory embedded server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SLUG = "bench_revoke"
SECRET = "benchmark-secret-" + "x" * 32
PASSWORD = "correct horse battery"
MANIFEST = {
    "slug": SLUG,
    "name": SLUG,
    "auth": {
        "users": {"enabled": True},
        "policy": {
            "required": True,
            "allowed_roles": ["user"],
            "authorization": {"initial_policies": [["user", "reports", "read"]]},
        },
    },
    "token_management": {},
    "websockets": {"live": {"path": "/ws", "auth": {"required": True}}},
}


def per_op(fn: Callable[[], Any], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - started) / ops * 1e6


def interleaved(cases: dict[str, Callable[[], Any]], ops: int, rounds: int) -> dict[str, float]:
    """Median µs per op of each case, the cases' rounds interleaved (same machine state)."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            results[name].append(per_op(fn, ops))
    return {name: statistics.median(values) for name, values in results.items()}


def make_app(uri: str, db: str, manifests: str, **config: Any) -> Any:
    from flask import Flask

    from flask_mdb import MDB

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = Flask("bench")
    app.config.update(
        MDB_MONGO_URI=uri,
        MDB_DB_NAME=db,
        MDB_MANIFESTS=manifests,
        MDB_APP_SLUG=SLUG,
        MDB_JWT_SECRET=SECRET,
        SECRET_KEY="k" * 40,
        MDB_PASSWORD_HASH_COST=4096,
        MDB_AUTH_POLICY_RELOAD=3600,
        **config,
    )
    app.extensions["bench_mdb"] = MDB(app)
    return app


def serve_forever(uri: str, db: str, manifests: str) -> None:
    """``--serve``: the second server process (prints its port)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, make_app(uri, db, manifests), threaded=True)
    print(server.port, flush=True)
    server.serve_forever()


def connect(port: int, sid: str) -> Any:
    import websocket

    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/ws", timeout=10, cookie=f"{SLUG}_session={sid}"
    )
    hello = json.loads(ws.recv())
    assert hello["type"] == "connected", hello
    return ws


def wait_close(ws: Any) -> tuple[float, int | None]:
    import websocket

    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return time.monotonic(), struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None


def revocation_latency(auth: Any, user: dict[str, Any], port: int, count: int) -> list[float]:
    """Milliseconds from ``end_session`` to the client's close frame, ``count`` times."""
    latencies = []
    for _ in range(count):
        sid, _ = auth.start_session(user)
        ws = connect(port, sid)
        done: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: done.update(at=wait_close(ws)))  # noqa: B023
        reader.start()
        time.sleep(0.05)  # the reader is waiting
        started = time.monotonic()
        auth.end_session(sid)
        reader.join(10)
        ws.close()
        closed_at, code = done["at"]
        assert code == 4401, code
        latencies.append((closed_at - started) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--revocations", type=int, default=25)
    parser.add_argument("--serve", nargs=3, metavar=("URI", "DB", "MANIFESTS"))
    args = parser.parse_args()
    if args.serve:
        serve_forever(*args.serve)
        return

    from mdb_sync import embedded

    uri = os.environ.get("MDB_MONGO_URI")
    server = None if uri else embedded.start_private()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, f"{SLUG}.json").write_text(json.dumps(MANIFEST))
            report(uri or server.uri, "mdb_bench_ws_revocation", tmp, args)
    finally:
        if server is not None:
            embedded.stop_private(server)


def report(uri: str, db: str, manifests: str, args: argparse.Namespace) -> None:
    import websocket
    from pymongo import MongoClient

    from flask_mdb.auth.current import service_for_slug
    from flask_mdb.auth.user import AuthUser
    from flask_mdb.testing import LiveServer
    from flask_mdb.websockets.credentials import Credentials

    with MongoClient(uri) as client:
        client.drop_database(db)
    app = make_app(uri, db, manifests)
    relaxed = make_app(uri, db, manifests, MDB_WEBSOCKET_RECHECK_INTERVAL=3600.0)
    with app.app_context():
        auth = service_for_slug(SLUG)
    engine = auth.engine
    user = auth.register_user("ada@example.com", PASSWORD, roles=["user"])
    sid, session = auth.start_session(user)
    token = auth.issue_tokens(user)["access_token"]
    claims = auth.tokens.verify(token)
    by_session = AuthUser(user, "session", session=session).identity()
    by_token = AuthUser(user, "token", claims=claims).identity()
    session_check = Credentials(app, by_session)
    token_check = Credentials(app, by_token)
    sessions = engine._raw_collection("mdb_auth_sessions")
    denylist = engine._raw_collection("mdb_auth_denylist")
    users = engine._raw_collection(f"{SLUG}_users")
    oid = user["_id"]
    keys = [f"jti:{claims['jti']}", f"fam:{claims['fam']}", f"user:{claims['sub']}"]
    cases = {
        "session: raw find_one session + user": lambda: (
            sessions.find_one({"_id": session["_id"], "app_id": SLUG}),
            users.find_one({"_id": oid}),
        ),
        "session: AuthService.load_session (HTTP)": lambda: auth.load_session(sid),
        "session: re-check before a message": lambda: session_check.check(activity=True),
        "token: raw deny-list find + user": lambda: (
            list(denylist.find({"_id": {"$in": keys}})),
            users.find_one({"_id": oid}),
        ),
        "token: AuthService.user_from_token (HTTP)": lambda: auth.user_from_token(token),
        "token: re-check before a message": lambda: token_check.check(activity=True),
    }
    for fn in cases.values():  # warm up (indexes, casbin)
        fn()
    costs = interleaved(cases, args.ops, args.rounds)
    print(f"\nRe-check cost (µs per op, median of {args.rounds} rounds of {args.ops})")
    width = max(map(len, costs))
    for name, value in costs.items():
        print(f"  {name:<{width}}  {value:8.0f}")

    # End to end: a ping's round trip, re-checked each message vs once an hour.
    with LiveServer(app) as strict_server, LiveServer(relaxed) as relaxed_server:
        clients = {}
        for name, srv in (("each message", strict_server), ("once an hour", relaxed_server)):
            ws = websocket.create_connection(
                srv.url.replace("http", "ws") + "/ws", timeout=10, cookie=f"{SLUG}_session={sid}"
            )
            json.loads(ws.recv())
            clients[name] = ws

        def round_trip(ws: Any) -> Callable[[], Any]:
            def run() -> None:
                ws.send('{"type":"ping"}')
                ws.recv()

            return run

        trips = interleaved({n: round_trip(ws) for n, ws in clients.items()}, args.ops, args.rounds)
        for ws in clients.values():
            ws.close()
        print("\nMessage round trip over a websocket (µs, median)")
        for name, value in trips.items():
            print(f"  re-checked {name:<14}  {value:8.0f}")

        same = revocation_latency(
            auth, user, int(strict_server.url.rsplit(":", 1)[1]), args.revocations
        )

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", uri, db, manifests],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        other = revocation_latency(auth, user, port, args.revocations)
    finally:
        proc.terminate()
        proc.wait(30)
    for built in (app, relaxed):
        built.extensions["bench_mdb"].shutdown(built)
    print(f"\nRevocation latency: end_session -> close frame 4401 (ms, {args.revocations} each)")
    for name, values in (("same process", same), ("another process", other)):
        print(f"  {name:<16} p50 {statistics.median(values):7.1f}   max {max(values):7.1f}")


if __name__ == "__main__":
    main()
